"""Versioned schema migrations, shared by the SQL backends.

Each migration is applied once, in its own transaction, and recorded in
``schema_migrations(version, name, checksum, applied_at)``. The library's own migrations are
SQL files kept as data, one folder per dialect (``sqlite/0001_initial.sql`` with an optional
``0001_initial.down.sql``), and are recorded under the name ``core:<name>`` so that a database
written by a newer release is recognised as such. Editing an applied migration is detected
by its checksum. Backends implement :class:`MigrationTarget`; the decisions live here.

The crate's example works unchanged::

    migration = Migration.new(2, "add_agent_tags",
                              "ALTER TABLE agents ADD COLUMN tags TEXT DEFAULT '{}';")
    runner = MigrationRunner(storage)
    await runner.run_migration(migration)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Final, Protocol, runtime_checkable

from ..errors import MigrationError, ValidationError

__all__ = [
    "CORE_PREFIX",
    "AppliedMigration",
    "Migration",
    "MigrationRunner",
    "MigrationStatus",
    "MigrationTarget",
    "bundled_migrations",
    "check_applied",
]

CORE_PREFIX: Final = "core:"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: ``up`` SQL, and optionally ``down`` SQL to undo it."""

    version: int
    name: str
    up: str
    down: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValidationError("must be a positive integer", field="migration.version")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValidationError("must be a non-empty string", field="migration.name")
        if not isinstance(self.up, str) or not self.up.strip():
            raise ValidationError("must be non-empty SQL", field="migration.up")

    @classmethod
    def new(cls, version: int, name: str, up: str, down: str | None = None) -> Migration:
        """The crate's spelling: ``Migration::new(version, name, sql)``."""
        return cls(version, name, up, down)

    @property
    def checksum(self) -> str:
        """SHA-256 of the ``up`` SQL (line endings normalised)."""
        return hashlib.sha256(self.up.replace("\r\n", "\n").encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """A migration known to the runner or recorded in the database, and its state."""

    version: int
    name: str
    applied: bool
    applied_at: datetime | None
    checksum_ok: bool | None  # None when the runner does not know the migration's SQL


@runtime_checkable
class MigrationTarget(Protocol):
    """What a backend offers the runner. Implemented by the SQL storages."""

    dialect: str

    async def applied_migrations(self) -> list[AppliedMigration]:
        """Rows of ``schema_migrations`` (creating the table if needed), by version."""
        ...

    async def apply_migration(self, migration: Migration, recorded_name: str) -> bool:
        """Run ``migration.up`` and record it, in one transaction under the migration lock.

        Returns ``False`` without running anything when the version is already recorded
        (another process got there first).
        """
        ...

    async def revert_migration(self, migration: Migration, recorded_name: str) -> None:
        """Run ``migration.down`` and delete its record, in one transaction under the lock."""
        ...


def bundled_migrations(dialect: str) -> list[Migration]:
    """The library's own migrations for ``dialect``, in version order."""
    root = resources.files(__package__).joinpath(dialect)
    ups: dict[int, tuple[str, str]] = {}
    downs: dict[int, str] = {}
    for entry in root.iterdir():
        name = entry.name
        if name.endswith(".down.sql"):
            m = _FILE.match(name.replace(".down.sql", ".sql"))
            if m:
                downs[int(m.group(1))] = entry.read_text(encoding="utf-8")
            continue
        m = _FILE.match(name)
        if m:
            ups[int(m.group(1))] = (m.group(2), entry.read_text(encoding="utf-8"))
    return [Migration(v, name, sql, downs.get(v)) for v, (name, sql) in sorted(ups.items())]


def check_applied(applied: list[AppliedMigration], known: list[Migration]) -> None:
    """Refuse a database whose recorded migrations disagree with ``known``.

    An applied library migration whose checksum changed was edited; a library migration
    newer than any this release knows means the database was written by a newer release.
    """
    by_version = {m.version: m for m in known}
    latest_core = max((m.version for m in known), default=0)
    for row in applied:
        mine = by_version.get(row.version)
        if mine is not None:
            if row.checksum != mine.checksum:
                raise MigrationError(
                    f"migration {row.version} ({row.name}) was edited after it was applied "
                    f"(checksum {row.checksum[:12]}… in the database, {mine.checksum[:12]}… here)"
                )
        elif row.name.startswith(CORE_PREFIX) and row.version > latest_core:
            raise MigrationError(
                f"the database schema is at version {row.version} ({row.name}), newer than "
                f"this release of ruv-swarm-persistence supports ({latest_core}); upgrade it"
            )


def _recorded_name(migration: Migration, core: bool) -> str:
    return CORE_PREFIX + migration.name if core else migration.name


class MigrationRunner:
    """Applies, inspects and rolls back migrations on a SQL storage.

    ``MigrationRunner(storage)`` manages the library's migrations for the storage's dialect;
    ``run_migration`` applies a user migration of your own.
    """

    def __init__(self, storage: Any, migrations: list[Migration] | None = None) -> None:
        if not isinstance(storage, MigrationTarget):
            raise MigrationError(
                f"{type(storage).__name__} has no schema to migrate (it is not a SQL storage)"
            )
        self.target: MigrationTarget = storage
        self.core = bundled_migrations(storage.dialect)
        self.extra: list[Migration] = list(migrations or [])

    def _known(self) -> list[Migration]:
        return sorted([*self.core, *self.extra], key=lambda m: m.version)

    def _is_core(self, m: Migration) -> bool:
        return any(c.version == m.version and c.checksum == m.checksum for c in self.core)

    async def status(self) -> list[MigrationStatus]:
        """Every known or recorded migration, by version, with whether it is applied."""
        applied = {a.version: a for a in await self.target.applied_migrations()}
        known = {m.version: m for m in self._known()}
        out = []
        for v in sorted(set(applied) | set(known)):
            a, m = applied.get(v), known.get(v)
            out.append(
                MigrationStatus(
                    version=v,
                    name=(
                        a.name
                        if a
                        else f"{CORE_PREFIX}{m.name}"
                        if m and self._is_core(m)
                        else m.name
                        if m
                        else ""
                    ),
                    applied=a is not None,
                    applied_at=a.applied_at if a else None,
                    checksum_ok=None if (a is None or m is None) else a.checksum == m.checksum,
                )
            )
        return out

    async def current_version(self) -> int:
        """The highest applied version (0 for an empty database)."""
        applied = await self.target.applied_migrations()
        return max((a.version for a in applied), default=0)

    async def migrate(self, to_version: int | None = None) -> list[int]:
        """Apply every known migration up to ``to_version`` (all by default); returns versions."""
        applied = await self.target.applied_migrations()
        check_applied(applied, self._known())
        done = {a.version for a in applied}
        ran = []
        for m in self._known():
            if to_version is not None and m.version > to_version:
                break
            if m.version in done:
                continue
            if await self.target.apply_migration(m, _recorded_name(m, self._is_core(m))):
                ran.append(m.version)
        if to_version is not None and to_version < max(done, default=0):
            raise MigrationError(
                f"the database is at version {max(done)}; use rollback_to({to_version}) to go back"
            )
        return ran

    async def run_migration(self, migration: Migration) -> bool:
        """Apply one migration of your own; ``False`` if this exact migration is applied.

        A different migration already recorded under the same version is a MigrationError.
        """
        applied = {a.version: a for a in await self.target.applied_migrations()}
        row = applied.get(migration.version)
        if row is not None:
            if row.checksum == migration.checksum:
                return False
            raise MigrationError(
                f"version {migration.version} is already applied as {row.name!r} with different SQL"
            )
        if migration not in self.extra:
            self.extra.append(migration)
        return await self.target.apply_migration(
            migration, _recorded_name(migration, self._is_core(migration))
        )

    async def rollback_to(self, version: int) -> list[int]:
        """Undo applied migrations above ``version``, newest first; returns their versions.

        Every migration to undo must be known here and have ``down`` SQL.
        """
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValidationError("must be a non-negative integer", field="version")
        applied = sorted(await self.target.applied_migrations(), key=lambda a: -a.version)
        known = {m.version: m for m in self._known()}
        undone = []
        for a in applied:
            if a.version <= version:
                break
            m = known.get(a.version)
            if m is None or m.down is None:
                raise MigrationError(
                    f"migration {a.version} ({a.name}) cannot be rolled back: no down SQL known"
                )
            await self.target.revert_migration(m, a.name)
            undone.append(a.version)
        return undone
