"""Conformance: random programs answer on every backend as they do on memory."""

from ruv_swarm_persistence.testing.differential import *  # noqa: F403
