"""TPM2_MakeCredential in Python, checked by the real thing: swtpm's ActivateCredential
must release the secret (RSA and ECC EKs), and only for the named key and the right EK."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_DIGEST, TPM2B_PUBLIC

from bootwatch.agent.enroll import (
    _EK_ATTRS,
    AIK_ATTRIBUTES,
    EK_POLICY_A_SHA256,
    activate_credential,
)
from bootwatch.agent.tpm import open_tpm
from bootwatch.errors import TpmDeviceError
from bootwatch.lab.swtpm import SwtpmProcess
from bootwatch.tpm.credential import kdfa, kdfe, make_credential
from bootwatch.tpm.errors import TpmValueError
from bootwatch.tpm.public import parse_tpm2b_public

pytestmark = pytest.mark.swtpm


@pytest.fixture
def tpm(tmp_path: Path, swtpm_available: None) -> Iterator[ESAPI]:
    proc = SwtpmProcess.start(tmp_path)
    try:
        proc.init()
        proc.startup_clear()
        with open_tpm(proc.tcti) as esys:
            yield esys
    finally:
        proc.stop(save=False)


def _ek(esys: ESAPI, spec: str) -> tuple[ESYS_TR, TPM2B_PUBLIC]:
    tpl = TPM2B_PUBLIC.parse(spec, objectAttributes=_EK_ATTRS)
    tpl.publicArea.authPolicy = TPM2B_DIGEST(EK_POLICY_A_SHA256)
    handle, public, *_ = esys.create_primary(None, tpl, ESYS_TR.ENDORSEMENT)
    return handle, public


def _aik(esys: ESAPI, attrs: TPMA_OBJECT = AIK_ATTRIBUTES) -> tuple[ESYS_TR, TPM2B_PUBLIC]:
    tpl = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=attrs)
    handle, public, *_ = esys.create_primary(None, tpl, ESYS_TR.OWNER)
    return handle, public


@pytest.mark.parametrize("spec", ["rsa2048:aes128cfb", "ecc256:aes128cfb"])
def test_swtpm_activates_the_python_credential(tpm: ESAPI, spec: str) -> None:
    ek, ek_pub = _ek(tpm, spec)
    aik, aik_pub = _aik(tpm)
    name = bytes(aik_pub.get_name())
    secret = os.urandom(32)
    made = make_credential(parse_tpm2b_public(ek_pub.marshal()), name, secret)
    got = activate_credential(tpm, ek, ek_pub, aik, made.credential_blob, made.encrypted_secret)
    assert got == secret
    # a second credential with fresh randomness differs on the wire, releases the same way
    again = make_credential(parse_tpm2b_public(ek_pub.marshal()), name, secret)
    assert again.encrypted_secret != made.encrypted_secret
    tpm.flush_context(ek)
    tpm.flush_context(aik)


def test_the_tpm_refuses_another_key_or_another_ek(tpm: ESAPI) -> None:
    ek, ek_pub = _ek(tpm, "rsa2048:aes128cfb")
    aik, aik_pub = _aik(tpm)
    made = make_credential(parse_tpm2b_public(ek_pub.marshal()),
                           bytes(aik_pub.get_name()), b"s" * 32)
    tpm.flush_context(aik)
    # another key in the same TPM: the name is in the HMAC, ActivateCredential fails
    other, _ = _aik(tpm, AIK_ATTRIBUTES | TPMA_OBJECT.NODA)
    with pytest.raises(TpmDeviceError, match="ActivateCredential"):
        activate_credential(tpm, ek, ek_pub, other, made.credential_blob,
                            made.encrypted_secret)
    tpm.flush_context(other)
    tpm.flush_context(ek)
    # another EK (an ECC one here; a second TPM behaves the same): the seed does not open
    ek2, ek2_pub = _ek(tpm, "ecc256:aes128cfb")
    aik, _ = _aik(tpm)
    with pytest.raises(TpmDeviceError, match="ActivateCredential"):
        activate_credential(tpm, ek2, ek2_pub, aik, made.credential_blob,
                            made.encrypted_secret)


def test_kdf_known_answers() -> None:
    # KDFa counter-mode HMAC: recomputed by hand from Part 1 §11.4.10.2 for 256 bits
    import hashlib
    import hmac

    key, label, u, v = b"k" * 32, b"STORAGE", b"U", b"V"
    want = hmac.new(key, b"\0\0\0\1STORAGE\0UV\0\0\1\0", hashlib.sha256).digest()
    assert kdfa(0x000B, key, label, u, v, 256) == want
    want128 = hmac.new(key, b"\0\0\0\1STORAGE\0UV\0\0\0\x80", hashlib.sha256).digest()
    assert kdfa(0x000B, key, label, u, v, 128) == want128[:16]
    want_e = hashlib.sha256(b"\0\0\0\1" + b"Z" + b"IDENTITY\0" + b"U" + b"V").digest()
    assert kdfe(0x000B, b"Z", b"IDENTITY", b"U", b"V", 256) == want_e


def test_make_credential_refuses_what_cannot_be_activated(tpm: ESAPI) -> None:
    _, aik_pub = _aik(tpm)
    signing = parse_tpm2b_public(aik_pub.marshal())
    with pytest.raises(TpmValueError, match="AES-CFB"):
        make_credential(signing, bytes(aik_pub.get_name()), b"x" * 32)
    with pytest.raises(TpmValueError, match=r"1\.\.64"):
        make_credential(signing, bytes(aik_pub.get_name()), b"x" * 65)


@pytest.mark.parametrize("bits", [64, 129, 512])
def test_an_ek_claiming_an_aes_size_that_does_not_exist_is_a_typed_refusal(
        tpm: ESAPI, bits: int) -> None:
    """Found in review: an ek_pub with the certified key but keyBits 64, 129 or 512 made
    cryptography raise a plain ValueError inside make_credential: round one answered 500
    with a traceback instead of 400 naming ek_public."""
    _, ek = _ek(tpm, "rsa")
    forged, _ = TPM2B_PUBLIC.unmarshal(ek.marshal())
    forged.publicArea.parameters.rsaDetail.symmetric.keyBits.aes = bits
    _, aik_pub = _aik(tpm)
    with pytest.raises(TpmValueError, match="128, 192 or 256"):
        make_credential(parse_tpm2b_public(forged.marshal()), bytes(aik_pub.get_name()),
                        b"x" * 32)
