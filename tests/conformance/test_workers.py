"""The worker part of the conformance suite, run against every backend."""

from ruv_swarm_persistence.testing.workers import *  # noqa: F403
