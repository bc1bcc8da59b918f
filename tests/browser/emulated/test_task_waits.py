"""Conformance: waiting for a task, its dependencies' results and giving it back, on the browser
engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.task_waits import *  # noqa: F403
