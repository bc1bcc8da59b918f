"""Conformance: dead letters on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.dead_letters import *  # noqa: F403
