"""``swarmdb bench``: the package's own check, whatever folder it is started in."""

from __future__ import annotations

from pathlib import Path

from .conftest import swarmdb


def test_bench_never_runs_a_bench_folder_of_the_current_directory(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "bench" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")

    ran = swarmdb("bench", "--quick", cwd=tmp_path)
    assert ran.returncode == 0, ran.describe()
    assert "claim_next_task → complete_task, 4 workers" in ran.stdout
    assert not marker.exists()

    # --builtin, which used to skip the folder, is still accepted (and hidden).
    again = swarmdb("bench", "--quick", "--builtin", "--json", "--db", "memory://", cwd=tmp_path)
    assert again.json()["backend"] == "MemoryStorage"
    assert not marker.exists()
    assert "--builtin" not in swarmdb("bench", "--help").stdout
