"""Alembic migrations of the monitor's tables (history separate from the service's)."""
