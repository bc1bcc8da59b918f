"""Conformance: the maintenance suite on every backend."""

from ruv_swarm_persistence.testing.maintenance import *  # noqa: F403
