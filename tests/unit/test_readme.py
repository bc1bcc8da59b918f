"""The README as a reader meets it: its code type-checks, its links work off this repository.

Its Python blocks also run as written: tests/examples/test_examples.py runs each one.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of ``language``, in order."""
    pattern = rf"^```{re.escape(language)}[ \t]*\n(.*?)^```[ \t]*$"
    return re.findall(pattern, text, flags=re.MULTILINE | re.DOTALL)


def mypy_strict(files: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on ``files`` (name to source), as a user of the package runs it."""
    for name, source in files.items():
        (workdir / name).write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(workdir / ".mypy_cache"),
            *files,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_has_python_blocks() -> None:
    assert len(code_blocks(README.read_text(), "python")) >= 2


def test_readme_python_passes_mypy_strict(tmp_path: Path) -> None:
    blocks = code_blocks(README.read_text(), "python")
    files = {f"readme_block_{i}.py": block for i, block in enumerate(blocks, 1)}
    proc = mypy_strict(files, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.py"))}
    assert files
    proc = mypy_strict(files, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_starts_with_make_demo_and_make_test() -> None:
    first = code_blocks(README.read_text(), "sh")[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines()]
    assert commands[:2] == ["make demo", "make test"]


def test_readme_links_work_outside_the_repository() -> None:
    """On a package index or in an unpacked sdist a relative link leads nowhere."""
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]*)", text)  # [text](target) and ![alt](target)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, flags=re.MULTILINE)
    targets += re.findall(r"(?:href|src)=[\"']([^\"']*)", text)
    relative = [t for t in targets if not re.match(r"https://[^/\s]+\.[a-z]+(/|$)", t)]
    assert relative == []


def test_readme_says_how_to_install_from_source() -> None:
    text = README.read_text()
    install = text[text.index("## Installing") :]
    install = install[: install.index("\n## ", 1)]
    assert "not published" in install
    for command in [
        "make setup",
        "pip install -e '.[cli]'",
        "python -m build",
        "pip wheel . --no-deps -w dist",
    ]:
        assert command in install, command
    assert "ruv-swarm-persistence[postgres] @ file:///" in install
    # Before the first program: a reader installs first.
    assert text.index("## Installing") < text.index("## A first program")


def test_readme_wheel_names_carry_the_project_version() -> None:
    wheels = re.findall(r"ruv_swarm_persistence-([^-\s]+)-py3-none-any\.whl", README.read_text())
    assert wheels
    assert set(wheels) == {VERSION}
