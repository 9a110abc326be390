"""Agent releases on the monitor: the store, the batch rollout planner and the HTTP routes.

Wire it in the monitor's ``create_app``::

    store = ReleaseStore(data_dir / "releases", trusted_keys)
    app.include_router(releases_router(store, fleet_view, admin_auth))
"""

from bootwatch.monitor.releases.planner import (
    AgentView,
    RolloutPlan,
    RolloutPolicy,
    RolloutState,
    plan_rollout,
)
from bootwatch.monitor.releases.router import FleetView, releases_router
from bootwatch.monitor.releases.store import ReleaseStore

__all__ = [
    "AgentView",
    "FleetView",
    "ReleaseStore",
    "RolloutPlan",
    "RolloutPolicy",
    "RolloutState",
    "plan_rollout",
    "releases_router",
]
