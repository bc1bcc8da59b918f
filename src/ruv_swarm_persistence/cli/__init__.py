"""``swarmdb``: inspect and maintain a swarm database from the shell.

Exit status: 0 success; 1 a user error (a bad value, a missing or locked database, any
:class:`~ruv_swarm_persistence.StorageError`), printed as one ``error: …`` line without a
traceback; 2 bad usage (unknown command or option, a malformed number).
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


def main(argv: Sequence[str] | None = None) -> None:
    """The ``swarmdb`` entry point."""
    try:
        from ._app import app

        # Importing a module registers its commands; this order is the order of --help.
        for module in ("demo", "listing", "maintenance", "bench"):
            importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name in _CLI_DEPENDENCIES:
            _fail(f"swarmdb needs {exc.name!r}: pip install 'ruv-swarm-persistence[cli]'")
        raise

    from ..errors import StorageError
    from ._common import CliError

    try:
        app(args=list(argv) if argv is not None else None, prog_name="swarmdb")
    except (CliError, StorageError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # The reader went away (``swarmdb events | head``): not an error of ours.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise SystemExit(0) from None
        _fail(str(exc) or type(exc).__name__)
