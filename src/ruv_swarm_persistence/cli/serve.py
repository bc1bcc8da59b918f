"""``swarmdb serve``: a live dashboard of the database in the browser (extra ``[dashboard]``)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated, Final

import typer

from ._app import app
from ._common import CliError, DbOption, db_url, display_url, err, open_db, run

#: The port served by default (``--port 0`` picks a free one).
DEFAULT_PORT: Final = 8700
#: Names a browser uses for a loopback server: the only ``Host`` headers such a server takes,
#: so a web page cannot reach it through a rebound DNS name.
LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (bound here, so the URL is known before serving)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


@app.command()
def serve(
    ctx: typer.Context,
    db: DbOption = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address to listen on; anything but loopback lets others read the swarm.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, metavar="N", help="Port (0: any free one)."),
    ] = DEFAULT_PORT,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Let the pages cancel tasks, retry dead letters and pause or resume "
            "schedules (each asks first). "
            "Without it the dashboard only reads, and opens the database read-only.",
        ),
    ] = False,
    stale_after: Annotated[
        float,
        typer.Option(
            "--stale-after",
            min=0,
            metavar="SECONDS",
            help="Agents without a heartbeat for this long are shown stale.",
        ),
    ] = 30.0,
) -> None:
    """Serve a live dashboard of the swarm: agents, tasks and their graph, events as they
    happen, messages, metrics; /metrics for Prometheus. Ctrl-C stops.
    """
    try:
        import uvicorn

        from ..dashboard import create_app
    except ModuleNotFoundError as exc:
        raise CliError(
            f"swarmdb serve needs {exc.name!r}: pip install 'ruv-swarm-persistence[dashboard]'"
        ) from None
    from ..tracing import traced

    url = db_url(ctx, db)
    loopback = _is_loopback(host)

    async def go() -> None:
        storage = await open_db(url, write=allow_actions)
        try:
            sock = _bind(host, port)
            bound = sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            dashboard = create_app(
                traced(storage),
                allow_actions=allow_actions,
                stale_after=stale_after,
                allowed_hosts=[*LOOPBACK_NAMES, host] if loopback and ":" not in host else None,
            )
            mode = "actions allowed" if allow_actions else "read-only"
            err.print(
                f"swarmdb dashboard of {display_url(url)} on http://{shown}:{bound}/ "
                f"({mode}; Ctrl-C stops)",
                soft_wrap=True,
            )
            if not loopback:
                err.print(
                    f"warning: listening on {host}: anyone who can reach this machine can "
                    "read the swarm" + (" and cancel its tasks" if allow_actions else ""),
                    soft_wrap=True,
                )
            config = uvicorn.Config(
                dashboard,
                log_level="warning",
                lifespan="on",
                # Live tails never end by themselves: shutdown closes them after a second.
                timeout_graceful_shutdown=1,
            )
            await uvicorn.Server(config).serve(sockets=[sock])
        finally:
            await storage.close()

    run(go())
