"""Conformance: the metrics suite on every backend."""

from ruv_swarm_persistence.testing.metrics import *  # noqa: F403
