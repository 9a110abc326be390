"""UEFI device paths (EFI_DEVICE_PATH_PROTOCOL node lists) rendered as text.

The text follows the notation of the UEFI specification as printed by efivar
(and so by ``tpm2_eventlog`` built with efivar >= 39), e.g.
``PciRoot(0x0)/Pci(0x3,0x0)/SCSI(1,0)/HD(15,GPT,<guid>,0x2800,0x35000)/\\EFI\\ubuntu\\shimx64.efi``,
so a person can compare our output with the tool they already know.  Nodes we
do not name are printed generically as ``Path(type,subtype,hex)``: nothing is
dropped.
"""

from __future__ import annotations

import ipaddress
import struct

from bootwatch.eventlog.decode._util import EventDataError, guid_text, utf16_text

__all__ = [
    "device_path_text",
]

_END = 0x7F
_BBS_TYPES = {1: "Floppy", 2: "HD", 3: "CDROM", 4: "PCMCIA", 5: "USB", 6: "Network"}
_PNP_SUFFIX = 0x41D0


def device_path_text(data: bytes, *, base: int = 0) -> str:
    """Render a device path (one or more instances) as text.

    Raises :class:`EventDataError` (offset relative to ``base``) when a node
    header is truncated or claims an impossible length.
    """
    instances: list[str] = []
    nodes: list[str] = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise EventDataError("device path node header truncated", base + pos)
        ntype, sub, length = struct.unpack_from("<BBH", data, pos)
        if length < 4 or pos + length > end:
            raise EventDataError(f"device path node length {length} is invalid", base + pos)
        body = data[pos + 4 : pos + length]
        pos += length
        if ntype == _END:
            if sub == 0x01:
                instances.append("/".join(nodes))
                nodes = []
                continue
            break
        nodes.append(_node_text(ntype, sub, body))
    if nodes or not instances:
        instances.append("/".join(nodes))
    return ",".join(instances)


def _node_text(ntype: int, sub: int, body: bytes) -> str:
    try:
        text = _known_node(ntype, sub, body)
    except (struct.error, ValueError, IndexError):
        text = None
    return text if text is not None else f"Path({ntype},{sub},{body.hex()})"


def _known_node(ntype: int, sub: int, b: bytes) -> str | None:
    n = len(b)
    if ntype == 1:  # hardware
        if sub == 1 and n == 2:
            return f"Pci(0x{b[1]:x},0x{b[0]:x})"
        if sub == 2 and n == 1:
            return f"PcCard(0x{b[0]:x})"
        if sub == 3 and n == 20:
            mtype, start, stop = struct.unpack_from("<IQQ", b)
            return f"MemoryMapped({mtype},0x{start:x},0x{stop:x})"
        if sub == 4 and n >= 16:
            return _vendor("VenHw", b)
        if sub == 5 and n == 4:
            return f"Ctrl(0x{struct.unpack_from('<I', b)[0]:x})"
    elif ntype == 2:  # ACPI
        if sub == 1 and n == 8:
            hid, uid = struct.unpack_from("<II", b)
            if hid == 0x0A0341D0:
                return f"PciRoot(0x{uid:x})"
            if hid == 0x0A0841D0:
                return f"PcieRoot(0x{uid:x})"
            if hid & 0xFFFF == _PNP_SUFFIX:
                return f"Acpi(PNP{hid >> 16:04x},0x{uid:x})"
            return f"Acpi(0x{hid:08x},0x{uid:x})"
        if sub == 3 and n >= 4:
            return f"AcpiAdr(0x{struct.unpack_from('<I', b)[0]:x})"
    elif ntype == 3:  # messaging
        return _messaging(sub, b)
    elif ntype == 4:  # media
        return _media(sub, b)
    elif ntype == 5 and sub == 1 and n >= 4:  # BIOS boot specification
        dev_type, flags = struct.unpack_from("<HH", b)
        desc = b[4:].split(b"\0", 1)[0].decode("ascii", "replace")
        return f"BBS({_BBS_TYPES.get(dev_type, f'0x{dev_type:x}')},{desc},0x{flags:x})"
    return None


def _vendor(name: str, b: bytes) -> str:
    extra = b[16:]
    guid = guid_text(b[:16])
    return f"{name}({guid},{extra.hex()})" if extra else f"{name}({guid})"


def _messaging(sub: int, b: bytes) -> str | None:
    n = len(b)
    if sub == 1 and n == 4:
        primary, slave, lun = struct.unpack_from("<BBH", b)
        return f"Ata({primary},{slave},{lun})"
    if sub == 2 and n == 4:
        pun, lun = struct.unpack_from("<HH", b)
        return f"SCSI({pun},{lun})"
    if sub == 5 and n == 2:
        return f"USB({b[0]},{b[1]})"
    if sub == 10 and n >= 16:
        return _vendor("VenMsg", b)
    if sub == 11 and n == 33:
        iftype = b[32]
        mac = b[:6] if iftype in (0, 1) else b[:32]
        return f"MAC({mac.hex()},{iftype})"
    if sub == 12 and n >= 19:
        local, remote = ipaddress.IPv4Address(b[0:4]), ipaddress.IPv4Address(b[4:8])
        proto = struct.unpack_from("<H", b, 12)[0]
        static = "Static" if b[14] else "DHCP"
        gateway = ipaddress.IPv4Address(b[15:19]) if n >= 23 else ipaddress.IPv4Address(0)
        mask = ipaddress.IPv4Address(b[19:23]) if n >= 23 else ipaddress.IPv4Address(0)
        return f"IPv4({remote},{proto},{static},{local},{gateway},{mask})"
    if sub == 13 and n >= 36:
        local6, remote6 = ipaddress.IPv6Address(b[0:16]), ipaddress.IPv6Address(b[16:32])
        return f"IPv6({remote6},{local6})"
    if sub == 18 and n == 6:
        hba, pm, lun = struct.unpack_from("<HHH", b)
        return f"Sata({hba},{pm},{lun})"
    if sub == 23 and n == 12:
        nsid = struct.unpack_from("<I", b)[0]
        eui = "-".join(f"{x:02x}" for x in reversed(b[4:12]))
        return f"NVMe(0x{nsid:x},{eui})"
    if sub == 24:
        return f"Uri({b.decode('utf-8', 'replace')})"
    return None


def _media(sub: int, b: bytes) -> str | None:
    n = len(b)
    if sub == 1 and n == 38:
        part, start, size = struct.unpack_from("<IQQ", b)
        sig, mbr_type, sig_type = b[20:36], b[36], b[37]
        if sig_type == 2:
            return f"HD({part},GPT,{guid_text(sig)},0x{start:x},0x{size:x})"
        if sig_type == 1:
            mbr_sig = struct.unpack_from("<I", sig)[0]
            return f"HD({part},MBR,0x{mbr_sig:08x},0x{start:x},0x{size:x})"
        return f"HD({part},{mbr_type},0,0x{start:x},0x{size:x})"
    if sub == 2 and n == 20:
        entry, start, size = struct.unpack_from("<IQQ", b)
        return f"CDROM({entry},0x{start:x},0x{size:x})"
    if sub == 3 and n >= 16:
        return _vendor("VenMedia", b)
    if sub == 4:
        return utf16_text(b)
    if sub == 5 and n == 16:
        return f"Media({guid_text(b)})"
    if sub == 6 and n == 16:
        return f"FvFile({guid_text(b)})"
    if sub == 7 and n == 16:
        return f"FvVol({guid_text(b)})"
    if sub == 8 and n == 20:
        _, start, stop = struct.unpack_from("<IQQ", b)
        return f"Offset(0x{start:x},0x{stop:x})"
    return None
