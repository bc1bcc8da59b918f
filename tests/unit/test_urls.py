"""Storage URLs: every accepted form, the defaults, and clear errors for the rest."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ruv_swarm_persistence import init_storage, urls
from ruv_swarm_persistence.backends.memory import MemoryStorage
from ruv_swarm_persistence.errors import StorageError, ValidationError
from ruv_swarm_persistence.models import AgentModel
from ruv_swarm_persistence.urls import ParsedUrl, parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("swarm.db", ParsedUrl("sqlite", "swarm.db", {})),
        ("./data/swarm.db", ParsedUrl("sqlite", "./data/swarm.db", {})),
        ("/var/lib/swarm.db", ParsedUrl("sqlite", "/var/lib/swarm.db", {})),
        (Path("data") / "swarm.db", ParsedUrl("sqlite", "data/swarm.db", {})),
        ("sqlite:///rel.db", ParsedUrl("sqlite", "rel.db", {})),
        ("sqlite:///dir/rel.db", ParsedUrl("sqlite", "dir/rel.db", {})),
        ("sqlite:////abs.db", ParsedUrl("sqlite", "/abs.db", {})),
        ("sqlite:////tmp/my%20swarm.db", ParsedUrl("sqlite", "/tmp/my swarm.db", {})),
        ("SQLITE:///rel.db", ParsedUrl("sqlite", "rel.db", {})),
        (
            "sqlite:///rel.db?readers=4&synchronous=full",
            ParsedUrl("sqlite", "rel.db", {"readers": "4", "synchronous": "full"}),
        ),
        ("memory://", ParsedUrl("memory", "", {})),
        (":memory:", ParsedUrl("memory", "", {})),
        ("memory://?lease=5", ParsedUrl("memory", "", {"lease": "5"})),
        (
            "postgresql://user@host:5432/db",
            ParsedUrl("postgresql", "postgresql://user@host:5432/db", {}),
        ),
        (
            "postgres://user:secret@host/db",
            ParsedUrl("postgresql", "postgres://user:secret@host/db", {}),
        ),
        (
            "postgresql://user@host/db?pool_size=8&lease=10",
            ParsedUrl("postgresql", "postgresql://user@host/db", {"pool_size": "8", "lease": "10"}),
        ),
    ],
    ids=str,
)
def test_accepted_forms(url: Any, expected: ParsedUrl) -> None:
    assert parse_url(url) == expected


def test_none_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_DB_URL", "postgresql://u@h/db")
    assert parse_url(None) == ParsedUrl("postgresql", "postgresql://u@h/db", {})
    monkeypatch.setenv("SWARM_DB_URL", "memory://")
    assert parse_url().scheme == "memory"


@pytest.mark.parametrize("value", [None, ""])
def test_default_is_swarm_db_in_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("SWARM_DB_URL", raising=False)
    else:
        monkeypatch.setenv("SWARM_DB_URL", value)
    assert parse_url() == ParsedUrl("sqlite", "swarm.db", {})
    assert urls.DEFAULT_PATH == "swarm.db"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mysql://u@h/db",
        "redis://localhost",
        "ftp://x/y.db",
        "sqlite://",
        "http://x",
        "a\x00b.db",
        "sqlite:///a%00b.db",
        "postgresql://u@h/d\x00b",
    ],
)
def test_bad_urls_are_validation_errors(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_url(url)
    assert info.value.field == "url"
    assert isinstance(info.value, StorageError)


async def test_init_storage_refuses_a_nul_in_a_path() -> None:
    with pytest.raises(ValidationError) as info:
        await init_storage("a\x00b.db")
    assert info.value.field == "url"


def test_unknown_scheme_lists_what_is_accepted() -> None:
    with pytest.raises(ValidationError, match=r"memory://.*postgresql://"):
        parse_url("mongodb://h/db")


async def test_init_storage_memory() -> None:
    storage = await init_storage("memory://")
    try:
        assert isinstance(storage, MemoryStorage)
        a = AgentModel.new("w", "worker")
        await storage.store_agent(a)
        assert await storage.get_agent(a.id) == a
    finally:
        await storage.close()


async def test_init_storage_memory_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_DB_URL", ":memory:")
    async with await init_storage() as storage:
        assert isinstance(storage, MemoryStorage)


async def test_init_storage_passes_options() -> None:
    async with await init_storage("memory://?lease=5&transaction_timeout=0.5") as storage:
        assert isinstance(storage, MemoryStorage)
    async with await init_storage("memory://", lease=7) as storage:
        assert isinstance(storage, MemoryStorage)


@pytest.mark.parametrize("url", ["memory://?bogus=1", "memory://?lease=soon", "memory://?lease=-1"])
async def test_init_storage_bad_memory_options(url: str) -> None:
    with pytest.raises(ValidationError):
        await init_storage(url)


async def test_init_storage_unknown_scheme_is_a_storage_error() -> None:
    with pytest.raises(StorageError) as info:
        await init_storage("redis://localhost/0")
    assert isinstance(info.value, ValidationError)


async def test_missing_backend_module_is_a_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        urls.BACKENDS, "memory", ("ruv_swarm_persistence.backends.not_built_yet", "")
    )
    with pytest.raises(StorageError, match="not available"):
        await init_storage("memory://")


async def test_missing_driver_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "no_such_driver_for_tests"
    monkeypatch.setitem(urls.BACKENDS, "postgresql", (missing, missing))
    with pytest.raises(StorageError, match=r"pip install no_such_driver_for_tests") as info:
        await init_storage("postgresql://u@h/db")
    assert isinstance(info.value, ImportError)
    assert info.value.name == missing
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def _without(driver: str, code: str) -> str:
    """Run ``code`` in a fresh interpreter where importing ``driver`` fails; its stdout."""
    # A None entry in sys.modules makes `import driver` raise ModuleNotFoundError, exactly
    # as an uninstalled package does.
    prelude = f"import sys\nsys.modules[{driver!r}] = None\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("driver", "url", "hint"),
    [
        ("asyncpg", "postgresql://someone@127.0.0.1/db", "[postgres]"),
        ("apsw", "swarm.db", "pip install apsw"),
    ],
)
def test_init_storage_without_the_driver_names_what_to_install(
    driver: str, url: str, hint: str, tmp_path: Path
) -> None:
    out = _without(
        driver,
        f"""
        import asyncio, os
        from ruv_swarm_persistence import StorageError, init_storage
        os.chdir({str(tmp_path)!r})
        try:
            asyncio.run(init_storage({url!r}))
        except StorageError as exc:
            print(isinstance(exc, ImportError), exc.name)
            print(exc)
        """,
    )
    flags, message = out.splitlines()
    assert flags == f"True {driver}"
    scheme = urls.parse_url(url).scheme
    assert (
        message == f"the {scheme} backend needs the {driver!r} driver: {urls.install_hint(driver)}"
    )
    assert hint in message
    assert not (tmp_path / "swarm.db").exists()


def test_install_hints_cover_every_driver() -> None:
    drivers = {driver for _, driver in urls.BACKENDS.values() if driver}
    assert drivers == set(urls.INSTALL_HINTS)
    assert urls.install_hint("asyncpg") == "pip install 'ruv-swarm-persistence[postgres]'"
    # apsw is a core dependency: there is no [sqlite] extra to suggest.
    assert "[" not in urls.install_hint("apsw")
    assert urls.install_hint("apsw").startswith("pip install apsw")


# --- init_storage: awaited, entered, or both --------------------------------------------------


async def _is_closed(storage: Any) -> bool:
    try:
        await storage.get_agent("anyone")
    except StorageError as exc:
        return "closed" in str(exc)
    return False


async def test_init_storage_opens_in_async_with_without_await() -> None:
    async with init_storage("memory://") as storage:
        assert isinstance(storage, MemoryStorage)
        agent = AgentModel.new("w", "worker")
        await storage.store_agent(agent)
        assert await storage.get_agent(agent.id) == agent
    assert await _is_closed(storage)


async def test_init_storage_async_with_closes_on_an_exception() -> None:
    with pytest.raises(KeyError):
        async with init_storage("memory://") as storage:
            raise KeyError("boom")
    assert await _is_closed(storage)


async def test_init_storage_async_with_sqlite_without_await(tmp_path: Path) -> None:
    async with init_storage(tmp_path / "swarm.db") as storage:
        await storage.store_agent(AgentModel.new("w", "worker"))
    async with init_storage(tmp_path / "swarm.db") as again:
        assert len(await again.list_agents()) == 1


async def test_init_storage_awaited_stays_open_until_closed() -> None:
    storage = await init_storage("memory://")
    assert not await _is_closed(storage)
    async with storage:
        pass
    assert await _is_closed(storage)


async def test_init_storage_error_surfaces_on_entering() -> None:
    opening = init_storage("memory://?bogus=1")  # nothing is opened (or checked) yet
    with pytest.raises(ValidationError):
        async with opening:
            pass


async def test_init_storage_is_a_coroutine_for_asyncio() -> None:
    """Code that scheduled the coroutine init_storage used to return keeps working."""
    opening = init_storage("memory://")
    assert asyncio.iscoroutine(opening)
    storage = await asyncio.create_task(opening)
    await storage.close()
    storage = await asyncio.wait_for(init_storage("memory://"), timeout=10)
    await storage.close()


def test_init_storage_runs_under_asyncio_run() -> None:
    storage = asyncio.run(init_storage("memory://"))
    assert isinstance(storage, MemoryStorage)
    asyncio.run(storage.close())


async def test_init_storage_cancelled_while_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    started = asyncio.Event()

    async def slow_open(parsed: urls.ParsedUrl, options: dict[str, Any]) -> Any:
        started.set()
        await asyncio.sleep(60)

    from ruv_swarm_persistence.backends import memory

    monkeypatch.setattr(memory, "open_url", slow_open)
    task = asyncio.create_task(init_storage("memory://"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


USER_CODE = """
import asyncio

from ruv_swarm_persistence import Storage, init_storage


async def main() -> None:
    async with init_storage("memory://") as entered:
        one: Storage = entered
    awaited = await init_storage("memory://")
    two: Storage = awaited
    await two.close()
    async with await init_storage("memory://") as both:
        three: Storage = both
    print(one is not two is not three)


def blocking() -> Storage:
    return asyncio.run(init_storage("memory://"))


asyncio.run(main())
"""


def test_init_storage_forms_pass_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "user_code.py").write_text(USER_CODE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / ".mypy"),
            "user_code.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = subprocess.run(
        [sys.executable, "user_code.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "True"
