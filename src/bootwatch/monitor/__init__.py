"""bootwatch.monitor: the fleet monitor (health reports, recommendations, agent releases)."""
