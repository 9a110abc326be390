"""bootwatch.monitor: per-VM boot-integrity health, alerts, recommendations, baselines.

It sits beside ``service/`` and never imports the verifier: attestations reach
it as ``protocol.outcome.OutcomeEvent`` and agents' reports as
``protocol.health.HealthReport``.  Pure parts: :mod:`.diff`,
:mod:`.recommendations`, :mod:`.health` (state rules).  Storage:
:mod:`.models`, :mod:`.store`.  Wiring: :mod:`.container` (``bootstrap``),
:mod:`.api` (FastAPI router), :mod:`.app` (``create_monitor_app``).
"""

__all__: list[str] = []
