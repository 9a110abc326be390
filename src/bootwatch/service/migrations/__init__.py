"""Alembic migrations of the service schema (run by bootwatch.service.db.run_migrations)."""
