"""Headless Chromium running Pyodide for the browser tests: found, fetched, built and served.

- Chromium: Debian's ``chromium`` package (``/usr/bin/chromium``, or ``$SWARM_TEST_CHROMIUM``),
  driven by Playwright for Python. Playwright never downloads a browser here.
- Pyodide: the npm registry's tarball of :data:`PYODIDE_VERSION`, checked against
  :data:`PYODIDE_INTEGRITY` and unpacked into ``.browser_cache/`` (git-ignored). It carries
  CPython and its standard library only; packages come as wheels.
- Wheels: this project, built from the work tree as a pure-Python wheel for each test session,
  and pytest with its dependencies (the suite's modules import it) from PyPI, at the versions
  installed here, cached beside Pyodide.
- A standard-library HTTP server on 127.0.0.1 serves them with the test page, and the browser
  example (``examples/browser/``) under ``/example/``. An origin is its
  host and port: a session keeps one port, so a reloaded page and a restarted browser find the
  same IndexedDB.

``python -m tests.browser.harness`` fetches what is missing (``make browser-deps`` runs it).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = ROOT / ".browser_cache"
EXAMPLE = ROOT / "examples" / "browser"

PYODIDE_VERSION = "314.0.8"
#: The npm registry's ``dist.integrity`` of the tarball: a download that differs is refused.
PYODIDE_INTEGRITY = (
    "sha512-"
    "74Wq1kXOC+CCEzAfxuRAO701nAcCMLjf8NrwvWpu8S41dVMXwXmLQ05dYB+F4e46AdnGo0oq7YHSVUpHsoarLQ=="
)
PYODIDE_URL = f"https://registry.npmjs.org/pyodide/-/pyodide-{PYODIDE_VERSION}.tgz"
PYODIDE_DIR = CACHE / f"pyodide-{PYODIDE_VERSION}"

#: Pure-Python wheels the page needs to import the conformance suite (pytest and what it
#: imports), at the versions installed beside this file.
TEST_DISTRIBUTIONS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")
WHEELS_DIR = CACHE / "wheels"

ENV_CHROMIUM = "SWARM_TEST_CHROMIUM"
#: Flags for a headless Chromium that talks to nothing but the test server.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Bounds of the waits (milliseconds): Pyodide's boot (5-6 s cold here), one page call.
BOOT_TIMEOUT_MS = 90_000
CALL_TIMEOUT_MS = 120_000
TIMEOUT_MS = 60_000


class Unavailable(Exception):
    """What the browser tests need is missing; the message says what and how to get it."""


# --- finding and fetching ------------------------------------------------------------------------


def find_chromium() -> str:
    """The Chromium executable, or :class:`Unavailable`."""
    candidates = [os.environ.get(ENV_CHROMIUM, ""), "/usr/bin/chromium", shutil.which("chromium")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise Unavailable("no chromium: install Debian's package (make browser-deps does)")


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        data: bytes = response.read()
    return data


def fetch_pyodide() -> Path:
    """Pyodide's files, downloaded and checked once; their folder."""
    if (PYODIDE_DIR / "pyodide.js").exists():
        return PYODIDE_DIR
    try:
        data = _download(PYODIDE_URL)
    except OSError as exc:
        raise Unavailable(f"could not download {PYODIDE_URL}: {exc}") from exc
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != PYODIDE_INTEGRITY:
        raise Unavailable(f"{PYODIDE_URL} does not match its pinned checksum ({digest})")
    CACHE.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="pyodide-", dir=CACHE))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        # The tarball's files sit under package/; renamed into place in one step.
        (staging / "package").rename(PYODIDE_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PYODIDE_DIR


def fetch_test_wheels() -> list[Path]:
    """The wheels of :data:`TEST_DISTRIBUTIONS`, from PyPI at the installed versions."""
    wanted = [f"{d}=={importlib.metadata.version(d)}" for d in TEST_DISTRIBUTIONS]
    found = []
    missing = []
    for requirement in wanted:
        name, version = requirement.split("==")
        matches = sorted(WHEELS_DIR.glob(f"{name}-{version}-py3-none-any.whl"))
        if matches:
            found.append(matches[0])
        else:
            missing.append(requirement)
    if missing:
        WHEELS_DIR.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--only-binary=:all:", "--dest", str(WHEELS_DIR), *missing]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise Unavailable(f"could not download {' '.join(missing)}: {proc.stderr.strip()}")
        return fetch_test_wheels()
    return found


def build_wheel(dest: Path) -> Path:
    """This project, from the work tree, as a pure-Python wheel in ``dest``."""
    with tempfile.TemporaryDirectory(prefix="swarm-wheel-") as tmp:
        tree = Path(tmp) / "src-tree"
        tree.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
            shutil.copy2(ROOT / name, tree / name)
        shutil.copytree(
            ROOT / "src",
            tree / "src",
            ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"),
        )
        command = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
        command += ["--outdir", str(dest), str(tree)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"building the wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (wheel,) = dest.glob("ruv_swarm_persistence-*.whl")
    return wheel


# --- serving ----------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".whl": "application/zip",
        ".py": "text/plain",
    }

    def end_headers(self) -> None:
        # Pyodide's files never change under one version: a cached copy lets Chromium reuse
        # the compiled WebAssembly, which makes a reload boot faster. The rest: never cached.
        if self.path.startswith("/pyodide/"):
            self.send_header("Cache-Control", "public, max-age=86400, immutable")
        else:
            self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port, kept while open); its base URL."""
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="browser-test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def site(root: Path, pyodide: Path, library: Path, suite: list[Path], page: Path) -> Path:
    """Lay out what the server serves in ``root``: the page, Pyodide, the wheels (the
    library's, and those a page running the conformance suite adds)."""
    (root / "wheels").mkdir(parents=True, exist_ok=True)
    (root / "pyodide").symlink_to(pyodide, target_is_directory=True)
    for wheel in [library, *suite]:
        (root / "wheels" / wheel.name).symlink_to(wheel)
    index = {"library": [library.name], "suite": [w.name for w in suite]}
    (root / "wheels" / "index.json").write_text(json.dumps(index))
    shutil.copy2(page, root / "index.html")
    shutil.copy2(HERE / "in_page.py", root / "in_page.py")
    # The browser example as a user lays it out: its files, Pyodide's and the wheel beside.
    example = root / "example"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("*.md", "serve.py"))
    (example / "pyodide").symlink_to(pyodide, target_is_directory=True)
    (example / "wheels").mkdir()
    (example / "wheels" / library.name).symlink_to(library)
    return root


# --- driving ----------------------------------------------------------------------------------


def launch(playwright: Any, profile: Path, chromium: str) -> Any:
    """A headless Chromium keeping its profile (IndexedDB included) in ``profile``."""
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=chromium,
        headless=True,
        args=CHROMIUM_ARGS,
        timeout=TIMEOUT_MS,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def boot(page: Any, url: str, *, suite: bool = False) -> float:
    """Open the test page and wait (bounded) for Pyodide and the wheels; the boot in ms.

    ``suite`` loads pytest too, which the conformance suite's modules import.
    """
    page.goto(url + ("/?suite" if suite else "/"))
    return wait_booted(page)


def wait_booted(page: Any) -> float:
    """Wait (bounded) for the page that is loading to boot (after ``page.reload()`` too)."""
    ms: float = page.evaluate("(ms) => window.bounded(window.booted, ms, 'boot')", BOOT_TIMEOUT_MS)
    return ms


def call(page: Any, code: str, timeout_ms: int = CALL_TIMEOUT_MS) -> Any:
    """Run Python in the page (bounded); its result, JSON text decoded."""
    text = page.evaluate(
        "([code, ms]) => window.bounded(window.pyodide.runPythonAsync(code), ms, code)",
        [code, timeout_ms],
    )
    return json.loads(text)


def main(argv: list[str]) -> int:
    """``fetch``: download Pyodide and the test wheels if missing; report Chromium."""
    if argv != ["fetch"]:
        print("usage: python -m tests.browser.harness fetch", file=sys.stderr)
        return 2
    try:
        print(f"pyodide {PYODIDE_VERSION}: {fetch_pyodide()}")
        print(f"test wheels: {', '.join(p.name for p in fetch_test_wheels())}")
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"chromium: {find_chromium()}")
    except Unavailable as exc:
        print(f"note: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
