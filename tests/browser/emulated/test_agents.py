"""Conformance: the agents suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.agents import *  # noqa: F403
