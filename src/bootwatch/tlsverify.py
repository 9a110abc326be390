"""What httpx should verify a server's certificate against: one place, one rule.

An empty CA path means the system trust store; a path means that bundle only
(httpx deprecates passing the path itself, so this builds the SSL context).
"""

from __future__ import annotations

import ssl

from bootwatch.errors import ConfigError

__all__ = ["tls_verify"]


def tls_verify(ca: str) -> ssl.SSLContext | bool:
    """A context for ``ca`` (ConfigError naming the file when it cannot be read or holds
    no certificate: it was a FileNotFoundError or SSLError traceback), or the default."""
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except OSError as exc:  # ssl.SSLError is an OSError
        why = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else exc
        raise ConfigError(f"{ca}: cannot load the CA bundle: {why}") from None
