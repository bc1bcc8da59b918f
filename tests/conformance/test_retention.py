"""Conformance: retention per table, on request and in the background, on every backend."""

from ruv_swarm_persistence.testing.retention import *  # noqa: F403
