"""Corpus paths for the attestation tests (computed like tests/conftest.py).

Imported by file path (``sys.path`` + a unique module name), because pytest
runs in importlib mode where ``tests.conftest`` cannot be imported.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
MAA = SHARED / "corpus" / "maa"
AZURE = MAA / "azure-guest-vm-derived"
EVENTLOGS = SHARED / "corpus" / "eventlogs"
SECUREBOOT = SHARED / "corpus" / "secureboot"


def azure_request_body() -> bytes:
    """The real Trusted Launch request of the spec example, as sent on the wire."""
    inner = (AZURE / "attestation-info.json").read_bytes()
    token = base64.urlsafe_b64encode(inner).rstrip(b"=").decode()
    return ('{"AttestationInfo": "' + token + '"}').encode()
