"""The Host header picks the provider and the issuer, but only among hosts the service
answers for: a forged Host must never become a token's ``iss`` or ``jku``."""

from __future__ import annotations

from typing import Any

import pytest

Q = "?api-version=2020-10-01"


def _hosted_provider(state: Any) -> None:
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    with state.db.session() as s:
        if s.get(ProviderRow, "contoso") is None:
            create_provider(s, state.sealer, "contoso", kind=ProviderKind.CUSTOM,
                            trust_model=TrustModel.AAD, hostname="contoso.example")


@pytest.fixture(scope="module")
def hosted(service_factory: Any) -> Any:
    return service_factory(_hosted_provider, allowed_hosts=("attest.example",))


def _issuer(svc: Any, host: str) -> Any:
    with svc.client() as c:
        return c.get(f"/.well-known/openid-configuration{Q}", headers={"Host": host})


def test_forged_host_is_refused(hosted: Any) -> None:
    r = _issuer(hosted, "evil.example")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "InvalidParameter"
    assert "evil.example" in r.json()["error"]["message"]


def test_loopback_and_allowed_hosts_name_the_issuer(hosted: Any) -> None:
    port = hosted.url.rsplit(":", 1)[1]
    for host, issuer in [
        (f"localhost:{port}", f"https://localhost:{port}"),
        (f"[::1]:{port}", f"https://[::1]:{port}"),
        ("attest.example", "https://attest.example"),
    ]:
        r = _issuer(hosted, host)
        assert r.status_code == 200, r.text
        meta = r.json()
        assert meta["issuer"] == issuer
        assert meta["jwks_uri"] == issuer + "/certs"


def test_provider_host_name_selects_the_provider(hosted: Any) -> None:
    port = hosted.url.rsplit(":", 1)[1]
    with hosted.client() as c:
        by_host = c.get(f"/certs{Q}", headers={"Host": f"contoso.example:{port}"}).json()
        by_prefix = c.get(f"/providers/contoso/certs{Q}").json()
        shared = c.get(f"/certs{Q}").json()
    kids = {k["kid"] for k in by_host["keys"]}
    assert kids == {k["kid"] for k in by_prefix["keys"]}
    assert kids.isdisjoint({k["kid"] for k in shared["keys"]})
    meta = _issuer(hosted, f"contoso.example:{port}").json()
    assert meta["issuer"] == f"https://contoso.example:{port}"


@pytest.mark.parametrize("bad", ["[::1", "host:port", "a:b:c:d", "[::1]x"])
def test_malformed_host_headers(hosted: Any, bad: str) -> None:
    r = _issuer(hosted, bad)
    assert r.status_code == 400, r.text
