"""azurevm claim derivation from verified facts (templates, db/dbx, SIPA flags)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bootwatch.attest.claims import (
    AZURE_TRUSTED_LAUNCH,
    MS_HYPERV_FIRMWARE_PK,
    MS_KEK_2K_CA_2023,
    MS_KEK_CA_2011,
    MS_OPTION_ROM_UEFI_CA_2023,
    MS_UEFI_CA_2011,
    MS_UEFI_CA_2023,
    MS_WINDOWS_PCA_2011,
    MS_WINDOWS_UEFI_CA_2023,
    DbxReference,
    MeasuredSecureBoot,
    OsInfo,
    WindowsBootConfig,
    derive_azurevm_claims,
)
from bootwatch.protocol import token as t

APP = bytes.fromhex("cddfef92bed6a9f3c9873c2fbf511ab718a26d88df94c12064e39c34fccaf31a")
# the facts of the real Azure Trusted Launch WS2019 log (corpus/maa/azure-guest-vm-derived)
AZURE_SB = MeasuredSecureBoot(
    secure_boot=True,
    pk=(MS_HYPERV_FIRMWARE_PK,),
    kek=(MS_KEK_CA_2011,),
    db_certs=(MS_WINDOWS_PCA_2011,),
    dbx_hashes=frozenset({b"\x01" * 32}),
    authorities=(MS_WINDOWS_PCA_2011,),
    boot_apps=(APP,),
)
OS = OsInfo("Windows", "Microsoft", 10, 0, "NotApplicable")
JWK = {"kid": t.EPHEMERAL_KEY_KID, "kty": "RSA", "key_ops": ["encrypt"], "e": "AQAB", "n": "xx"}


def _derive(sb: MeasuredSecureBoot = AZURE_SB, win: WindowsBootConfig | None = None,
            pcrs: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7), ref: DbxReference | None = None):  # type: ignore[no-untyped-def]
    return derive_azurevm_claims(
        secure_boot=sb, windows=win or WindowsBootConfig(), templates=(AZURE_TRUSTED_LAUNCH,),
        dbx_reference=ref, os_info=OS, attested_pcrs=pcrs, protocol_version="2.0",
        enc_key_jwk=JWK, client_payload={"nonce": "MTIz"}, vm_id=None,
    )


#: what the facts give for the real log: its SIPA events, in PCRs the quote covers
AZURE_WIN = WindowsBootConfig(present=True, attested=True, quoted_all=True)


def test_azure_defaults_all_validate() -> None:
    out = _derive(win=AZURE_WIN)
    for claim in t.DEFAULT_POLICY_BOOLEANS:
        assert out.claims[claim] is True, out.decision(claim)
    assert out.template == "azure-trusted-launch"
    assert out.claims[t.ATTESTED_PCRS] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert out.claims[t.IS_WINDOWS] is True
    assert out.claims[t.RUNTIME] == {"keys": [JWK], "client-payload": {"nonce": "MTIz"}}
    assert t.VMID not in out.claims


def test_foreign_pk_fails_default_keys_only() -> None:
    sb = MeasuredSecureBoot(True, ("34291bbf7389eafebbf3fb6fe3d7cc7412313eaf",), (MS_KEK_CA_2011,),
                            (MS_UEFI_CA_2011, MS_WINDOWS_PCA_2011), dbx_hashes=frozenset({b"x"}),
                            authorities=(MS_UEFI_CA_2011,), boot_apps=(APP,))
    out = _derive(sb)
    assert out.claims[t.DEFAULT_KEYS_VALIDATED] is False
    why = out.decision(t.DEFAULT_KEYS_VALIDATED).reason
    assert "PK [34291bbf7389] is not the template's" in why
    assert out.claims[t.DB_VALIDATED] is True and out.claims[t.DBX_VALIDATED] is True


def test_revoked_boot_app_fails_dbx() -> None:
    ref = DbxReference(source="dbx_info_msft_latest.json", revoked_images=frozenset({APP}))
    out = _derive(ref=ref)
    assert out.claims[t.DBX_VALIDATED] is False
    assert "revoked by dbx_info_msft_latest.json" in out.decision(t.DBX_VALIDATED).reason
    local = MeasuredSecureBoot(**{**AZURE_SB.__dict__, "dbx_hashes": frozenset({APP})})
    assert _derive(local).claims[t.DBX_VALIDATED] is False


def test_cert_revocation_only_when_enforced() -> None:
    ref = DbxReference("x", revoked_cert_thumbprints=frozenset({MS_WINDOWS_PCA_2011}))
    assert _derive(ref=ref).claims[t.DBX_VALIDATED] is True
    strict = DbxReference("x", revoked_cert_thumbprints=frozenset({MS_WINDOWS_PCA_2011}),
                          enforce_certificates=True)
    assert _derive(ref=strict).claims[t.DBX_VALIDATED] is False


def test_empty_or_missing_dbx_and_db() -> None:
    no_dbx = MeasuredSecureBoot(**{**AZURE_SB.__dict__, "dbx_hashes": frozenset()})
    assert "empty" in _derive(no_dbx).decision(t.DBX_VALIDATED).reason
    stray = MeasuredSecureBoot(**{**AZURE_SB.__dict__, "authorities": ("ab" * 20,)})
    assert _derive(stray).claims[t.DB_VALIDATED] is False


def test_secure_boot_off_and_pcr7_unattested() -> None:
    off = MeasuredSecureBoot(**{**AZURE_SB.__dict__, "secure_boot": False})
    assert _derive(off).claims[t.SECUREBOOT] is False
    out = _derive(pcrs=(0, 1, 2, 3, 4, 5, 6))
    for claim in (t.SECUREBOOT, t.DB_VALIDATED, t.DBX_VALIDATED, t.DEFAULT_KEYS_VALIDATED):
        assert out.claims[claim] is False
    assert "PCR 7" in out.decision(t.SECUREBOOT).reason


def test_undecodable_variable_fails_closed() -> None:
    bad = MeasuredSecureBoot(
        **{**AZURE_SB.__dict__, "decoded": False, "problems": ("db: bad list",)}
    )
    out = _derive(bad)
    assert out.claims[t.DB_VALIDATED] is False and out.claims[t.DEFAULT_KEYS_VALIDATED] is False


def test_windows_flags() -> None:
    on = WindowsBootConfig(present=True, attested=True, quoted_all=True, kernel_debug=True,
                           flight_signing=True,
                           elam=True, hvci_policy=3)
    out = _derive(win=on)
    assert out.claims[t.KERNELDEBUG_ENABLED] is True
    assert out.claims[t.DEBUGGERS_DISABLED] is False
    assert out.decision(t.DEBUGGERS_DISABLED).reason == "enabled: kernel debugging"
    assert out.claims[t.SIGNING_DISABLED] is False
    assert out.claims[t.ELAM_ENABLED] is True and out.claims[t.HVCI_POLICY] == 3
    unattested = _derive(win=WindowsBootConfig(present=True, attested=False))
    assert unattested.claims[t.DEBUGGERS_DISABLED] is False
    assert unattested.claims[t.SIGNING_DISABLED] is False
    def linux(sb: MeasuredSecureBoot) -> Any:
        return derive_azurevm_claims(
            secure_boot=sb, windows=WindowsBootConfig(), templates=(AZURE_TRUSTED_LAUNCH,),
            dbx_reference=None, os_info=OsInfo("Linux", "Ubuntu", 22, 4, ""),
            attested_pcrs=(0, 1, 2, 3, 4, 5, 6, 7), protocol_version="2.0", enc_key_jwk=JWK,
            client_payload={}, vm_id=None)

    shim = replace(AZURE_SB, authorities=(MS_UEFI_CA_2011,))  # shim, signed by the UEFI CA
    assert linux(shim).claims[t.DEBUGGERS_DISABLED] is True
    assert linux(shim).claims[t.ELAM_ENABLED] is False
    # a boot the Windows Production PCA verified is Windows whatever the request says
    # (found in review: "Linux" and PCR 0-7 only read as "no debugger, no test signing")
    said_linux = linux(AZURE_SB)
    assert said_linux.claims[t.DEBUGGERS_DISABLED] is False
    assert said_linux.claims[t.SIGNING_DISABLED] is False


def test_a_windows_boot_without_its_sipa_pcrs_quoted_or_with_a_retyped_record_is_unknown() -> None:
    """Found in review: a Windows client that left PCR 12-14 out of its quote (and their
    records out of the log), or retyped the TESTSIGNING record to EV_IPL (types are not
    measured), got "no debugger, no test signing" and passed the default policy."""
    for win, why in ((WindowsBootConfig(), "does not cover PCR 12, 13 and 14"),
                     (WindowsBootConfig(present=True, attested=True),
                      "does not cover PCR 12, 13 and 14"),
                     (WindowsBootConfig(present=True, attested=True, quoted_all=True,
                                        foreign_event=42), "(event 42)")):
        out = _derive(win=win)
        for claim in (t.DEBUGGERS_DISABLED, t.SIGNING_DISABLED):
            assert out.claims[claim] is False and why in out.decision(claim).reason, win
    # SIPA events in the log make a boot Windows whatever the request's OS says
    said_linux = derive_azurevm_claims(
        secure_boot=AZURE_SB, windows=WindowsBootConfig(present=True, attested=True,
                                                        foreign_event=7),
        templates=(AZURE_TRUSTED_LAUNCH,), dbx_reference=None,
        os_info=OsInfo("Linux", "Ubuntu", 22, 4, ""), attested_pcrs=(0, 1, 2, 3, 4, 5, 6, 7),
        protocol_version="2.0", enc_key_jwk=JWK, client_payload={}, vm_id=None)
    assert said_linux.claims[t.SIGNING_DISABLED] is False


#: a Trusted Launch VM after Microsoft's 2023 certificate update (or created after April
#: 2024): KEK and db hold the 2023 CAs beside the 2011 ones, and the Windows Boot Manager
#: is signed by the Windows UEFI CA 2023 (thumbprints: claims.py, from
#: microsoft/secureboot_objects)
AZURE_SB_2023 = replace(
    AZURE_SB,
    kek=(MS_KEK_CA_2011, MS_KEK_2K_CA_2023),
    db_certs=(MS_WINDOWS_PCA_2011, MS_UEFI_CA_2011, MS_WINDOWS_UEFI_CA_2023, MS_UEFI_CA_2023,
              MS_OPTION_ROM_UEFI_CA_2023),
    authorities=(MS_WINDOWS_UEFI_CA_2023,),
)


def test_the_2023_certificates_are_azures_default_keys() -> None:
    """Before, every Trusted Launch VM with the 2023 certificates (Windows adds them by
    itself since 2024; Azure creates VMs with them since April 2024) failed
    default-securebootkeysvalidated and dbvalidated, and the default policy denied it."""
    out = _derive(AZURE_SB_2023, win=AZURE_WIN)
    for claim in t.DEFAULT_POLICY_BOOLEANS:
        assert out.claims[claim] is True, out.decision(claim)
    assert out.template == "azure-trusted-launch"
    # a db certificate outside both generations still fails, naming it
    foreign = replace(AZURE_SB_2023, db_certs=(*(AZURE_SB_2023.db_certs or ()), "ab" * 20))
    assert _derive(foreign, win=AZURE_WIN).claims[t.DEFAULT_KEYS_VALIDATED] is False
    assert "abababababab" in _derive(foreign).decision(t.DB_VALIDATED).reason


def test_a_boot_manager_signed_by_the_windows_uefi_ca_2023_is_windows() -> None:
    """Before, only the PCA 2011 marked a measured Windows boot: a 2023-signed boot
    manager that said "Linux" and quoted PCR 0-7 only read as "no debugger, no test
    signing"."""
    said_linux = derive_azurevm_claims(
        secure_boot=AZURE_SB_2023, windows=WindowsBootConfig(),
        templates=(AZURE_TRUSTED_LAUNCH,), dbx_reference=None,
        os_info=OsInfo("Linux", "Ubuntu", 22, 4, ""), attested_pcrs=(0, 1, 2, 3, 4, 5, 6, 7),
        protocol_version="2.0", enc_key_jwk=JWK, client_payload={}, vm_id=None)
    for claim in (t.DEBUGGERS_DISABLED, t.SIGNING_DISABLED):
        assert said_linux.claims[claim] is False
        assert "does not cover PCR 12, 13 and 14" in said_linux.decision(claim).reason
    # the third-party UEFI CA 2023 (shim) is not a Windows boot
    shim = replace(AZURE_SB_2023, authorities=(MS_UEFI_CA_2023,))
    linux = derive_azurevm_claims(
        secure_boot=shim, windows=WindowsBootConfig(), templates=(AZURE_TRUSTED_LAUNCH,),
        dbx_reference=None, os_info=OsInfo("Linux", "Ubuntu", 22, 4, ""),
        attested_pcrs=(0, 1, 2, 3, 4, 5, 6, 7), protocol_version="2.0", enc_key_jwk=JWK,
        client_payload={}, vm_id=None)
    assert linux.claims[t.DEBUGGERS_DISABLED] is True
