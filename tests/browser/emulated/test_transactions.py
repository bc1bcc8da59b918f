"""Conformance: the transactions suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.transactions import *  # noqa: F403
