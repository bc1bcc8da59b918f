"""Conformance: the messages suite on every backend."""

from ruv_swarm_persistence.testing.messages import *  # noqa: F403
