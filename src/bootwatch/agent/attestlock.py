"""One attestation of a VM at a time from this agent: an advisory lock file.

Why.  The monitor keeps a per-VM high-water mark of the TPM quotes it has seen
(:mod:`bootwatch.monitor.freshness`) and raises a high ``quote_replayed`` alert when
an older quote is answered after a newer one.  A daemon cycle and a manual
``bootwatch agent attest`` of the same VM (or two manual runs) could cross in
flight: quote A taken, quote B taken and answered, then A answered -- a replay to
the monitor.  :func:`bootwatch.agent.attestation.attest_once` therefore takes an
exclusive ``flock`` on one lock file before it opens the TPM for the quote and
releases it as soon as the provider's answer (or its failure) is in.

Where (the file is ``attest.lock``, :data:`ATTEST_LOCK`):

- the daemon (``bootwatch agent run``): in its ``state_dir`` (default
  ``/var/lib/bootwatch``, the unit's ``StateDirectory``; writable under
  ``ProtectSystem=strict``);
- ``bootwatch agent attest``: in ``--state-dir`` (or ``BOOTWATCH_AGENT_STATE_DIR``,
  the variable the daemon reads too) when given; else, with ``--lab-vm``, in the lab
  VM's own folder (its TPM state); else in ``/var/lib/bootwatch`` when that directory
  exists (an installed agent: the same file its daemon locks), else in
  ``/run/bootwatch`` (:func:`default_lock_dir`).  An agent whose daemon has another
  ``state_dir`` is kept apart from a manual run only when the run is given that
  directory.

Lab VMs: a fleet of lab VMs in one process runs one daemon per VM, each with its
own state directory, so each has its own lock file and they never wait for each
other.  (Separate processes never share a lab VM anyway: ``Lab.running`` holds the
VM's own lock.)  Two holders in one process exclude each other as two processes do:
each :meth:`AttestLock.hold` opens the file anew, and ``flock`` locks belong to the
open file description, not to the process.

Waiting is bounded (``wait``: the attestation timeout of the configuration): a second
attestation polls for the lock that long, then fails with
:class:`~bootwatch.agent.errors.AttestationBusyError` naming the file.  The lock
object belongs to its caller (the daemon makes one per cycle, the command per run);
nothing here is process-wide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from bootwatch.agent.config import DEFAULT_STATE_DIR
from bootwatch.agent.errors import AttestationBusyError, PlatformError

__all__ = ["ATTEST_LOCK", "RUNTIME_DIR", "AttestLock", "default_lock_dir"]

#: the lock file's name, in the agent's state directory (see the module docstring)
ATTEST_LOCK: Final = "attest.lock"
#: where ``bootwatch agent attest`` locks when no agent is installed (the unit's
#: ``RuntimeDirectory``)
RUNTIME_DIR: Final = Path("/run/bootwatch")
#: the longest pause between two tries while another attestation holds the lock
_MAX_PAUSE: Final = 0.25


def default_lock_dir() -> Path:
    """Where ``bootwatch agent attest`` locks a real TPM without ``--state-dir``: the
    installed agent's state directory when it exists (so a manual run and the daemon
    take the same file), else :data:`RUNTIME_DIR` (runs by hand keep apart from each
    other)."""
    return DEFAULT_STATE_DIR if DEFAULT_STATE_DIR.is_dir() else RUNTIME_DIR


class AttestLock:
    """The exclusive lock one attestation holds from its quote to the provider's answer.

    ``path``: the lock file (created, with its directory, when missing); ``wait``: how
    long :meth:`hold` waits for another holder, in seconds, before it gives up.
    """

    def __init__(self, path: Path, *, wait: float) -> None:
        self.path = path
        self.wait = max(0.0, wait)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the block; :class:`AttestationBusyError` after ``wait``
        seconds of another holder, :class:`PlatformError` when the file cannot be used."""
        fd = self._open()
        try:
            self._acquire(fd)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The lock file, opened read-only: ``flock`` needs no write access, so the
        daemon's user and root (a manual run) can share a file either of them created.
        Why the chmod: a file created under a umask of 077 would lock the other out.

        The directory may be writable by a less trusted identity (the daemon's user owns
        its StateDirectory, which a root ``agent attest`` uses): so never follow a
        symlink (``O_NOFOLLOW``: one to /etc/shadow would have been made world-readable
        by the chmod, a dangling one would have made root create its target), never
        block in open (``O_NONBLOCK``: a FIFO would hang past the wait bound), chmod only
        a file this call created, and refuse anything but a plain file with one link
        (all found in review)."""
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                fd = os.open(self.path, flags)   # ELOOP on a symlink
                created = False
        except OSError as exc:
            raise PlatformError(
                f"cannot open the attestation lock {self.path}: {exc.strerror}; it keeps two "
                "attestations of this VM apart: run as a user that may create it, or give "
                "another state directory (state_dir, --state-dir) shared with the agent's "
                "daemon"
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise PlatformError(f"the attestation lock {self.path} is not a plain file: "
                                "remove it")
        if created:  # only a file this call made: never a file someone pointed us at
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o644)
        return fd

    def _acquire(self, fd: int) -> None:
        """Take the lock on ``fd``, polling (a blocking ``flock`` cannot be bounded
        without a signal, which is process-wide state) for at most ``wait`` seconds."""
        deadline = time.monotonic() + self.wait
        pause = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AttestationBusyError(
                        f"another attestation of this VM (the agent's daemon or a "
                        f"`bootwatch agent attest`) held {self.path} for more than "
                        f"{self.wait:g} s; not attesting now, so that the monitor never sees "
                        "this VM's quotes answered out of order (quote_replayed): try again "
                        "once it has finished"
                    ) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, _MAX_PAUSE)
            except OSError as exc:
                raise PlatformError(
                    f"cannot lock the attestation lock {self.path}: {exc.strerror}; put the "
                    "agent's state directory (state_dir, --state-dir) on a local file system"
                ) from None
