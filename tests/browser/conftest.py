"""Fixtures of the browser tests: Chromium, Pyodide and the wheels, served on 127.0.0.1.

Missing pieces skip the tests with the reason, except with ``CI=true``, where they fail (as
PostgreSQL's do): ``make browser-deps`` installs Debian's chromium and fetches Pyodide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser import harness


@dataclass(frozen=True)
class BrowserSite:
    """Where the test page is served, and the Chromium to open it with."""

    url: str
    chromium: str


@pytest.fixture(scope="session")
def browser_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserSite]:
    """The test page, Pyodide and the wheels, served for the whole session on one port."""
    try:
        chromium = harness.find_chromium()
        pyodide = harness.fetch_pyodide()
        wheels = harness.fetch_test_wheels()
        import playwright  # noqa: F401 - the dev extra's driver
    except (harness.Unavailable, ImportError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests are required with CI=true: {exc}", pytrace=False)
        pytest.skip(f"no browser: {exc}")
    root = tmp_path_factory.mktemp("site")
    built = harness.build_wheel(tmp_path_factory.mktemp("wheel"))
    harness.site(root, pyodide, built, wheels, Path(harness.HERE / "page.html"))
    with harness.serve(root) as url:
        yield BrowserSite(url, chromium)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that opens the browser ``browser`` (``-m "not browser"`` skips them)."""
    for item in items:
        if "browser_site" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
