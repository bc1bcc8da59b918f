"""The conformance suite, every module of it, run through the blocking API."""

from __future__ import annotations

import importlib
import pkgutil

import ruv_swarm_persistence.testing as suite

#: Modules of the suite that are not test modules.
_NOT_TESTS = {"plugin"}


for _info in pkgutil.iter_modules(suite.__path__):
    if _info.name.startswith("_") or _info.name in _NOT_TESTS:
        continue
    _module = importlib.import_module(f"{suite.__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", dir(_module)):
        if _name.startswith(("test_", "Test")):
            globals()[_name] = getattr(_module, _name)
