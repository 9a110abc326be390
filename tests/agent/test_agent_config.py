"""Agent configuration (TOML, environment, command line, Azure settings), proxy choice,
import isolation, packaging (systemd-analyze verify, HandlerManifest)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bootwatch.agent.config import load_config
from bootwatch.agent.install import install_plan, perform
from bootwatch.agent.proxy import choose_proxy, redact
from bootwatch.errors import ConfigError


def test_precedence_command_line_over_file_over_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('url = "https://file.example"\ninterval = 120\nmonitor_url = "http://m:1"\n')
    env = {"BOOTWATCH_AGENT_URL": "https://env.example", "BOOTWATCH_AGENT_INTERVAL": "60",
           "BOOTWATCH_AGENT_PCRS": "0-7,11"}
    c = load_config(cfg, environ=env).config
    assert (c.url, c.interval, c.pcrs) == ("https://file.example", 120.0, (*range(8), 11))
    c = load_config(cfg, environ=env, overrides={"url": "https://cli.example",
                                                 "interval": "30"}).config
    assert (c.url, c.interval, c.monitor_url) == ("https://cli.example", 30.0, "http://m:1")


def test_azure_extension_settings_as_azure_writes_them(tmp_path: Path) -> None:
    settings = tmp_path / "0.settings"
    settings.write_text(json.dumps({"runtimeSettings": [{"handlerSettings": {
        "publicSettings": {"AttestationConfig": {
            "MaaSettings": {"maaEndpoint": "sharedeus2.eus2.attest.azure.net",
                            "maaTenantName": "GuestAttestation"},
            "AscSettings": {"ascReportingEndpoint": "", "ascReportingFrequency": ""},
            "useCustomToken": "false", "disableAlerts": "true"}}}}]}))
    c = load_config(settings, environ={}).config
    assert c.url == "https://sharedeus2.eus2.attest.azure.net"
    assert c.maa_tenant_name == "GuestAttestation" and c.disable_alerts is True
    assert c.monitor_url is None and c.interval == 3600.0 and c.use_custom_token is False
    # an empty endpoint means the configured shared provider
    toml = tmp_path / "a.toml"
    toml.write_text('shared_provider_url = "https://shared.example"\n'
                    '[AttestationConfig.MaaSettings]\nmaaEndpoint = ""\n')
    assert load_config(toml, environ={}).config.attestation_url == "https://shared.example"
    legacy = tmp_path / "legacy.json"
    legacy.write_text('{"AttestationEndpointCfg": "https://legacy.example"}')
    assert load_config(legacy, environ={}).config.url == "https://legacy.example"


def test_unknown_keys_kept_and_warned_bad_values_name_key_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('url = "https://a.example"\ncolour = "blue"\n[upgrade]\nkey = "x"\n')
    loaded = load_config(cfg, environ={})
    assert loaded.config.extra == {"colour": "blue"}
    assert loaded.warnings == (f"{cfg}: unknown key 'colour' (kept, ignored)",)
    assert loaded.config.upgrade == {"key": "x"}
    cfg.write_text('interval = "soon"\n')
    with pytest.raises(ConfigError, match=rf"{cfg}: key 'interval': 'soon' is not a number"):
        load_config(cfg, environ={})
    cfg.write_text('[AttestationConfig]\ndisableAlerts = "maybe"\n')
    with pytest.raises(ConfigError, match=r"key 'AttestationConfig\.disableAlerts': must be true"):
        load_config(cfg, environ={})
    cfg.write_text("url = \n")
    with pytest.raises(ConfigError, match=rf"{cfg}: not TOML: .*line 1"):
        load_config(cfg, environ={})
    with pytest.raises(ConfigError, match="environment BOOTWATCH_AGENT_JITTER: key 'jitter'"):
        load_config(None, environ={"BOOTWATCH_AGENT_JITTER": "2"})
    with pytest.raises(ConfigError, match="--interval: key 'interval'"):
        load_config(None, environ={}, overrides={"interval": "0"})


def test_proxy_choice_follows_libcurl() -> None:
    env = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2",
           "ALL_PROXY": "http://all:3", "http_proxy": "http://plain:4", "HTTP_PROXY": "x:5"}
    pick = lambda url, **kw: choose_proxy(url, configured=kw.get("c"),  # noqa: E731
                                          configured_no_proxy=kw.get("n"),
                                          environ=kw.get("env", env))
    assert pick("https://a.example").url == "http://lower:1"
    assert pick("https://a.example", env={"HTTPS_PROXY": "upper:2"}).url == "http://upper:2"
    assert pick("http://a.example", env={"HTTP_PROXY": "http://x:5"}).url is None
    assert pick("http://a.example").url == "http://plain:4"
    assert pick("https://a.example", env={"ALL_PROXY": "http://all:3"}).url == "http://all:3"
    assert pick("https://a.example", c="http://cfg:9").url == "http://cfg:9"
    assert pick("https://a.example", c="").url is None
    no = dict(env, NO_PROXY="example.com,10.0.0.0/8,.corp")
    assert pick("https://x.example.com", env=no).url is None
    assert pick("https://example.com.evil", env=no).url == "http://lower:1"
    assert pick("https://10.1.2.3", env=no).url is None
    assert pick("https://a.corp", env=no).url is None
    assert pick("https://x.example.com", env=no, c="http://cfg:9").url is None
    assert pick("https://x.example.com", env=no, n="").url == "http://lower:1"
    for platform in ("http://169.254.169.254/metadata", "http://168.63.129.16/",
                     "https://169.254.1.1"):
        assert pick(platform, c="http://cfg:9").url is None
    assert redact("http://user:pw@proxy:3128") == "http://***@proxy:3128"


def test_agent_does_not_import_the_verifier_or_server_stack() -> None:
    code = (
        "import sys\n"
        "import bootwatch.agent.daemon, bootwatch.agent.config, bootwatch.agent.netcheck\n"
        "import bootwatch.agent.install, bootwatch.agent.report, bootwatch.agent.attestation\n"
        "import bootwatch.agent.evidence, bootwatch.agent.unseal, bootwatch.agent.client\n"
        "import bootwatch.agent.identity, bootwatch.agent.upgrade, bootwatch.agent.enroll\n"
        "import httpx\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy',\n"
        "       'uvicorn', 'alembic', 'prometheus_client', 'starlette', 'pydantic', 'nats',\n"
        "       'rich', 'pygments', 'click')\n"
        "       or m.startswith(('bootwatch.attest', 'bootwatch.service', 'bootwatch.monitor',\n"
        "                        'bootwatch.cli'))]\n"
        "print(','.join(sorted(bad)))\n"
        "assert 'bootwatch.agent.daemon' in sys.modules and 'tpm2_pytss' in sys.modules\n"
        "assert callable(httpx.main)  # httpx's stub for its CLI, not the CLI itself\n"
        "import bootwatch.cli.agent_run\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy',\n"
        "       'uvicorn', 'alembic', 'prometheus_client', 'starlette', 'rich', 'pygments')\n"
        "       or m.startswith(('bootwatch.attest', 'bootwatch.service'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == []


#: every non-stdlib top-level module the idle daemon (default mode) may hold; pinned so
#: that a new import on the idle path shows up here: tpm2-pytss, cryptography and PyJWT
#: (about 20 MB) must stay in the per-cycle child
IDLE_DAEMON_MODULES = {
    "bootwatch", "click",  # the daemon and its command line
    "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",  # preloaded HTTP
    "pybase64", "yaml",  # bootwatch.protocol.azureguest, bootwatch.eventlog (preloaded)
    "_distutils_hack", "cython_runtime",  # interpreter/packaging artefacts, no code of ours
}


def test_idle_daemon_import_set_is_pinned(tmp_path: Path) -> None:
    """What `bootwatch agent run` holds while it waits, in its default configuration:
    the command line, the daemon and what prepare_parent() preloads, nothing else."""
    code = (
        "import json, sys\n"
        "import bootwatch.cli.main, bootwatch.cli.agent\n"
        "from bootwatch.agent.config import load_config\n"
        "from bootwatch.agent.daemon import PARENT_PRELOAD, AgentDaemon\n"
        "loaded = load_config(None, environ={}, overrides=json.loads(sys.argv[1]))\n"
        "assert loaded.config.cycle_in_child\n"
        "d = AgentDaemon(loaded)\n"
        "d.prepare_parent()\n"
        "assert all(m in sys.modules for m in PARENT_PRELOAD)\n"
        "top = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(json.dumps(sorted(top - {'__main__'})))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bootwatch.'))))\n"
    )
    overrides = {"url": "https://attest.example", "monitor_url": "https://monitor.example",
                 "tcti": "device:/dev/null", "log": str(tmp_path / "log.bin"),
                 "state_dir": str(tmp_path / "state")}
    res = subprocess.run([sys.executable, "-c", code, json.dumps(overrides)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    top_level, ours = (json.loads(line) for line in res.stdout.splitlines())
    extra = {m for m in top_level if not m.startswith("_cython_")} - IDLE_DAEMON_MODULES
    assert extra == set(), f"new imports in the idle daemon: {sorted(extra)}"
    for heavy in ("tpm2_pytss", "cryptography", "jwt", "rich", "pygments", "packaging"):
        assert heavy not in top_level
    # the cycle's own modules are the child's: only the cheap ones are preloaded
    assert "bootwatch.agent.transport" in ours and "bootwatch.eventlog.framing" in ours
    for cycle_only in ("bootwatch.agent.evidence", "bootwatch.agent.unseal",
                       "bootwatch.agent.tpm", "bootwatch.agent.client",
                       "bootwatch.agent.identity", "bootwatch.lab", "bootwatch.agent.upgrade"):
        assert cycle_only not in ours


def test_install_layout_and_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = Path(shutil.which("bootwatch") or sys.executable)
    plan = install_plan(tmp_path, executable=exe)
    perform(plan)
    unit = tmp_path / "etc/systemd/system/bootwatch-agent.service"
    text = unit.read_text()
    for line in ("Type=simple", "Restart=on-failure", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "User=bootwatch",
                 "SupplementaryGroups=tss", "DevicePolicy=closed", "DeviceAllow=/dev/tpmrm0 rw",
                 "StateDirectory=bootwatch", "WatchdogSec=900", "NotifyAccess=main"):
        assert line in text.splitlines()
    manifest = json.loads((tmp_path / "usr/lib/bootwatch/extension/HandlerManifest.json")
                          .read_text())
    commands = manifest[0]["handlerManifest"]
    assert {k for k in commands if k.endswith("Command")} == {
        "installCommand", "enableCommand", "disableCommand", "uninstallCommand",
        "updateCommand"}
    assert "m bootwatch tss" in (tmp_path / "usr/lib/sysusers.d/bootwatch.conf").read_text()
    assert (tmp_path / "var/lib/bootwatch").is_dir()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not installed (scripts/setup installs systemd)")
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    # verify exits 0 on unknown values too (it only warns): any output is a failure
    assert res.returncode == 0 and res.stderr.strip() == "" and res.stdout.strip() == "", \
        res.stderr
    # and it does catch a broken unit
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    res = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                         timeout=60)
    assert "sometimes" in res.stderr


def test_install_dry_run_writes_nothing(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "agent", "install",
                          "--prefix", str(tmp_path / "root"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "would write" in res.stdout and "bootwatch-agent.service" in res.stdout
    assert not (tmp_path / "root").exists()


def test_real_machine_defaults(tmp_path: Path) -> None:
    from bootwatch.agent.errors import PlatformError
    from bootwatch.agent.platform import default_tcti, read_event_log

    rm, raw = tmp_path / "tpmrm0", tmp_path / "tpm0"
    with pytest.raises(PlatformError, match=f"neither {rm} nor {raw} exists"):
        default_tcti((rm, raw))
    raw.touch()
    assert default_tcti((rm, raw)) == f"device:{raw}"
    rm.touch()
    assert default_tcti((rm, raw)) == f"device:{rm}"
    with pytest.raises(PlatformError, match=f"{tmp_path / 'nope'} does not exist"):
        read_event_log(tmp_path / "nope")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(PlatformError, match="is empty"):
        read_event_log(tmp_path / "empty")


@pytest.mark.parametrize("proxy", [
    "http://svc:Pa#ss-w0rd@proxy.corp:3128",   # an unencoded '#' in the password
    "http://svc:pa/ss?w0rd@proxy.corp:3128",   # '/' and '?'
    "http://svc:s3cret-w0rd@proxy.corp:312800",  # a port past 65535
])
def test_a_proxy_url_httpx_cannot_use_is_a_config_error_that_shows_no_password(
        proxy: str) -> None:
    """Found in review: ``urlsplit`` read such a URL as having no user-info, so
    ``redact`` printed the password, and httpx (or ``.port``) then raised a non-bootwatch
    error that killed every cycle with a traceback (no status, no pending report)."""
    assert "w0rd" not in redact(proxy) and redact(proxy).endswith("@proxy.corp" +
                                                                  proxy.rsplit("corp", 1)[1])
    with pytest.raises(ConfigError) as err:
        choose_proxy("https://attest.example", configured=None, configured_no_proxy=None,
                     environ={"HTTPS_PROXY": proxy})
    assert "w0rd" not in str(err.value) and "HTTPS_PROXY" in str(err.value)


def test_the_service_user_can_read_the_installed_configuration() -> None:
    """Found in review: ``agent install`` wrote agent.toml 0640 root:root and created no
    user, while the unit runs as ``bootwatch`` (ConfigurationDirectory= changes no
    ownership): the daemon could not read its own configuration and restarted in a loop.
    The install now creates the user and group (systemd-sysusers, here under an image
    root) and gives the file to root:bootwatch; a process with only that group reads it."""
    if os.geteuid() != 0:
        pytest.fail("this test installs as root (CI runs as root)")
    prefix = Path(tempfile.mkdtemp(prefix="bootwatch-install-"))  # traversable by others
    try:
        os.chmod(prefix, 0o755)
        exe = Path(shutil.which("bootwatch") or sys.executable)
        assert perform(install_plan(prefix, executable=exe), prefix=prefix) == []
        config = prefix / "etc/bootwatch/agent.toml"
        group = next(line.split(":") for line in (prefix / "etc/group").read_text().splitlines()
                     if line.startswith("bootwatch:"))
        st = config.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, int(group[2]), 0o640)
        assert "bootwatch" in (prefix / "etc/passwd").read_text()

        def read_as(gid: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["setpriv", "--reuid=65534", f"--regid={gid}",
                                   "--clear-groups", "cat", str(config)],
                                  capture_output=True, text=True, timeout=30, check=False)

        assert read_as(group[2]).returncode == 0
        assert read_as("65534").returncode != 0  # any other group: the file stays private
    finally:
        shutil.rmtree(prefix)


def test_install_under_a_relative_prefix_creates_the_service_user(tmp_path: Path) -> None:
    """Found in a README walk-through: ``agent install --prefix ./root`` passed the
    relative root to systemd-sysusers, which failed to open its own file there
    ("Failed to open 'root/usr/lib/sysusers.d/bootwatch.conf'") and created no user."""
    if os.geteuid() != 0:
        pytest.fail("this test installs as root (CI runs as root)")
    res = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "agent", "install",
                          "--prefix", "root"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr, res.stderr
    assert "bootwatch:" in (tmp_path / "root/etc/passwd").read_text()
    assert f"installed under {tmp_path / 'root'}" in res.stdout
