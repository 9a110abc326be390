"""What httpx should verify a server's certificate against: one place, one rule.

An empty CA path means the system trust store; a path means that bundle only
(httpx deprecates passing the path itself, so this builds the SSL context).
"""

from __future__ import annotations

import ssl

__all__ = ["tls_verify"]


def tls_verify(ca: str) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca) if ca else True
