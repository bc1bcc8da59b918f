"""Conformance: dead letters (failed tasks listed and requeued) on every backend."""

from ruv_swarm_persistence.testing.dead_letters import *  # noqa: F403
