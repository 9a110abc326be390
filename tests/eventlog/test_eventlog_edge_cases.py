"""Edge cases of event decoding and boot-state extraction found in review.

Real event data from the corpus (read in place) is changed in one field each.
"""

from __future__ import annotations

from pathlib import Path

from bootwatch.eventlog import parse_log
from bootwatch.eventlog.decode import VariableEvent, decode_event
from bootwatch.eventlog.decode.efi import SignatureKind, guid_from, parse_uefi_variable
from bootwatch.eventlog.model import UnverifiedEvent

#: an EFI_SIGNATURE_DATA owner GUID whose first byte (Data1's lowest) is 0x30, the DER
#: SEQUENCE tag: 12345630-aaaa-bbbb-cccc-ddddeeeeffff
_OWNER_0X30 = bytes.fromhex("30563412aaaabbbbccccddddeeeeffff")


def _with_owner(event: UnverifiedEvent, owner: bytes) -> UnverifiedEvent:
    """The db authority event with its EFI_SIGNATURE_DATA owner replaced."""
    var = parse_uefi_variable(event.data)
    data = event.data[: var.data_offset] + owner + var.data[16:]
    return event._replace(data=data)


def test_authority_owner_starting_with_der_tag_is_not_read_as_a_bare_certificate(
    eventlogs: Path,
) -> None:
    """EV_EFI_VARIABLE_AUTHORITY data is an EFI_SIGNATURE_DATA (owner GUID, then the DER
    certificate).  Only shim's bare vendor certificate starts with the DER tag itself;
    an owner GUID whose first byte happens to be 0x30 must still be read as the owner,
    not folded into the certificate (which then does not parse, and its thumbprint is
    wrong)."""
    log = parse_log((eventlogs / "go-attestation/option_rom_eventlog").read_bytes())
    real = decode_event(log.events[10])
    assert isinstance(real, VariableEvent) and real.authority is not None
    assert real.authority.certificate is not None
    d = decode_event(_with_owner(log.events[10], _OWNER_0X30))
    assert isinstance(d, VariableEvent) and d.authority is not None
    assert d.authority.kind is SignatureKind.X509
    assert d.authority.owner == guid_from(_OWNER_0X30)
    assert d.authority.data == real.authority.data
    assert d.authority.certificate == real.authority.certificate
