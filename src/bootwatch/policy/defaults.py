"""The default policies bootwatch ships (package data, read on first use).

``default_azureguest.txt`` is the shared providers' AzureGuest policy as reconstructed in
maa-protocol.md 2.7 (Constellation's copy of it, and a live shared-provider deny that echoes
``[type=="secureboot", value==false] => deny();``): version 1.0, deny when any of six boot
claims is false, otherwise permit, no issuance rules. Microsoft does not publish the text;
its whitespace is ours, so its x-ms-policy-hash differs from the shared providers'
``wm9mHlvTU82e8UqoOy1Yj1FBRSNkfe99-69IYDq9eWs``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = [
    "default_azureguest_policy",
]


@lru_cache(maxsize=1)
def default_azureguest_policy() -> str:
    """The text of the default AzureGuest (``azurevm``) policy."""
    return resources.files("bootwatch.policy").joinpath("default_azureguest.txt").read_text("utf-8")
