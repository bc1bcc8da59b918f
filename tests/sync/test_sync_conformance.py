"""The conformance suite, every module of it, run through the blocking API."""

from __future__ import annotations

import importlib
import pkgutil

import ruv_swarm_persistence.testing as suite


def _is_fixture(obj: object) -> bool:
    # pytest >= 8.4 wraps a fixture in FixtureFunctionDefinition; earlier ones mark it.
    return type(obj).__name__ == "FixtureFunctionDefinition" or hasattr(
        obj, "_pytestfixturefunction"
    )


#: Fixtures this folder defines for the facade; a suite module's copy must not replace them.
_OURS = {"storage", "storage_factory", "clock"}

#: Modules of the suite that are not test modules.
_NOT_TESTS = {"plugin"}


for _info in pkgutil.iter_modules(suite.__path__):
    if _info.name.startswith("_") or _info.name in _NOT_TESTS:
        continue
    _module = importlib.import_module(f"{suite.__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", dir(_module)):
        _obj = getattr(_module, _name)
        # A suite module's own fixtures come along with its tests (pytest finds fixtures in
        # the test module); `storage` and `clock` are this folder's, from its conftest.
        if _name.startswith(("test_", "Test")) or (_is_fixture(_obj) and _name not in _OURS):
            globals()[_name] = _obj
