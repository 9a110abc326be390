"""Entry point of each uvicorn worker process (see :mod:`bootwatch.service.server`)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from bootwatch.errors import ConfigError

__all__ = [
    "app_factory",
]


def app_factory() -> FastAPI:
    """Read the settings file named by ``BOOTWATCH_SETTINGS_FILE`` and build the app."""
    from bootwatch.service.app import create_app
    from bootwatch.service.logs import configure_logging
    from bootwatch.service.server import SETTINGS_ENV
    from bootwatch.service.settings import Settings

    path = os.environ.get(SETTINGS_ENV)
    if not path:
        raise ConfigError(f"{SETTINGS_ENV} is not set; start workers with 'bootwatch service run'")
    settings = Settings.from_json(Path(path).read_text())
    configure_logging(settings.log_level)
    return create_app(settings)
