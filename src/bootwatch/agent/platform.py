"""Real machines first: where the TPM and the event log are on a Linux VM.

By default the agent talks to the kernel's resource manager ``/dev/tpmrm0``
(several clients can share it) and falls back to ``/dev/tpm0`` (one client at
a time), and reads the firmware's TCG log from securityfs.  Some Linux VMs
expose an *empty* log (no TPM event log passed by the firmware, or securityfs
not mounted): that is a :class:`~bootwatch.agent.errors.PlatformError` naming
the file, reported as ``PlatformError``, never a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from bootwatch.agent.errors import PlatformError
from bootwatch.protocol.azureguest import MAX_TCG_LOG_BYTES

__all__ = ["SECURITYFS_LOG", "TPM_DEVICES", "default_tcti", "read_event_log"]

SECURITYFS_LOG: Final = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
TPM_DEVICES: Final = (Path("/dev/tpmrm0"), Path("/dev/tpm0"))


def default_tcti(devices: tuple[Path, ...] = TPM_DEVICES) -> str:
    """``device:/dev/tpmrm0``, else ``device:/dev/tpm0``; PlatformError when neither exists."""
    for dev in devices:
        if dev.exists():
            return f"device:{dev}"
    raise PlatformError(
        "no TPM device: neither " + " nor ".join(str(d) for d in devices)
        + " exists (is the vTPM enabled for this VM?)"
    )


def read_event_log(path: Path = SECURITYFS_LOG) -> bytes:
    """The raw TCG log; PlatformError naming the file when it is missing, empty or too big."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TCG_LOG_BYTES + 1)
    except FileNotFoundError:
        raise PlatformError(f"the TCG event log {path} does not exist") from None
    except OSError as exc:
        raise PlatformError(f"cannot read the TCG event log {path}: {exc.strerror}") from None
    if not data:
        raise PlatformError(
            f"the TCG event log {path} is empty (the firmware passed no event log)"
        )
    if len(data) > MAX_TCG_LOG_BYTES:
        raise PlatformError(f"the TCG event log {path} is over {MAX_TCG_LOG_BYTES} bytes")
    return data
