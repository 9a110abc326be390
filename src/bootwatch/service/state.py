"""The per-app (per-worker) service state: settings, database, caches, metrics.

Built by :func:`bootwatch.service.app.create_app` and stored on
``app.state.bw``; also usable without HTTP (the ``bootwatch provider`` CLI
builds one to create providers and rotate keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bootwatch.service.atrest import Sealer, load_or_create_key
from bootwatch.service.changes import ChangeFeed
from bootwatch.service.db import Database, make_engine, run_migrations
from bootwatch.service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    db: Database
    sealer: Sealer
    providers: ProviderStore = field(init=False)
    #: attestation records are written in batches off the request path
    records: RecordWriter = field(init=False)
    #: provider changes announced to and heard from other processes (PostgreSQL)
    changes: ChangeFeed = field(init=False)

    def __post_init__(self) -> None:
        self.changes = ChangeFeed(self.db.engine, schema=self.settings.db_schema)
        self.providers = ProviderStore(self)
        self.records = RecordWriter(self)
        self.changes.subscribe(self.providers.forget)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> ServiceState:
        """Open the database (migrating it) and the at-rest key; create shared providers."""
        engine = make_engine(settings.database_url, schema=settings.db_schema)
        if migrate:
            run_migrations(engine)
        key = load_or_create_key(settings.at_rest_key, settings.data_dir)
        state = cls(settings=settings, db=Database(engine), sealer=Sealer(key))
        ensure_shared_providers(state)
        return state

    def close(self) -> None:
        """Write the queued attestation records, then release the database."""
        self.records.close()
        self.changes.close()
        self.db.engine.dispose()


from bootwatch.service.providers import ProviderStore, ensure_shared_providers  # noqa: E402
from bootwatch.service.records import RecordWriter  # noqa: E402
