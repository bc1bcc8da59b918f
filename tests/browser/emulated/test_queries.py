"""Conformance: the queries suite on the browser engine over an emulated IndexedDB."""

from ruv_swarm_persistence.testing.queries import *  # noqa: F403
