"""Review of the replicas' shared state (issue 15) on the real PostgreSQL: two service
containers on one schema, as two ``service run`` replicas are, with a cache TTL far
longer than the tests so that only the change feed (LISTEN/NOTIFY) can make a replica
see another's write; and the event relay while its database is away.

What must hold: a change announced while a replica is loading the provider's state, or
before its listener's first ``LISTEN``, is seen at once (not after a TTL); replicas
starting together on a new database all start; two signer removals through two
replicas never leave an Isolated provider without signers; the relay does not spin
on a database that is away.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bwproc import free_port
from bwservers import PG_URL, pg_schema
from sqlalchemy import select, text

from bootwatch.errors import OperationRefusedError, PolicySignatureError
from bootwatch.service.atrest import Sealer
from bootwatch.service.auth import Principal
from bootwatch.service.db import Database, make_engine, run_migrations
from bootwatch.service.models import SignerRow
from bootwatch.service.outbox import EventRelay
from bootwatch.service.policy_admin import modify_signers, set_policy, sha1_thumbprint
from bootwatch.service.providers import (
    ProviderKind,
    TrustModel,
    create_provider,
    ensure_shared_providers,
)
from bootwatch.service.settings import Settings
from bootwatch.service.state import ServiceState, bootstrap

pytestmark = [pytest.mark.postgres]

DENY_ALL = "version= 1.0;\nauthorizationrules\n{\n    => deny();\n};\nissuancerules\n{\n};\n"
ADMIN = Principal("review-admin", (), "admin-token")
BASE = "http://replica.test"


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        yield name


@pytest.fixture
def replicas(schema: str, tmp_path: Path) -> Iterator[Callable[[], ServiceState]]:
    """Service containers on one schema and at-rest key, a 600 s cache TTL (only a
    notification can make one see another's write), closed afterwards."""
    key = secrets.token_hex(32)
    built: list[ServiceState] = []

    def build() -> ServiceState:
        state = bootstrap(Settings(data_dir=tmp_path / f"r{len(built)}", db_url=PG_URL,
                                   db_schema=schema, at_rest_key=key,
                                   cache_ttl_seconds=600.0))
        built.append(state)
        return state

    yield build
    for state in built:
        state.close()


def _heard(state: ServiceState) -> list[str | None]:
    """What the state's change feed hears, in order (after its caches were cleared:
    the store subscribed first)."""
    heard: list[str | None] = []
    state.changes.subscribe(heard.append)
    return heard


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def _wait_listening(announcer: ServiceState, heard: list[str | None]) -> None:
    """Until the listener that fills ``heard`` hears an announcement: its LISTEN is up."""

    def listening() -> bool:
        announcer.changes.announce("unrelated")
        time.sleep(0.05)
        return "unrelated" in heard

    _wait_for(listening, "the listener is up")


def _team(state: ServiceState) -> None:
    with state.db.session() as s:
        create_provider(s, state.sealer, "team", kind=ProviderKind.CUSTOM,
                        trust_model=TrustModel.AAD)


def test_a_change_announced_during_a_load_is_not_cached_for_a_ttl(
        replicas: Callable[[], ServiceState], monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica B loads the provider (its cache expired); replica A writes a policy and
    announces it while B's load is under way, after B read the old policy; B's
    listener clears B's cache.  Then B's load finishes.  Before, B cached what that
    load read, and answered with the old policy for the whole TTL (600 s here) although
    it had heard the change."""
    a, b = replicas(), replicas()
    _team(a)
    heard = _heard(b)
    b.start()
    _wait_listening(a, heard)
    store = b.providers
    load = store._load
    changed: list[bool] = []

    def load_overtaken_by_a_change(name: str) -> Any:
        snap = load(name)  # read the provider as it was
        if not changed:
            changed.append(True)
            set_policy(a, a.providers.context("team", BASE), "AzureGuest", DENY_ALL, ADMIN)
            _wait_for(lambda: "team" in heard, "replica B heard the change")
        return snap

    monkeypatch.setattr(store, "_load", load_overtaken_by_a_change)
    assert store.context("team", BASE).azureguest_policy.is_default  # read before
    assert store.context("team", BASE).azureguest_policy.text == DENY_ALL.strip()


def test_a_change_announced_before_the_first_listen_is_seen(
        replicas: Callable[[], ServiceState]) -> None:
    """Replica B serves (and caches the provider) before its listener's first LISTEN is
    up; a change announced in between reaches nobody at B.  The listener must clear
    B's caches once it listens, as it does after a reconnect; before, B kept the old
    policy for the whole TTL."""
    a, b = replicas(), replicas()
    _team(a)
    assert b.providers.context("team", BASE).azureguest_policy.is_default
    set_policy(a, a.providers.context("team", BASE), "AzureGuest", DENY_ALL, ADMIN)
    heard = _heard(b)
    b.start()
    _wait_listening(a, heard)
    assert b.providers.context("team", BASE).azureguest_policy.text == DENY_ALL.strip()


def test_replicas_starting_together_on_a_new_database_all_start(schema: str) -> None:
    """Three replicas start at once on a migrated schema without the shared provider:
    each finds it missing and creates it.  Before, the later two failed start-up with
    the unique violation of the first one's insert."""
    engines = [make_engine(PG_URL, schema=schema) for _ in range(3)]
    try:
        run_migrations(engines[0])
        sealer = Sealer(secrets.token_bytes(32))
        barrier = threading.Barrier(len(engines))
        errors: list[BaseException] = []

        def start(engine: Any) -> None:
            barrier.wait()
            try:
                ensure_shared_providers(Database(engine), sealer, ["shared"])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with engines[0].connect() as c:
            assert c.execute(text("SELECT count(*) FROM providers")).scalar_one() == 1
    finally:
        for e in engines:
            e.dispose()


def test_two_replicas_removing_two_signers_leave_one(
        replicas: Callable[[], ServiceState], h: Any,
        signer1: tuple[Any, Any], signer2: tuple[Any, Any]) -> None:
    """An Isolated provider with two signers; replica A removes the first, replica B the
    second, at the same moment.  Both removals read the signers before either wrote
    (the test holds the signer rows until both are waiting).  Before, both saw the other
    signer still there and both committed: no signer left, and every later policy or
    signer change of the provider is refused for ever."""
    a, b = replicas(), replicas()
    with a.db.session() as s:
        create_provider(s, a.sealer, "iso", kind=ProviderKind.CUSTOM,
                        trust_model=TrustModel.ISOLATED, signers=[signer1[1], signer2[1]])

    def removal(cert: Any) -> str:
        claim = {"policyCertificate": {"kty": "RSA", "x5c": [h.x5c(cert)]}}
        return str(h.signed_jws(claim, *signer1))

    jobs = [(a, removal(signer1[1])), (b, removal(signer2[1]))]
    ctxs = [state.providers.context("iso", BASE) for state, _ in jobs]
    results: list[str | BaseException] = []
    holder = make_engine(PG_URL, schema=a.settings.db_schema)
    try:
        with holder.connect() as hold:
            hold.execute(text("SELECT id FROM signers FOR UPDATE"))  # both writes wait

            def remove(i: int) -> None:
                state, body = jobs[i]
                try:
                    results.append(modify_signers(state, ctxs[i], body, ADMIN, add=False))
                except BaseException as exc:
                    results.append(exc)

            threads = [threading.Thread(target=remove, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()

            def waiting() -> int:
                with holder.connect() as c:
                    return int(c.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND datname = current_database()")).scalar_one())

            _wait_for(lambda: waiting() >= 2, "both removals wait")
            hold.rollback()
        for t in threads:
            t.join(60)
    finally:
        holder.dispose()
    with a.db.session() as s:
        left = [r.thumbprint for r in s.scalars(
            select(SignerRow).where(SignerRow.provider == "iso", SignerRow.removed_at.is_(None)))]
    assert len(left) == 1
    assert left[0] in {sha1_thumbprint(signer1[1]), sha1_thumbprint(signer2[1])}
    refused = [r for r in results if isinstance(r, BaseException)]
    # the second removal is refused either as the last signer's or, when the first
    # removed the very signer that signed it (both are signed by signer 1), because its
    # signer is gone by the time it holds the provider's lock
    assert len(refused) == 1, results
    assert (isinstance(refused[0], OperationRefusedError)
            and "last policy signer" in str(refused[0])) or (
        isinstance(refused[0], PolicySignatureError)
        and "signer change refused" in str(refused[0])), results


def test_a_signer_removed_through_another_replica_cannot_authorise_a_change(
        replicas: Callable[[], ServiceState], h: Any,
        signer1: tuple[Any, Any], signer2: tuple[Any, Any]) -> None:
    """Replica B still caches the provider's signers (its listener is not up here; the
    staleness window is the cache TTL, or the time a notification takes).  Replica A
    removes signer 1.  Before, B verified a policy signed by signer 1 against its cached
    signers and stored it: a removed signer authorised a change."""
    from bootwatch.policy import sign_policy

    a, b = replicas(), replicas()
    with a.db.session() as s:
        create_provider(s, a.sealer, "iso", kind=ProviderKind.CUSTOM,
                        trust_model=TrustModel.ISOLATED, signers=[signer1[1], signer2[1]])
    stale = b.providers.context("iso", BASE)  # B's cached view: both signers
    removal = h.signed_jws({"policyCertificate": {"kty": "RSA", "x5c": [h.x5c(signer1[1])]}},
                           *signer2)
    modify_signers(a, a.providers.context("iso", BASE), removal, ADMIN, add=False)
    assert {sha1_thumbprint(c) for c in b.providers.context("iso", BASE).signers} == {
        sha1_thumbprint(signer1[1]), sha1_thumbprint(signer2[1])}  # still stale
    with pytest.raises(PolicySignatureError):
        set_policy(b, stale, "AzureGuest", sign_policy(DENY_ALL, *signer1), ADMIN)
    # ... while the remaining signer still can
    set_policy(b, stale, "AzureGuest", sign_policy(DENY_ALL, *signer2), ADMIN)
    b.providers.forget("iso")
    assert b.providers.context("iso", BASE).azureguest_policy.text.strip() == DENY_ALL.strip()


class _Sink:
    def deliver(self, events: Any, bodies: Any = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_relay_does_not_spin_while_its_database_is_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The database is away (nothing listens at its address): each sweep of the outbox
    fails.  The next sweep must wait its interval.  Before, a failed sweep was retried
    at once, for ever: about 3,000 connection attempts a second on this machine, a core
    taken from the worker answering 503s."""
    db = Database(make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"))
    relay = EventRelay(db, _Sink(), sweep_interval=5.0)
    sweeps: list[float] = []
    sweep = relay._sweep

    def counted() -> None:
        sweeps.append(time.monotonic())
        sweep()

    monkeypatch.setattr(relay, "_sweep", counted)
    relay.start()
    try:
        _wait_for(lambda: len(sweeps) >= 1, "the start-up sweep")
        # the thread is awake within milliseconds of a due sweep; a second before the
        # next one is due, only the start-up sweep may have run
        time.sleep(1.0)
        assert len(sweeps) == 1, f"{len(sweeps)} sweeps of an unreachable database in 1 s"
    finally:
        relay.close(timeout=5)
        db.engine.dispose()
