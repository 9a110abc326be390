"""The unsealer: open a sealed AzureGuest response with the vTPM's ephemeral key.

The service wraps the AES key of the token to the ephemeral key the request
certified; that key exists only inside the vTPM and its authPolicy is
PolicyPCR over the quoted PCR values.  So: recreate the key (CreatePrimary
under NULL is deterministic within one boot for one template), satisfy its
policy with a PolicyPCR session over the *current* PCRs, RSA_Decrypt
(RSAES-PKCS1-v1_5) the inner key, then AES-256-GCM with AAD "Transport Key"
(:mod:`bootwatch.protocol.envelope`).  If a PCR moved since the quote, the
TPM refuses, and the caller is told which PCR.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPM2B_DATA, TPM2B_PUBLIC_KEY_RSA, TPMT_RSA_DECRYPT

from bootwatch.agent.tpm import (
    ATTESTED_PCRS,
    TpmPolicyError,
    create_ephemeral_key,
    flushing,
    open_tpm,
    read_pcrs,
    start_pcr_policy_session,
    tpm_call,
)
from bootwatch.errors import TpmDeviceError
from bootwatch.protocol.envelope import SealedEnvelope, decode_token_response, open_with_key


class PcrsChangedError(TpmDeviceError):
    """The vTPM's PCRs changed since the quote: the sealed token cannot be opened any more."""

    code = "tpm_pcrs_changed"

    def __init__(self, message: str, changed: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.changed = tuple(changed)


class UnwrapError(TpmDeviceError):
    """The vTPM could not unwrap the envelope's inner key (not sealed to this key)."""

    code = "tpm_unwrap_failed"


def unwrap_inner_key(
    esys: ESAPI,
    encrypted_inner_key: bytes,
    *,
    quoted_pcrs: Mapping[int, bytes] | None = None,
    pcr_indices: Sequence[int] = ATTESTED_PCRS,
    key_handle: ESYS_TR | None = None,
) -> bytes:
    """RSAES-decrypt ``encrypted_inner_key`` with the ephemeral key under a PolicyPCR session.

    With ``quoted_pcrs`` (the values the request quoted; recommended) the key is
    recreated for exactly those values; the TPM itself then refuses the
    PolicyPCR session if a PCR moved, and the error names the PCRs.
    Without, the key is recreated from the current values, which yields another
    key after a change, and the decrypt fails as :class:`UnwrapError`.
    ``key_handle``: the key the request certified, still loaded
    (:func:`bootwatch.agent.evidence.collect_keeping_key`); used as it is, not
    recreated and not flushed (its authPolicy holds the quoted values, so a moved
    PCR is refused the same way).
    """
    indices = tuple(sorted(quoted_pcrs) if quoted_pcrs is not None else sorted(set(pcr_indices)))
    owned: contextlib.AbstractContextManager[ESYS_TR]
    if key_handle is not None:
        handle, owned = key_handle, contextlib.nullcontext(key_handle)
    else:
        handle, _ = create_ephemeral_key(esys, indices, quoted_pcrs)
        owned = flushing(esys, handle)
    with owned:
        session = start_pcr_policy_session(esys, indices)
        with flushing(esys, session):
            try:
                with tpm_call("RSA_Decrypt (EncryptedInnerKey, RSAES)"):
                    plain = esys.rsa_decrypt(
                        handle,
                        TPM2B_PUBLIC_KEY_RSA(encrypted_inner_key),
                        TPMT_RSA_DECRYPT(scheme=TPM2_ALG.RSAES),
                        TPM2B_DATA(),
                        session1=session,
                    )
            except TpmPolicyError as exc:
                now = read_pcrs(esys, indices)
                changed = [i for i in indices if quoted_pcrs and now[i] != quoted_pcrs[i]]
                raise PcrsChangedError(
                    "the PCRs changed since the quote (the vTPM refused the PolicyPCR session"
                    + (f" for PCR {', '.join(map(str, changed))}" if changed else "")
                    + "): attest again",
                    changed,
                ) from exc
            except TpmDeviceError as exc:
                raise UnwrapError(
                    "the vTPM could not unwrap EncryptedInnerKey: the token was not sealed to "
                    "this vTPM's current ephemeral key (PCRs changed since the quote, the VM "
                    f"rebooted, or the token is for another VM): {exc}"
                ) from exc
    return bytes(plain)


def open_envelope(
    esys: ESAPI,
    envelope: SealedEnvelope,
    *,
    quoted_pcrs: Mapping[int, bytes] | None = None,
    pcr_indices: Sequence[int] = ATTESTED_PCRS,
    key_handle: ESYS_TR | None = None,
) -> str:
    """Unwrap in the TPM, then AES-256-GCM-open: returns the compact JWS.

    ``key_handle``: see :func:`unwrap_inner_key`."""
    key = unwrap_inner_key(
        esys, envelope.encrypted_inner_key, quoted_pcrs=quoted_pcrs, pcr_indices=pcr_indices,
        key_handle=key_handle,
    )
    return open_with_key(envelope, key)


def unseal(
    tcti: str | None,
    response_body: bytes,
    *,
    quoted_pcrs: Mapping[int, bytes] | None = None,
    pcr_indices: Sequence[int] = ATTESTED_PCRS,
) -> str:
    """Open a ``{"token": ...}`` response (or bare envelope JSON) on ``tcti``; the JWS.

    Raises :class:`PcrsChangedError` when PCRs moved since the quote,
    :class:`UnwrapError` when the TPM cannot unwrap the key, CryptoError when
    the AES-GCM step fails, ProtocolError when the envelope is malformed.
    """
    envelope = decode_token_response(response_body)
    with open_tpm(tcti) as esys:
        return open_envelope(esys, envelope, quoted_pcrs=quoted_pcrs, pcr_indices=pcr_indices)


__all__ = [
    "PcrsChangedError",
    "UnwrapError",
    "open_envelope",
    "unseal",
    "unwrap_inner_key",
]
