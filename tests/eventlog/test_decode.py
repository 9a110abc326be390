"""Event-data decoding over the real corpus (read in place) and on crafted records."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bootwatch.eventlog import EventType, parse_log
from bootwatch.eventlog.decode import (
    CrtmVersion,
    ImageLoadEvent,
    IplEvent,
    IplKind,
    SeparatorEvent,
    SeparatorKind,
    SipaEvent,
    Sp800155Event,
    StartupLocality,
    TaggedEvent,
    Undecodable,
    VariableEvent,
    decode_data,
    decode_event,
    events_claim,
    processed_data,
    summarize,
    summarize_decoded,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
EVENTLOGS = SHARED / "corpus" / "eventlogs"
_NOT_LOGS = {"keylime/binary_bios_measurements-bogus", "keylime/binary_bios_measurements-empty"}
_EXPECTED_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".warn", ".md")

LOGS = sorted(
    str(p.relative_to(EVENTLOGS))
    for p in EVENTLOGS.glob("*/*")
    if not p.name.endswith(_EXPECTED_SUFFIXES) and str(p.relative_to(EVENTLOGS)) not in _NOT_LOGS
)


def _log(rel: str):  # type: ignore[no-untyped-def]
    return parse_log((EVENTLOGS / rel).read_bytes())


def test_corpus_has_the_logs() -> None:
    assert len(LOGS) == 51


@pytest.mark.parametrize("rel", LOGS)
def test_every_event_of_every_log_decodes(rel: str) -> None:
    log = _log(rel)
    for event in log.events:
        decoded = decode_event(event)
        assert not isinstance(decoded, Undecodable), (rel, event.index, decoded)
        line = summarize(event)
        assert isinstance(line, str) and "\n" not in line
    claim = events_claim(log)
    assert len(claim["Events"]) == len(log.events)  # type: ignore[arg-type]
    json.dumps(claim)


def _pretty_yaml_device_paths() -> list[tuple[str, int, str]]:
    """(log, EventNum, DevicePath) of every image-load event tpm2-tools (efivar 39) printed."""
    out = []
    for y in sorted(EVENTLOGS.glob("tpm2-tools/*.event-pretty-39.yaml")):
        doc = yaml.safe_load(y.read_text())
        events = doc.get("events") if isinstance(doc, dict) else None
        for e in events if isinstance(events, list) else []:
            if not isinstance(e, dict):
                continue
            ev = e.get("Event")
            if "EventNum" in e and isinstance(ev, dict) and "DevicePath" in ev:
                out.append(
                    (y.name.replace(".event-pretty-39.yaml", ""), e["EventNum"], ev["DevicePath"])
                )
    return out


DEVICE_PATHS = _pretty_yaml_device_paths()


def test_device_path_table_is_not_empty() -> None:
    assert len(DEVICE_PATHS) >= 10


@pytest.mark.parametrize(("log_name", "num", "expected"), DEVICE_PATHS)
def test_device_paths_render_like_efivar(log_name: str, num: int, expected: str) -> None:
    log = _log(f"tpm2-tools/{log_name}")
    decoded = decode_event(log.events[num])
    assert isinstance(decoded, ImageLoadEvent)
    assert decoded.device_path == expected


def test_boot_option_device_path() -> None:
    log = _log("go-tpm-tools/ubuntu-2104-no-dbx.bin")
    options = [
        d for d in map(decode_event, log.events) if isinstance(d, VariableEvent) and d.load_option
    ]
    assert any(
        d.load_option is not None
        and d.load_option.device_path == "PciRoot(0x0)/Pci(0x3,0x0)/SCSI(1,0)"
        for d in options
    )


def test_systemd_boot_utf16_command_line_fedora() -> None:
    log = _log("tpm2-tools/event-sd-boot-fedora37.bin")
    ipl = [(e.pcr, decode_event(e)) for e in log.events if e.event_type == EventType.EV_IPL]
    pcr12 = [d for pcr, d in ipl if pcr == 12]
    assert pcr12, "no PCR12 EV_IPL in the Fedora sd-boot log"
    d = pcr12[0]
    assert isinstance(d, IplEvent) and d.utf16 and d.kind is IplKind.UTF16_TEXT
    assert d.text == " console=ttyS0 console=tty0 efi=debug "
    tags = [decode_event(e) for e in log.events if e.event_type == EventType.EV_EVENT_TAG]
    assert any(isinstance(t, TaggedEvent) and t.text == "Linux initrd" for t in tags)


def test_systemd_boot_utf16_command_line_arch() -> None:
    log = _log("go-tpm-tools/arch-linux-workstation.bin")
    d = decode_event(log.events[24])
    assert isinstance(d, IplEvent) and d.utf16
    assert d.text.startswith("initrd=\\intel-ucode.img initrd=\\initramfs-linux-lts.img")


def test_grub_strings() -> None:
    log = _log("go-tpm-tools/confidential-gke-debug-251000_eventlog.bin")
    kinds = [d.kind for d in map(decode_event, log.events) if isinstance(d, IplEvent)]
    assert IplKind.GRUB_COMMAND in kinds and IplKind.KERNEL_CMDLINE in kinds
    d = decode_event(log.events[52])
    assert isinstance(d, IplEvent) and d.kind is IplKind.KERNEL_CMDLINE
    assert d.text.startswith("/syslinux/vmlinuz.B init=/usr/lib/systemd/systemd")


def test_sp800_155_event3_and_startup_locality() -> None:
    d = decode_event(_log("go-tpm-tools/confidential-gke-debug-251000_eventlog.bin").events[1])
    assert isinstance(d, Sp800155Event) and d.signature == "SP800-155 Event3"
    assert d.platform_manufacturer_id == 11129
    assert (d.platform_manufacturer, d.platform_model) == ("Google, Inc.", "Google Compute Engine")
    loc = decode_event(_log("go-tpm-tools/glinux-alex.bin").events[1])
    assert loc == StartupLocality(3)


def test_crtm_versions() -> None:
    d = decode_event(_log("go-tpm-tools/cos-101-amd-sev.bin").events[1])
    assert isinstance(d, CrtmVersion) and d.text == "GCE Virtual Firmware v1"
    g = decode_event(_log("go-tpm-tools/glinux-alex.bin").events[5])
    assert isinstance(g, CrtmVersion) and g.guid is not None and len(g.guid) == 36


def test_certificate_subjects_of_pk_kek_db() -> None:
    log = _log("go-attestation/option_rom_eventlog")
    by_name = {}
    for d in map(decode_event, log.events[:7]):
        if isinstance(d, VariableEvent) and d.signature_lists is not None:
            by_name[d.name] = [
                e.certificate for s in d.signature_lists for e in s.entries if e.certificate
            ]
    kek = [c.common_name for c in by_name["KEK"]]
    db = [c.common_name for c in by_name["db"]]
    assert "Microsoft Corporation KEK CA 2011" in kek
    assert "Microsoft Corporation UEFI CA 2011" in db
    assert "Microsoft Windows Production PCA 2011" in db
    pca = next(c for c in by_name["db"] if c.common_name == "Microsoft Windows Production PCA 2011")
    assert pca.sha1_thumbprint == "580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d"
    assert by_name["PK"][0].common_name == "Hewlett-Packard UEFI Secure Boot Platform Key"


def test_dbx_hashes_decode() -> None:
    d = decode_event(_log("go-attestation/option_rom_eventlog").events[6])
    assert isinstance(d, VariableEvent) and d.name == "dbx" and d.signature_lists
    hashes = [e.sha256_hex for s in d.signature_lists for e in s.entries]
    assert len(hashes) == 78 and all(h is not None and len(h) == 64 for h in hashes)


def test_authority_certificate() -> None:
    d = decode_event(_log("go-attestation/option_rom_eventlog").events[10])
    assert isinstance(d, VariableEvent) and d.authority and d.authority.certificate
    assert d.authority.certificate.common_name == "Microsoft Corporation UEFI CA 2011"


def test_events_claim_secure_boot_variable() -> None:
    claim = events_claim(_log("go-tpm-tools/cos-101-amd-sev.bin"))
    sb = [
        e
        for e in claim["Events"]  # type: ignore[attr-defined]
        if e["EventTypeString"] == "EV_EFI_VARIABLE_DRIVER_CONFIG"
        and e["ProcessedData"]["UnicodeName"] == "SecureBoot"
    ]
    assert len(sb) == 1
    assert sb[0]["PcrIndex"] == 7
    assert sb[0]["ProcessedData"]["VariableGuid"] == "8BE4DF61-93CA-11D2-AA0D-00E098032B8C"
    assert sb[0]["ProcessedData"]["VariableData"] == "AQ"


def test_windows_sipa_trust_boundary() -> None:
    log = _log("go-attestation/option_rom_eventlog")
    d = decode_event(log.events[46])
    assert isinstance(d, SipaEvent) and d.records[0].name == "TRUSTBOUNDARY"
    pd = processed_data(d)["EVENT_TRUSTBOUNDARY"]
    assert isinstance(pd, dict)
    assert pd["EVENT_CODEINTEGRITY"] is True and pd["EVENT_BOOTDEBUGGING"] is False
    modules = pd["EVENT_LOADEDMODULE_AGGREGATION"]
    assert isinstance(modules, list)
    assert modules[0]["EVENT_FILEPATH"] == "\\WINDOWS\\system32\\winload.efi"
    assert modules[0]["EVENT_AUTHORITYISSUER"] == "Microsoft Windows Production PCA 2011"
    assert modules[0]["EVENT_IMAGEVALIDATED"] is True


# ----------------------------------------------------------------------- crafted records


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"\0\0\0\0", SeparatorKind.NORMAL),
        (b"\x01\0\0\0", SeparatorKind.ERROR),
        (b"\xff\xff\xff\xff", SeparatorKind.ERROR),
        (b"WBCL", SeparatorKind.OTHER),
        (b"\0\0", SeparatorKind.OTHER),
    ],
)
def test_separators(raw: bytes, kind: SeparatorKind) -> None:
    d = decode_data(EventType.EV_SEPARATOR, 4, raw)
    assert isinstance(d, SeparatorEvent) and d.kind is kind


def _variable(
    name: str,
    data: bytes,
    guid: bytes = b"\x61\xdf\xe4\x8b\xca\x93\xd2\x11\xaa\x0d\x00\xe0\x98\x03\x2b\x8c",
) -> bytes:
    uname = name.encode("utf-16-le")
    return guid + struct.pack("<QQ", len(name), len(data)) + uname + data


def test_truncated_variable_is_undecodable_with_offset() -> None:
    raw = _variable("SecureBoot", b"\x01")[:-3]
    d = decode_data(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, 7, raw)
    assert isinstance(d, Undecodable)
    assert "VariableDataLength" in d.reason or "UnicodeName" in d.reason
    assert d.offset > 0
    assert "undecodable" in summarize_decoded(d)


def test_variable_secure_boot_value() -> None:
    d = decode_data(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, 7, _variable("SecureBoot", b"\x01"))
    assert isinstance(d, VariableEvent) and d.value == 1 and d.name == "SecureBoot"


def test_unknown_type_is_kept_raw() -> None:
    d = decode_data(0x12345678, 3, b"hello\0xyz")
    assert getattr(d, "data", None) == b"hello\0xyz"
    assert summarize_decoded(d) == "hello"


_TYPES = [int(t) for t in EventType] + [0x7FFFFFFF, 0x800000FF]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_TYPES), st.binary(max_size=300))
def test_decode_arbitrary_bytes_never_raises_else(event_type: int, data: bytes) -> None:
    """Event data never raises: what does not match its type is Undecodable, with a
    reason and an offset inside the data (the log parser keeps going)."""
    _decoded_or_located(event_type, data)


def _decoded_or_located(event_type: int, data: bytes) -> None:
    d = decode_data(event_type, 7, data)
    summarize_decoded(d)
    json.dumps(processed_data(d))
    if isinstance(d, Undecodable):
        assert d.reason and 0 <= d.offset <= len(data), d
        assert d.data == data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([int(t) for t in EventType]), st.binary(max_size=120))
def test_decode_structured_prefixes(event_type: int, tail: bytes) -> None:
    """Valid-looking headers followed by garbage exercise the deeper decoders."""
    for prefix in (
        _variable("db", tail),
        _variable("Boot0001", tail),
        _variable("BootOrder", tail),
        struct.pack("<QQQQ", 0, 0, 0, len(tail)) + tail,
        b"\x01\x00\x01\x40" + struct.pack("<I", len(tail)) + tail,
        b"SP800-155 Event3" + tail,
        b"Spec ID Event03\0" + tail,
        b"EFI PART" + tail,
    ):
        _decoded_or_located(event_type, prefix)
