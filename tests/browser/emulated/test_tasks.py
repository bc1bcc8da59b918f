"""Conformance: the tasks suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.tasks import *  # noqa: F403
