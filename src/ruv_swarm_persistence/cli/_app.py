"""The ``swarmdb`` application object and its global options."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ._common import LOG_LEVELS, Interrupted, PipeClosed, UtcOption, configure_logging


class _Swarmdb(TyperGroup):
    """The command group: a closed pipe or Ctrl-C inside any command ends it as a shell
    expects (status 0 or 130), whatever the installed typer does with them."""

    # Any: the context class typer passes differs with the typer version (its own or click's).
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise PipeClosed from None
        except KeyboardInterrupt:
            raise Interrupted from None


app = typer.Typer(
    cls=_Swarmdb,
    name="swarmdb",
    help=(
        "Inspect and maintain a swarm database (SQLite file, PostgreSQL or memory://).\n\n"
        "Start with 'swarmdb demo', then 'swarmdb status', 'swarmdb tasks --status failed', "
        "'swarmdb events --since 10m', 'swarmdb tail'."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swarmdb (ruv-swarm-persistence) {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Database for every command: a file path or URL "
            "(default: $SWARM_DB_URL, else ./swarm.db).",
            show_default=False,
        ),
    ] = None,
    utc: UtcOption = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Log what the library does on stderr: -v info, -vv debug.",
            show_default=False,
        ),
    ] = 0,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help=f"Log at this level and above on stderr: {', '.join(LOG_LEVELS)}.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Inspect and maintain a swarm database."""
    configure_logging(verbose, log_level)
