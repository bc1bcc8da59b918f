"""Conformance: the agents suite on every backend."""

from ruv_swarm_persistence.testing.agents import *  # noqa: F403
