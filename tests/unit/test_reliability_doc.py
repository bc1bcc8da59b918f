"""docs/reliability.md names the test behind each promise: every name it gives must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
PACKAGE = ROOT / "src" / "ruv_swarm_persistence"
REF = re.compile(r"`((?:tests|testing)/[\w/]+\.py)?(?:::(\w+))?`")


def _resolve(path: str) -> Path:
    return ROOT / path if path.startswith("tests/") else PACKAGE / path


def test_every_test_the_document_names_exists() -> None:
    last: Path | None = None
    checked = 0
    for line in DOC.read_text().splitlines():
        for path, name in REF.findall(line):
            if path:
                last = _resolve(path)
                assert last.exists(), path
            if name:
                assert last is not None, f"{name} names no file"
                assert re.search(rf"^(async )?def {name}\(", last.read_text(), re.M), (
                    f"{last.relative_to(ROOT)} has no test {name}"
                )
                checked += 1
    assert checked >= 25
