"""Settings shared by every test."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# The conformance suite lives in the package; let pytest show values in its failed asserts.
pytest.register_assert_rewrite("ruv_swarm_persistence.testing")

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")

# Started in the background by a non-interactive shell, the test run inherits SIGINT ignored,
# and so would every command it starts: the tests that interrupt one (Ctrl-C) would wait for
# it forever. Catching SIGINT here gives the commands the default disposition back at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of this test session's PostgreSQL database, dropped when the session ends.

    Found or started by ``pgserver``; each test works in a schema of its own. Without a server
    the test skips with the reason, except with ``CI=true``, where it fails.
    """
    from tests import pgserver

    with contextlib.ExitStack() as stack:
        try:
            db = stack.enter_context(pgserver.session_database(wait_for_drop=False))
        except pgserver.Unavailable as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL is required with CI=true: {exc}", pytrace=False)
            pytest.skip(f"no PostgreSQL server: {exc}")
        yield db.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL ``postgres`` (so ``-m "not postgres"`` works)."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
