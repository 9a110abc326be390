"""The one vocabulary of what an attestation service decided.

Shared by the pipeline (``attest/pipeline.py``), the attestation records (the
``verdict`` column and the ``bootwatch_attestation_verdicts_total`` metric), the
outcome events the monitor ingests (``protocol/outcome.py``) and the monitor's
states, so the same decision has the same name everywhere.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Verdict"]


class Verdict(StrEnum):
    """What the service decided about one attestation request.

    ``evidence_rejected``: the request, its quote, the AIK chain or the log replay did
    not verify, so the evidence may not come from this VM's vTPM (MAA answers 400
    ``InvalidParameter``); ``deny``: the evidence verified and the policy denied
    (400 ``PolicyEvaluationError``).
    """

    PERMIT = "permit"
    DENY = "deny"
    EVIDENCE_REJECTED = "evidence_rejected"
