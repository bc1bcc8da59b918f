"""The pages load nothing from elsewhere: every file they name is served from the package,
and the vendored libraries are the pinned ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from ruv_swarm_persistence.dashboard.app import STATIC
from ruv_swarm_persistence.dashboard.pages import PAGES

ROOT = Path(__file__).resolve().parents[2]


def test_vendored_files_match_their_pinned_checksums() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "vendor_dashboard_js.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (STATIC / "vendor").iterdir()) == [
        "dagre.LICENSE.txt",
        "dagre.min.js",
        "uPlot.LICENSE.txt",
        "uPlot.iife.min.js",
        "uPlot.min.css",
    ]


async def test_every_page_names_only_files_of_its_own_server(client: httpx.AsyncClient) -> None:
    for page in PAGES:
        html = (await client.get(page.path.replace("{task_id}", "t1"))).text
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs
        for ref in refs:
            assert ref.startswith(("/", "data:")), ref  # nothing from another origin
            if ref.startswith("/static/"):
                assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
                assert (await client.get(ref)).status_code == 200
