"""Conformance: the errors suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.errors import *  # noqa: F403
