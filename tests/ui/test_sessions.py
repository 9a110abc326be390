"""The dashboard's session store and login nonces (pure, no browser)."""

from __future__ import annotations

from bootwatch.monitor.ui.sessions import LoginNonces, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_store_is_bounded_least_recently_used_first() -> None:
    store = SessionStore(max_sessions=3, clock=Clock())
    sids = [store.create(f"admin-token-{i}", admin=True)[0] for i in range(3)]
    assert store.get(sids[0]) is not None  # sids[1] is now the least recently used
    newest, _ = store.create("reader-token-1", admin=False)
    assert len(store) == 3
    assert store.get(sids[1]) is None
    assert store.get(sids[0]) is not None and store.get(newest) is not None


def test_sessions_expire_when_idle_and_by_age() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=60, max_age_seconds=300, clock=clock)
    sid, session = store.create("admin-token-1", admin=True)
    assert len(sid) >= 40 and session.csrf and session.csrf != sid
    clock.now += 59
    assert store.get(sid) is session
    clock.now += 61
    assert store.get(sid) is None
    sid, _ = store.create("admin-token-1", admin=True)
    for _ in range(7):
        clock.now += 50
        store.get(sid)
    assert store.get(sid) is None  # used all along, but older than max_age
    assert store.get("x" * 500) is None and store.get(None) is None
    store.drop(sid)


def test_login_nonce_tokens_are_this_instances_own() -> None:
    a, b = LoginNonces(), LoginNonces()
    nonce, token = a.new()
    assert a.check(nonce, token)
    assert not b.check(nonce, token)
    assert not a.check(nonce, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not a.check(None, token) and not a.check(nonce, "")
