"""Conformance: the events suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.events import *  # noqa: F403
