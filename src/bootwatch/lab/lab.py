"""The lab: a folder of simulated Trusted Launch VMs, each a swtpm state directory.

Layout under the lab root (``$BOOTWATCH_LAB_DIR``, else
``$XDG_DATA_HOME/bootwatch/lab``, else ``~/.local/share/bootwatch/lab``)::

    ca/                 trust-anchors.pem (issuer + root), root.pem, issuer.pem, keys (0600)
    ek-ca/              the same for the EK CA (the lab vTPMs' "manufacturer")
    vms/NAME/vm.json    name, VM id, boot facts, log adjustments, boot count, OS and its source
    vms/NAME/eventlog.bin, ek.pem, aik.pem (absent with --no-aik-cert), state/, lock
    vms/NAME/os-release the OS of the image the log came from (see lab/osrelease.py);
                        the agent reports it for ``--lab-vm``

A VM's swtpm runs only inside :meth:`Lab.running`: started on demand,
stopped (volatile state saved, so PCRs and the null seed survive) when the
block ends.  A VM whose volatile state is missing is booted again from its log
(a reboot: new null seed, PCRs replayed).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss.constants import ESYS_TR

from bootwatch.agent.tpm import digest_values, open_tpm, read_pcrs, tpm_call
from bootwatch.errors import LabError
from bootwatch.lab.ca import LabCa, load_or_create_ca
from bootwatch.lab.osrelease import OsRelease, check_os_release, derive_os_release
from bootwatch.lab.provision import (
    LAB_BANKS,
    BootPlan,
    allocate_banks,
    boot,
    plan_boot,
    provision_identity,
)
from bootwatch.lab.serve import MssimRelay
from bootwatch.lab.swtpm import SwtpmProcess

__all__ = [
    "LAB_DIR_ENV",
    "MAX_LOG_BYTES",
    "Lab",
    "LabVm",
    "RunningVm",
    "default_lab_root",
]

#: Environment variable overriding the lab root.
LAB_DIR_ENV = "BOOTWATCH_LAB_DIR"
#: Largest event log a lab VM accepts.
MAX_LOG_BYTES = 16 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_VOLATILE = "tpm2-00.volatilestate"
_LOCK_TIMEOUT = 120.0


def default_lab_root() -> Path:
    """``$BOOTWATCH_LAB_DIR``, else ``$XDG_DATA_HOME/bootwatch/lab``, else ~/.local/share/..."""
    env = os.environ.get(LAB_DIR_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "bootwatch" / "lab"


@dataclass(frozen=True)
class LabVm:
    """A lab VM as stored on disk (not necessarily running)."""

    name: str
    path: Path
    vm_id: str
    created: str
    log_sha256: str
    startup_locality: int
    hcrtm: bool
    #: changes made to the VM's copy of the log so it can be reproduced (see plan_boot)
    log_adjustments: tuple[str, ...]
    #: how many times the VM has booted (1 after create; +1 per ``reboot_vm``)
    boot_count: int = 1
    #: the OS of the image the log came from, e.g. "Container-Optimized OS 101"
    os_name: str = "Linux"
    #: where os_name came from (derived from the log, or the file the user gave)
    os_source: str = "unknown (created before lab VMs recorded their OS)"

    @property
    def log_path(self) -> Path:
        """The VM's event log (what its firmware "wrote"): give it to the collector."""
        return self.path / "eventlog.bin"

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def os_release_path(self) -> Path:
        """The VM's os-release (the image's OS); the agent reads it for ``--lab-vm``."""
        return self.path / "os-release"

    @property
    def ek_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.path / "ek.pem").read_bytes())

    @property
    def aik_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.path / "aik.pem").read_bytes())

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "vm_id": self.vm_id,
            "created": self.created,
            "log_sha256": self.log_sha256,
            "startup_locality": self.startup_locality,
            "hcrtm": self.hcrtm,
            "log_adjustments": list(self.log_adjustments),
            "boot_count": self.boot_count,
            "os": self.os_name,
            "os_source": self.os_source,
            "path": str(self.path),
        }


class RunningVm:
    """A lab VM whose swtpm is up: its TCTI and a few platform-side actions."""

    def __init__(self, vm: LabVm, swtpm: SwtpmProcess) -> None:
        self.vm = vm
        self._swtpm = swtpm

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-pytss / tpm2-tools, e.g. ``swtpm:host=127.0.0.1,port=N``."""
        return self._swtpm.tcti

    @property
    def log_path(self) -> Path:
        return self.vm.log_path

    def extend_pcr(self, pcr: int, data: bytes) -> None:
        """Measure ``data`` into ``pcr`` of every bank (SHA-1 and SHA-256), as an OS would."""
        values = digest_values(
            {alg: hashlib.new(name, data).digest() for alg, name in LAB_BANKS.items()}
        )
        with open_tpm(self.tcti) as esys, tpm_call(f"PCR_Extend {pcr}"):
            esys.pcr_extend(ESYS_TR(pcr), values)

    def read_pcrs(self, indices: Sequence[int] = tuple(range(24)), alg: str = "sha256"
                  ) -> dict[int, bytes]:
        with open_tpm(self.tcti) as esys:
            return read_pcrs(esys, indices, alg)

    def mssim_relay(self, port: int) -> MssimRelay:
        """A relay serving this vTPM in the mssim framing on ``port`` and ``port + 1``."""
        return MssimRelay(self._swtpm, port)

    def reboot(self) -> None:
        """A TPM reset and a boot from the VM's log: PCRs replayed, new null seed."""
        plan, _, _ = plan_boot(self.vm.log_path.read_bytes())
        boot(self._swtpm, plan)


class Lab:
    """A lab folder: CA + VMs.  ``Lab()`` uses :func:`default_lab_root`."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_lab_root()
        self._ca: LabCa | None = None
        self._ek_ca: LabCa | None = None

    # --- CA ----------------------------------------------------------------

    @property
    def ca(self) -> LabCa:
        if self._ca is None:
            self._ca = load_or_create_ca(self.root / "ca")
        return self._ca

    @property
    def ca_cert_path(self) -> Path:
        """PEM bundle (lab issuer + root CA): the trust anchors for lab AIK certificates."""
        return self.ca.trust_anchors_path

    @property
    def ek_ca(self) -> LabCa:
        """The CA that issues lab vTPMs' EK certificates, as a TPM maker does."""
        if self._ek_ca is None:
            self._ek_ca = load_or_create_ca(self.root / "ek-ca",
                                            label="bootwatch lab EK manufacturer")
        return self._ek_ca

    @property
    def ek_ca_cert_path(self) -> Path:
        """PEM bundle (EK issuer + root): what a provider needs as --ek-trust-anchors."""
        return self.ek_ca.trust_anchors_path

    # --- VMs ---------------------------------------------------------------

    def _vm_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise LabError(
                f"invalid VM name {name!r}: use letters, digits, '.', '_' or '-' (max 63)"
            )
        return self.root / "vms" / name

    def create_vm(self, name: str, log_path: Path | str, *, vm_id: str | None = None,
                  aik_cert: bool = True, os_release: Path | str | None = None) -> LabVm:
        """Provision a new vTPM and boot it from ``log_path`` (a real TCG event log).

        Without ``aik_cert`` the vTPM gets only its EK and EK certificate (from the EK
        CA), as a KVM host makes it; ``bootwatch agent enroll`` then gets it an AIK
        certificate from a provider.  The VM's OS is derived from the log
        (lab/osrelease.py) unless ``os_release`` names an os-release file to use instead.
        """
        path = self._vm_dir(name)
        if path.exists():
            raise LabError(f"lab VM {name!r} already exists in {path.parent}")
        log_file = Path(log_path)
        try:
            size = log_file.stat().st_size
            if size > MAX_LOG_BYTES:
                raise LabError(f"{log_file}: {size} bytes, limit {MAX_LOG_BYTES}")
            log = log_file.read_bytes()
        except OSError as exc:
            raise LabError(f"cannot read the event log {log_file}: {exc.strerror}") from exc
        plan, vm_log, notes = plan_boot(log)
        if os_release is not None:
            given = Path(os_release)
            try:
                with given.open("rb") as fh:
                    raw = fh.read(64 * 1024 + 1)
            except OSError as exc:
                raise LabError(f"cannot read the os-release file {given}: {exc.strerror}"
                               ) from exc
            osr = OsRelease(check_os_release(raw, str(given)), f"given: {given}")
        else:
            osr = derive_os_release(log, log_file.name)
        ca, ek_ca = self.ca, self.ek_ca
        vm_uuid = vm_id or str(uuid.uuid4())
        (path / "state").mkdir(parents=True)
        try:
            (path / "eventlog.bin").write_bytes(vm_log)
            (path / "os-release").write_text(osr.text, encoding="utf-8")
            swtpm = SwtpmProcess.start(path / "state")
            try:
                swtpm.init()
                swtpm.startup_clear()
                with open_tpm(swtpm.tcti) as esys:
                    allocate_banks(esys)
                    ident = provision_identity(esys, ca, name, vm_uuid, ek_ca=ek_ca,
                                               aik_cert=aik_cert)
                boot(swtpm, plan)
                _check_booted(swtpm, plan)
            finally:
                swtpm.stop(save=True)
            pem = serialization.Encoding.PEM
            (path / "ek.pem").write_bytes(ident.ek_cert.public_bytes(pem))
            if ident.aik_cert is not None:
                (path / "aik.pem").write_bytes(ident.aik_cert.public_bytes(pem))
            vm = LabVm(
                name=name,
                path=path,
                vm_id=vm_uuid,
                created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                log_sha256=hashlib.sha256(vm_log).hexdigest(),
                startup_locality=plan.startup_locality,
                hcrtm=plan.hcrtm_data is not None,
                log_adjustments=notes,
                os_name=osr.name,
                os_source=osr.source,
            )
            (path / "vm.json").write_text(json.dumps(vm.to_json(), indent=2) + "\n")
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return vm

    def get_vm(self, name: str) -> LabVm:
        path = self._vm_dir(name)
        meta = path / "vm.json"
        if not meta.is_file():
            raise LabError(f"no lab VM named {name!r} in {self.root}")
        try:
            d = json.loads(meta.read_text())
            return LabVm(
                name=str(d["name"]),
                path=path,
                vm_id=str(d["vm_id"]),
                created=str(d["created"]),
                log_sha256=str(d["log_sha256"]),
                startup_locality=int(d["startup_locality"]),
                hcrtm=bool(d["hcrtm"]),
                log_adjustments=tuple(str(x) for x in d.get("log_adjustments", [])),
                boot_count=int(d.get("boot_count", 1)),
                **({"os_name": str(d["os"]), "os_source": str(d.get("os_source", ""))}
                   if "os" in d else {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{meta} is damaged: {exc}") from exc

    def reboot_vm(self, name: str, log_path: Path | str | None = None) -> LabVm:
        """Boot VM ``name`` again: same vTPM (EK, AIK, NV), PCRs reset by a TPM reset
        (TPM2_Startup(CLEAR) after _TPM_Init with no saved state, so the quote's
        resetCount grows) and re-extended from its log, or from ``log_path`` (an
        updated or tampered image) which then becomes the VM's log."""
        vm = self.get_vm(name)
        new_log: bytes | None = None
        if log_path is not None:
            log_file = Path(log_path)
            try:
                if log_file.stat().st_size > MAX_LOG_BYTES:
                    raise LabError(f"{log_file}: larger than {MAX_LOG_BYTES} bytes")
                new_log = log_file.read_bytes()
            except OSError as exc:
                raise LabError(f"cannot read the event log {log_file}: {exc.strerror}") from exc
        with _vm_lock(vm.path, blocking=False):
            raw = new_log if new_log is not None else vm.log_path.read_bytes()
            plan, vm_log, notes = plan_boot(raw)
            (vm.state_dir / _VOLATILE).unlink(missing_ok=True)
            swtpm = SwtpmProcess.start(vm.state_dir)
            try:
                boot(swtpm, plan)
                _check_booted(swtpm, plan)
            finally:
                swtpm.stop(save=True)
            os_name, os_source = vm.os_name, vm.os_source
            if new_log is not None:
                vm.log_path.write_bytes(vm_log)
                if not os_source.startswith("given:"):
                    # another image: its OS is the VM's now (an os-release the user
                    # gave at creation stays theirs)
                    osr = derive_os_release(new_log, Path(log_path or "").name)
                    vm.os_release_path.write_text(osr.text, encoding="utf-8")
                    os_name, os_source = osr.name, osr.source
            rebooted = LabVm(
                name=vm.name, path=vm.path, vm_id=vm.vm_id, created=vm.created,
                log_sha256=hashlib.sha256(vm_log).hexdigest() if new_log is not None
                else vm.log_sha256,
                startup_locality=plan.startup_locality, hcrtm=plan.hcrtm_data is not None,
                log_adjustments=notes if new_log is not None else vm.log_adjustments,
                boot_count=vm.boot_count + 1,
                os_name=os_name, os_source=os_source,  # vm.json keeps the image's OS
            )
            meta = vm.path / "vm.json"
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(rebooted.to_json(), indent=2) + "\n")
            tmp.replace(meta)
        return rebooted

    def list_vms(self) -> list[LabVm]:
        base = self.root / "vms"
        if not base.is_dir():
            return []
        return [self.get_vm(p.name) for p in sorted(base.iterdir()) if (p / "vm.json").is_file()]

    def destroy_vm(self, name: str) -> None:
        """Delete a VM (refused while another process has it running)."""
        vm = self.get_vm(name)
        with _vm_lock(vm.path, blocking=False):
            shutil.rmtree(vm.path)

    @contextmanager
    def running(self, name: str) -> Iterator[RunningVm]:
        """The VM's swtpm, started for the block and stopped (state saved) after it.

        Nested use in one process shares the instance; another process waits
        for the VM (swtpm serves one connection at a time anyway).
        """
        vm = self.get_vm(name)
        key = str(vm.path.resolve())
        with _registry_lock:
            entry = _running.get(key)
            if entry is not None:
                entry.refs += 1
        if entry is not None:
            try:
                yield RunningVm(vm, entry.swtpm)
            finally:
                with _registry_lock:
                    entry.refs -= 1
            return
        with _vm_lock(vm.path, blocking=True):
            swtpm = SwtpmProcess.start(vm.state_dir)
            try:
                cold = not (vm.state_dir / _VOLATILE).is_file()
                if cold:
                    plan, _, _ = plan_boot(vm.log_path.read_bytes())
                    boot(swtpm, plan)
                else:
                    swtpm.init()
                with _registry_lock:
                    _running[key] = _Entry(swtpm)
                try:
                    yield RunningVm(vm, swtpm)
                finally:
                    with _registry_lock:
                        _running.pop(key, None)
            finally:
                swtpm.stop(save=True)


@dataclass
class _Entry:
    swtpm: SwtpmProcess
    refs: int = 1


_registry_lock = threading.Lock()
_running: dict[str, _Entry] = {}


def _check_booted(swtpm: SwtpmProcess, plan: BootPlan) -> None:
    """Fail creation when the vTPM does not read back what the log replays to."""
    with open_tpm(swtpm.tcti) as esys:
        for alg, name in LAB_BANKS.items():
            want: Mapping[int, bytes] = plan.expected.get(alg, {})
            if not want:
                continue
            got = read_pcrs(esys, sorted(want), name)
            bad = [i for i in sorted(want) if got[i] != want[i]]
            if bad:
                raise LabError(
                    f"after booting from the log, {name} PCRs {bad} differ from the log's replay"
                )


@contextmanager
def _vm_lock(path: Path, *, blocking: bool) -> Iterator[None]:
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking:
                    raise LabError(f"lab VM {path.name!r} is in use by another process") from None
                if time.monotonic() > deadline:
                    raise LabError(
                        f"lab VM {path.name!r} stayed in use for {_LOCK_TIMEOUT:.0f} s"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)
