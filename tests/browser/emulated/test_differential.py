"""Conformance: the differential programs on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.differential import *  # noqa: F403
