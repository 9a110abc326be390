"""key_usage sets exactly the named flags (and refuses a misspelt one)."""

import pytest

from bootwatch.x509build import KEY_USAGE_FLAGS, key_usage


def test_only_the_named_flags_are_set() -> None:
    ku = key_usage("key_cert_sign", "crl_sign")
    on = {f for f in KEY_USAGE_FLAGS
          if f not in ("encipher_only", "decipher_only") and getattr(ku, f)}
    assert on == {"key_cert_sign", "crl_sign"}


def test_a_misspelt_flag_is_refused() -> None:
    with pytest.raises(ValueError, match="digitalSignature"):
        key_usage("digitalSignature")
