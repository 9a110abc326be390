"""The MAA policy-language ``events`` claim view of a log (policy version 1.2).

Shape (inferred from Microsoft's published JMESPath sample policies; see
docs/eventlog-state.md)::

    {"Events": [{"EventSeq": 0, "PcrIndex": 7,
                 "EventTypeString": "EV_EFI_VARIABLE_DRIVER_CONFIG",
                 "ProcessedData": {"VariableGuid": "8BE4DF61-...", "UnicodeName": "SecureBoot",
                                   "VariableData": "AQ"}}, ...]}

``EventSeq`` is the record index (the header record of a crypto-agile log is 0).
"""

from __future__ import annotations

from collections.abc import Collection

from bootwatch.encoding import b64url_encode
from bootwatch.eventlog.decode import events as ev
from bootwatch.eventlog.decode.sipa import sipa_records_json
from bootwatch.eventlog.model import UnverifiedEventLog, event_type_name

__all__ = [
    "events_claim",
    "processed_data",
]


def processed_data(d: ev.DecodedEvent) -> dict[str, object]:
    """``ProcessedData`` of one decoded event (JSON-ready)."""
    if isinstance(d, ev.VariableEvent):
        return {
            "VariableGuid": d.guid.upper(),
            "UnicodeName": d.name,
            "VariableData": b64url_encode(d.data),
        }
    if isinstance(d, ev.SipaEvent):
        return sipa_records_json(d.records)
    if isinstance(d, ev.ImageLoadEvent):
        return {
            "ImageLocationInMemory": d.location,
            "ImageLengthInMemory": d.length,
            "ImageLinkTimeAddress": d.link_time_address,
            "DevicePath": d.device_path,
        }
    if isinstance(d, ev.IplEvent | ev.TextEvent):
        return {"String": d.text}
    if isinstance(d, ev.SeparatorEvent):
        return {"Value": d.value, "Error": d.kind is ev.SeparatorKind.ERROR}
    if isinstance(d, ev.StartupLocality):
        return {"StartupLocality": d.locality}
    if isinstance(d, ev.CrtmVersion):
        return {"String": d.text} if d.text is not None else {"RawData": b64url_encode(d.data)}
    if isinstance(d, ev.TaggedEvent):
        return {"TagId": d.tag_id, "RawData": b64url_encode(d.data)}
    if isinstance(d, ev.Undecodable):
        return {"RawData": b64url_encode(d.data), "Error": d.reason}
    raw = getattr(d, "data", None)
    return {"RawData": b64url_encode(raw)} if isinstance(raw, bytes) else {}


def events_claim(
    log: UnverifiedEventLog, *, pcrs: Collection[int] | None = None
) -> dict[str, object]:
    """Every record of ``log`` (none dropped) in MAA's ``events`` claim shape.

    ``pcrs``, when given, keeps only the records of those PCRs: a verifier passes the
    PCRs its quote covers, so a policy never reads events nothing vouches for.
    """
    out = []
    for e in log.events:
        if pcrs is not None and e.pcr not in pcrs:
            continue
        d = ev.decode_data(e.event_type, e.pcr, e.data)
        out.append(
            {
                "EventSeq": e.index,
                "PcrIndex": e.pcr,
                "EventTypeString": event_type_name(e.event_type),
                "ProcessedData": processed_data(d),
            }
        )
    return {"Events": out}
