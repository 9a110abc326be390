"""``bootwatch agent run``: attest at start and on every interval, report, keep state.

One *cycle*: read the event log, attest (:func:`bootwatch.agent.attestation.attest_once`),
build a :class:`~bootwatch.protocol.health.HealthReport`, deliver it to the
monitor, write the provisioning status and heartbeat, save the state.  A cycle
ends as a :class:`CycleResult`; ``--once`` exits with its code (0 healthy,
1 unhealthy, 2 platform error).

Timing.  The next cycle is due ``interval`` seconds after the last one, with
uniform jitter of +-``jitter`` (default 1 h +-10 %).  After a failure to
reach a service the agent backs off exponentially from 30 s (capped at the
interval), and a ``Retry-After`` from a 429/5xx is honoured exactly (capped
at 24 h) after a first failure; after repeated failures the backoff is its floor,
so a server answering ``Retry-After: 0`` cannot make the agent loop.  The due
time lives in the state file, so a restart waits too; a restart within a minute
of the last attempt in the same boot waits out that minute, so a crash loop
cannot flood the service.  A failed cycle of an upgrade under trial brings the
next one forward to just past its rollback deadline.

One attestation at a time.  Each cycle holds ``STATE_DIR/attest.lock``
(:mod:`bootwatch.agent.attestlock`) from its quote to the provider's answer, the
file a manual ``bootwatch agent attest`` of this VM takes too; while another
attestation holds it longer than ``timeout`` the cycle ends as a platform error
at hop ``local`` (and backs off), never a crash.

Signals.  SIGTERM/SIGINT: the current step finishes, the rest of the cycle is
abandoned (an unsent report is kept as pending and sent first next time), the
state is saved and the daemon exits 0.  SIGHUP: the configuration is re-read
before the next cycle, which starts at once; a configuration that no longer
loads is refused with a warning status and the old one is kept.

Upgrades.  An :class:`UpgradeHook` (``bootwatch.agent.upgrade``) is told after
each cycle whether it succeeded (healthy and the report not refused) and, when
the configuration has an ``[upgrade]`` table, asked whether it installed a new
version; if so the daemon exits :data:`EXIT_RESTART` for its supervisor to
start the new one.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import pickle
import random
import select
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final, Protocol

from bootwatch.agent.attestation import AttestOutcome, Verdict, attest_once
from bootwatch.agent.attestlock import ATTEST_LOCK, AttestLock
from bootwatch.agent.config import LoadedConfig
from bootwatch.agent.errors import PlatformError
from bootwatch.agent.platform import SECURITYFS_LOG, default_tcti, read_event_log
from bootwatch.agent.proxy import choose_proxy
from bootwatch.agent.sdnotify import Notifier
from bootwatch.agent.state import (
    EPHEMERAL_KEY_CONTEXT,
    AgentState,
    StateStore,
    read_boot_id,
)
from bootwatch.agent.status import (
    ProvisioningStatus,
    StatusReport,
    write_heartbeat,
    write_status,
)
from bootwatch.errors import BootwatchError, ConfigError, ServiceError, TransportError
from bootwatch.protocol.health import (
    FailedHop,
    HealthReport,
    HealthStatus,
    encode_health_report,
)

if TYPE_CHECKING:
    from bootwatch.agent.identity import AikFacts

__all__ = [
    "EXIT_HEALTHY",
    "EXIT_PLATFORM_ERROR",
    "EXIT_RESTART",
    "EXIT_UNHEALTHY",
    "PARENT_PRELOAD",
    "AgentDaemon",
    "CycleResult",
    "UpgradeHook",
    "agent_version",
    "release_memory",
]

EXIT_HEALTHY: Final = 0
EXIT_UNHEALTHY: Final = 1
EXIT_PLATFORM_ERROR: Final = 2
#: the daemon installed a new version: its supervisor restarts it (EX_TEMPFAIL)
EXIT_RESTART: Final = 75
#: first backoff step after a failure to reach a service; doubles up to the interval
BACKOFF_BASE: Final = 30.0
#: a backoff or a Retry-After is waited out plus up to this fraction of it more, at random
RETRY_JITTER: Final = 0.25
#: a restart in the same boot waits this long after the previous attempt
RESTART_GAP: Final = 60.0
#: the heartbeat is rewritten at least this often while waiting
HEARTBEAT_PERIOD: Final = 60.0
#: least seconds between two keep-alives during an upgrade's download and install
KEEPALIVE_PERIOD: Final = 10.0

log = logging.getLogger("bootwatch.agent")

#: what the waiting daemon imports before it forks its first cycle (``cycle_in_child``):
#: modules that cost little memory and much of a fresh child's CPU (bootwatch's own
#: protocol and event-log code, httpx and ssl).  tpm2-pytss and cryptography (with
#: their shared libraries, about 20 MB) stay out: each cycle's child loads them and
#: they go away with it.  tests/agent pins the resulting import set.
PARENT_PRELOAD: Final = (
    "bootwatch.agent.transport",
    "httpcore",  # httpx imports it when the first client is made
    "encodings.idna",
    "bootwatch.agent.report",
    "bootwatch.eventlog.framing",
    "bootwatch.protocol.azureguest",
)


def release_memory() -> None:
    """Give the heap pages Python freed back to the OS (glibc's ``malloc_trim``).

    Python returns freed memory to malloc, but glibc keeps most of it in its arenas,
    where it still counts as the process's resident memory.  A no-op where the C
    library has no ``malloc_trim`` (musl, not Linux).
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    trim(0)


class UpgradeHook(Protocol):
    """What the daemon asks of the upgrade component (bootwatch.agent.upgrade)."""

    def after_cycle(self, succeeded: bool) -> None: ...   # confirm a pending upgrade or roll back after its deadline  # noqa: E501
    def maybe_upgrade(self, next_chance: float | None = None, keepalive: Callable[[], None] | None = None) -> bool: ...  # True: a new version was installed; the daemon exits with EXIT_RESTART so its supervisor restarts it; next_chance: when it asks again; keepalive: call during long steps  # noqa: E501
    def pending_deadline(self) -> float | None: ...       # when a pending upgrade of the running version must confirm; the daemon wakes then after a failed cycle  # noqa: E501


def agent_version() -> str:
    try:
        return version("bootwatch")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


@dataclass(frozen=True)
class CycleResult:
    """How one cycle ended."""

    health: HealthStatus
    status: StatusReport
    outcome: AttestOutcome | None = None
    report: HealthReport | None = None
    #: None: no monitor configured; True: the monitor took it; False: not delivered
    delivered: bool | None = None
    delivery_error: str = ""
    #: the monitor refused the body (400): resending it will not help
    report_refused: bool = False
    abandoned: bool = False
    next_due: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.health is HealthStatus.HEALTHY and self.delivered is not False:
            return EXIT_HEALTHY
        if self.health is HealthStatus.UNHEALTHY:
            return EXIT_UNHEALTHY
        return EXIT_PLATFORM_ERROR

    @property
    def succeeded(self) -> bool:
        """What an upgrade waits for: healthy, and the report not refused by the monitor."""
        return self.health is HealthStatus.HEALTHY and not self.report_refused


@dataclass(frozen=True)
class _Target:
    tcti: str
    log_path: Path
    #: the OS to report: the lab VM's image's os-release, else the machine's
    os_release: Path = Path("/etc/os-release")


class AgentDaemon:
    """The agent's loop; one instance per process (it owns the signal handlers it installs)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        reload: Callable[[], LoadedConfig] | None = None,
        upgrade_hook: UpgradeHook | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        boot_id: Callable[[], str] = read_boot_id,
    ) -> None:
        self.config = loaded.config
        self._reload = reload
        self._hook = upgrade_hook
        self._env = os.environ if environ is None else environ
        self._clock = clock
        self._boot_id = boot_id
        self._wake = threading.Event()
        self._notifier = Notifier(self._env)
        self._last_keepalive = float("-inf")
        self._stop = False
        self._reload_requested = False
        #: why the last SIGHUP reload was refused ("" once one succeeds): kept in the status
        self._reload_refused = ""
        self._rng = random.Random()
        from bootwatch.agent.transport import TlsContexts

        #: the TLS contexts of the provider and the monitor, built once in the idle parent
        self._tls = TlsContexts()
        self.store = StateStore(self.config.state_dir)
        self.version = agent_version()
        for w in loaded.warnings:
            log.warning("%s", w)

    # --- signals -------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop

    def install_signal_handlers(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current step, then stopping", signum)
            self.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP: reloading the configuration before the next cycle")
            self.request_reload()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    # --- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Cycle until stopped; 0 on a clean stop, EXIT_RESTART after an upgrade."""
        self.store.ensure_dir()
        if not self.config.status_path.exists():
            self._write_status(StatusReport(ProvisioningStatus.TRANSITIONING,
                                            "GuestAttestation is starting"))
        with ExitStack() as stack:
            target = self._enter_target(stack)
            if self.config.cycle_in_child:
                self.prepare_parent()
            due = self._first_due(self.store.load())
            while not self._stop:
                if not self._wait_until(due):
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    if self._do_reload():
                        stack.close()
                        target = self._enter_target(stack)
                        if self.config.cycle_in_child:
                            self.prepare_parent()
                if self.config.cycle_in_child:
                    result = self._cycle_in_child(target)
                else:
                    result = self._cycle(target)
                    release_memory()
                due = result.next_due
                # a cycle abandoned for a stop does not start a download and an install
                # under the unit's 30 s stop timeout (found in review)
                ask = (self.config.upgrade is not None and not result.abandoned
                       and not self._stop)
                if self._upgrade_after(result, ask=ask):
                    log.info("a new agent version was installed: exiting %d to restart",
                             EXIT_RESTART)
                    return EXIT_RESTART
                due = self._rollback_due(result, due)
        return 0

    def run_once(self) -> CycleResult:
        """One cycle now (``--once``), whatever the backoff says: an operator asked."""
        self.store.ensure_dir()
        with ExitStack() as stack:
            target = self._enter_target(stack)
            result = self._cycle(target)
        self._upgrade_after(result, ask=False)
        return result

    def _rollback_due(self, result: CycleResult, due: float) -> float:
        """After a failed cycle of a version on trial, the next cycle comes no later than
        just past its rollback deadline (a second chance; failing it rolls back then)."""
        if self._hook is None or result.succeeded:
            return due
        try:
            deadline = self._hook.pending_deadline()
        except (BootwatchError, OSError) as exc:
            log.error("the upgrade component failed (the agent keeps running as it is): %s",
                      exc)
            return due
        now = self._clock()
        if deadline is None or deadline + 1.0 <= now:
            # past it: after_cycle has rolled back (or could not): no tight retry loop
            return due
        at = deadline + 1.0
        if at < due:
            log.info("a failed cycle on an upgrade under trial: next attempt at its rollback "
                     "deadline, in %.0f s", at - now)
            return at
        return due

    def _upgrade_after(self, result: CycleResult, *, ask: bool) -> bool:
        """Tell the upgrade hook how the cycle went and (``ask``) whether it installed a
        new version.  Its own failures (its state file, the install root) are logged, not
        raised: a broken upgrade must not stop the agent attesting and reporting."""
        if self._hook is None:
            return False
        try:
            self._hook.after_cycle(result.succeeded)
            return ask and self._hook.maybe_upgrade(next_chance=result.next_due,
                                                    keepalive=self._keepalive)
        except (BootwatchError, OSError) as exc:  # a full disk, a directory where a link was
            log.error("the upgrade component failed (the agent keeps running as it is): %s",
                      exc)
            return False

    def prepare_parent(self) -> None:
        """Make the waiting daemon ready to fork cheap cycles (``cycle_in_child``).

        Imports :data:`PARENT_PRELOAD` and builds the TLS contexts the cycles will use,
        so each child inherits them instead of paying for them; then collects the
        garbage, gives the freed heap back (:func:`release_memory`) and freezes the
        survivors (``gc.freeze``: a child's collections do not walk the parent's
        objects, and so do not copy their pages).  Idempotent; run() calls it.
        """
        for name in PARENT_PRELOAD:
            importlib.import_module(name)
        cfg = self.config
        for url, ca in ((cfg.url or cfg.shared_provider_url, cfg.ca),
                        (cfg.monitor_url, cfg.monitor_ca)):
            if url:
                with contextlib.suppress(OSError):  # the cycle reports it, naming the hop
                    self._tls.get(ca)
        gc.collect()
        release_memory()
        gc.freeze()

    def _first_due(self, state: AgentState) -> float:
        from bootwatch.agent.transport import MAX_RETRY_AFTER

        now = self._clock()
        due = now
        # no backoff is longer than the interval or a (capped) Retry-After: one further
        # ahead was saved under a clock that was wrong (a VM before NTP), and is ignored
        longest = now + max(self.config.interval, MAX_RETRY_AFTER) * (1 + RETRY_JITTER)
        if state.backoff_until is not None and state.backoff_until <= longest:
            due = max(due, state.backoff_until)
        same_boot = state.boot_id and state.boot_id == self._boot_id()
        if same_boot and state.last_attempt is not None:
            last = min(state.last_attempt, now)  # an attempt "in the future": the same clock
            due = max(due, last + min(RESTART_GAP, self.config.interval))
        if due > now:
            log.info("state file: next attempt in %.0f s (backoff or recent attempt)", due - now)
        return due

    def _wait_until(self, due: float) -> bool:
        """Sleep until ``due`` (heartbeat meanwhile); False when asked to stop."""
        while not self._stop:
            left = due - self._clock()
            if left <= 0 or self._reload_requested:
                return True
            self._heartbeat(f"idle; next attestation in {left:.0f} s")
            self._wake.clear()
            if self._stop or self._reload_requested:
                continue
            self._wake.wait(min(left, HEARTBEAT_PERIOD))
        return False

    def _do_reload(self) -> bool:
        if self._reload is None:
            return False
        try:
            loaded = self._reload()
        except BootwatchError as exc:
            msg = f"configuration reload refused, keeping the previous one: {exc}"
            log.error("%s", msg)
            self._reload_refused = msg
            self._write_status(StatusReport(ProvisioningStatus.WARNING, msg))
            return False
        self._reload_refused = ""
        for w in loaded.warnings:
            log.warning("%s", w)
        self.config = loaded.config
        self.store = StateStore(self.config.state_dir)
        self.store.ensure_dir()
        log.info("configuration reloaded from %s", self.config.source or "the environment")
        return True

    # --- one cycle -------------------------------------------------------------

    def _enter_target(self, stack: ExitStack) -> _Target | PlatformError:
        cfg = self.config
        try:
            if cfg.lab_vm:
                from bootwatch.lab import Lab

                vm = stack.enter_context(Lab(cfg.lab_dir).running(cfg.lab_vm))
                return _Target(vm.tcti, cfg.log or vm.log_path, vm.vm.os_release_path)
            return _Target(cfg.tcti or default_tcti(), cfg.log or SECURITYFS_LOG)
        except PlatformError as exc:
            return exc
        except BootwatchError as exc:
            return PlatformError(str(exc))

    def _cycle_in_child(self, target: _Target | PlatformError) -> CycleResult:
        """One cycle in a forked child: the TPM stack, cryptography and PyJWT are loaded
        there and go away with it, so the idle daemon stays small (what it preloads for
        the children: :meth:`prepare_parent`).  The result comes back pickled over a
        pipe from our own child (same program image, nothing foreign)."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_fd)
                data = pickle.dumps(self._cycle(target))
                with os.fdopen(write_fd, "wb") as out:
                    out.write(data)
                code = 0
            except BaseException:  # the parent reports a child that produced nothing
                log.exception("the cycle process failed")
            finally:
                os._exit(code)
        os.close(write_fd)
        try:
            data, overran = self._read_child(pid, read_fd)
        finally:
            os.close(read_fd)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries already
                continue
        exited_ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if data and not overran and exited_ok:
            # a child killed while writing (OOM, kill -9) leaves a truncated pickle: its
            # cycle failed, the daemon goes on (it ended with a traceback; found in review)
            with contextlib.suppress(pickle.UnpicklingError, EOFError, ValueError,
                                     AttributeError, ImportError, IndexError, TypeError):
                result = pickle.loads(data)  # noqa: S301 - our own child's output
                if isinstance(result, CycleResult):
                    return result
        if overran:
            how = (f"did not finish within cycle_timeout ({self.config.cycle_timeout:g} s) "
                   "and was killed: a TPM command or a network peer did not answer (the "
                   "agent's log has how far it got)")
        elif os.WIFSIGNALED(status):
            how = f"was killed by signal {os.WTERMSIG(status)}"
        elif not exited_ok:
            how = f"exited {os.waitstatus_to_exitcode(status)}"
        else:
            how = "exited without a readable result"
        outcome = AttestOutcome(Verdict.PLATFORM_ERROR, f"the cycle process {how}",
                                step=FailedHop.LOCAL.value)
        message = f"GuestAttestation provisioning failed: {outcome.reason}"
        status_report = StatusReport(ProvisioningStatus.ERROR, message, code=1)
        self._write_status(status_report)
        log.error("%s", message)
        due = self._clock() + min(self.config.interval, BACKOFF_BASE)
        return CycleResult(health=HealthStatus.PLATFORM_ERROR, status=status_report,
                           outcome=outcome, next_due=due)

    def _read_child(self, pid: int, fd: int) -> tuple[bytes, bool]:
        """The child's pickled result, read until it closes the pipe; and whether it
        overran ``cycle_timeout`` (it is then killed, and what it sent is dropped).

        Why a deadline: the parent used to block on the pipe for as long as the child
        lived, so one TPM command or peer that never answered stopped the daemon attesting
        for good, silently (only the monitor's stale window noticed).  The heartbeat is
        kept up while the cycle runs."""
        started = time.monotonic()
        deadline = started + self.config.cycle_timeout
        chunks: list[bytes] = []
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                log.error("the cycle process ran longer than cycle_timeout (%g s): killed",
                          self.config.cycle_timeout)
                return b"", True
            if not poller.poll(int(min(left, HEARTBEAT_PERIOD) * 1000) + 1):
                self._heartbeat(f"cycle running for {time.monotonic() - started:.0f} s")
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)

    def _cycle(self, target: _Target | PlatformError) -> CycleResult:
        cfg = self.config
        now = self._clock()
        state = self.store.load().after_boot(self._boot_id())
        for w in self.store.warnings:
            log.warning("%s", w)
        self.store.warnings.clear()
        url = cfg.url or cfg.shared_provider_url or ""
        outcome: AttestOutcome | None = None
        try:
            if isinstance(target, PlatformError):
                raise target
            tcg_log = read_event_log(target.log_path)
            url = cfg.attestation_url
            proxy = choose_proxy(url, configured=cfg.proxy, configured_no_proxy=cfg.no_proxy,
                                 environ=self._env)
            from bootwatch.agent.evidence import read_os_info

            outcome = attest_once(target.tcti, tcg_log, url, ca=cfg.ca,
                                  os_info=read_os_info(target.os_release),
                                  pcr_indices=cfg.pcrs, proxy=proxy.url, timeout=cfg.timeout,
                                  key_cache=cfg.state_dir / EPHEMERAL_KEY_CONTEXT,
                                  tls=self._tls, lock=self._attest_lock())
        except BootwatchError as exc:
            outcome = AttestOutcome(Verdict.PLATFORM_ERROR, str(exc), step=FailedHop.LOCAL.value)
        from bootwatch.agent.identity import aik_facts

        aik = aik_facts(outcome.aik_cert)
        report = self._health_report(outcome, state, url, aik)
        delivered: bool | None = None
        delivery_error = ""
        refused = False
        retry_after = outcome.retry_after
        body = encode_health_report(report)
        if cfg.monitor_url:
            if self._stop:
                self.store.save_pending(body)
                delivered, delivery_error = False, "abandoned (stopping); kept as pending"
            else:
                delivered, delivery_error, refused, monitor_retry = self._deliver(body)
                if monitor_retry is not None:
                    retry_after = max(retry_after or 0.0, monitor_retry)
        status = self._status_for(outcome, aik, delivered, delivery_error, now, url)
        if self._reload_refused:
            # the cycle a refused SIGHUP starts must not hide the refusal: the operator
            # would read a success for a file the agent does not use
            kept = (ProvisioningStatus.WARNING if status.status is ProvisioningStatus.SUCCESS
                    else status.status)
            status = StatusReport(kept, f"{status.message}; {self._reload_refused}",
                                  code=status.code)
        failing = outcome.verdict in (Verdict.UNREACHABLE, Verdict.PLATFORM_ERROR) or (
            delivered is False and not refused)
        failures = state.consecutive_failures + 1 if failing else 0
        if retry_after is not None:
            # counted from when the answer came, not from the start of the cycle; honoured
            # exactly after one failure, and never shorter than the backoff once failures
            # repeat (a "Retry-After: 0" on every answer must not become a tight loop)
            floor = (min(cfg.interval, BACKOFF_BASE * 2 ** min(failures - 2, 30))
                     if failures > 1 else 0.0)
            # never earlier than asked, up to RETRY_JITTER later: a fleet behind one address
            # that was answered 429 all at once came back all at once, in waves (found in
            # an audit)
            wait = max(retry_after, floor)
            next_due = self._clock() + wait * (1 + self._rng.uniform(0, RETRY_JITTER))
        elif failing:
            # the exponent is bounded: 2 ** 1024 no longer fits a float (OverflowError after
            # about a thousand failed cycles), and 2 ** 30 steps are past any interval
            # already; jittered like the Retry-After, within the interval
            step = BACKOFF_BASE * 2 ** min(failures - 1, 30)
            next_due = now + min(cfg.interval,
                                 step * (1 + self._rng.uniform(0, RETRY_JITTER)))
        else:
            spread = cfg.interval * cfg.jitter
            next_due = now + cfg.interval + self._rng.uniform(-spread, spread)
        state = replace(
            state,
            last_attempt=now,
            last_success=now if outcome.health is HealthStatus.HEALTHY else state.last_success,
            last_health=outcome.health.value,
            consecutive_failures=failures,
            backoff_until=next_due if (failing or retry_after is not None) else None,
            cycles=state.cycles + 1,
        )
        self.store.save(state)
        self._write_status(status)
        self._heartbeat(f"cycle {state.cycles} done: {outcome.health.value}")
        level = logging.INFO if status.status is ProvisioningStatus.SUCCESS else logging.WARNING
        log.log(level, "%s", status.message)
        return CycleResult(
            health=outcome.health, status=status, outcome=outcome, report=report,
            delivered=delivered, delivery_error=delivery_error, report_refused=refused,
            abandoned=self._stop, next_due=next_due,
        )

    def _attest_lock(self) -> AttestLock:
        """This cycle's attestation lock: in the state directory (per VM: each lab VM of a
        fleet has its own), waiting at most the configured ``timeout`` for another
        attestation of this VM.  Made per cycle: a SIGHUP may change both."""
        return AttestLock(self.config.state_dir / ATTEST_LOCK, wait=self.config.timeout)

    def _health_report(self, outcome: AttestOutcome, state: AgentState, url: str,
                       aik: AikFacts) -> HealthReport:
        from bootwatch.agent.identity import resolve_vm_id

        health = outcome.health
        hop: FailedHop | None = None
        if health is HealthStatus.PLATFORM_ERROR and outcome.step:
            with contextlib.suppress(ValueError):
                hop = FailedHop(outcome.step)
        return HealthReport(
            report_id=str(uuid.uuid4()),
            vm_id=resolve_vm_id(aik, self.config.vm_id),
            health_status=health,
            time=datetime.fromtimestamp(self._clock(), UTC),
            agent_version=self.version,
            boot_counter=state.boot_counter,
            attestation_token=outcome.token if health is HealthStatus.HEALTHY else None,
            attestation_status_message=(outcome.reason if health is not
                                        HealthStatus.PLATFORM_ERROR else "")[:2048],
            platform_error_message=(outcome.reason if health is
                                    HealthStatus.PLATFORM_ERROR else "")[:2048],
            attestation_uri=url[:2048],
            failed_hop=hop,
            failed_target=(outcome.target or "")[:512] if hop else "",
        )

    def _deliver(self, body: bytes) -> tuple[bool, str, bool, float | None]:
        """(delivered, error, refused, retry_after); keeps the body pending until taken."""
        from bootwatch.agent.report import MonitorClient

        cfg = self.config
        assert cfg.monitor_url
        # a report an earlier cycle could not deliver (monitor busy, a stop) goes first, so
        # the monitor sees every outcome in order; it is dropped only once taken or refused
        earlier = self.store.load_pending()
        try:
            proxy = choose_proxy(cfg.monitor_url, configured=cfg.proxy,
                                 configured_no_proxy=cfg.no_proxy, environ=self._env)
        except ConfigError as exc:  # a proxy setting that is not an http(s) URL (redacted)
            self.store.save_pending(body)
            return False, f"health report not delivered to {cfg.monitor_url}: {exc}", \
                False, None
        try:
            with MonitorClient(cfg.monitor_url, ca=cfg.monitor_ca, proxy=proxy.url,
                               timeout=cfg.timeout, tls=self._tls) as client:
                if earlier and earlier != body:
                    try:
                        client.send_body(earlier)
                    except ServiceError as exc:
                        log.warning("the pending health report was refused, dropped: %s", exc)
                self.store.save_pending(body)
                delivery = client.send_body(body)
        except ServiceError as exc:
            self.store.clear_pending()
            return False, str(exc), True, None
        except TransportError as exc:
            self.store.save_pending(body)  # the newest replaces an earlier one still unsent
            return False, f"health report not delivered to {cfg.monitor_url}: {exc.detail}", \
                False, exc.retry_after
        self.store.clear_pending()
        log.debug("report %s %s", delivery.report_id,
                  "stored" if delivery.stored else "was a duplicate")
        return True, "", False, None

    def _status_for(self, outcome: AttestOutcome, aik: AikFacts, delivered: bool | None,
                    delivery_error: str, now: float, url: str) -> StatusReport:
        health = outcome.health
        if health is HealthStatus.PLATFORM_ERROR:
            return StatusReport(ProvisioningStatus.ERROR,
                                f"GuestAttestation provisioning failed: {outcome.reason}", code=1)
        if health is HealthStatus.UNHEALTHY:
            code = f" [{outcome.error_code}]" if outcome.error_code else ""
            return StatusReport(ProvisioningStatus.WARNING,
                                f"GuestAttestation attestation failed: VM is Unhealthy{code}: "
                                f"{outcome.reason}")
        if delivered is False:
            return StatusReport(ProvisioningStatus.WARNING,
                                f"GuestAttestation attested (Healthy) but {delivery_error}")
        if aik.not_after is not None:
            days = (aik.not_after.timestamp() - now) / 86400
            if days < self.config.aik_renewal_days:
                when = aik.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
                return StatusReport(
                    ProvisioningStatus.WARNING,
                    f"GuestAttestation attested (Healthy) but the AIK certificate expires on "
                    f"{when} (in {max(days, 0):.0f} days, under the "
                    f"{self.config.aik_renewal_days}-day renewal threshold): renew it",
                )
        return StatusReport(ProvisioningStatus.SUCCESS,
                            f"GuestAttestation provisioning succeeded: attested Healthy with {url}"
                            + ("" if delivered is None else "; health report delivered"))

    # --- files -----------------------------------------------------------------

    def _write_status(self, status: StatusReport) -> None:
        try:
            write_status(self.config.status_path, status)
        except OSError as exc:
            log.error("cannot write the status file %s: %s", self.config.status_path,
                      exc.strerror)

    def _keepalive(self) -> None:
        """The heartbeat and the watchdog keep-alive during an upgrade's long steps, at
        most every KEEPALIVE_PERIOD seconds (a download calls it for each chunk)."""
        now = time.monotonic()
        if now - self._last_keepalive >= KEEPALIVE_PERIOD:
            self._heartbeat("checking for or installing an agent upgrade")

    def _heartbeat(self, message: str) -> None:
        # the systemd watchdog's keep-alive goes with every heartbeat: the unit's
        # WatchdogSec restarts a daemon that stops beating (bootwatch.agent.sdnotify)
        self._last_keepalive = time.monotonic()
        self._notifier.watchdog()
        try:
            write_heartbeat(self.config.heartbeat_path, message)
        except OSError as exc:
            log.error("cannot write the heartbeat file %s: %s", self.config.heartbeat_path,
                      exc.strerror)
