"""The memory backend: the front over the memory engine, the reference semantics.

``MemoryStorage`` (``init_storage("memory://")``) keeps a swarm in one process's memory; its
engine (:mod:`.engine`) is the reference implementation of the semantics every backend shares.
"""

from __future__ import annotations

from .engine import MemoryEngine
from .storage import MemoryStorage, MemoryTransaction, open_url

__all__ = ["MemoryEngine", "MemoryStorage", "MemoryTransaction", "open_url"]
