"""Waiting for a task, its dependencies' results and giving it back, on every backend."""

from ruv_swarm_persistence.testing.task_waits import *  # noqa: F403
