"""Who this VM is (the VM id it reports) and when its AIK certificate runs out.

The VM id in a health report must be the one the attestation token carries
(``x-ms-azurevm-vmid``), so the monitor can join reports and tokens.  The
service derives that claim from the AIK certificate's subject CN when it is a
GUID, upper-cased (``bootwatch.attest.facts.vm_id_from_aik_certificate``; the
lab CA writes the VM id there, as Azure's VM id GUID).  The agent applies the
same rule to the certificate its vTPM holds (it must not import the verifier),
then falls back to the configured ``vm_id``, then to ``/etc/machine-id``.
The certificate read here is *claimed*: only the service validates it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

__all__ = ["AikFacts", "aik_facts", "machine_id", "resolve_vm_id"]

MACHINE_ID = Path("/etc/machine-id")


@dataclass(frozen=True)
class AikFacts:
    """What the agent reads from its (unverified) AIK certificate."""

    claimed_vm_id: str | None
    not_after: datetime | None


def aik_facts(der: bytes | None) -> AikFacts:
    if not der:
        return AikFacts(None, None)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return AikFacts(None, None)
    vm_id = None
    for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
        try:
            vm_id = str(uuid.UUID(value.strip())).upper()
            break
        except ValueError:
            continue
    return AikFacts(vm_id, cert.not_valid_after_utc)


def machine_id(path: Path = MACHINE_ID) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return text if text.isalnum() and 0 < len(text) <= 128 else None


def resolve_vm_id(aik: AikFacts, configured: str | None) -> str:
    """AIK CN GUID, else the configured ``vm_id``, else the machine id, else ``unknown``."""
    return aik.claimed_vm_id or configured or machine_id() or "unknown"
