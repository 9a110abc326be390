"""bootwatch.agent: the guest side of Trusted Launch attestation.

Modules (imported explicitly, so ``bootwatch.agent.client`` does not pay for tpm2-pytss):
``tpm`` (ESAPI helpers, handles, TCTI handling), ``evidence`` (collect an AzureGuest
request: :func:`bootwatch.agent.evidence.collect_evidence`), ``unseal`` (open a sealed
response in the vTPM: :func:`bootwatch.agent.unseal.unseal`).
"""
