"""Conformance: the task properties suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.task_properties import *  # noqa: F403
