"""Conformance: the workers suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.workers import *  # noqa: F403
