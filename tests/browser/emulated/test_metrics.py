"""Conformance: the metrics suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.metrics import *  # noqa: F403
