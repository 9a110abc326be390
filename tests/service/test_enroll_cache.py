"""The enrolment trust cache (the provider's own AIK CA and its revoked AIK
certificates) and changes that overtake a load.

A revocation announced (by this replica or another) while a load of the provider's
trust is under way may be missing from what that load read.  Cached, it stayed unseen
for a whole cache TTL: a revoked AIK kept attesting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bootwatch.service.settings import Settings
from bootwatch.service.state import bootstrap


def test_a_load_overtaken_by_a_forget_is_not_cached(tmp_path: Path) -> None:
    state = bootstrap(Settings(data_dir=tmp_path, cache_ttl_seconds=600.0))
    try:
        svc = state.enrollment
        real = svc.db.session
        loads: list[int] = []

        @contextmanager
        def session() -> Iterator[Any]:
            with real() as s:
                yield s
            loads.append(1)
            if len(loads) == 1:
                svc.forget("shared")  # the announcement arrives as the first load ends

        svc.db.session = session  # type: ignore[method-assign]
        svc._trust("shared")
        svc._trust("shared")  # the first load was overtaken: read again
        svc._trust("shared")  # this one was not: cached
        assert len(loads) == 2
    finally:
        state.close()
