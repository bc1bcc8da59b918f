"""Conformance: the queries suite on every backend."""

from ruv_swarm_persistence.testing.queries import *  # noqa: F403
