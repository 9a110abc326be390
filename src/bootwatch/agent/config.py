"""The daemon's configuration: TOML file, environment, command line, Azure settings.

Precedence (issue 12): command line > file > environment > defaults.  The file
is TOML (``/etc/bootwatch/agent.toml`` by default) whose keys are the command
line's option names with dashes as underscores.  The environment names each
key as ``BOOTWATCH_AGENT_<KEY>`` (e.g. ``BOOTWATCH_AGENT_MONITOR_URL``); proxy
variables (``HTTPS_PROXY``...) are read by :mod:`bootwatch.agent.proxy`.

The file may also carry the guest attestation extension's settings as Azure
writes them (monitoring-facts section 2): an ``AttestationConfig`` table in the
TOML file, or a JSON file in the extension handler's format
(``runtimeSettings[0].handlerSettings.publicSettings``, or the public settings
object alone).  Booleans there are strings (``"true"``/``"false"``); an empty
``maaEndpoint`` means the configured shared provider (``shared_provider_url``);
an empty ``ascReportingEndpoint``/``ascReportingFrequency`` means the default.
The legacy ``AttestationEndpointCfg`` (a URL string or a table with
``maaEndpoint``) is read as ``maaEndpoint``.  A key written both ways: the
bootwatch key wins.

Unknown keys are kept (:attr:`AgentConfig.extra`) and warned about, never
fatal; the ``[upgrade]`` table belongs to the upgrade component and is kept
opaque.  A bad value raises :class:`~bootwatch.errors.ConfigError` naming the
key and where it came from (file path, environment variable, option).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from bootwatch.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_CYCLE_TIMEOUT",
    "DEFAULT_INTERVAL",
    "DEFAULT_STATE_DIR",
    "DEFAULT_TIMEOUT",
    "ENV_PREFIX",
    "AgentConfig",
    "LoadedConfig",
    "load_config",
]

DEFAULT_CONFIG: Final = Path("/etc/bootwatch/agent.toml")
DEFAULT_STATE_DIR: Final = Path("/var/lib/bootwatch")
#: seconds per request; also how long an attestation waits for another one of the same
#: VM to be answered (bootwatch.agent.attestlock), in the daemon and in `agent attest`
DEFAULT_TIMEOUT: Final = 15.0
#: one hour: well inside the 8 h token lifetime, 12 samples inside Defender's 12 h freshness
DEFAULT_INTERVAL: Final = 3600.0
#: +-10 % uniform jitter so a fleet booted together does not attest in lockstep
DEFAULT_JITTER: Final = 0.1
#: below a minute is for tests and labs
MIN_INTERVAL: Final = 1.0
#: a cycle in a forked child (``cycle_in_child``) is killed after this long: a TPM command
#: or a peer that never answers must not stop the daemon attesting for good.  Ten
#: minutes is several times the longest cycle the request timeouts allow (each request at
#: most 4 x ``timeout`` for its body; a cycle makes a handful)
DEFAULT_CYCLE_TIMEOUT: Final = 600.0
MAX_CONFIG_BYTES: Final = 256 * 1024
ENV_PREFIX: Final = "BOOTWATCH_AGENT_"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the daemon needs; paths resolved, values checked."""

    url: str | None = None
    shared_provider_url: str | None = None
    ca: Path | None = None
    lab_vm: str | None = None
    lab_dir: Path | None = None
    tcti: str | None = None
    log: Path | None = None
    pcrs: tuple[int, ...] | None = None
    monitor_url: str | None = None
    monitor_ca: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    status_file: Path | None = None
    heartbeat_file: Path | None = None
    interval: float = DEFAULT_INTERVAL
    jitter: float = DEFAULT_JITTER
    timeout: float = DEFAULT_TIMEOUT
    proxy: str | None = None
    no_proxy: str | None = None
    vm_id: str | None = None
    maa_tenant_name: str = ""
    use_custom_token: bool = False
    disable_alerts: bool = False
    aik_renewal_days: int = 90
    #: run each daemon cycle in a forked child so the idle daemon stays small (docs/agent.md)
    cycle_in_child: bool = True
    #: seconds a cycle in a child may take before the daemon kills it (cycle_in_child only)
    cycle_timeout: float = DEFAULT_CYCLE_TIMEOUT
    #: the ``[upgrade]`` table, opaque here (the upgrade component reads it)
    upgrade: Mapping[str, Any] | None = None
    #: unknown keys, kept as read
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: where the file part came from ("" when none)
    source: str = ""

    @property
    def attestation_url(self) -> str:
        """``url``, else the shared provider; ConfigError when neither is set."""
        url = self.url or self.shared_provider_url
        if not url:
            raise ConfigError(
                "no attestation provider: set url (or AttestationConfig.MaaSettings.maaEndpoint)"
                " or shared_provider_url"
                + (f" in {self.source}" if self.source else "")
            )
        return url

    @property
    def status_path(self) -> Path:
        return self.status_file or self.state_dir / "status" / "0.status"

    @property
    def heartbeat_path(self) -> Path:
        return self.heartbeat_file or self.status_path.parent / "heartbeat.json"


@dataclass(frozen=True)
class LoadedConfig:
    config: AgentConfig
    warnings: tuple[str, ...] = ()


# --- value converters (raise ValueError with a human reason) -------------------


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {type(v).__name__}")
    return v


def _opt_str(v: Any) -> str | None:
    s = _str(v).strip()
    return s or None


def _url(v: Any) -> str | None:
    s = _str(v).strip()
    if not s:
        return None
    if "://" not in s:
        s = f"https://{s}"  # Azure's maaEndpoint is often a bare host name
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http(s) URL")
    return s.rstrip("/")


def _path(v: Any) -> Path | None:
    s = _str(v).strip()
    return Path(s) if s else None


def _req_path(v: Any) -> Path:
    p = _path(v)
    if p is None:
        raise ValueError("must not be empty")
    return p


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool):
        raise ValueError(f"must be {what}")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ValueError(f"{v!r} is not {what}") from None
    if not isinstance(v, int | float) or v != v:
        raise ValueError(f"must be {what}")
    return float(v)


def _seconds(v: Any) -> float:
    f = _number(v, "a number of seconds")
    if not MIN_INTERVAL <= f <= 7 * 86400:
        raise ValueError(f"must be between {MIN_INTERVAL:g} s and 7 days, got {v}")
    return f


def _timeout(v: Any) -> float:
    f = _number(v, "a number of seconds")
    if not 0.1 <= f <= 600:
        raise ValueError(f"must be between 0.1 and 600 seconds, got {v}")
    return f


def _fraction(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError("must be a fraction between 0 and 0.5")
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a number") from None
    if not 0 <= f <= 0.5:
        raise ValueError(f"must be between 0 and 0.5, got {v}")
    return f


def _days(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("must be a whole number of days")
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ValueError(f"{v!r} is not a whole number of days") from None
    if not 0 <= n <= 3650:
        raise ValueError(f"must be between 0 and 3650 days, got {v}")
    return n


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ValueError(f'must be true or false (or the strings "true"/"false"), got {v!r}')


def _pcrs(v: Any) -> tuple[int, ...] | None:
    from bootwatch.agent.attestation import parse_pcr_list

    if isinstance(v, list):
        v = ",".join(str(x) for x in v)
    s = _str(v).strip()
    if not s:
        return None
    try:
        return parse_pcr_list(s, key="pcrs")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _vm_id(v: Any) -> str | None:
    s = _opt_str(v)
    if s is not None and (len(s) > 128 or not all(c.isalnum() or c in "._:@-" for c in s)):
        raise ValueError("must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return s


_KEYS: Final[dict[str, Callable[[Any], Any]]] = {
    "url": _url,
    "shared_provider_url": _url,
    "ca": _path,
    "lab_vm": _opt_str,
    "lab_dir": _path,
    "tcti": _opt_str,
    "log": _path,
    "pcrs": _pcrs,
    "monitor_url": _url,
    "monitor_ca": _path,
    "state_dir": _req_path,
    "status_file": _path,
    "heartbeat_file": _path,
    "interval": _seconds,
    "jitter": _fraction,
    "timeout": _timeout,
    # "" is meaningful for proxy: no proxy, whatever the environment says
    "proxy": _str,
    "no_proxy": _str,
    "vm_id": _vm_id,
    "maa_tenant_name": _str,
    "use_custom_token": _bool,
    "disable_alerts": _bool,
    "aik_renewal_days": _days,
    "cycle_in_child": _bool,
    "cycle_timeout": _seconds,
}
_FIELDS = {f.name for f in fields(AgentConfig)}
assert set(_KEYS) <= _FIELDS


def _convert(key: str, value: Any, where: str) -> Any:
    try:
        return _KEYS[key](value)
    except ValueError as exc:
        raise ConfigError(f"{where}: key '{key}': {exc}") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the agent configuration {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    if path.suffix in (".json", ".settings") or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
        return _public_settings(obj, path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None


def _public_settings(obj: Any, path: Path) -> dict[str, Any]:
    """The extension's publicSettings from a handler settings file (or the object itself)."""
    if isinstance(obj, dict) and "runtimeSettings" in obj:
        try:
            obj = obj["runtimeSettings"][0]["handlerSettings"].get("publicSettings") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ConfigError(
                f"{path}: key 'runtimeSettings': expected "
                "[{\"handlerSettings\": {\"publicSettings\": {...}}}]"
            ) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: the settings must be a JSON object")
    return obj


def _azure_settings(doc: dict[str, Any], where: str, warnings: list[str]) -> dict[str, Any]:
    """Translate ``AttestationConfig`` / ``AttestationEndpointCfg`` into bootwatch keys."""
    out: dict[str, Any] = {}

    def table(obj: Any, name: str) -> dict[str, Any]:
        if obj is None:
            return {}
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: key '{name}': must be an object")
        return obj

    legacy = doc.pop("AttestationEndpointCfg", None)
    if legacy is not None:
        if isinstance(legacy, dict):
            legacy = legacy.get("maaEndpoint", "")
        out["url"] = _azure_value("AttestationEndpointCfg", _url, legacy, where)
    cfg = table(doc.pop("AttestationConfig", None), "AttestationConfig")
    known = {"MaaSettings", "AscSettings", "useCustomToken", "disableAlerts"}
    for k in cfg:
        if k not in known:
            warnings.append(f"{where}: unknown key 'AttestationConfig.{k}' (kept, ignored)")
    maa = table(cfg.get("MaaSettings"), "AttestationConfig.MaaSettings")
    asc = table(cfg.get("AscSettings"), "AttestationConfig.AscSettings")
    if "maaEndpoint" in maa:
        out["url"] = _azure_value("AttestationConfig.MaaSettings.maaEndpoint", _url,
                                  maa["maaEndpoint"], where)
    if "maaTenantName" in maa:
        out["maa_tenant_name"] = _azure_value("AttestationConfig.MaaSettings.maaTenantName",
                                              _str, maa["maaTenantName"], where)
    if "ascReportingEndpoint" in asc:
        out["monitor_url"] = _azure_value("AttestationConfig.AscSettings.ascReportingEndpoint",
                                          _url, asc["ascReportingEndpoint"], where)
    freq = asc.get("ascReportingFrequency")
    if freq not in (None, ""):
        out["interval"] = _azure_value("AttestationConfig.AscSettings.ascReportingFrequency",
                                       _seconds, freq, where)
    for azure, ours in (("useCustomToken", "use_custom_token"),
                        ("disableAlerts", "disable_alerts")):
        if azure in cfg:
            out[ours] = _azure_value(f"AttestationConfig.{azure}", _bool, cfg[azure], where)
    return {k: v for k, v in out.items() if v is not None}


def _azure_value(key: str, conv: Callable[[Any], Any], value: Any, where: str) -> Any:
    try:
        return conv(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: key '{key}': {exc}") from None


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Merge defaults < environment < file < ``overrides`` (the command line).

    ``path`` None reads :data:`DEFAULT_CONFIG` when it exists; a given path must
    exist.  ``overrides`` holds the command line's values keyed like the file,
    checked like the file's (None values are ignored: an option not given).
    """
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    values: dict[str, Any] = {}
    for key in _KEYS:
        name = ENV_PREFIX + key.upper()
        if name in env:
            values[key] = _convert(key, env[name], f"environment {name}")
    file_path = path
    if file_path is None and DEFAULT_CONFIG.is_file():
        file_path = DEFAULT_CONFIG
    source = ""
    upgrade: Mapping[str, Any] | None = None
    extra: dict[str, Any] = {}
    if file_path is not None:
        source = str(file_path)
        doc = _read_file(file_path)
        azure = _azure_settings(doc, source, warnings)
        raw_upgrade = doc.pop("upgrade", None)
        if raw_upgrade is not None:
            if not isinstance(raw_upgrade, dict):
                raise ConfigError(f"{source}: key 'upgrade': must be a table")
            upgrade = raw_upgrade
        values.update(azure)
        for key, value in doc.items():
            if key in _KEYS:
                values[key] = _convert(key, value, source)
            else:
                extra[key] = value
                warnings.append(f"{source}: unknown key '{key}' (kept, ignored)")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _KEYS:
            raise ConfigError(f"unknown option {key!r}")
        values[key] = _convert(key, str(value) if isinstance(value, Path) else value,
                               "--" + key.replace("_", "-"))
    base_dir = file_path.parent if file_path is not None else None
    # the command line passes every option it has, None when not given: only a value
    # actually given there is relative to the working directory
    given = {k for k, v in (overrides or {}).items() if v is not None}
    for key in ("ca", "monitor_ca", "log", "status_file", "heartbeat_file", "state_dir",
                "lab_dir"):
        p = values.get(key)
        if isinstance(p, Path) and not p.is_absolute() and base_dir is not None \
                and key not in given:
            values[key] = base_dir / p
    if values.get("lab_vm") and values.get("tcti"):
        raise ConfigError(f"{source or 'configuration'}: give tcti or lab_vm, not both")
    config = replace(AgentConfig(), **values, upgrade=upgrade, extra=extra, source=source)
    # one request may take up to 5 x timeout in all (bootwatch.agent.transport); a cycle
    # limit below that kills healthy cycles that wait on a slow peer (found in review)
    slowest = 5 * config.timeout
    if config.cycle_in_child and config.cycle_timeout < slowest:
        warnings.append(
            f"{source or 'configuration'}: cycle_timeout ({config.cycle_timeout:g} s) is "
            f"shorter than one request may take (5 x timeout = {slowest:g} s): a cycle "
            "waiting on a slow service will be killed")
    return LoadedConfig(config, tuple(warnings))
