"""Conformance: the bad-argument suite on every backend."""

from ruv_swarm_persistence.testing.arguments import *  # noqa: F403
