"""The dashboard: server-rendered pages under ``/ui`` over the monitor (issue 14).

``ui_router(container)`` is added beside the JSON API by ``create_monitor_app``
and by the embedded server; see docs/dashboard.md.
"""

from bootwatch.monitor.ui.routes import UI_PREFIX, ui_router

__all__ = ["UI_PREFIX", "ui_router"]
