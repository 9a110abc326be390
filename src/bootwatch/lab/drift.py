"""Event logs for drift that the corpus does not hold as a pair: a DBX update, and
Microsoft's 2023 Secure Boot certificates added to KEK and db (:func:`append_to_variable`,
:func:`x509_signature_list`) with a boot manager signed by one of them
(:func:`replace_authority`).

The corpus has A/B images (COS 93 / COS 101) and a Secure Boot-off image, but
no log of the same image before and after a DBX update.  A DBX update changes
one measurement: the ``dbx`` variable the firmware measures into PCR 7
(``EV_EFI_VARIABLE_DRIVER_CONFIG``).  :func:`apply_dbx_update` rewrites that
one record of a real crypto-agile log with the update's signature lists appended
to the variable's data (an append write, as ``SetVariable`` with
``EFI_VARIABLE_APPEND_WRITE`` does) and every digest of the record recomputed,
so a lab VM booted from the result measures exactly what a VM that took the
update would.  Only the record changes; every other byte is the original log.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Final

from bootwatch.errors import LabError
from bootwatch.eventlog.framing import parse_log
from bootwatch.eventlog.model import LogFormat, UnverifiedEvent, UnverifiedEventLog

__all__ = [
    "append_to_variable",
    "apply_dbx_update",
    "dbx_update_lists",
    "replace_authority",
    "x509_signature_list",
]

_EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
_EV_EFI_VARIABLE_AUTHORITY: Final = 0x800000E0
#: EFI_CERT_X509_GUID
_EFI_CERT_X509_GUID: Final = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
_HASHES: Final = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
_MAX_UPDATE: Final = 4 * 1024 * 1024


def dbx_update_lists(update: bytes) -> bytes:
    """The EFI_SIGNATURE_LISTs of a published DBX update (``EFI_TIME`` +
    ``WIN_CERTIFICATE_UEFI_GUID`` + lists): what an append write adds to ``dbx``."""
    if len(update) > _MAX_UPDATE:
        raise LabError(f"DBX update of {len(update)} bytes is over {_MAX_UPDATE}")
    if len(update) < 16 + 24:
        raise LabError("DBX update is shorter than EFI_TIME + WIN_CERTIFICATE_UEFI_GUID")
    length, _rev, cert_type = struct.unpack_from("<IHH", update, 16)
    if cert_type != 0x0EF1 or length < 24 or 16 + length >= len(update):
        raise LabError(f"DBX update: no UEFI GUID certificate at byte 16 (type "
                       f"0x{cert_type:04x}, length {length}) or no signature lists after it")
    return update[16 + length:]


def apply_dbx_update(log: bytes, update: bytes) -> bytes:
    """``log`` with its PCR 7 ``dbx`` measurement replaced by the updated variable."""
    return append_to_variable(log, "dbx", dbx_update_lists(update))


def x509_signature_list(owner: uuid.UUID, der: bytes) -> bytes:
    """One EFI_SIGNATURE_LIST (UEFI 2.10, 32.4.1) holding one X.509 certificate: what
    an authenticated append of a certificate to KEK or db adds to the variable."""
    if not 0 < len(der) <= _MAX_UPDATE:
        raise LabError(f"a certificate of {len(der)} bytes cannot be listed")
    size = 16 + len(der)
    return (_EFI_CERT_X509_GUID.bytes_le + struct.pack("<III", 28 + size, 0, size)
            + owner.bytes_le + der)


def append_to_variable(log: bytes, variable: str, lists: bytes) -> bytes:
    """``log`` with its PCR 7 measurement of Secure Boot variable ``variable`` (``PK``,
    ``KEK``, ``db``, ``dbx``) replaced by the variable with ``lists`` appended (an append
    write, as ``SetVariable`` with ``EFI_VARIABLE_APPEND_WRITE`` does), every digest of
    the record recomputed.  Only that record changes."""
    parsed = _tcg2(parse_log(log), f"appending to {variable}")
    for ev in parsed.events:
        if ev.pcr != 7 or ev.event_type != _EV_EFI_VARIABLE_DRIVER_CONFIG:
            continue
        found = _variable(ev.index, ev.data)
        if found is None or found[0] != variable:
            continue
        _checked(ev.index, ev.data, found)
        _, name_len, data_len = found
        new_data = (ev.data[:16] + struct.pack("<QQ", name_len, data_len + len(lists))
                    + ev.data[32:] + lists)
        return _rewrite(log, ev, new_data)
    raise LabError(f"the log measures no {variable} variable into PCR 7: nothing can be "
                   "appended to it")


def replace_authority(log: bytes, owner: uuid.UUID, der: bytes) -> bytes:
    """``log`` with its first PCR 7 ``EV_EFI_VARIABLE_AUTHORITY`` record (the db
    certificate that verified the first boot application) naming ``der`` instead: a boot
    manager signed by another CA of db."""
    parsed = _tcg2(parse_log(log), "replacing an authority")
    for ev in parsed.events:
        if ev.pcr != 7 or ev.event_type != _EV_EFI_VARIABLE_AUTHORITY:
            continue
        found = _variable(ev.index, ev.data)
        if found is None:
            continue
        _checked(ev.index, ev.data, found)
        _, name_len, _ = found
        data = owner.bytes_le + der
        new_data = (ev.data[:16] + struct.pack("<QQ", name_len, len(data))
                    + ev.data[32:32 + 2 * name_len] + data)
        return _rewrite(log, ev, new_data)
    raise LabError("the log measures no EV_EFI_VARIABLE_AUTHORITY record into PCR 7")


def _tcg2(parsed: UnverifiedEventLog, what: str) -> UnverifiedEventLog:
    if parsed.format is not LogFormat.TCG2:
        raise LabError(f"{what} is done to crypto-agile (TCG2) logs only, not to a "
                       f"{parsed.format.value} log")
    return parsed


def _variable(index: int, data: bytes) -> tuple[str, int, int] | None:
    """(name, name length, data length) of an UEFI_VARIABLE_DATA, or None if it is none."""
    if len(data) < 32:
        return None
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    name_end = 32 + 2 * name_len
    if name_end > len(data):
        return None
    return data[32:name_end].decode("utf-16-le", errors="replace"), name_len, data_len


def _checked(index: int, data: bytes, found: tuple[str, int, int]) -> None:
    name, name_len, data_len = found
    if 32 + 2 * name_len + data_len != len(data):
        raise LabError(f"event {index}: the {name} variable's length does not match its "
                       "event data")


def _rewrite(log: bytes, ev: UnverifiedEvent, new_data: bytes) -> bytes:
    """``log`` with record ``ev`` holding ``new_data``, its digests recomputed."""
    unknown = [alg for alg in ev.digests if alg not in _HASHES]
    if unknown:
        raise LabError(f"event {ev.index}: digest algorithm 0x{unknown[0]:04x} cannot be "
                       "recomputed here (SHA-1/256/384/512 only)")
    old_len = 12 + sum(2 + len(d) for d in ev.digests.values()) + 4 + len(ev.data)
    head = struct.pack("<III", ev.pcr, ev.event_type, len(ev.digests))
    for alg in ev.digests:
        head += struct.pack("<H", alg) + hashlib.new(_HASHES[alg], new_data).digest()
    record = head + struct.pack("<I", len(new_data)) + new_data
    return log[:ev.offset] + record + log[ev.offset + old_len:]
