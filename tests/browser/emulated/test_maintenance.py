"""Conformance: the maintenance suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.maintenance import *  # noqa: F403
