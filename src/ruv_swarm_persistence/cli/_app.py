"""The ``swarmdb`` application object and its global options."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__

app = typer.Typer(
    name="swarmdb",
    help=(
        "Inspect and maintain a swarm database (SQLite file, PostgreSQL or memory://).\n\n"
        "Start with 'swarmdb demo', then 'swarmdb status', 'swarmdb tasks --status failed', "
        "'swarmdb events --since 10m', 'swarmdb tail'."
    ),
    no_args_is_help=True,
    add_completion=False,
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
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Inspect and maintain a swarm database."""
