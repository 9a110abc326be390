"""bootwatch.attest: the pure AzureGuest attestation pipeline.

``evidence`` verifies the TPM evidence; ``facts`` turns verified evidence into
boot facts; ``claims`` derives the ``azurevm`` claims (Secure Boot templates,
DBX data); ``token`` assembles the token body; ``pipeline`` joins them:
:func:`bootwatch.attest.pipeline.attest_azure_guest`.  Nothing here touches a
network, a disk, a clock or settings: those are passed in.
"""

__all__: list[str] = []
