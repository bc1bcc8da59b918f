"""``swarmdb``: inspect and maintain a swarm database from the shell.

Exit status: 0 success, also when the reader of the output goes away (``swarmdb events |
head -1``), as for ``cat``; 1 an error (a missing or locked database, a metric that has no
measurements, any :class:`~ruv_swarm_persistence.StorageError`); 2 bad usage (an unknown
command or option, a malformed number, duration, time or ``--where``, options that exclude
each other); 130 interrupted (Ctrl-C). Errors are one ``error: …`` line (or typer's usage
message), never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: Modules that need the ``cli`` extra.
_CLI_DEPENDENCIES = {"typer", "rich"}


def _fail(message: str, status: int = 1) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def _reader_gone() -> None:
    """Exit 0 after a closed pipe; stdout goes to /dev/null first, so that Python's last
    flush at exit finds nowhere to fail ("Exception ignored … BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``swarmdb`` entry point."""
    from ..urls import in_browser

    if in_browser():
        _fail(
            "swarmdb is a command-line program and does not run in a browser (Pyodide): "
            "use the library's async API there"
        )
    try:
        _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C outside a command (while importing, say) ends the same way as inside one.
        raise SystemExit(130) from None


def _main(argv: Sequence[str] | None) -> None:
    try:
        from ._app import app

        # Importing a module registers its commands; this order is the order of --help.
        for module in (
            "demo",
            "listing",
            "queue",
            "tail",
            "worker",
            "maintenance",
            "bench",
            "serve",
        ):
            importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name in _CLI_DEPENDENCIES:
            _fail(f"swarmdb needs {exc.name!r}: pip install 'ruv-swarm-persistence[cli]'")
        raise

    from ..errors import StorageError
    from ._common import CliError, Interrupted, PipeClosed

    try:
        try:
            app(args=list(argv) if argv is not None else None, prog_name="swarmdb")
        finally:
            # Output still buffered meets a closed pipe here rather than at exit.
            sys.stdout.flush()
    except (PipeClosed, BrokenPipeError):
        _reader_gone()
    except (Interrupted, KeyboardInterrupt):
        raise SystemExit(130) from None
    except CliError as exc:
        _fail(str(exc) or type(exc).__name__, exc.status)
    except (StorageError, OSError) as exc:
        _fail(str(exc) or type(exc).__name__)
