"""Conformance: the messages suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.messages import *  # noqa: F403
