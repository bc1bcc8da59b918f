"""Conformance: the batch verbs on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.batch_tasks import *  # noqa: F403
