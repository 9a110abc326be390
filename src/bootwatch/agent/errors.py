"""The agent's own error: the platform (TPM device, event log) cannot be used.

Below :class:`~bootwatch.errors.BootwatchError`, so the CLI edge needs to know
only the tree; the daemon turns it into a ``PlatformError`` health report and
an ``error`` provisioning status naming the file or device.
"""

from __future__ import annotations

from bootwatch.errors import BootwatchError

__all__ = ["AttestationBusyError", "PlatformError"]


class PlatformError(BootwatchError):
    """No usable TPM device or event log on this machine (the message names which)."""

    code = "platform_error"


class AttestationBusyError(PlatformError):
    """Another attestation of this VM (a daemon cycle, a ``bootwatch agent attest``) held
    the attestation lock (:mod:`bootwatch.agent.attestlock`) longer than the wait bound;
    the message names the lock file.  A platform error, not a verdict on the VM: the
    daemon reports this cycle as ``PlatformError`` (hop ``local``) and retries after its
    backoff."""

    code = "attestation_busy"
