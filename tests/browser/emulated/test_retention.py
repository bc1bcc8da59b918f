"""Conformance: retention on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.retention import *  # noqa: F403
