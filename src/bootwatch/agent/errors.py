"""The agent's own error: the platform (TPM device, event log) cannot be used.

Below :class:`~bootwatch.errors.BootwatchError`, so the CLI edge needs to know
only the tree; the daemon turns it into a ``PlatformError`` health report and
an ``error`` provisioning status naming the file or device.
"""

from __future__ import annotations

from bootwatch.errors import BootwatchError

__all__ = ["PlatformError"]


class PlatformError(BootwatchError):
    """No usable TPM device or event log on this machine (the message names which)."""

    code = "platform_error"
