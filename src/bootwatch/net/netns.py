"""Scratch Linux network namespaces: made, used and always removed.

Used by the nftables evaluator (load the operator's rules where they cannot touch
the host and probe them) and by the tests (a "vm" and a "svc" namespace joined by
a veth pair).  Every namespace gets a name unique to this process and call, and
:meth:`NamespaceSet.close` deletes each one it made, also when set-up failed half
way.  Addresses live inside the namespaces only; the host's network is not touched.
Needs CAP_NET_ADMIN (root) and iproute2.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bootwatch.errors import ConfigError

__all__ = ["NamespaceSet", "Netns", "require_tools", "run"]

_TIMEOUT: Final = 20.0


def require_tools(*tools: str) -> None:
    """A :class:`ConfigError` naming the Debian package of each missing tool."""
    packages = {"ip": "iproute2", "nft": "nftables", "iptables-restore": "iptables",
                "squid": "squid"}
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        names = ", ".join(f"{t} (apt-get install {packages.get(t, t)})" for t in missing)
        raise ConfigError(f"missing: {names}")
    if os.geteuid() != 0:
        raise ConfigError("network namespaces need root (CAP_NET_ADMIN)")


def run(args: Sequence[str], *, input_text: str | None = None,
        check: bool = True, timeout: float = _TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure raises :class:`ConfigError` with its stderr."""
    try:
        proc = subprocess.run(list(args), input=input_text, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{' '.join(args)}: {exc}") from None
    if check and proc.returncode != 0:
        raise ConfigError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@dataclass(frozen=True)
class Netns:
    """One namespace, by name."""

    name: str

    def ip(self, *args: str) -> None:
        """``ip -n NAME ARGS``."""
        run(["ip", "-n", self.name, *args])

    def exec_args(self, *args: str) -> list[str]:
        """argv that runs ``args`` inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, input_text: str | None = None, check: bool = True,
            timeout: float = _TIMEOUT) -> subprocess.CompletedProcess[str]:
        return run(self.exec_args(*args), input_text=input_text, check=check, timeout=timeout)


@dataclass
class NamespaceSet:
    """Namespaces made under one unique prefix; a context manager that removes them."""

    prefix: str = field(default_factory=lambda: f"bw{os.getpid() % 100000}{secrets.token_hex(2)}")
    made: list[Netns] = field(default_factory=list)

    def add(self, role: str) -> Netns:
        """Create ``<prefix>-<role>`` with its loopback up."""
        ns = Netns(f"{self.prefix}-{role}")
        run(["ip", "netns", "add", ns.name])
        self.made.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(self, a: Netns, a_addr: str, b: Netns, b_addr: str) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b`` with the given CIDR addresses (inside
        the namespaces only); returns the two interface names."""
        index = len(self.made)
        if_a, if_b = f"bwv{index}a{secrets.token_hex(2)}", f"bwv{index}b{secrets.token_hex(2)}"
        run(["ip", "-n", a.name, "link", "add", if_a, "type", "veth",
             "peer", "name", if_b, "netns", b.name])
        for ns, ifname, addr in ((a, if_a, a_addr), (b, if_b, b_addr)):
            extra = ["nodad"] if ":" in addr else []
            ns.ip("addr", "add", addr, "dev", ifname, *extra)
            ns.ip("link", "set", ifname, "up")
        return if_a, if_b

    def close(self) -> list[str]:
        """Delete every namespace made here; returns the errors (never raises)."""
        errors = []
        while self.made:
            ns = self.made.pop()
            proc = run(["ip", "netns", "del", ns.name], check=False)
            if proc.returncode != 0:
                errors.append(f"{ns.name}: {proc.stderr.strip()}")
        return errors

    def __enter__(self) -> NamespaceSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
