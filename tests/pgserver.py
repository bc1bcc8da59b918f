"""Find a PostgreSQL server for the tests, or start a throwaway one.

The order follows what a machine allows:

1. ``$SWARM_TEST_PG_URL``, when set (a URL naming a database the tests may create databases
   from, or at least create schemas in). A URL that does not answer is an error, never
   silently replaced by another server.
2. ``postgresql://postgres@127.0.0.1:5432/postgres``, when it answers and lets us in.
3. A throwaway cluster started from the installed PostgreSQL binaries
   (``/usr/lib/postgresql/*/bin``, ``$SWARM_TEST_PG_BINDIR`` or ``PATH``) in a temporary folder,
   on a free port with its unix socket in that folder and trust authentication; as root it runs
   as the ``postgres`` user. It is stopped and removed when the session ends.

``$SWARM_TEST_PG_CLUSTER=1`` skips the first two and always starts a throwaway cluster.

Each test session gets a fresh database ``swarm_test_<random>`` (dropped at the end); each test
then works in its own schema (:func:`new_schema_name`, :func:`drop_schema`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ENV_BINDIR",
    "ENV_CLUSTER",
    "ENV_URL",
    "Cluster",
    "PgServer",
    "SessionDatabase",
    "Unavailable",
    "admin_connect",
    "drop_schema",
    "locate",
    "new_schema_name",
    "session_database",
    "start_cluster",
]

ENV_URL = "SWARM_TEST_PG_URL"
ENV_CLUSTER = "SWARM_TEST_PG_CLUSTER"
ENV_BINDIR = "SWARM_TEST_PG_BINDIR"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 5.0

T = TypeVar("T")


class Unavailable(Exception):
    """No PostgreSQL server could be had; the message is a one-line reason."""


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running loop."""

    async def main() -> T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def admin_connect(url: str) -> Any:
    """An ``asyncpg`` connection to ``url`` (raises ``Unavailable`` without the driver)."""
    try:
        import asyncpg
    except ModuleNotFoundError as exc:  # pragma: no cover - the dev install has it
        raise Unavailable("asyncpg is not installed (pip install '.[postgres]')") from exc
    return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)


async def _probe(url: str) -> int:
    conn = await admin_connect(url)
    try:
        version: int = await conn.fetchval("SELECT current_setting('server_version_num')::int")
        return version
    finally:
        await conn.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


# --- throwaway cluster ----------------------------------------------------------------------


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest installed version first)."""
    candidates: list[str] = []
    if os.environ.get(ENV_BINDIR):
        candidates.append(os.environ[ENV_BINDIR])

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    candidates += sorted(
        (str(Path(p).parent) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: version(p + "/x"),
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise Unavailable(
        "no PostgreSQL binaries (initdb, pg_ctl) found; install the 'postgresql' package"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A PostgreSQL cluster this process started in a temporary folder."""

    bindir: Path
    root: Path
    port: int
    run_as: str | None
    running: bool = field(default=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.run_as, "--", *args]
        return ["su", self.run_as, "-s", "/bin/sh", "-c", shlex.join(args)]

    def _call(self, *args: str, timeout: float = 120) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run(
            self._command(*args),
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise Unavailable(f"{Path(args[0]).name} failed ({done.returncode}): {tail[0]}")

    def init(self) -> None:
        """Create the cluster's data folder (trust authentication, UTF-8, C locale)."""
        self._call(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server on 127.0.0.1 and a unix socket in the cluster's folder."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=300",
                # A throwaway cluster needs no durability; this keeps tests quick.
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c synchronous_commit=off",
            ]
        )
        self._call(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast: its data is thrown away) and remove the folder."""
        try:
            if self.running:
                self.running = False
                self._call(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """Initialise and start a throwaway cluster; raises ``Unavailable`` with the reason."""
    bindir = find_bindir()
    run_as: str | None = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        run_as = "postgres"
        try:
            user = pwd.getpwnam(run_as)
        except KeyError as exc:
            raise Unavailable("running as root and there is no 'postgres' user") from exc
        root = Path(tempfile.mkdtemp(prefix="swarm-pg-", dir="/tmp"))
        os.chown(root, user.pw_uid, user.pw_gid)
    else:
        root = Path(tempfile.mkdtemp(prefix="swarm-pg-"))
    cluster = Cluster(bindir, root, _free_port(), run_as)
    try:
        cluster.init()
        for attempt in range(3):
            try:
                cluster.start()
                break
            except Unavailable:
                # The free port may have been taken between choosing and binding it.
                if attempt == 2:
                    raise
                cluster.port = _free_port()
        _run(lambda: _probe(cluster.url))
    except BaseException as exc:
        log = cluster.log.read_text(errors="replace") if cluster.log.exists() else ""
        cluster.stop()
        if isinstance(exc, Unavailable):
            last = log.strip().splitlines()[-1:] or [""]
            raise Unavailable(f"{exc} {last[0]}".strip()) from exc
        raise
    return cluster


# --- locating a server ----------------------------------------------------------------------


@dataclass
class PgServer:
    """A server the tests may use: where it came from and how to reach it as an admin."""

    admin_url: str
    origin: str  # "env", "local" or "cluster"
    cluster: Cluster | None = None

    def close(self) -> None:
        """Stop the server if this process started it."""
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def locate() -> PgServer:
    """Find or start a server (see the module docstring); raises ``Unavailable``."""
    reasons: list[str] = []
    if os.environ.get(ENV_CLUSTER, "") not in ("", "0"):
        cluster = start_cluster()
        return PgServer(cluster.url, "cluster", cluster)
    env_url = os.environ.get(ENV_URL)
    if env_url:
        try:
            _run(lambda: _probe(env_url))
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"${ENV_URL} does not answer: {_describe(exc)}") from exc
        return PgServer(env_url, "env")
    if _answers("127.0.0.1", 5432):
        try:
            _run(lambda: _probe(LOCAL_URL))
            return PgServer(LOCAL_URL, "local")
        except Unavailable:
            raise
        except Exception as exc:
            reasons.append(f"127.0.0.1:5432 refused us ({_describe(exc)})")
    else:
        reasons.append("nothing listens on 127.0.0.1:5432")
    try:
        cluster = start_cluster()
    except Unavailable as exc:
        reasons.append(str(exc))
        raise Unavailable("; ".join(reasons)) from exc
    return PgServer(cluster.url, "cluster", cluster)


# --- one database per test session ----------------------------------------------------------


@dataclass
class SessionDatabase:
    """The database a test session works in; :meth:`close` drops it (if it was created)."""

    server: PgServer
    url: str
    name: str
    created: bool

    def close(self, *, wait: bool = True) -> None:
        """Drop the session's database (if created here) and stop a throwaway server.

        ``DROP DATABASE`` forces a server checkpoint, which takes seconds on a busy server;
        with ``wait=False`` a detached process drops it so that the session ends at once.
        A throwaway cluster is removed whole, so its database needs no drop.
        """
        try:
            if self.created and self.server.cluster is None:
                if wait:
                    _run(lambda: _drop_database(self.server.admin_url, self.name))
                else:
                    _drop_database_detached(self.server.admin_url, self.name)
        finally:
            self.server.close()


async def _create_database(admin_url: str, name: str) -> bool:
    import asyncpg

    conn = await admin_connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        return True
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await admin_connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


_DROP_SCRIPT = """
import asyncio, sys
import asyncpg

async def main(url, name):
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name.replace('"', '""'))
    finally:
        await conn.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _drop_database_detached(admin_url: str, name: str) -> None:
    # The shell returns at once, leaving the dropper running on its own (no child to reap).
    background = '"$0" -c "$1" "$2" "$3" >/dev/null 2>&1 &'
    subprocess.run(
        ["sh", "-c", background, sys.executable, _DROP_SCRIPT, admin_url, name],
        check=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=30,
    )


@contextlib.contextmanager
def session_database(*, wait_for_drop: bool = True) -> Iterator[SessionDatabase]:
    """Locate a server and create this session's database; drop it (and the server) after."""
    server = locate()
    try:
        name = "swarm_test_" + secrets.token_hex(6)
        try:
            created = _run(lambda: _create_database(server.admin_url, name))
        except Exception as exc:
            raise Unavailable(f"cannot create a test database: {_describe(exc)}") from exc
        # Without the right to create databases, the tests share the given one: each test
        # still works in its own schema.
        url = _with_database(server.admin_url, name) if created else server.admin_url
        db = SessionDatabase(server, url, name, created)
    except BaseException:
        server.close()
        raise
    try:
        yield db
    finally:
        db.close(wait=wait_for_drop)


# --- one schema per test --------------------------------------------------------------------


def new_schema_name(prefix: str = "t") -> str:
    """A fresh schema name for one test."""
    return f"{prefix}_{secrets.token_hex(6)}"


async def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it (idempotent)."""
    conn = await admin_connect(url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {_quote_ident(schema)} CASCADE")
    finally:
        await conn.close()
