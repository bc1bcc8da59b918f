"""Conformance: the errors suite on every backend."""

from ruv_swarm_persistence.testing.errors import *  # noqa: F403
