"""systemd's service notification: ``WATCHDOG=1`` keep-alives over ``$NOTIFY_SOCKET``.

Why: the unit asks systemd to watch the daemon (``WatchdogSec=``).  A daemon that stops
sending keep-alives, because it hangs (a new release stuck before its first cycle, a
deadlock), is killed and restarted by systemd like one that crashed, so the unit's
pre-start guard counts the start and rolls a hung release back (docs/upgrade.md).  Before
this, a release that hung without exiting stayed until someone restarted the service.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket); without the variable,
nothing is sent (the daemon runs outside systemd, or without a watchdog).  ``WATCHDOG_PID``,
when set, names the process systemd expects keep-alives from: a forked cycle child never
sends on the daemon's behalf.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """Sends notifications to systemd when the environment names a socket."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        #: the socket address (None: not under systemd's notification protocol)
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self.address = raw
        pid = env.get("WATCHDOG_PID", "")
        #: the only process that may send keep-alives (None: any)
        self.pid = int(pid) if pid.isdigit() else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send ``state`` (``KEY=VALUE`` lines); True when it was sent.  Failures are
        not errors: a keep-alive that cannot be sent only means systemd may restart us."""
        if self.address is None or (self.pid is not None and self.pid != os.getpid()):
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(state.encode(), self.address)
        except OSError:
            return False
        return True

    def watchdog(self) -> bool:
        """One keep-alive."""
        return self.notify("WATCHDOG=1")
