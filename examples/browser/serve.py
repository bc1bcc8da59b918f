"""Serve the browser example on http://127.0.0.1:8000/ (``make browser-demo`` runs this).

Builds the library as a pure-Python wheel from this checkout, lays it out beside index.html
and swarm.py with Pyodide's files (``--pyodide DIR``: the unpacked npm package), and serves
the folder until Ctrl-C. The swarm lives in that browser's IndexedDB for this origin.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the base class's attribute, extended
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".py": "text/plain",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyodide", type=Path, required=True, help="Pyodide's files")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not (args.pyodide / "pyodide.js").exists():
        parser.error(f"no pyodide.js in {args.pyodide}")
    with tempfile.TemporaryDirectory(prefix="swarm-browser-demo-") as tmp:
        site = Path(tmp)
        for name in ("index.html", "swarm.py"):
            shutil.copy2(HERE / name, site / name)
        (site / "pyodide").symlink_to(args.pyodide.resolve(), target_is_directory=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(site / "wheels"), str(ROOT)],
            check=True,
        )  # fmt: skip
        handler = functools.partial(Handler, directory=str(site))
        with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
            print(f"serving the browser demo on http://127.0.0.1:{args.port}/ (Ctrl-C stops)")
            with contextlib.suppress(KeyboardInterrupt):
                server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
