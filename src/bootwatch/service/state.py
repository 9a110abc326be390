"""The service's typed container, built once per worker by :func:`bootstrap`.

Everything the service's requests use lives here, built in one visible order with
narrow dependencies (``ProviderStore(db, sealer, changes, ttl)``, ``RecordWriter(db,
settings, metrics, on_commit)``); nothing reaches back into the container. Every cache
a request uses is owned here (bounded): the provider store's snapshots, keys and
compiled policies, the verifier's caches, the outcome builder's event descriptions;
the pure layers keep none. The start-up steps that change the database are explicit
arguments of :func:`bootstrap`, not side effects of opening it: ``migrate`` (Alembic)
and ``seed`` (create the configured shared providers); the service-tag document is
published as the last part is built. ``create_app`` stores the container on
``app.state.bw``; handlers read it only through ``service/deps.py``. The ``bootwatch
provider`` CLI builds one too, without an event sink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bootwatch.attest.caches import VerifierCaches
from bootwatch.attest.outcome import OutcomeEventBuilder
from bootwatch.errors import StorageError
from bootwatch.service.atrest import Sealer, load_or_create_key
from bootwatch.service.attestation import AttestationConfig, load_attestation_config
from bootwatch.service.auth import OidcVerifier
from bootwatch.service.changes import ChangeFeed
from bootwatch.service.db import Database, current_revision, make_engine, run_migrations
from bootwatch.service.enroll import EnrollmentService
from bootwatch.service.events import EventSink
from bootwatch.service.hosts import AllowedHosts
from bootwatch.service.metrics import Metrics
from bootwatch.service.outbox import EventRelay
from bootwatch.service.providers import ProviderStore, ensure_shared_providers
from bootwatch.service.records import RecordWriter
from bootwatch.service.servicetag import ServiceTagDocument, publish_service_tag
from bootwatch.service.settings import Settings

__all__ = ["ServiceState", "bootstrap"]


@dataclass(frozen=True)
class ServiceState:
    settings: Settings
    db: Database
    sealer: Sealer
    #: provider changes announced to and heard from other processes (PostgreSQL)
    changes: ChangeFeed
    providers: ProviderStore
    #: attestation records, group-committed before each answer
    records: RecordWriter
    metrics: Metrics
    #: where outcome events go (None: nowhere) and the relay that delivers them
    sink: EventSink | None
    relay: EventRelay | None
    outcome_builder: OutcomeEventBuilder
    #: what the verifier reuses between attestations (parsed AIKs, logs, boot facts)
    verifier_caches: VerifierCaches
    oidc: OidcVerifier | None
    #: trust anchors, DBX data, key templates read from the files the settings name
    attest_config: AttestationConfig
    enrollment: EnrollmentService
    #: the published service-tag document (``GET /servicetags``)
    service_tag: ServiceTagDocument
    #: ``--allowed-host`` entries, parsed once
    allowed_hosts: AllowedHosts
    #: close the sink and dispose of the engine on close (False: someone else's)
    owns_sink: bool = True
    owns_engine: bool = True

    def start(self) -> None:
        """Start the background parts (the app's lifespan calls this)."""
        if self.relay is not None:
            self.relay.start()
        self.changes.start()

    def drain(self) -> None:
        """Commit every queued record and hand over every committed event."""
        self.records.close()
        if self.relay is not None:
            self.relay.close()

    def close(self) -> None:
        """Drain, then release the listener, the sink and the database."""
        self.drain()
        self.changes.close()
        if self.owns_sink and self.sink is not None:
            self.sink.close()
        if self.owns_engine:
            self.db.engine.dispose()


def bootstrap(
    settings: Settings,
    *,
    sink: EventSink | None = None,
    owns_sink: bool = True,
    engine: Engine | None = None,
    migrate: bool = True,
    seed: bool = True,
    metrics_extra: tuple[Callable[[], bytes], ...] = (),
) -> ServiceState:
    """Build the container for ``settings``.

    ``migrate`` upgrades the schema first; without it a database that is not at the
    newest revision is refused (``bootwatch service migrate`` does it).  ``seed``
    creates the configured shared providers.  ``engine`` shares a database engine
    (the embedded server's monitor uses the same one); ``sink`` receives the outcome
    events (a relay is built for it).
    """
    owns_engine = engine is None
    engine = engine or make_engine(settings.database_url, schema=settings.db_schema)
    if migrate:
        run_migrations(engine)
    elif current_revision(engine) is None:
        raise StorageError("the database has no bootwatch schema yet: run "
                           "'bootwatch service migrate' (or start the service) first")
    db = Database(engine)
    sealer = Sealer(load_or_create_key(settings.at_rest_key, settings.data_dir))
    changes = ChangeFeed(engine, schema=settings.db_schema)
    providers = ProviderStore(db, sealer, changes, ttl=settings.cache_ttl_seconds)
    changes.subscribe(providers.forget)
    metrics = Metrics.create(extra=metrics_extra)
    relay = (EventRelay(db, sink, orphan_after=settings.events_orphan_after_seconds)
             if sink is not None else None)
    records = RecordWriter(db, settings, metrics=metrics,
                           on_commit=relay.committed if relay is not None else None)
    state = ServiceState(
        settings=settings, db=db, sealer=sealer, changes=changes, providers=providers,
        records=records, metrics=metrics, sink=sink, relay=relay,
        outcome_builder=OutcomeEventBuilder(),
        verifier_caches=VerifierCaches(),
        oidc=OidcVerifier(settings) if settings.oidc_issuer else None,
        attest_config=load_attestation_config(settings),
        enrollment=EnrollmentService(settings, db, sealer, changes),
        service_tag=publish_service_tag(db, settings),
        allowed_hosts=AllowedHosts.parse(settings.allowed_hosts),
        owns_sink=owns_sink, owns_engine=owns_engine,
    )
    if seed:
        ensure_shared_providers(db, sealer, state.settings.shared_providers)
    return state
