"""Conformance: the hostile-argument suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.hostile import *  # noqa: F403
