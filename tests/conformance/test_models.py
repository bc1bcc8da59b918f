"""Conformance: the models suite on every backend."""

from ruv_swarm_persistence.testing.models import *  # noqa: F403
