"""Conformance: schedules on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.schedules import *  # noqa: F403
