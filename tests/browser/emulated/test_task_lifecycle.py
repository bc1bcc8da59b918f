"""Conformance: the task lifecycle suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.task_lifecycle import *  # noqa: F403
