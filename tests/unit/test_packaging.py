"""Packaging: the metadata, the extras every hint names, and what the sdist and wheel carry."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from ruv_swarm_persistence import urls

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NAME = PROJECT["name"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
TESTING = ROOT / "src" / "ruv_swarm_persistence" / "testing"


def canonical(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return canonical(match.group(1))


def extra_requirements(extra: str) -> set[str]:
    """The distributions an extra brings, following the project's references to itself."""
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        name = requirement_name(requirement)
        if name == canonical(NAME):
            inner = re.search(r"\[([^\]]+)\]", requirement)
            assert inner, requirement
            for nested in inner.group(1).split(","):
                names |= extra_requirements(nested.strip())
        else:
            names.add(name)
    return names


# --- extras named in hints --------------------------------------------------------------------

#: `ruv-swarm-persistence[x]`, `….whl[x,y]` and `'.[x]'`: every way this project names extras.
EXTRA_REFERENCE = re.compile(
    r"(?:ruv-swarm-persistence|\.whl|(?<![\w/.])\.)\[([A-Za-z0-9_,\s-]+)\]"
)


def named_extras(text: str) -> set[str]:
    return {extra.strip() for group in EXTRA_REFERENCE.findall(text) for extra in group.split(",")}


def test_every_extra_a_hint_names_exists() -> None:
    hints = set()
    for hint in urls.INSTALL_HINTS.values():
        hints |= named_extras(hint)
    assert hints == {"postgres"}
    assert hints <= set(EXTRAS)


def test_every_extra_the_sources_and_docs_name_exists() -> None:
    sources = sorted((ROOT / "src").rglob("*.py"))
    docs = [ROOT / "README.md", ROOT / "Makefile"]
    found: dict[str, set[str]] = {}
    for path in [*sources, *docs]:
        for extra in named_extras(path.read_text()):
            found.setdefault(extra, set()).add(str(path.relative_to(ROOT)))
    # The pattern does find them: the CLI's hint, the README, the Makefile.
    assert {"postgres", "cli", "dev"} <= set(found)
    missing = {extra: where for extra, where in found.items() if extra not in EXTRAS}
    assert missing == {}


# --- the testing extra --------------------------------------------------------------------------


def third_party_imports(directory: Path) -> set[str]:
    """Top-level names of modules imported by the files in ``directory``, stdlib excluded."""
    names = set()
    for path in sorted(directory.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"ruv_swarm_persistence", "__future__"}


def has_async_tests_or_fixtures(directory: Path) -> bool:
    """True when pytest needs an asyncio plugin to run the tests in ``directory``."""
    for path in directory.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef) and (
                node.name.startswith("test_")
                or any("fixture" in ast.unparse(d) for d in node.decorator_list)
            ):
                return True
    return False


def test_testing_extra_lists_every_module_the_conformance_suite_imports() -> None:
    imported = third_party_imports(TESTING)
    assert {"pytest", "hypothesis"} <= imported  # the parse does see them
    by_module = importlib.metadata.packages_distributions()
    needed = {canonical(dist) for module in imported for dist in by_module.get(module, [module])}
    assert needed <= extra_requirements("testing"), needed - extra_requirements("testing")


def test_testing_extra_has_the_asyncio_plugin_the_suite_runs_on() -> None:
    assert has_async_tests_or_fixtures(TESTING)
    assert "pytest-asyncio" in extra_requirements("testing")


def test_dev_includes_testing() -> None:
    assert extra_requirements("testing") <= extra_requirements("dev")


# --- metadata -----------------------------------------------------------------------------------


def test_license_is_mit_and_shipped() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "the ruv-swarm-persistence authors" in text
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    # license-files and an SPDX license string need setuptools 77 (PEP 639).
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]


def test_classifiers_and_descriptive_metadata() -> None:
    classifiers = set(PROJECT["classifiers"])
    assert {
        "Development Status :: 3 - Alpha",
        "Framework :: AsyncIO",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Database",
        "Typing :: Typed",
    } <= classifiers
    # The versions listed are the ones requires-python admits, from its floor up.
    floor = PROJECT["requires-python"].removeprefix(">=")
    listed = sorted(
        int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)
    )
    assert listed[0] == int(floor.split(".")[1])
    # With an SPDX license expression, a License :: classifier is an error.
    assert not any(c.startswith("License ::") for c in classifiers)
    assert PROJECT["authors"] == [{"name": "the ruv-swarm-persistence authors"}]
    assert PROJECT["keywords"]


def test_project_urls_are_absolute() -> None:
    for label, url in PROJECT["urls"].items():
        assert re.match(r"https://[^/\s]+\.[a-z]+/", url), (label, url)


# --- the sdist and the wheel --------------------------------------------------------------------

#: Local state that is not the project (caches, environments, databases, build output).
_NOT_SOURCE = {".git", ".venv", "dist", "build", ".pg", ".hypothesis"}


def _copy_source(dest: Path) -> Path:
    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == ROOT
        return {
            n
            for n in names
            if (top and n in _NOT_SOURCE)
            or n == "__pycache__"
            or n.endswith((".egg-info", "_cache"))
        }

    # Built from a copy so the build's egg-info never lands in the working tree.
    return Path(shutil.copytree(ROOT, dest, ignore=ignore))


def test_sdist_carries_the_project_and_builds_the_wheel(tmp_path: Path) -> None:
    source = _copy_source(tmp_path / "source")
    out = tmp_path / "dist"
    # No isolation: offline, with the setuptools and build of the dev extra. Building both
    # makes build derive the wheel from the sdist, so the sdist is shown to be complete.
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    version = PROJECT["version"]
    stem = f"{canonical(NAME).replace('-', '_')}-{version}"

    with tarfile.open(out / f"{stem}.tar.gz") as sdist:
        members = {m.name.removeprefix(f"{stem}/") for m in sdist.getmembers() if m.isfile()}
    for name in ["LICENSE", "CHANGELOG.md", "Makefile", "README.md", "pyproject.toml"]:
        assert name in members, name
    for directory in ["tests", "examples", "bench", "scripts"]:
        files = {
            str(p.relative_to(source))
            for p in (source / directory).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert files, directory
        assert files <= members, sorted(files - members)
    junk = [m for m in members if m.endswith((".pyc", ".db")) or "__pycache__" in m]
    assert junk == []

    with zipfile.ZipFile(out / f"{stem}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
    assert "ruv_swarm_persistence/py.typed" in names
    assert any(
        n.startswith("ruv_swarm_persistence/migrations/") and n.endswith(".sql") for n in names
    )
    assert f"{stem}.dist-info/licenses/LICENSE" in names
    top = {n.split("/")[0] for n in names}
    assert top == {"ruv_swarm_persistence", f"{stem}.dist-info"}
