"""Every example runs as a user would run it, and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECTED = {
    "quick_start.py": ["Agent retrieved: AgentModel(", "name='worker-001'"],
    "transaction.py": ["in one transaction"],
    "query_builder.py": [
        "Generated SQL: SELECT",
        "WHERE status = ? AND agent_type LIKE ?",
        "Parameters: ['active', 'research%', 50]",
        "Active researchers: 1",
    ],
    "event_sourcing.py": ["Recent events: 1"],
    "metrics.py": ["CPU metrics over 24h: 1", "agent agent-456: mean 85.5 percent over 1 samples"],
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("url", ["memory://", "swarm.db"])
def test_example_runs(name: str, url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for expected in EXPECTED[name]:
        assert expected in proc.stdout


README = EXAMPLES.parent / "README.md"


def _python_blocks(text: str) -> list[str]:
    blocks, current, inside = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append("\n".join(current))
                current = []
            inside = not inside and line.strip() == "```python"
            continue
        if inside:
            current.append(line)
    return blocks


@pytest.mark.parametrize("index", range(len(_python_blocks(README.read_text()))))
def test_readme_python_runs(index: int, tmp_path: Path) -> None:
    """Every Python block of the README runs as written (on the SQLite default)."""
    code = _python_blocks(README.read_text())[index]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "swarm.db").exists() or "swarm.db" not in code
