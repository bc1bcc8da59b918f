"""Conformance: the transactions suite on every backend."""

from ruv_swarm_persistence.testing.transactions import *  # noqa: F403
