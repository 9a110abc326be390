"""One readable line per event, for ``bootwatch log show``."""

from __future__ import annotations

from bootwatch.eventlog.decode import events as ev
from bootwatch.eventlog.decode.sipa import SipaRecord
from bootwatch.eventlog.model import UnverifiedEvent

__all__ = [
    "summarize",
    "summarize_decoded",
]

_MAX = 160


def summarize(event: UnverifiedEvent) -> str:
    """Decode ``event`` and describe it in one line (at most ~160 characters)."""
    return summarize_decoded(ev.decode_data(event.event_type, event.pcr, event.data))


def _clip(text: str) -> str:
    flat = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return flat if len(flat) <= _MAX else flat[: _MAX - 1] + "…"


def _sipa(records: tuple[SipaRecord, ...]) -> str:
    parts = []
    for r in records:
        if r.children:
            parts.append(f"{r.name}[{len(r.children)}]")
        else:
            parts.append(r.name)
    return "SIPA " + ", ".join(parts)


def summarize_decoded(d: ev.DecodedEvent) -> str:
    """Describe an already-decoded event in one line."""
    if isinstance(d, ev.VariableEvent):
        return _clip(_variable(d))
    if isinstance(d, ev.ImageLoadEvent):
        if d.device_path is None:
            path = f"<bad device path: {d.device_path_error}>"
        else:
            path = d.device_path or "<no device path>"
        return _clip(f"{path} (0x{d.length:x} bytes at 0x{d.location:x})")
    if isinstance(d, ev.IplEvent):
        label = {"grub_cmd": "grub: ", "kernel_cmdline": "kernel cmdline: "}.get(d.kind, "")
        return _clip(label + d.text.strip())
    if isinstance(d, ev.SeparatorEvent):
        value = "?" if d.value is None else f"0x{d.value:08x}"
        return f"separator {value} ({d.kind})"
    if isinstance(d, ev.TextEvent):
        return _clip(d.text)
    if isinstance(d, ev.SpecIdHeader):
        algs = ", ".join(f"0x{a:04x}/{s}" for a, s in d.algorithms)
        return f"{d.signature}: spec {d.spec_version} errata {d.errata}, algorithms [{algs}]"
    if isinstance(d, ev.StartupLocality):
        return f"StartupLocality {d.locality}"
    if isinstance(d, ev.Sp800155Event):
        return _clip(
            f"{d.signature}: {d.platform_manufacturer} {d.platform_model} "
            f"{d.platform_version}, firmware {d.firmware_manufacturer} {d.firmware_version}"
        )
    if isinstance(d, ev.NoActionEvent):
        return _clip(d.signature or f"{len(d.data)} bytes")
    if isinstance(d, ev.CrtmVersion):
        return _clip(d.text if d.text is not None else (d.guid or d.data.hex()))
    if isinstance(d, ev.PostCode):
        if d.blob is not None:
            return f"blob 0x{d.blob.length:x} bytes at 0x{d.blob.base:x}"
        return _clip(d.text or "")
    if isinstance(d, ev.FirmwareBlobEvent):
        desc = f"{d.blob.description} " if d.blob.description else ""
        return _clip(f"{desc}0x{d.blob.length:x} bytes at 0x{d.blob.base:x}")
    if isinstance(d, ev.HandoffTablesEvent):
        names = ", ".join(t.name or t.guid for t in d.tables)
        desc = f"{d.description}: " if d.description else ""
        return _clip(f"{desc}{names}")
    if isinstance(d, ev.GptEvent):
        names = ", ".join(p.name or p.unique_guid for p in d.gpt.partitions)
        return _clip(f"GPT {d.gpt.disk_guid}: {len(d.gpt.partitions)} partitions ({names})")
    if isinstance(d, ev.SipaEvent):
        return _clip(_sipa(d.records))
    if isinstance(d, ev.TaggedEvent):
        return _clip(f"tag 0x{d.tag_id:08x}: {d.text or d.data.hex()}")
    if isinstance(d, ev.CompactHashEvent):
        return _clip(d.data.hex())
    if isinstance(d, ev.RawEvent):
        return _clip(d.label or f"{len(d.data)} bytes")
    return _clip(f"undecodable: {d.reason} (data offset {d.offset})")


def _variable(d: ev.VariableEvent) -> str:
    head = f"{d.name} [{d.guid}]"
    if d.signature_lists is not None:
        certs = [
            e.certificate.common_name
            for s in d.signature_lists
            for e in s.entries
            if e.certificate is not None
        ]
        hashes = sum(1 for s in d.signature_lists for e in s.entries if e.is_hash)
        parts = []
        if certs:
            parts.append("certs: " + "; ".join(certs))
        if hashes:
            parts.append(f"{hashes} hashes")
        return f"{head} " + (", ".join(parts) if parts else "empty")
    if d.authority is not None:
        a = d.authority
        if a.certificate is not None:
            return f"{head} {a.certificate.common_name}"
        return f"{head} {a.kind} {a.data.hex()[:64]}"
    if d.boot_order is not None:
        return f"{head} " + ",".join(f"{n:04X}" for n in d.boot_order)
    if d.load_option is not None:
        return f"{head} {d.load_option.description}: {d.load_option.device_path or ''}"
    if d.value is not None:
        return f"{head} = {d.value}"
    if d.text is not None:
        return f"{head} {d.text.strip()}"
    if d.contents_error:
        return f"{head} {len(d.data)} bytes ({d.contents_error})"
    return f"{head} {len(d.data)} bytes"
