"""Edge cases of the lab, the fleet simulator and the embedded server found in review:
each test failed before its fix.  Real swtpm where a VM is involved."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootwatch.cli.main import cli
from bootwatch.embedded import own_issuers
from bootwatch.lab import Lab
from bootwatch.service.settings import Settings

from .conftest import ADMIN, EVENTLOGS, STALE, Deployment

COS93 = EVENTLOGS / "go-tpm-tools" / "cos-93-amd-sev.bin"
COS101 = EVENTLOGS / "go-tpm-tools" / "cos-101-amd-sev.bin"


def test_reboot_keeps_the_vm_os_and_an_image_update_changes_it(lab: Lab) -> None:
    """vm.json records the image's OS; a reboot must not reset it to the generic
    "Linux", and booting another image makes that image's OS the VM's (os-release too,
    which the agent reports for --lab-vm)."""
    vm = lab.create_vm("edge-os", COS93)
    try:
        assert vm.os_name == "Container-Optimized OS 93"
        again = lab.reboot_vm("edge-os")
        assert (again.os_name, again.os_source) == (vm.os_name, vm.os_source)
        assert lab.get_vm("edge-os").os_name == vm.os_name
        updated = lab.reboot_vm("edge-os", COS101)
        assert lab.get_vm("edge-os").os_name == updated.os_name == "Container-Optimized OS 101"
        assert 'VERSION_ID="101"' in updated.os_release_path.read_text() or \
            "VERSION_ID=101" in updated.os_release_path.read_text()
    finally:
        lab.destroy_vm("edge-os")


def test_own_issuers_are_the_urls_the_server_puts_in_its_tokens(tmp_path: Path) -> None:
    """The service builds a token's issuer from the Host header (IPv6 in brackets; an
    --allowed-host NAME:PORT pair with its own port), so the monitor of bootwatch server
    must trust exactly those URLs, or it rejects the agents' reports."""
    s = Settings(data_dir=tmp_path, host="::1", port=9443,
                 allowed_hosts=("proxy.example:8443", "front.example"))
    issuers = set(own_issuers(s))
    assert "https://[::1]:9443" in issuers
    assert "https://proxy.example:8443" in issuers
    assert "https://front.example:9443" in issuers
    assert not any(u.count(":") > 2 and "[" not in u for u in issuers), issuers


def test_fleet_keep_keeps_the_agents_state_without_work_dir(
        deployment: Deployment, corpus: Path, tmp_path: Path) -> None:
    """--keep keeps "the lab VMs and the agents' state" (docs/lab.md); without
    --work-dir the state went into a temporary folder that was deleted anyway."""
    url, ca, fleet_lab = deployment.url, deployment.ca, deployment.lab
    scenario = tmp_path / "none.yaml"
    scenario.write_text("version: 1\nevents: []\n")
    token = tmp_path / "token"
    token.write_text(ADMIN)
    result = CliRunner().invoke(cli, [
        "lab", "--lab-dir", str(fleet_lab.root), "fleet", "run", "--vms", "1",
        "--interval", "1", "--duration", "1", "--grace", "0", "--stale-after", "5",
        "--scenario", str(scenario), "--url", url, "--ca", str(ca),
        "--admin-token-file", str(token), "--corpus", str(corpus), "--keep", "--json"])
    kept = [vm.name for vm in fleet_lab.list_vms()]
    try:
        assert result.exit_code == 0, result.output
        assert len(kept) == 1
        states = [p for p in Path(tempfile.gettempdir()).glob(
            f"bootwatch-fleet-*/fleet-*/agents/{kept[0]}") if p.is_dir()]
        assert states, f"the agent state of {kept[0]} was deleted despite --keep"
    finally:
        for name in kept:
            fleet_lab.destroy_vm(name)
        for p in Path(tempfile.gettempdir()).glob(f"bootwatch-fleet-*/fleet-*/agents/{kept[0]}"
                                                  if kept else "-"):
            shutil.rmtree(p.parents[2], ignore_errors=True)


def test_swtpm_that_loses_its_ports_to_another_never_serves_the_other_vtpm(
        tmp_path: Path, swtpm_available: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fleets on one machine draw swtpm ports at random: when another swtpm takes
    the pair between the draw and the bind, start() must not hand out the other one's
    TCTI (its process exited; every command would go to a foreign vTPM)."""
    from bootwatch.lab import swtpm as swtpm_mod
    from bootwatch.lab.swtpm import SwtpmProcess

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = SwtpmProcess.start(tmp_path / "a")
    try:
        real = swtpm_mod._free_port_pair
        # the first draws: the pair the other swtpm just took, then one overlapping it
        draws = iter([a.port, a.port + 1, a.port - 1])
        monkeypatch.setattr(swtpm_mod, "_free_port_pair", lambda: next(draws, None) or real())
        b = SwtpmProcess.start(tmp_path / "b")
        try:
            assert b.port != a.port
            time.sleep(0.2)
            assert b.process.poll() is None, "start() returned an swtpm that had exited"
        finally:
            b.stop(save=False)
    finally:
        a.stop(save=False)


def test_demo_on_a_corpus_missing_its_files_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    """`bootwatch demo` exits 2 "when the corpus cannot be used" (its docstring): a folder
    with eventlogs/ and maa/ that lacks the logs and DBX data the demo reads was exit 1,
    "demo failed", as if the demo had run and something had gone unexpectedly."""
    corpus = tmp_path / "corpus"
    (corpus / "eventlogs").mkdir(parents=True)
    (corpus / "maa").mkdir()
    r = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "demo", "--corpus",
                        str(corpus)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("bootwatch: error: ") and str(corpus) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _plan(tmp_path: Path, text: str, vms: int, seed: int = 0) -> tuple[object, list[object]]:
    from bootwatch.lab.fleet import FleetConfig, FleetSimulator
    from bootwatch.lab.scenario import parse_scenario

    cfg = FleetConfig(vms=vms, interval=2, duration=100, url="https://127.0.0.1:9",
                      admin_token=ADMIN, scenario=parse_scenario(text, "s.yaml"),
                      corpus=tmp_path, lab_dir=tmp_path / "lab", work_dir=tmp_path, seed=seed)
    sim = FleetSimulator(cfg)
    return sim, list(sim.plan())


def test_fleet_plan_never_draws_a_vm_a_later_event_names(tmp_path: Path) -> None:
    """A count drawn before an event naming VM indexes took those VMs for most seeds,
    refusing a valid scenario ("VM index 0 ... is used by an earlier event")."""
    text = ("events:\n  - {at: 1s, action: tamper, vms: 3}\n"
            "  - {at: 2s, action: agent_down, vms: [0]}\n")
    for seed in range(4):
        _, steps = _plan(tmp_path, text, 4, seed)
        got = {s.action.value: s.vms for s in steps}  # type: ignore[attr-defined]
        assert got == {"tamper": (1, 2, 3), "agent_down": (0,)}, seed


def test_default_scenario_on_a_small_fleet_plays_what_fits_and_says_so(
        tmp_path: Path) -> None:
    """The built-in scenario (six events, each a share of the fleet) was refused on
    fewer than 6 VMs; a share now takes what is free and the rest is listed."""
    from bootwatch.lab.fleet import FleetConfig, FleetSimulator
    from bootwatch.lab.scenario import load_scenario

    cfg = FleetConfig(vms=4, interval=2, duration=100, url="https://127.0.0.1:9",
                      admin_token=ADMIN, scenario=load_scenario(None), corpus=tmp_path,
                      lab_dir=tmp_path / "lab", work_dir=tmp_path)
    sim = FleetSimulator(cfg)
    steps = sim.plan()
    started = [s for s in steps if not s.ends]
    assert [s.action.value for s in sorted(started, key=lambda s: s.line)] == [
        "image_update", "dbx_update", "secure_boot_off", "tamper"]
    assert sorted(i for s in started for i in s.vms) == [0, 1, 2, 3]
    assert len(sim.skipped) == 2
    assert "events[4] agent_down on 0 of the 1" in sim.skipped[0]
    assert "events[5] network_down" in sim.skipped[1]
    # counts and indexes stay absolute: too few VMs for them is still refused, located
    from bootwatch.lab.scenario import ScenarioError
    with pytest.raises(ScenarioError) as err:
        _plan(tmp_path, "events:\n  - {at: 1s, action: tamper, vms: 5}\n", 4)
    assert (err.value.line, err.value.field) == (2, "events[0].vms")


def test_scenario_with_a_character_yaml_refuses_says_line_and_column(tmp_path: Path) -> None:
    """PyYAML's reader error (a NUL, a control character) gave only a character offset,
    and the message ran over two lines."""
    from bootwatch.lab.scenario import ScenarioError, load_scenario

    bad = tmp_path / "s.yaml"
    bad.write_bytes(b"version: 1\nevents:\n  - {at: 1s, action: tamper,\x07 vms: 1}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(bad)
    assert (err.value.line, err.value.column) == (3, 29)
    assert str(err.value).startswith(f"{bad}:3:29: ") and "\n" not in str(err.value)


def test_fleet_scenario_file_that_is_missing_is_refused_at_its_field(
        deployment: Deployment, corpus: Path, tmp_path: Path) -> None:
    """An image, Secure Boot-off log or DBX update the scenario names but the corpus
    lacks was refused naming only the scenario file, not its line, column or field."""
    from bootwatch.lab.fleet import FleetConfig, run_fleet
    from bootwatch.lab.scenario import ScenarioError, load_scenario

    scenario = tmp_path / "s.yaml"
    scenario.write_text("version: 1\nimages: [eventlogs/go-tpm-tools/cos-93-amd-sev.bin,\n"
                        "         eventlogs/no-such-image.bin]\nevents: []\n")
    cfg = FleetConfig(vms=1, interval=2, duration=5, url=deployment.url, admin_token=ADMIN,
                      scenario=load_scenario(scenario), corpus=corpus,
                      lab_dir=deployment.lab.root, work_dir=tmp_path / "work",
                      ca=deployment.ca)
    with pytest.raises(ScenarioError) as err:
        run_fleet(cfg)
    assert (err.value.line, err.value.column, err.value.field) == (3, 10, "images[1]")
    assert str(err.value).startswith(f"{scenario}:3:10: images[1]: ")
    assert deployment.lab.list_vms() == []


def test_swtpm_interrupted_while_it_starts_is_not_left_running(
        tmp_path: Path, swtpm_available: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """swtpm runs in its own session (no Ctrl-C reaches it): an interrupt (Ctrl-C on a
    fleet creating VMs) while start() waited for it to answer left it running for ever."""
    from bootwatch.lab import swtpm as swtpm_mod
    from bootwatch.lab.swtpm import SwtpmProcess

    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))  # type: ignore[call-overload]
        return started[-1]

    def interrupted(port: int) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", popen)  # the real one, recorded
    monkeypatch.setattr(swtpm_mod, "_ctrl_answers", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            SwtpmProcess.start(tmp_path)
        assert len(started) == 1
        assert started[0].poll() is not None, "swtpm was left running"
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_fleet_vm_whose_service_is_down_but_monitor_up_is_not_silent(
        deployment: Deployment, corpus: Path, tmp_path: Path) -> None:
    """The monitor counts a platform-error report naming the VM (its agent cannot reach
    the service, the monitor it can) as the VM being alive; the simulator counted only
    attestations that reached the service, so it expected agent_unresponsive for such a
    stretch and reported the monitor's (right) silence as a missed alert."""
    from dataclasses import replace

    from bootwatch.agent.config import AgentConfig
    from bootwatch.lab.fleet import FleetConfig, FleetSimulator, _SimVm
    from bootwatch.lab.scenario import load_scenario

    class ServiceDown(FleetSimulator):
        """``network_down`` cuts only the service: the monitor stays reachable."""

        def _agent_config(self, sim: _SimVm, *, network: bool = True) -> AgentConfig:
            config = super()._agent_config(sim, network=network)
            return replace(config, monitor_url=self.cfg.url.rstrip("/"),
                           monitor_ca=self.cfg.ca)

    scenario = tmp_path / "s.yaml"
    scenario.write_text("events:\n  - {at: 2s, action: network_down, vms: [0], for: 9s}\n")
    cfg = FleetConfig(vms=1, interval=1, duration=13, url=deployment.url, admin_token=ADMIN,
                      scenario=load_scenario(scenario), corpus=corpus,
                      lab_dir=deployment.lab.root, work_dir=tmp_path / "work",
                      ca=deployment.ca, stale_after=STALE, sweep=0.5, grace=3)
    report = ServiceDown(cfg).run().to_json()
    assert report["cycles"].get("unreachable", 0) >= 3, report["cycles"]
    assert report["missed_list"] == [], report["missed_list"]
    assert report["false_alert_list"] == [] and report["problems"] == [], report


def _swtpms_under(root: Path) -> list[int]:
    """Running swtpm processes whose command line names a path under ``root``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"swtpm") and any(str(root).encode() in a for a in argv):
            found.append(int(proc.name))
    return found


def test_fleet_run_stopped_with_sigterm_cleans_up_its_swtpms(
        deployment: Deployment, tmp_path: Path) -> None:
    """``kill`` (SIGTERM) on ``bootwatch lab fleet run`` ended it at once: its clean-up
    never ran, and the VMs' swtpm processes (in sessions of their own) kept running."""
    import signal

    token = tmp_path / "token"
    token.write_text(ADMIN)
    root = deployment.lab.root
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootwatch.cli.main", "lab", "--lab-dir", str(root),
         "fleet", "run", "--vms", "2", "--interval", "2", "--duration", "120",
         "--url", deployment.url, "--ca", str(deployment.ca), "--admin-token-file",
         str(token), "--stale-after", str(STALE)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "every VM attested once" in line:
                break
        else:
            pytest.fail(f"the fleet never started (exit {proc.wait()})")
        assert _swtpms_under(root), "no swtpm of the fleet is running"
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=90)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # as after Ctrl-C: "bootwatch: aborted", exit 1
    assert proc.returncode == 1 and "aborted" in rest, rest
    assert "Traceback" not in rest
    assert _swtpms_under(root) == []


def test_fleet_alerts_fetched_across_shifting_pages_are_counted_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offset paging while alerts open: a new alert shifts every page by one, so the last
    alert of a page comes again first on the next.  It was counted twice (an unmatched
    duplicate made two false alerts)."""
    from datetime import UTC, datetime

    from bootwatch.lab.fleet import FleetConfig, FleetSimulator, _SimVm
    from bootwatch.lab.scenario import load_scenario

    cfg = FleetConfig(vms=1, interval=2, duration=10, url="https://127.0.0.1:9",
                      admin_token=ADMIN, scenario=load_scenario(None), corpus=tmp_path,
                      lab_dir=tmp_path / "lab", work_dir=tmp_path)
    sim = FleetSimulator(cfg)
    vm = "0F0E0D0C-0B0A-4908-8706-050403020100"
    sim.vms = [_SimVm(0, "vm-0", vm, tmp_path / "a.bin", tmp_path / "vm-0")]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    alerts = [{"id": f"a{i}", "vm_id": vm, "startTimeUtc": now} for i in range(1001)]
    pages = {0: alerts[:1000], 1000: alerts[999:]}  # a1000 repeats a999 at the seam

    def api(c: object, method: str, path: str, **kw: object) -> object:
        params = kw["params"]
        assert isinstance(params, dict)
        return {"items": pages[int(params["offset"])]}

    monkeypatch.setattr(sim, "_api", api)
    got = sim._fetch_alerts(time.time() - 5)
    assert len(got) == 1001 and len({a["id"] for a in got}) == 1001


def test_a_vm_name_ending_in_a_line_break_is_refused(tmp_path: Path) -> None:
    """Python's ``$`` matches before a trailing newline, so ``^...$`` names took
    ``"web\\n"`` (a state directory with a line break in its name); the net review found
    the same in host names, and every such pattern now ends at ``\\Z``."""
    from bootwatch.errors import LabError

    lab = Lab(tmp_path / "lab")
    with pytest.raises(LabError, match="invalid VM name"):
        lab.get_vm("web\n")
