"""How much of an issuer's answer the monitor reads while verifying a report's token.

``TokenVerifier`` fetches the issuer's OpenID metadata and JWKS to check a report's
signature.  It read each answer whole (``resp.content``) and only then compared its size
with the 256 KB limit: an issuer, or whatever answers at its address, sending an endless
key set held the report's thread and grew the monitor's memory for as long as it kept
sending.  The answer is now read as a stream and dropped at the limit, so the issuer gets
to send little more than the limit (plus what the sockets' buffers take).

A real HTTP issuer on loopback (``tests/support/bwissuer.py``) serves the documents and
counts what it managed to send before the monitor hung up; the tokens are real RS256 JWTs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import jwt
import pytest
from bwissuer import FLOOD_BYTES, KID, Issuer

from bootwatch.monitor.tokens import TokenCheck, TokenVerifier

VM = "8D0E8C8A-7D3B-4C1E-9A51-0F6F4F7C2B10"


def _ok_why(check: TokenCheck) -> tuple[bool, str]:
    return check.verified, check.why


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    i = Issuer()
    yield i
    i.close()


def test_a_real_key_set_verifies_through_the_streamed_read(issuer: Issuer) -> None:
    verifier = TokenVerifier((issuer.url,))
    token = issuer.token(VM)
    check = verifier.check(token, VM)
    assert (check.verified, check.why, check.verified_issuer) == (True, "", issuer.url)
    assert check.verified_jti == jwt.decode(token, options={"verify_signature": False})["jti"]
    ok, why = _ok_why(verifier.check(issuer.token(VM), "00000000-0000-4000-8000-000000000001"))
    assert not ok and "not 00000000-0000-4000-8000-000000000001" in why


def test_an_endless_key_set_is_cut_off_at_the_limit(issuer: Issuer) -> None:
    issuer.flood = True
    verifier = TokenVerifier((issuer.url,))
    ok, why = _ok_why(verifier.check(issuer.token(VM), VM))
    assert not ok and "larger than" in why, why
    assert issuer.done.wait(30), "the issuer never finished its answer"
    (sent,) = issuer.sent
    # 256 KB read, the rest of what was sent sat in socket buffers (a few MB on loopback)
    assert sent < FLOOD_BYTES // 3, f"the monitor read {sent} bytes of the key set"


def test_provider_names_in_an_issuer_cannot_point_elsewhere() -> None:
    verifier = TokenVerifier(("https://att.example",))
    assert verifier.trusts("https://att.example/providers/team-1")
    for bad in ("https://att.example/providers/x?y=", "https://att.example/providers/x#",
                "https://att.example/providers/%2e%2e", "https://att.example/providers/a/b",
                "https://att.example/providers/"):
        assert not verifier.trusts(bad), bad


def test_a_malformed_key_of_a_trusted_issuer_is_a_reason_not_an_error(
        issuer: Issuer) -> None:
    issuer.jwks = json.dumps({"keys": [{"kty": "RSA", "kid": KID, "n": 5, "e": "AQAB"}]})
    ok, why = _ok_why(TokenVerifier((issuer.url,)).check(issuer.token(VM), VM))
    assert not ok and ("malformed" in why or "could not be fetched" in why), why


def test_tokens_naming_made_up_providers_cannot_make_the_monitor_fetch_for_each(
        issuer: Issuer) -> None:
    """POST /reports is open: each report whose token named a new provider under a
    trusted issuer (``/providers/x1``, ``x2`` ...) cost one outbound fetch, and a failed
    issuer was fetched again for every report naming it."""
    verifier = TokenVerifier((issuer.url,))
    for i in range(50):
        token = issuer.token(VM, f"{issuer.url}/providers/made-up-{i}")
        ok, why = _ok_why(verifier.check(token, VM))
        assert not ok and "could not be fetched" in why, why
    assert issuer.requests <= 10
    before = issuer.requests
    ok, why = _ok_why(verifier.check(issuer.token(VM, f"{issuer.url}/providers/made-up-0"), VM))
    assert not ok and "not fetched again" in why, why
    assert issuer.requests == before


def test_keys_fetched_before_verify_while_the_issuer_is_away(
        issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: when the cached keys were due for a refetch and the issuer did not
    answer, every report was unverified (and the agent does not send one again), so an
    honest VM read as unproven for a whole cycle."""
    import bootwatch.monitor.tokens as tokens

    verifier = TokenVerifier((issuer.url,))
    assert verifier.check(issuer.token(VM), VM).verified
    token = issuer.token(VM)
    issuer.close()                              # the issuer is away ...
    monkeypatch.setattr(tokens, "_JWKS_TTL", 0.0)   # ... when the keys are due again
    first = verifier.check(token, VM)
    again = verifier.check(token, VM)           # within the refetch back-off
    assert (first.verified, again.verified) == (True, True), (first.why, again.why)
    monkeypatch.setattr(tokens, "_STALE_GRACE", 0.0)  # past the grace: refused, said why
    ok, why = _ok_why(verifier.check(token, VM))
    assert not ok and ("could not be fetched" in why), why
