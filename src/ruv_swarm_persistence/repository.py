"""``Repository[T]``: find, save, update, delete and query one kind of record."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, cast

from .codec import DEFAULT_LIMITS, check_id
from .errors import ValidationError
from .models import AgentModel, EventModel, MessageModel, TaskModel
from .query import QueryBuilder

__all__ = ["Repository", "Store"]

T = TypeVar("T")
Q = TypeVar("Q")


class Store(Protocol):
    """What a repository needs of its storage (every ``Storage`` is one).

    Declared here, not imported from :mod:`.storage`, so that the storage can import its
    repositories without a cycle.
    """

    async def query(self, builder: QueryBuilder[Q]) -> list[Q]: ...
    async def get_agent(self, agent_id: str) -> AgentModel | None: ...
    async def get_task(self, task_id: str) -> TaskModel | None: ...
    async def get_message(self, message_id: str) -> Any: ...
    async def get_event(self, event_id: str) -> EventModel | None: ...


class Repository(Generic[T]):
    """Typed access to one kind of record of a storage (``storage.agents``, ``.tasks``, …).

    Events and metrics are append-only history: ``update`` and ``delete`` of them raise
    :class:`ValidationError` (retention is ``Storage.prune``'s job).
    """

    __slots__ = ("model", "storage")

    def __init__(self, storage: Store, model: type[T]) -> None:
        self.storage = storage
        self.model = model

    def builder(self) -> QueryBuilder[T]:
        """A query builder over this repository's model."""
        return QueryBuilder(self.model)

    async def find_by_id(self, id: str) -> T | None:
        """The record with this id, or ``None`` (a point read where the storage has one)."""
        self._check_id(id)
        s, m = self.storage, self.model
        if m is AgentModel:
            return cast("T | None", await s.get_agent(id))
        if m is TaskModel:
            return cast("T | None", await s.get_task(id))
        if m is MessageModel:
            return cast("T | None", await s.get_message(id))
        if m is EventModel:
            return cast("T | None", await s.get_event(id))
        rows = await s.query(self.builder().where_eq("id", id).limit(1))
        return rows[0] if rows else None

    async def find_all(self) -> list[T]:
        """Every record, ordered by id (creation order for generated ids)."""
        return await self.storage.query(self.builder())

    async def save(self, entity: T) -> None:
        """Store a new record."""
        s: Any = self.storage
        m = self.model
        if m is AgentModel:
            await s.store_agent(entity)
        elif m is TaskModel:
            await s.store_task(entity)
        elif m is EventModel:
            await s.store_event(entity)
        elif m is MessageModel:
            await s.store_message(entity)
        else:
            await s.store_metric(entity)

    async def update(self, entity: T) -> None:
        """Replace a stored record; a missing id raises NotFoundError."""
        s: Any = self.storage
        m = self.model
        if m is AgentModel:
            await s.update_agent(entity)
        elif m is TaskModel:
            await s.update_task(entity)
        else:
            raise ValidationError(f"{self._kind()} cannot be updated", field="entity")

    async def delete(self, id: str) -> None:
        """Delete a record (idempotent)."""
        self._check_id(id)
        s: Any = self.storage
        m = self.model
        if m is AgentModel:
            await s.delete_agent(id)
        elif m is TaskModel:
            await s.delete_task(id)
        elif m is MessageModel:
            await s.delete_message(id)
        else:
            raise ValidationError(
                f"{self._kind()} are history; remove old ones with prune()", field="id"
            )

    async def query(self, builder: QueryBuilder[T]) -> list[T]:
        """Run a builder over this repository's model."""
        if not isinstance(builder, QueryBuilder):
            raise ValidationError(
                f"expected a QueryBuilder, got {type(builder).__name__}", field="builder"
            )
        if builder.model is not self.model:
            raise ValidationError(
                f"builder is for {builder.model.__name__}, repository for {self.model.__name__}",
                field="builder",
            )
        return cast("list[T]", await self.storage.query(builder))

    def _check_id(self, id: Any) -> None:
        # Named after this method's parameter, under the storage's own limits if it has any.
        check_id(id, "id", getattr(self.storage, "_limits", DEFAULT_LIMITS))

    def _kind(self) -> str:
        return {EventModel: "events", MessageModel: "messages"}.get(self.model, "metrics")
