"""The OS a lab VM runs: an os-release file derived from its boot log, or given.

A lab VM is booted from a real machine's TCG log, so the agent attesting it must
report that machine's OS, not the lab host's ``/etc/os-release`` (a COS VM whose
token says ``x-ms-azurevm-osdistro: Debian GNU/Linux`` misleads every reader).
The lab writes ``vms/NAME/os-release`` at creation and the agent reads it for
``--lab-vm``.

Derivation (documented choice; override with ``bootwatch lab vm create
--os-release FILE``):

* the distribution comes from what the firmware measured: the EFI path of the
  boot applications (``\\EFI\\ubuntu\\shimx64.efi``, ``grub-lakitu.efi`` of COS,
  ``\\EFI\\Microsoft\\Boot\\bootmgfw.efi``, SIPA event tags in PCRs 12-14 of
  Windows' boot manager), the boot option descriptions
  (``Red Hat Enterprise Linux``, ``debian``) and the kernel command line
  (``cros_efi``, ``vmlinuz-linux``);
* the version from the kernel file name when it carries one (``el8_3`` -> 8.3),
  else from the log's file name when it names that distribution followed by a
  number (``cos-101-amd-sev.bin`` -> 101, ``ubuntu-2104-...`` -> 21.04);
* nothing recognised: a generic ``NAME=Linux`` (what an agent without
  os-release sends), and the source says so.

``ID=windows`` marks a Windows image; the agent then reports ``ostype`` Windows, as
a Windows guest's agent would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bootwatch.errors import BootwatchError, InputError

__all__ = [
    "MAX_OS_RELEASE_BYTES",
    "OsRelease",
    "check_os_release",
    "derive_os_release",
    "parse_os_release",
]

#: EV_EVENT_TAG, and the PCRs Windows' boot manager tags its SIPA events into
_EV_EVENT_TAG = 0x00000006
_SIPA_PCRS = (12, 13, 14)
#: Largest os-release file accepted (real ones are under 1 KiB).
MAX_OS_RELEASE_BYTES = 64 * 1024


@dataclass(frozen=True)
class OsRelease:
    """An os-release file's text and where its content came from."""

    text: str
    source: str

    @property
    def fields(self) -> dict[str, str]:
        return parse_os_release(self.text)

    @property
    def name(self) -> str:
        f = self.fields
        version = f.get("VERSION_ID", "")
        return f"{f.get('NAME', 'Linux')}{' ' + version if version else ''}"


@dataclass(frozen=True)
class _Distro:
    name: str
    id: str
    #: lowercase substrings of boot application paths, boot options or the command line
    marks: tuple[str, ...]
    #: how the log's file name spells the distribution (before its version number)
    file_word: str


_DISTROS = (
    _Distro("Container-Optimized OS", "cos", ("grub-lakitu", "cros_efi", "/syslinux/vmlinuz.a"),
            "cos"),
    _Distro("Windows", "windows", ("\\efi\\microsoft\\boot\\bootmgfw.efi",
                                   "windows boot manager", "sipa events in pcr 12-14"),
            "windows"),
    _Distro("Ubuntu", "ubuntu", ("\\efi\\ubuntu\\",), "ubuntu"),
    _Distro("Red Hat Enterprise Linux", "rhel", ("\\efi\\redhat\\", "red hat enterprise linux"),
            "rhel"),
    _Distro("Debian GNU/Linux", "debian", ("\\efi\\debian\\", "debian"), "debian"),
    _Distro("Arch Linux", "arch", ("vmlinuz-linux", "initramfs-linux"), "arch"),
)


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=VALUE lines of an os-release file (quotes removed, comments skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, val = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = val.strip().strip('"').strip("'")
    return values


def check_os_release(data: bytes, where: str) -> str:
    """The text of a user-given os-release file, or an InputError saying what is wrong."""
    if len(data) > MAX_OS_RELEASE_BYTES:
        raise InputError(f"{where}: over {MAX_OS_RELEASE_BYTES} bytes; not an os-release file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 (byte offset {exc.start})") from None
    if "NAME" not in parse_os_release(text):
        raise InputError(f"{where}: no NAME= line; not an os-release file")
    return text


def _version(distro: _Distro, evidence: str, file_name: str) -> tuple[str, str]:
    if distro.id == "rhel":
        m = re.search(r"\.el(\d+)(?:_(\d+))?", evidence)
        if m:
            v = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
            return v, f"version {v} from the kernel file name"
    m = re.search(rf"(?:^|[^a-z]){re.escape(distro.file_word)}-?(\d+)", file_name.lower())
    if not m:
        return "", "no version in the log"
    digits = m.group(1)
    v = f"{digits[:2]}.{digits[2:]}" if distro.id == "ubuntu" and len(digits) == 4 else digits
    return v, f"version {v} from the log's file name {file_name}"


def derive_os_release(log: bytes, file_name: str) -> OsRelease:
    """The os-release of the image that wrote ``log`` (see the module docstring)."""
    from bootwatch.eventlog import parse_log
    from bootwatch.eventlog.state import extract_boot_state

    try:
        parsed = parse_log(log)
        state = extract_boot_state(parsed)
    except BootwatchError:
        return OsRelease('NAME="Linux"\nID=linux\n',
                         "generic Linux: the log's boot state is unreadable")
    places = [a.device_path or "" for a in state.boot_applications]
    places += [o.description or "" for o in state.boot_options]
    places.append(state.kernel_cmdline or "")
    if any(e.event_type == _EV_EVENT_TAG and e.pcr in _SIPA_PCRS for e in parsed.events):
        # Windows' boot manager logs its boot configuration (SIPA) in PCRs 12-14
        places.append("sipa events in pcr 12-14")
    for distro in _DISTROS:
        for place in places:
            hit = next((m for m in distro.marks if m in place.lower()), None)
            if hit is None:
                continue
            version, how = _version(distro, " ".join(places), file_name)
            lines = [f'NAME="{distro.name}"', f"ID={distro.id}"]
            if version:
                lines.append(f'VERSION_ID="{version}"')
            source = f"derived from the log: {distro.name} ({hit!r} measured); {how}"
            return OsRelease("\n".join(lines) + "\n", source)
    return OsRelease('NAME="Linux"\nID=linux\n',
                     "generic Linux: nothing in the log names the distribution")
