"""The conformance suite: one set of tests, written against the ``Storage`` API, for every backend.

Importable by anyone's backend. A test module pulls the suite in with a star import and
provides one fixture, ``storage_factory``: an async callable taking the standard options
(``clock``, ``lease``, ``retry_policy``, ``limits``, ``transaction_timeout``) and returning a
fresh, empty, open storage (the fixture closes what it made)::

    # tests/test_my_backend.py
    from ruv_swarm_persistence.testing.plugin import *  # fixtures: clock, storage
    from ruv_swarm_persistence.testing.agents import *  # the tests themselves
    ...

    @pytest.fixture
    async def storage_factory(tmp_path):
        made = []
        async def make(**options):
            s = await MyStorage.open(tmp_path / f"{len(made)}.db", **options)
            made.append(s)
            return s
        yield make
        for s in made:
            await s.close()

This package imports ``pytest`` and ``hypothesis``; the rest of the library does not.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .._time import utc_now

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to; pass it as a storage's ``clock`` option."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else utc_now()

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the clock forward; returns the new time."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        self._now += step
        return self._now
