"""Claim names of the ``azurevm`` attestation token (maa-protocol section 3).

Shared by the service (which issues them) and the agent and monitor (which
read them), so a typo cannot make one side look for a claim the other never
writes.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTESTATION_TYPE",
    "ATTESTED_PCRS",
    "AZUREVM",
    "BOOTDEBUG_ENABLED",
    "CLAIMS_SUPPORTED",
    "DBX_VALIDATED",
    "DB_VALIDATED",
    "DEBUGGERS_DISABLED",
    "DEFAULT_KEYS_VALIDATED",
    "DEFAULT_POLICY_BOOLEANS",
    "ELAM_ENABLED",
    "EPHEMERAL_KEY_KID",
    "EXP",
    "FLIGHTSIGNING_ENABLED",
    "HVCI_POLICY",
    "HYPERVISORDEBUG_ENABLED",
    "IAT",
    "ISS",
    "IS_WINDOWS",
    "JTI",
    "KERNELDEBUG_ENABLED",
    "NBF",
    "OSBUILD",
    "OSDISTRO",
    "OSTYPE",
    "OSVERSION_MAJOR",
    "OSVERSION_MINOR",
    "POLICY_HASH",
    "POLICY_SIGNER",
    "PREFIX",
    "PROTOCOL_VER",
    "RUNTIME",
    "SECUREBOOT",
    "SIGNING_DISABLED",
    "TESTSIGNING_ENABLED",
    "VER",
    "VMID",
]

ISS: Final = "iss"
IAT: Final = "iat"
NBF: Final = "nbf"
EXP: Final = "exp"
JTI: Final = "jti"
VER: Final = "x-ms-ver"
ATTESTATION_TYPE: Final = "x-ms-attestation-type"
POLICY_HASH: Final = "x-ms-policy-hash"
POLICY_SIGNER: Final = "x-ms-policy-signer"
RUNTIME: Final = "x-ms-runtime"

SECUREBOOT: Final = "secureboot"
PREFIX: Final = "x-ms-azurevm-"
PROTOCOL_VER: Final = "x-ms-azurevm-attestation-protocol-ver"
ATTESTED_PCRS: Final = "x-ms-azurevm-attested-pcrs"
BOOTDEBUG_ENABLED: Final = "x-ms-azurevm-bootdebug-enabled"
KERNELDEBUG_ENABLED: Final = "x-ms-azurevm-kerneldebug-enabled"
HYPERVISORDEBUG_ENABLED: Final = "x-ms-azurevm-hypervisordebug-enabled"
DEBUGGERS_DISABLED: Final = "x-ms-azurevm-debuggersdisabled"
TESTSIGNING_ENABLED: Final = "x-ms-azurevm-testsigning-enabled"
FLIGHTSIGNING_ENABLED: Final = "x-ms-azurevm-flightsigning-enabled"
SIGNING_DISABLED: Final = "x-ms-azurevm-signingdisabled"
ELAM_ENABLED: Final = "x-ms-azurevm-elam-enabled"
HVCI_POLICY: Final = "x-ms-azurevm-hvci-policy"
DB_VALIDATED: Final = "x-ms-azurevm-dbvalidated"
DBX_VALIDATED: Final = "x-ms-azurevm-dbxvalidated"
DEFAULT_KEYS_VALIDATED: Final = "x-ms-azurevm-default-securebootkeysvalidated"
IS_WINDOWS: Final = "x-ms-azurevm-is-windows"
OSTYPE: Final = "x-ms-azurevm-ostype"
OSDISTRO: Final = "x-ms-azurevm-osdistro"
OSVERSION_MAJOR: Final = "x-ms-azurevm-osversion-major"
OSVERSION_MINOR: Final = "x-ms-azurevm-osversion-minor"
OSBUILD: Final = "x-ms-azurevm-osbuild"
VMID: Final = "x-ms-azurevm-vmid"

#: kid of the PCR-bound vTPM key in ``x-ms-runtime.keys``
EPHEMERAL_KEY_KID: Final = "TpmEphemeralEncryptionKey"
#: value of ``x-ms-attestation-type`` for AzureGuest tokens
AZUREVM: Final = "azurevm"

#: the boolean claims the shared provider's default policy denies on (maa-protocol 2.7)
DEFAULT_POLICY_BOOLEANS: Final = (
    DEFAULT_KEYS_VALIDATED,
    DEBUGGERS_DISABLED,
    SECUREBOOT,
    SIGNING_DISABLED,
    DB_VALIDATED,
    DBX_VALIDATED,
)

#: claims advertised in the service's OpenID metadata (``claims_supported``): the azurevm
#: set the service issues (maa-protocol.md section 3), built from the names above so the
#: metadata cannot drift from the tokens (tests/attest/test_pipeline.py cross-checks them)
CLAIMS_SUPPORTED: Final = (
    "nonce",
    VER,
    ATTESTATION_TYPE,
    POLICY_HASH,
    POLICY_SIGNER,
    SECUREBOOT,
    PROTOCOL_VER,
    ATTESTED_PCRS,
    BOOTDEBUG_ENABLED,
    DB_VALIDATED,
    DBX_VALIDATED,
    DEBUGGERS_DISABLED,
    DEFAULT_KEYS_VALIDATED,
    ELAM_ENABLED,
    FLIGHTSIGNING_ENABLED,
    HVCI_POLICY,
    HYPERVISORDEBUG_ENABLED,
    IS_WINDOWS,
    KERNELDEBUG_ENABLED,
    OSBUILD,
    OSDISTRO,
    OSTYPE,
    OSVERSION_MAJOR,
    OSVERSION_MINOR,
    SIGNING_DISABLED,
    TESTSIGNING_ENABLED,
    VMID,
    RUNTIME,
)
