"""bootwatch.protocol: wire shapes both the agent and the service share.

``envelope`` is the sealed ``/attest/AzureGuest`` response; ``token`` names the
claims of the ``azurevm`` token; ``azureguest`` is the request.  Pure: bytes
and values in, typed values out.
"""

__all__: list[str] = []
