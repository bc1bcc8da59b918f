"""Conformance: deduplication, concurrency and rate limits on the browser engine over an
emulated IndexedDB."""

from ruv_swarm_persistence.testing.queue_controls import *  # noqa: F403
