"""Conformance: the events suite on every backend."""

from ruv_swarm_persistence.testing.events import *  # noqa: F403
