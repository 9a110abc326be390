"""Event logs for fleet drift that the corpus does not hold as a pair: a DBX update.

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
from typing import Final

from bootwatch.errors import LabError
from bootwatch.eventlog.framing import parse_log
from bootwatch.eventlog.model import LogFormat

__all__ = ["apply_dbx_update", "dbx_update_lists"]

_EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
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
    lists = dbx_update_lists(update)
    parsed = parse_log(log)
    if parsed.format is not LogFormat.TCG2:
        raise LabError(f"a DBX update is applied to crypto-agile (TCG2) logs only, not to a "
                       f"{parsed.format.value} log")
    for ev in parsed.events:
        if ev.pcr != 7 or ev.event_type != _EV_EFI_VARIABLE_DRIVER_CONFIG or len(ev.data) < 32:
            continue
        name_len, data_len = struct.unpack_from("<QQ", ev.data, 16)
        name_end = 32 + 2 * name_len
        if name_end > len(ev.data):
            continue
        if ev.data[32:name_end].decode("utf-16-le", errors="replace") != "dbx":
            continue
        if name_end + data_len != len(ev.data):
            raise LabError(f"event {ev.index}: the dbx variable's length does not match its "
                           "event data")
        unknown = [alg for alg in ev.digests if alg not in _HASHES]
        if unknown:
            raise LabError(f"event {ev.index}: digest algorithm 0x{unknown[0]:04x} cannot be "
                           "recomputed here (SHA-1/256/384/512 only)")
        new_data = (ev.data[:16] + struct.pack("<QQ", name_len, data_len + len(lists))
                    + ev.data[32:] + lists)
        old_len = 12 + sum(2 + len(d) for d in ev.digests.values()) + 4 + len(ev.data)
        head = struct.pack("<III", ev.pcr, ev.event_type, len(ev.digests))
        for alg in ev.digests:
            head += struct.pack("<H", alg) + hashlib.new(_HASHES[alg], new_data).digest()
        record = head + struct.pack("<I", len(new_data)) + new_data
        return log[:ev.offset] + record + log[ev.offset + old_len:]
    raise LabError("the log measures no dbx variable into PCR 7: a DBX update cannot be "
                   "applied to it")
