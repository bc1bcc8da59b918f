"""The conformance suite, every module of it, run through the blocking API."""

from __future__ import annotations

import importlib
import pkgutil

import ruv_swarm_persistence.testing as suite

#: Modules of the suite that are not test modules.
_NOT_TESTS = {"plugin"}

#: Tests that assume the storage completes work within a few event-loop iterations of the
#: caller's loop (``_drain_loop``: 20 ``sleep(0)``). A call through the blocking API crosses
#: two threads, which no number of ``sleep(0)`` waits for; what they check is covered below
#: with bounded waits instead (``tests/sync/test_sync_api.py``).
_IN_LOOP_ONLY = {"test_subscribe_yields_existing_then_new_events"}

for _info in pkgutil.iter_modules(suite.__path__):
    if _info.name.startswith("_") or _info.name in _NOT_TESTS:
        continue
    _module = importlib.import_module(f"{suite.__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", dir(_module)):
        if _name.startswith(("test_", "Test")) and _name not in _IN_LOOP_ONLY:
            globals()[_name] = getattr(_module, _name)
