"""Conformance: schedules (cron and interval, missed runs, exactly once) on every backend."""

from ruv_swarm_persistence.testing.schedules import *  # noqa: F403
