"""Decoding of event data into typed values, a one-line summary per event, and
the MAA-style ``events`` claim view.

A separate step from framing and replay (they never pay for it)::

    log = parse_log(raw)
    for event in log.events:
        print(summarize(event))

:func:`decode_event` never raises for malformed data: it returns
:class:`Undecodable` with the reason and the byte offset inside the event data.
"""

from __future__ import annotations

from bootwatch.eventlog.decode.claim import events_claim, processed_data
from bootwatch.eventlog.decode.efi import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    ConfigTable,
    FirmwareBlob,
    GptData,
    GptPartition,
    LoadOption,
    SignatureEntry,
    SignatureKind,
    SignatureList,
    UefiVariable,
    X509Info,
    parse_signature_lists,
)
from bootwatch.eventlog.decode.events import (
    CompactHashEvent,
    CrtmVersion,
    DecodedEvent,
    FirmwareBlobEvent,
    GptEvent,
    HandoffTablesEvent,
    ImageLoadEvent,
    IplEvent,
    IplKind,
    NoActionEvent,
    PostCode,
    RawEvent,
    SeparatorEvent,
    SeparatorKind,
    SipaEvent,
    Sp800155Event,
    SpecIdHeader,
    StartupLocality,
    TaggedEvent,
    TextEvent,
    Undecodable,
    VariableEvent,
    decode_data,
)
from bootwatch.eventlog.decode.sipa import SipaRecord
from bootwatch.eventlog.decode.summary import summarize, summarize_decoded
from bootwatch.eventlog.model import UnverifiedEvent


def decode_event(event: UnverifiedEvent) -> DecodedEvent:
    """Decode one framed record's data into its typed variant (never raises on bad data)."""
    return decode_data(event.event_type, event.pcr, event.data)


__all__ = [
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "CompactHashEvent",
    "ConfigTable",
    "CrtmVersion",
    "DecodedEvent",
    "FirmwareBlob",
    "FirmwareBlobEvent",
    "GptData",
    "GptEvent",
    "GptPartition",
    "HandoffTablesEvent",
    "ImageLoadEvent",
    "IplEvent",
    "IplKind",
    "LoadOption",
    "NoActionEvent",
    "PostCode",
    "RawEvent",
    "SeparatorEvent",
    "SeparatorKind",
    "SignatureEntry",
    "SignatureKind",
    "SignatureList",
    "SipaEvent",
    "SipaRecord",
    "Sp800155Event",
    "SpecIdHeader",
    "StartupLocality",
    "TaggedEvent",
    "TextEvent",
    "UefiVariable",
    "Undecodable",
    "VariableEvent",
    "X509Info",
    "decode_data",
    "decode_event",
    "events_claim",
    "parse_signature_lists",
    "processed_data",
    "summarize",
    "summarize_decoded",
]
