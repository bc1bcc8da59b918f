"""Conformance: random programs run on a backend and on memory side by side, step by step.

:mod:`.task_properties` checks task programs against a small model written for the test; this
module needs no model: the memory backend is the reference, and a hypothesis
``RuleBasedStateMachine`` drives it and the backend under test through the same random program
of every kind of operation — agents, tasks with dependencies, claims, completions, failures,
leases under a fake clock both storages read, events, messages, metrics, queries, pruning and
transactions that commit or roll back. After each step the two must have answered alike (the
same values, or errors of the same type naming the same field) and hold the same rows.

Nothing needs normalising: ids are given, both storages read one clock, and event sequences
are gapless on every backend. Each example opens a fresh pair of storages.

``DIFFERENTIAL_EXAMPLES`` (default 4) programs of up to ``DIFFERENTIAL_STEPS`` (default 30)
steps run in the test suite. With ``FUZZ_SECONDS`` set (``make fuzz``), programs of up to 100
steps run in batches until that many seconds have passed, and a failure prints the program and
the blob that replays it (``@reproduce_failure``).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, Final, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from ..backends.memory import MemoryStorage
from ..errors import ConflictError, StorageError, ValidationError
from ..models import AgentStatus, MessagePriority, TaskModel, TaskPriority, TaskStatus
from ..query import QueryBuilder
from ..rules import RetryPolicy
from ..schedules import ScheduleModel
from ..storage import Storage
from . import FakeClock
from ._support import agent, at, event, message, metric, snapshot
from .plugin import StorageFactory

T = TypeVar("T")

EXAMPLES: Final = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "4"))
STEPS: Final = int(os.environ.get("DIFFERENTIAL_STEPS", "30"))
FUZZ_SECONDS: Final = float(os.environ.get("FUZZ_SECONDS", "0"))
#: A call that takes longer than this on either storage is a hang.
CALL_LIMIT: Final = 60.0

OPTIONS: Final[dict[str, Any]] = {
    "lease": 10,
    "retry_policy": RetryPolicy(base_us=1_000_000, factor=2.0, max_us=4_000_000),
}
AGENTS: Final = ("a0", "a1", "a2", "a3")
TYPES: Final = ("build", "test")
DEDUP_KEYS: Final = (None, None, "d1", "d2")
CONCURRENCY_KEYS: Final = (None, "c1", "c2")
METRIC_TYPES: Final = ("latency", "load")
VALUES: Final = (0.0, 1.0, 2.5, -3.0, 1e-3, 0.1, 0.2, 1e300, -1e300, 7.0)

agents = st.sampled_from(AGENTS)
task_types = st.sampled_from([None, ["build"], ["test"], ["build", "test"]])


def outcome(value: Any) -> Any:
    """What a call answered, comparable across backends (errors by type and field)."""
    if isinstance(value, ValidationError):
        return ("ValidationError", value.field)
    if isinstance(value, StorageError):
        return (type(value).__name__, str(value))
    if isinstance(value, BaseException):
        return ("untyped", type(value).__name__, str(value))
    return value


class Differential(RuleBasedStateMachine):
    """One program, run on the reference (memory) and on the storage under test."""

    #: Set by the test: the loop the storages live on, and how to make the one under test.
    loop: asyncio.AbstractEventLoop
    make_subject: StorageFactory
    steps_run = 0

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(at(0))
        self.serial = 0
        self.tasks: list[str] = []
        self.events: list[str] = []
        self.messages: list[str] = []

        async def open_both() -> tuple[Storage, Storage]:
            reference = MemoryStorage(clock=self.clock, **OPTIONS)
            make = type(self).make_subject  # a plain function, through the class
            return reference, await make(clock=self.clock, **OPTIONS)

        self.reference, self.subject = self.run(open_both())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the test's event loop, from the machine's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_LIMIT)

    def both(self, call: Callable[[Storage], Awaitable[Any]], what: str) -> Any:
        """Make ``call`` on each storage (arguments built afresh for each) and compare."""
        type(self).steps_run += 1

        async def settle(storage: Storage) -> Any:
            try:
                return await asyncio.wait_for(call(storage), CALL_LIMIT)
            except Exception as exc:
                return exc

        want = outcome(self.run(settle(self.reference)))
        got = outcome(self.run(settle(self.subject)))
        for answer in (want, got):
            untyped = isinstance(answer, tuple) and answer[:1] == ("untyped",)
            assert not untyped, f"{what}: untyped error: memory {want!r}, the backend {got!r}"
        assert got == want, f"{what}: memory answered {want!r}, the backend {got!r}"
        return want

    def new_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def some(self, data: st.DataObject, pool: list[str], ghost: str) -> str:
        return data.draw(st.sampled_from([*pool, ghost]) if pool else st.just(ghost))

    def teardown(self) -> None:
        async def close() -> None:
            await self.reference.close()
            await self.subject.close()

        self.run(close())

    # --- agents ---------------------------------------------------------------------------

    @initialize()
    def register(self) -> None:
        self.both(lambda s: s.store_agent(agent("a0")), "store_agent(a0)")
        self.both(lambda s: s.store_agent(agent("a1", created=1)), "store_agent(a1)")

    @rule(agent_id=agents, status=st.sampled_from(AgentStatus), created=st.integers(0, 3))
    def store_agent(self, agent_id: str, status: AgentStatus, created: int) -> None:
        self.both(
            lambda s: s.store_agent(agent(agent_id, status=status, created=created)),
            f"store_agent({agent_id})",
        )

    @rule(agent_id=agents, status=st.sampled_from(AgentStatus))
    def update_agent(self, agent_id: str, status: AgentStatus) -> None:
        self.both(
            lambda s: s.update_agent(agent(agent_id, status=status, name="renamed")),
            f"update_agent({agent_id}, {status})",
        )

    @rule(agent_id=agents, at_seconds=st.sampled_from([None, -5, 30]))
    def heartbeat(self, agent_id: str, at_seconds: int | None) -> None:
        when = None if at_seconds is None else at(at_seconds)
        self.both(lambda s: s.heartbeat(agent_id, when), f"heartbeat({agent_id}, {when})")

    @rule(agent_id=agents)
    def delete_agent(self, agent_id: str) -> None:
        self.both(lambda s: s.delete_agent(agent_id), f"delete_agent({agent_id})")

    @rule(older_than=st.sampled_from([0, 5, 60, timedelta(hours=1)]), reap=st.booleans())
    def stale_agents(self, older_than: Any, reap: bool) -> None:
        if reap:
            self.both(lambda s: s.reap_stale_agents(older_than), f"reap({older_than})")
        else:
            self.both(lambda s: s.find_stale_agents(older_than), f"find_stale({older_than})")

    @rule(status=st.sampled_from(AgentStatus), agent_id=agents)
    def list_agents(self, status: AgentStatus, agent_id: str) -> None:
        self.both(lambda s: s.list_agents(), "list_agents")
        self.both(lambda s: s.get_agent(agent_id), f"get_agent({agent_id})")
        self.both(lambda s: s.list_agents_by_status(status), f"list_agents_by_status({status})")

    # --- tasks ----------------------------------------------------------------------------

    @rule(data=st.data())
    def store_tasks(self, data: st.DataObject) -> None:
        specs = []
        pool = list(self.tasks)
        for _ in range(data.draw(st.integers(1, 3), label="batch size")):
            task_id = self.new_id("t")
            deps = (
                data.draw(st.lists(st.sampled_from(pool), max_size=2, unique=True)) if pool else []
            )
            if data.draw(st.integers(0, 9)) == 0:
                deps = [*deps, data.draw(st.sampled_from([task_id, "ghost"]))]
            specs.append(
                (
                    task_id,
                    data.draw(st.sampled_from(TYPES)),
                    data.draw(st.sampled_from(TaskPriority)),
                    data.draw(st.integers(0, 2)),
                    deps,
                    data.draw(st.sampled_from([None, None, 0, 2])),
                    data.draw(st.sampled_from(DEDUP_KEYS), label="dedup_key"),
                    data.draw(st.sampled_from(CONCURRENCY_KEYS), label="concurrency_key"),
                )
            )
            pool.append(task_id)

        def batch() -> list[TaskModel]:
            now = self.clock()
            return [
                TaskModel(
                    id=task_id,
                    task_type=task_type,
                    priority=priority,
                    payload={"id": task_id},
                    max_retries=retries,
                    dependencies=list(deps),
                    created_at=now,
                    updated_at=now,
                    run_after=None if delay is None else now + timedelta(seconds=delay),
                    dedup_key=dedup_key,
                    concurrency_key=concurrency_key,
                )
                for task_id, task_type, priority, retries, deps, delay, dedup_key, concurrency_key
                in specs
            ]  # fmt: skip

        strict = data.draw(st.integers(0, 4), label="raise_on_duplicate") == 0
        if len(specs) == 1:
            answer = self.both(
                lambda s: s.store_task(batch()[0], raise_on_duplicate=strict),
                f"store_task({specs}, {strict})",
            )
            answer = [answer] if isinstance(answer, str) else answer
        else:
            answer = self.both(
                lambda s: s.store_tasks(batch(), raise_on_duplicate=strict),
                f"store_tasks({specs}, {strict})",
            )
        if isinstance(answer, list):  # the ids: a task left out answers its key's holder's
            self.tasks += [
                spec[0] for spec, got in zip(specs, answer, strict=True) if got == spec[0]
            ]

    @rule(
        key=st.sampled_from(CONCURRENCY_KEYS[1:]),
        limit=st.sampled_from([None, 0, 1, 2]),
        rate=st.booleans(),
        per=st.sampled_from([1, 5, 30]),
    )
    def queue_limit(self, key: str, limit: int | None, rate: bool, per: int) -> None:
        if rate:
            self.both(
                lambda s: s.set_rate_limit(key, limit, per), f"set_rate_limit({key}, {limit})"
            )
        else:
            self.both(
                lambda s: s.set_concurrency_limit(key, limit),
                f"set_concurrency_limit({key}, {limit})",
            )
        self.both(lambda s: s.list_queue_limits(), "list_queue_limits")

    @rule(agent_id=agents, types=task_types, lease=st.sampled_from([None, 1, 30]))
    def claim_next_task(self, agent_id: str, types: list[str] | None, lease: int | None) -> None:
        self.both(
            lambda s: s.claim_next_task(agent_id, types, lease),
            f"claim_next_task({agent_id}, {types}, {lease})",
        )

    @rule(
        agent_id=agents,
        n=st.integers(1, 4),
        types=task_types,
        lease=st.sampled_from([None, 1, 30]),
    )
    def claim_next_tasks(
        self, agent_id: str, n: int, types: list[str] | None, lease: int | None
    ) -> None:
        self.both(
            lambda s: s.claim_next_tasks(agent_id, n, task_types=types, lease=lease),
            f"claim_next_tasks({agent_id}, {n}, {types}, {lease})",
        )

    @rule(data=st.data(), agent_id=agents)
    def complete_tasks(self, data: st.DataObject, agent_id: str) -> None:
        """Mostly tasks the agent holds; now and then another's, a finished or unknown one."""
        held = [
            t.id
            for t in self.run(self.reference.get_tasks_by_agent(agent_id))
            if t.status in (TaskStatus.Assigned, TaskStatus.Running)
        ]
        pool = [*held, *held, *held, *self.tasks[-3:], "ghost"]
        ids = data.draw(st.lists(st.sampled_from(pool), max_size=3, unique=True), label="ids")
        results = [(task_id, {"n": i}) for i, task_id in enumerate(ids)]
        self.both(
            lambda s: s.complete_tasks(results, agent_id), f"complete_tasks({ids}, {agent_id})"
        )

    @rule(data=st.data(), agent_id=agents)
    def claim_task(self, data: st.DataObject, agent_id: str) -> None:
        task_id = self.some(data, self.tasks, "ghost")
        self.both(lambda s: s.claim_task(task_id, agent_id), f"claim_task({task_id}, {agent_id})")

    def holder_call(
        self, data: st.DataObject, name: str, make: Callable[[Storage, str, str], Awaitable[Any]]
    ) -> None:
        """A call by a task's holder (usually), on a task that may be held."""
        task_id = self.some(data, self.tasks, "ghost")
        task = self.run(self.reference.get_task(task_id))
        holder = task.assigned_to if task is not None and task.assigned_to else None
        choices = [holder, holder, *AGENTS] if holder else list(AGENTS)
        agent_id = data.draw(st.sampled_from(choices), label="agent")
        self.both(lambda s: make(s, task_id, agent_id), f"{name}({task_id}, {agent_id})")

    @rule(data=st.data())
    def start_task(self, data: st.DataObject) -> None:
        self.holder_call(data, "start_task", lambda s, t, a: s.start_task(t, a))

    @rule(data=st.data(), result=st.sampled_from([None, 1, {"ok": True}, [0.5, "x"]]))
    def complete_task(self, data: st.DataObject, result: Any) -> None:
        self.holder_call(data, "complete_task", lambda s, t, a: s.complete_task(t, a, result))

    @rule(data=st.data())
    def fail_task(self, data: st.DataObject) -> None:
        self.holder_call(data, "fail_task", lambda s, t, a: s.fail_task(t, a, "broke"))

    @rule(data=st.data(), lease=st.sampled_from([None, 2, 60]))
    def heartbeat_task(self, data: st.DataObject, lease: int | None) -> None:
        self.holder_call(data, "heartbeat_task", lambda s, t, a: s.heartbeat_task(t, a, lease))

    @rule(data=st.data())
    def release_task(self, data: st.DataObject) -> None:
        self.holder_call(data, "release_task", lambda s, t, a: s.release_task(t, a))

    @rule(data=st.data(), reason=st.sampled_from([None, "not needed"]))
    def cancel_task(self, data: st.DataObject, reason: str | None) -> None:
        task_id = self.some(data, self.tasks, "ghost")
        self.both(lambda s: s.cancel_task(task_id, reason), f"cancel_task({task_id})")

    @rule(data=st.data())
    def delete_task(self, data: st.DataObject) -> None:
        task_id = self.some(data, self.tasks, "ghost")
        self.both(lambda s: s.delete_task(task_id), f"delete_task({task_id})")

    @rule(
        data=st.data(), status=st.sampled_from(TaskStatus), priority=st.sampled_from(TaskPriority)
    )
    def update_task(self, data: st.DataObject, status: TaskStatus, priority: TaskPriority) -> None:
        task_id = self.some(data, self.tasks, "ghost")

        async def update(s: Storage) -> None:
            task = await s.get_task(task_id)
            if task is None:
                task = TaskModel(id=task_id, task_type="build", created_at=self.clock())
            task.status, task.priority, task.payload = status, priority, {"updated": True}
            await s.update_task(task)

        self.both(update, f"update_task({task_id}, {status}, {priority})")

    @rule(data=st.data(), limit=st.sampled_from([None, 0, 1, 3]))
    def read_tasks(self, data: st.DataObject, limit: int | None) -> None:
        task_id = self.some(data, self.tasks, "ghost")
        agent_id = data.draw(agents)
        self.both(lambda s: s.get_ready_tasks(limit), f"get_ready_tasks({limit})")
        self.both(lambda s: s.get_pending_tasks(), "get_pending_tasks")
        self.both(lambda s: s.get_tasks_by_agent(agent_id), f"get_tasks_by_agent({agent_id})")
        self.both(lambda s: s.get_dependency_results(task_id), f"dependency_results({task_id})")
        self.both(lambda s: s.wait_for_task(task_id, 0), f"wait_for_task({task_id}, 0)")
        self.both(lambda s: s.wait_for_tasks(0), "wait_for_tasks(0)")

    @rule(
        data=st.data(),
        task_type=st.sampled_from([None, *TYPES]),
        limit=st.sampled_from([0, 1, 100]),
        how=st.sampled_from(["one", "several", "all"]),
    )
    def dead_letters(
        self, data: st.DataObject, task_type: str | None, limit: int, how: str
    ) -> None:
        self.both(lambda s: s.get_failed_tasks(task_type, limit), f"get_failed_tasks({task_type})")
        if how == "one":
            task_id = self.some(data, self.tasks, "ghost")
            self.both(lambda s: s.retry_task(task_id), f"retry_task({task_id})")
        elif how == "several" and self.tasks:
            ids = data.draw(st.lists(st.sampled_from(self.tasks), max_size=3), label="ids")
            self.both(lambda s: s.retry_tasks(ids), f"retry_tasks({ids})")
        else:
            self.both(lambda s: s.retry_failed_tasks(task_type), f"retry_failed({task_type})")

    @rule(seconds=st.sampled_from([0.5, 1, 2, 9.999999, 10, 11, 60, 4000]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # --- events, messages, metrics --------------------------------------------------------

    @rule(
        n=st.integers(1, 3),
        event_type=st.sampled_from(["start", "stop"]),
        agent_id=st.none() | agents,
    )
    def store_events(self, n: int, event_type: str, agent_id: str | None) -> None:
        ids = [self.new_id("e") for _ in range(n)]
        offset = (self.clock() - at(0)).total_seconds()

        def batch() -> list[Any]:
            return [event(i, event_type, ts=offset, agent_id=agent_id) for i in ids]

        if n == 1:
            answer = self.both(lambda s: s.store_event(batch()[0]), f"store_event({ids})")
        else:
            answer = self.both(lambda s: s.store_events(batch()), f"store_events({ids})")
        if not isinstance(answer, tuple):
            self.events += ids

    @rule(
        after=st.integers(0, 12),
        limit=st.integers(0, 5),
        agent_id=agents,
        event_type=st.sampled_from(["start", "stop"]),
        since=st.sampled_from([-1, 0, 30, 10_000]),
    )
    def read_events(
        self, after: int, limit: int, agent_id: str, event_type: str, since: int
    ) -> None:
        self.both(lambda s: s.read_events(after, limit), f"read_events({after}, {limit})")
        self.both(lambda s: s.get_events_by_agent(agent_id, limit), "get_events_by_agent")
        self.both(lambda s: s.get_events_by_type(event_type, limit), "get_events_by_type")
        self.both(lambda s: s.get_events_since(at(since)), f"get_events_since({since})")
        event_id = f"e{after}"
        self.both(lambda s: s.get_event(event_id), f"get_event({event_id})")

        types = None if event_type == "start" else [event_type]

        async def first_events(s: Storage) -> Any:
            # As many as are committed (up to 3): a wait for more would only time out, and
            # how soon a first read answers is no part of the comparison.
            stored = [
                e
                for e in await s.read_events(after, 1000)
                if types is None or e.event_type in types
            ]
            stream: Any = s.subscribe(after, types)
            try:
                return [await asyncio.wait_for(anext(stream), CALL_LIMIT) for _ in stored[:3]]
            finally:
                await stream.aclose()

        self.both(first_events, f"subscribe({after}, {event_type})")

    @rule(
        sender=agents,
        to=agents,
        priority=st.sampled_from(MessagePriority),
        duplicate=st.integers(0, 9),
    )
    def store_message(
        self, sender: str, to: str, priority: MessagePriority, duplicate: int
    ) -> None:
        message_id = self.messages[0] if duplicate == 0 and self.messages else self.new_id("m")
        offset = (self.clock() - at(0)).total_seconds()
        answer = self.both(
            lambda s: s.store_message(
                message(message_id, sender, to, ts=offset, priority=priority)
            ),
            f"store_message({message_id}, {sender} -> {to})",
        )
        if answer is None:
            self.messages.append(message_id)

    @rule(data=st.data(), a=agents, b=agents, limit=st.integers(0, 4))
    def read_messages(self, data: st.DataObject, a: str, b: str, limit: int) -> None:
        message_id = self.some(data, self.messages, "ghost")
        if data.draw(st.booleans(), label="mark read"):
            self.both(lambda s: s.mark_message_read(message_id), f"mark_read({message_id})")
        if data.draw(st.integers(0, 4), label="delete") == 0:
            self.both(lambda s: s.delete_message(message_id), f"delete_message({message_id})")
        self.both(lambda s: s.get_unread_messages(b), f"get_unread_messages({b})")
        self.both(lambda s: s.wait_for_messages(b, 0), f"wait_for_messages({b}, 0)")
        self.both(lambda s: s.get_messages_between(a, b, limit), "get_messages_between")
        self.both(lambda s: s.get_message(message_id), f"get_message({message_id})")

    @rule(
        values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=3),
        metric_type=st.sampled_from(METRIC_TYPES),
        agent_id=st.none() | agents,
        unit=st.sampled_from(["ms", "s"]),
        tag=st.sampled_from([None, "x", "y"]),
    )
    def store_metrics(
        self,
        values: list[float],
        metric_type: str,
        agent_id: str | None,
        unit: str,
        tag: str | None,
    ) -> None:
        ids = [self.new_id("x") for _ in values]
        offset = (self.clock() - at(0)).total_seconds()
        tags = {} if tag is None else {"k": tag}

        def batch() -> list[Any]:
            return [
                metric(
                    i,
                    v,
                    metric_type=metric_type,
                    unit=unit,
                    agent_id=agent_id,
                    ts=offset,
                    tags=tags,
                )
                for i, v in zip(ids, values, strict=True)
            ]

        if len(values) == 1:
            self.both(lambda s: s.store_metric(batch()[0]), f"store_metric({values})")
        else:
            self.both(lambda s: s.store_metrics(batch()), f"store_metrics({values})")

    @rule(
        metric_type=st.sampled_from(METRIC_TYPES),
        agent_id=agents,
        window=st.sampled_from([(-1, 10), (0, 0), (0, 100_000)]),
        group_by=st.sampled_from([(), ("agent_id",), ("tag:k",), ("agent_id", "tag:k")]),
        bucket=st.sampled_from([None, 1, 3600]),
    )
    def read_metrics(
        self,
        metric_type: str,
        agent_id: str,
        window: tuple[int, int],
        group_by: tuple[str, ...],
        bucket: int | None,
    ) -> None:
        start, end = at(window[0]), at(window[1])
        self.both(lambda s: s.get_metrics_by_agent(agent_id, metric_type), "get_metrics_by_agent")
        self.both(
            lambda s: s.get_aggregated_metrics(metric_type, start, end),
            f"get_aggregated_metrics({metric_type}, {window})",
        )
        self.both(
            lambda s: s.aggregate_metrics(metric_type, start, end, group_by, bucket),
            f"aggregate_metrics({metric_type}, {window}, {group_by}, {bucket})",
        )

    # --- queries, maintenance, transactions -----------------------------------------------

    @rule(
        model=st.sampled_from(["tasks", "agents", "events"]),
        desc=st.booleans(),
        limit=st.sampled_from([None, 0, 2]),
        offset=st.sampled_from([0, 1]),
        pattern=st.sampled_from(["t%", "%1", "_2", "a_", "%"]),
    )
    def query(self, model: str, desc: bool, limit: int | None, offset: int, pattern: str) -> None:
        def build() -> QueryBuilder[Any]:
            repo = {"tasks": TaskModel, "agents": None, "events": None}[model]
            if repo is TaskModel:
                b: QueryBuilder[Any] = (
                    QueryBuilder(TaskModel).where_like("id", pattern).order_by("priority", desc)
                )
                b = b.order_by("id")
            elif model == "agents":
                from ..models import AgentModel

                b = QueryBuilder(AgentModel).where_like("id", pattern).order_by("id", desc)
            else:
                from ..models import EventModel

                b = (
                    QueryBuilder(EventModel)
                    .where_in("event_type", ["start"])
                    .order_by("sequence", desc)
                )
            if limit is not None:
                b = b.limit(limit)
            return b.offset(offset)

        self.both(lambda s: s.query(build()), f"query({model}, {pattern}, {desc}, {limit})")
        self.both(lambda s: s.count(build()), f"count({model}, {pattern}, {limit}, {offset})")
        fields = {"tasks": ("status", "priority"), "agents": ("status",), "events": ("agent_id",)}
        self.both(
            lambda s: s.count_by(build(), *fields[model]),
            f"count_by({model}, {pattern}, {limit}, {offset})",
        )

    @rule(
        policy=st.sampled_from(["events:1h", "tasks:10,messages:1d", "metrics:2", "events:3"]),
        restore=st.booleans(),
    )
    def retention(self, policy: str, restore: bool) -> None:
        if restore:
            self.both(
                lambda s: s.restore_retention_record(at(5), {"events": 2, "tasks": 1}),
                "restore_retention_record",
            )
        self.both(lambda s: s.apply_retention(policy), f"apply_retention({policy})")
        self.both(lambda s: s.retention_report(), "retention_report")

    @rule(
        name=st.sampled_from(["s1", "s2", "ghost"]),
        every=st.sampled_from([1, 60, timedelta(hours=1)]),
        missed=st.sampled_from(["skip", "run_once"]),
        action=st.sampled_from(["store", "store", "pause", "resume", "delete", "restore", "fire"]),
    )
    def schedules(self, name: str, every: Any, missed: str, action: str) -> None:
        template = {"task_type": "build", "payload": {"from": name}}
        if action == "store":
            self.both(
                lambda s: s.store_schedule(name, every, template, missed=missed),
                f"store_schedule({name}, {every}, {missed})",
            )
        elif action == "pause":
            self.both(lambda s: s.pause_schedule(name), f"pause_schedule({name})")
        elif action == "resume":
            self.both(lambda s: s.resume_schedule(name), f"resume_schedule({name})")
        elif action == "delete":
            self.both(lambda s: s.delete_schedule(name), f"delete_schedule({name})")
        elif action == "restore":
            restored = ScheduleModel(
                name, "30s", template, "UTC", missed, False, at(90), at(60), at(0), at(1)
            )
            self.both(lambda s: s.restore_schedule(restored), f"restore_schedule({name})")
        self.both(lambda s: s.fire_due_schedules(), "fire_due_schedules")
        self.both(lambda s: s.get_schedule(name), f"get_schedule({name})")
        self.both(lambda s: s.list_schedules(), "list_schedules")

    @rule()
    def maintenance(self) -> None:
        self.both(lambda s: s.vacuum(), "vacuum")
        self.both(lambda s: s.checkpoint(), "checkpoint")

    @rule(
        events=st.sampled_from([None, -1, 30, 10_000]),
        metrics=st.sampled_from([None, 30, 10_000]),
        messages=st.sampled_from([None, 30, 10_000]),
    )
    def prune(self, events: int | None, metrics: int | None, messages: int | None) -> None:
        def t(v: int | None) -> Any:
            return None if v is None else at(v)

        self.both(lambda s: s.prune(t(events), t(metrics), t(messages)), "prune")

    @rule(data=st.data(), commit=st.booleans())
    def transaction(self, data: st.DataObject, commit: bool) -> None:
        """A few writes in one transaction, committed or rolled back by an exception."""
        task_id = self.new_id("t")
        event_id = self.new_id("e")
        message_id = self.new_id("m")
        agent_id = data.draw(agents, label="agent")
        parts = data.draw(
            st.lists(
                st.sampled_from(["task", "event", "message", "claim", "heartbeat"]),
                min_size=1,
                max_size=4,
            ),
            label="parts",
        )

        class Rollback(Exception):
            pass

        async def program(s: Storage) -> Any:
            done: list[Any] = []
            try:
                async with s.transaction() as tx:
                    for part in parts:
                        if part == "task":
                            now = self.clock()
                            await tx.store_task(
                                TaskModel(
                                    id=task_id, task_type="build", created_at=now, updated_at=now
                                )
                            )
                        elif part == "event":
                            await tx.store_event(event(event_id, "start"))
                        elif part == "message":
                            await tx.store_message(message(message_id, agent_id, "a0"))
                        elif part == "claim":
                            done.append(await tx.claim_next_task(agent_id))
                        else:
                            await tx.heartbeat(agent_id)
                    if not commit:
                        raise Rollback
            except Rollback:
                done.append("rolled back")
            return done

        answer = self.both(program, f"transaction({parts}, commit={commit})")
        if commit and isinstance(answer, list):
            self.tasks.append(task_id)

    @invariant()
    def same_rows(self) -> None:
        want = self.run(snapshot(self.reference))
        got = self.run(snapshot(self.subject))
        for table in want:
            assert got[table] == want[table], (
                f"{table} differ: memory holds {want[table]!r}, the backend {got[table]!r}"
            )


async def run_programs(make_subject: StorageFactory) -> int:
    """Run the state machine against ``make_subject``'s storages; returns the steps made."""

    class Run(Differential):
        """This run's machine: its loop and backend."""

    Run.loop = asyncio.get_running_loop()
    Run.make_subject = make_subject
    fuzzing = FUZZ_SECONDS > 0
    # A long run keeps no examples: every batch explores afresh.
    database: Any = {"database": None} if fuzzing else {}
    config = settings(
        **database,
        # CI runs the same programs every time (a fixed seed); a failure there is repeatable.
        derandomize=not fuzzing and os.environ.get("CI") == "true",
        max_examples=5 if fuzzing else EXAMPLES,
        stateful_step_count=100 if fuzzing else STEPS,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    stop = time.monotonic() + FUZZ_SECONDS
    while True:
        await asyncio.to_thread(run_state_machine_as_test, Run, settings=config)
        if time.monotonic() >= stop:
            return Run.steps_run


#: Values whose sum the SQL backends once computed otherwise than ``math.fsum``: PostgreSQL
#: summed 15-digit roundings, SQLite's compensated ``sum()`` is off after a cancellation.
SUMS_FOUND: Final = [
    [0.1, 0.1, 0.1],
    [0.1, 0.1, 0.6098988200851005, -1e16, 8.002795958884664e-05, 1e16],
    [
        1e16,
        -1e16,
        1e16,
        -0.3149722879589232,
        0.1,
        -0.9112240796311348,
        -1e16,
        4.711949414889277e-05,
    ],
]


@pytest.mark.parametrize("values", SUMS_FOUND, ids=["tenths", "cancel", "cancel-twice"])
async def test_crate_aggregate_sums_as_fsum_does(storage: Storage, values: list[float]) -> None:
    await storage.store_metrics([metric(f"x{i}", v) for i, v in enumerate(values)])
    (row,) = await storage.get_aggregated_metrics("latency", at(-1), at(1))
    (agg,) = await storage.aggregate_metrics("latency", at(-1), at(1))
    assert (row.tags["sum"], row.value) == (
        repr(math.fsum(values)),
        math.fsum(values) / len(values),
    )
    assert (agg.sum, agg.mean) == (math.fsum(values), math.fsum(values) / len(values))


async def test_retry_tasks_reports_the_first_problem_in_order_and_retries_once(
    storage: Storage,
) -> None:
    """Found by differential runs: backends checked missing ids first, and retried a task
    named twice twice."""
    await storage.store_tasks(
        [TaskModel(id=i, task_type="build", max_retries=0) for i in ("t1", "t2", "t3")]
    )
    for task_id in ("t2", "t3"):
        assert await storage.claim_task(task_id, "a0")
        await storage.fail_task(task_id, "a0", "broke")
    await storage.delete_task("t3")
    with pytest.raises(ConflictError, match="'t1' is pending"):
        await storage.retry_tasks(["t1", "t3", "t1"])
    retried = await storage.retry_tasks(["t2", "t2"])
    assert [(t.id, t.status) for t in retried] == [("t2", TaskStatus.Pending)]


#: Not in the programs: ``close`` ends them, sizes differ by design, and ``transaction`` is
#: how they use ``begin_transaction``.
NOT_IN_PROGRAMS: Final = frozenset({"close", "get_storage_size", "begin_transaction"})


def test_every_public_method_is_in_the_programs() -> None:
    """A method added to ``Storage`` needs a rule here (a call ``s.<name>(`` in this file)."""
    import inspect

    source = inspect.getsource(Differential)
    missing = [
        name
        for name, _ in inspect.getmembers(Storage, callable)
        if not name.startswith("_")
        and name not in NOT_IN_PROGRAMS
        and f"s.{name}(" not in source
        and f"tx.{name}(" not in source
    ]
    assert missing == []


async def test_random_programs_answer_as_memory_does(storage_factory: StorageFactory) -> None:
    steps = await run_programs(storage_factory)
    if FUZZ_SECONDS > 0:
        print(f"\n{steps} differential steps agreed")  # the fuzz run's report
    assert steps > 0


__all__ = [name for name in list(globals()) if name.startswith("test_")]
