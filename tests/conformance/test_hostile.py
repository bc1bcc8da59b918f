"""Conformance: hostile arguments drawn for every public method, on every backend."""

from ruv_swarm_persistence.testing.hostile import *  # noqa: F403
