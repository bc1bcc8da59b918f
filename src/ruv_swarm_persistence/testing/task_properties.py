"""Property tests of the task queue (hypothesis), for every backend.

* Many workers claiming at once: no task is ever held by two of them, and every task is
  completed exactly once.
* Random programs of task operations (store with random dependencies, claim, start, complete,
  fail, cancel, heartbeat, delete, lease expiry) checked step by step against a small model
  of the semantics kept in plain Python.

Each example gets a fresh storage from the runner's ``storage_factory`` and its own fake clock.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from hypothesis import given, note
from hypothesis import strategies as st

from .._time import from_us, to_us
from ..errors import ConflictError, LeaseLostError, NotFoundError, ValidationError
from ..models import TaskModel, TaskPriority, TaskStatus
from ..query import QueryBuilder
from ..rules import RetryPolicy
from ..storage import Storage
from . import FakeClock
from .plugin import StorageFactory

T = TypeVar("T")
SECOND: Final = 1_000_000
LEASE_US: Final = 10 * SECOND
#: Backoff of retry n is 1 s, 2 s, 4 s, then 4 s for every later retry.
POLICY: Final = RetryPolicy(base_us=SECOND, factor=2.0, max_us=4 * SECOND)
AGENTS: Final = ("w1", "w2", "w3")
TYPES: Final = ("a", "b")
TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
HELD: Final = frozenset({"assigned", "running"})
CASCADE: Final = "<cancelled because a dependency failed or was cancelled>"
_CASCADE_ERROR: Final = re.compile(r"dependency (.+) (failed|cancelled)")


# --- many workers at once ---------------------------------------------------------------------


#: Tasks for the concurrent claim test: type, priority and dependency picks (on earlier tasks).
_TASK_SPECS: Final = st.lists(
    st.tuples(st.sampled_from(TYPES), st.integers(0, 3), st.lists(st.integers(0, 99), max_size=2)),
    min_size=1,
    max_size=80,
)


@given(specs=_TASK_SPECS, data=st.data())
async def test_concurrent_claims_never_share_a_task(
    storage_factory: StorageFactory,
    specs: list[tuple[str, int, list[int]]],
    data: st.DataObject,
) -> None:
    n = len(specs)
    clock = FakeClock()
    storage = await storage_factory(clock=clock)
    batch = []
    for i, (task_type, priority, picks) in enumerate(specs):
        deps = sorted({p % i for p in picks}) if i else []
        task = TaskModel.new(
            task_type,
            {"i": i},
            TaskPriority(priority),
            id=f"t{i:03}",
            dependencies=[f"t{d:03}" for d in deps],
        )
        task.created_at = task.updated_at = clock() + timedelta(microseconds=i)
        batch.append(task)
    order = data.draw(st.permutations(range(n)), label="batch order")
    await storage.store_tasks([batch[i] for i in order])
    # A fifth of the workers only take one type; the rest take anything.
    filters = [None if i % 5 else [TYPES[i % 2]] for i in range(50)]
    starts = data.draw(st.lists(st.booleans(), min_size=50, max_size=50), label="start first")

    holders: dict[str, str] = {}
    claims: Counter[str] = Counter()
    completions: Counter[str] = Counter()

    async def worker(i: int) -> None:
        agent, types = f"worker-{i}", filters[i]
        while len(completions) < n:
            task = await storage.claim_next_task(agent, types)
            if task is None:
                await asyncio.sleep(0)
                continue
            assert task.id not in holders, f"{task.id} held by {holders[task.id]} and {agent}"
            holders[task.id] = agent
            claims[task.id] += 1
            assert task.status == TaskStatus.Assigned
            assert task.assigned_to == agent
            assert types is None or task.task_type in types
            await asyncio.sleep(0)
            if starts[i]:
                await storage.start_task(task.id, agent)
                await asyncio.sleep(0)
            done = await storage.complete_task(task.id, agent, {"by": agent})
            assert done.status == TaskStatus.Completed
            assert holders.pop(task.id) == agent
            completions[task.id] += 1

    try:
        async with asyncio.TaskGroup() as group:
            for i in range(50):
                group.create_task(worker(i))
        assert set(completions) == {t.id for t in batch}
        assert set(completions.values()) == {1}
        assert set(claims.values()) == {1}
        for task in batch:
            stored = await storage.get_task(task.id)
            assert stored is not None
            assert stored.status == TaskStatus.Completed
            assert stored.retry_count == 0
            assert stored.result == {"by": stored.assigned_to}
        assert await storage.get_pending_tasks() == []
    finally:
        await storage.close()


# --- random programs against a model ----------------------------------------------------------


@dataclass
class _Task:
    """What the model knows of one task."""

    id: str
    task_type: str
    priority: int
    created: int
    deps: list[str]
    max_retries: int
    status: str = "pending"
    retry_count: int = 0
    assigned_to: str | None = None
    lease: int | None = None
    run_after: int | None = None
    error: str | None = None
    result: Any = None


def _backoff(retry: int) -> int:
    return int(min(POLICY.base_us * POLICY.factor ** (retry - 1), POLICY.max_us))


@dataclass
class _Model:
    """The semantics of the task queue, written as plainly as possible."""

    clock: FakeClock
    tasks: dict[str, _Task] = field(default_factory=dict)
    #: Tasks requeued by a retry: a dependent their failure cancelled still names them.
    retried: set[str] = field(default_factory=set)

    @property
    def now(self) -> int:
        return to_us(self.clock())

    def ready(self, task: _Task) -> bool:
        return (
            task.status == "pending"
            and all(self.tasks[d].status == "completed" for d in task.deps)
            and (task.run_after is None or task.run_after <= self.now)
        )

    def claim_order(self, tasks: list[_Task]) -> list[str]:
        return [t.id for t in sorted(tasks, key=lambda t: (-t.priority, t.created, t.id))]

    def ready_ids(self) -> list[str]:
        return self.claim_order([t for t in self.tasks.values() if self.ready(t)])

    def pending_ids(self) -> list[str]:
        return self.claim_order([t for t in self.tasks.values() if t.status == "pending"])

    def cascade(self, cause: _Task) -> set[str]:
        """Cancel every unfinished task depending on ``cause``, transitively."""
        cancelled = set()
        for task in self.tasks.values():
            if cause.id in task.deps and task.status not in TERMINAL:
                task.status, task.error, task.lease = "cancelled", CASCADE, None
                cancelled |= {task.id} | self.cascade(task)
        return cancelled

    def fail_attempt(self, task: _Task, error: str) -> None:
        task.error, task.lease = error, None
        if task.retry_count < task.max_retries:
            task.retry_count += 1
            task.status, task.assigned_to = "pending", None
            task.run_after = self.now + _backoff(task.retry_count)
        else:
            task.status = "failed"
            self.cascade(task)

    def expire_leases(self) -> None:
        for task in self.tasks.values():
            if task.status in HELD and task.lease is not None and task.lease <= self.now:
                self.fail_attempt(task, f"lease expired (held by {task.assigned_to})")

    def claim(self, task: _Task, agent: str) -> None:
        task.status, task.assigned_to, task.lease = "assigned", agent, self.now + LEASE_US

    def holds(self, task_id: str, agent: str) -> _Task | type[NotFoundError | LeaseLostError]:
        task = self.tasks.get(task_id)
        if task is None:
            return NotFoundError
        if task.status not in HELD or task.assigned_to != agent:
            return LeaseLostError
        return task


class _Program:
    """One random program: runs each step on the storage and on the model.

    A step is an operation name and a seed for its choices (which task, which agent, which
    dependencies...). Hypothesis shrinks a failing program by dropping steps; the notes it
    prints spell out each step of the smallest failing program.
    """

    def __init__(self, storage: Storage, clock: FakeClock) -> None:
        self.storage = storage
        self.clock = clock
        self.model = _Model(clock)
        self.serial = 0
        self.rng = random.Random(0)

    def choose(self, n: int) -> int:
        """A choice in ``range(n)``."""
        return self.rng.randrange(n)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.choose(len(options))]

    def some_task_id(self, *statuses: str) -> str:
        """Usually a task in one of ``statuses`` (when there is one), else any id or a ghost."""
        likely = [t.id for t in self.model.tasks.values() if t.status in statuses]
        if likely and self.choose(5) > 0:
            return self.pick(likely)
        return self.pick([*self.model.tasks, "ghost"])

    def agent_for(self, task_id: str) -> str:
        """Usually the holder (so the happy path runs), sometimes anyone."""
        task = self.model.tasks.get(task_id)
        if task is not None and task.assigned_to is not None and self.choose(3) > 0:
            return task.assigned_to
        return self.pick(AGENTS)

    async def expect(self, error: type[Exception], call: Awaitable[Any]) -> None:
        try:
            await call
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    async def run(self, op: str, seed: int) -> None:
        self.rng = random.Random(seed)
        await getattr(self, f"op_{op}")()

    # --- operations -------------------------------------------------------------------------

    async def op_store(self) -> None:
        m = self.model
        flaw = self.pick(["none"] * 6 + ["unknown", "self", "cycle", "duplicate"])
        size = 1 + self.choose(4)
        existing = list(m.tasks)
        made: list[_Task] = []
        models: list[TaskModel] = []
        for _ in range(size):
            self.serial += 1
            pool = existing + [t.id for t in made]
            deps: list[str] = []
            for _ in range(self.choose(4)):
                left = [d for d in pool if d not in deps]
                if left:
                    deps.append(self.pick(left))
            task = _Task(
                id=f"t{self.serial}",
                task_type=self.pick(TYPES),
                priority=self.choose(4),
                created=m.now + self.serial,
                deps=deps,
                max_retries=self.pick([1, 0, 1, 0, 2, 3]),
            )
            delay = self.pick([None, None, None, 0, SECOND, 5 * SECOND])
            task.run_after = None if delay is None else m.now + delay
            made.append(task)
            models.append(
                TaskModel(
                    id=task.id,
                    task_type=task.task_type,
                    priority=TaskPriority(task.priority),
                    payload={"serial": self.serial},
                    max_retries=task.max_retries,
                    dependencies=list(deps),
                    created_at=from_us(task.created),
                    updated_at=from_us(task.created),
                    run_after=None if task.run_after is None else from_us(task.run_after),
                )
            )
        error: type[Exception] | None = None
        if flaw == "unknown":
            models[-1].dependencies.append("ghost")
            error = ValidationError
        elif flaw == "self":
            models[-1].dependencies.append(models[-1].id)
            error = ValidationError
        elif flaw == "cycle" and len(models) > 1 and models[-1].id not in models[0].dependencies:
            # The last member may already depend (transitively) on the first: closing the loop.
            models[0].dependencies.append(models[-1].id)
            if self._reaches(made, made[-1].id, made[0].id):
                error = ValidationError
            else:
                models[0].dependencies.pop()
        elif flaw == "duplicate" and existing:
            models[-1].id = self.pick(existing)
            error = ConflictError
        order = list(models)
        for i in range(len(order) - 1, 0, -1):
            j = self.choose(i + 1)
            order[i], order[j] = order[j], order[i]
        note(f"store {[(t.id, t.dependencies) for t in order]} ({flaw})")
        if error is not None:
            await self.expect(error, self.storage.store_tasks(order))
            return
        await self.storage.store_tasks(order)
        for task in made:  # generated in dependency order
            m.tasks[task.id] = task
            if any(m.tasks[d].status in ("failed", "cancelled") for d in task.deps):
                task.status, task.error = "cancelled", CASCADE

    @staticmethod
    def _reaches(made: list[_Task], start: str, goal: str) -> bool:
        """Whether ``start`` depends on ``goal`` through batch members."""
        deps = {t.id: t.deps for t in made}
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(deps.get(node, []))
        return False

    async def op_claim_next(self) -> None:
        m = self.model
        agent = self.pick(AGENTS)
        types = self.pick([None, None, ["a"], ["b"], ["a", "b"]])
        got = await self.storage.claim_next_task(agent, types)
        note(f"claim_next_task({agent}, {types}) -> {got and got.id}")
        m.expire_leases()
        candidates = [
            t for t in m.tasks.values() if m.ready(t) and (types is None or t.task_type in types)
        ]
        expected = m.claim_order(candidates)[:1]
        assert ([got.id] if got else []) == expected, (got, expected)
        if expected:
            m.claim(m.tasks[expected[0]], agent)

    async def op_claim(self) -> None:
        m = self.model
        task_id, agent = self.some_task_id("pending"), self.pick(AGENTS)
        got = await self.storage.claim_task(task_id, agent)
        note(f"claim_task({task_id}, {agent}) -> {got}")
        m.expire_leases()
        task = m.tasks.get(task_id)
        expected = task is not None and m.ready(task)
        assert got is expected
        if task is not None and expected:
            m.claim(task, agent)

    async def _held(
        self, name: str, call: Awaitable[TaskModel], task_id: str, agent: str
    ) -> _Task | None:
        note(f"{name}({task_id}, {agent})")
        held = self.model.holds(task_id, agent)
        if isinstance(held, type):
            await self.expect(held, call)
            return None
        stored = await call
        assert stored.id == task_id, name
        return held

    async def op_start(self) -> None:
        task_id = self.some_task_id("assigned")
        agent = self.agent_for(task_id)
        task = await self._held("start", self.storage.start_task(task_id, agent), task_id, agent)
        if task is not None:
            task.status = "running"

    async def op_complete(self) -> None:
        task_id = self.some_task_id(*HELD)
        agent = self.agent_for(task_id)
        result = {"by": agent, "serial": self.serial}
        call = self.storage.complete_task(task_id, agent, result)
        task = await self._held("complete", call, task_id, agent)
        if task is not None:
            task.status, task.result, task.lease = "completed", result, None

    async def op_fail(self) -> None:
        task_id = self.some_task_id(*HELD)
        agent = self.agent_for(task_id)
        error = f"attempt broke at {self.model.now}"
        call = self.storage.fail_task(task_id, agent, error)
        task = await self._held("fail", call, task_id, agent)
        if task is not None:
            self.model.fail_attempt(task, error)

    async def op_heartbeat(self) -> None:
        task_id = self.some_task_id(*HELD)
        agent = self.agent_for(task_id)
        call = self.storage.heartbeat_task(task_id, agent)
        task = await self._held("heartbeat", call, task_id, agent)
        if task is not None:
            task.lease = self.model.now + LEASE_US

    async def op_cancel(self) -> None:
        m = self.model
        task_id = self.some_task_id("pending", *HELD)
        reason = self.pick([None, "not needed"])
        note(f"cancel_task({task_id}, {reason})")
        task = m.tasks.get(task_id)
        if task is None:
            await self.expect(NotFoundError, self.storage.cancel_task(task_id, reason))
            return
        if task.status in ("completed", "failed"):
            await self.expect(ValidationError, self.storage.cancel_task(task_id, reason))
            return
        got = await self.storage.cancel_task(task_id, reason)
        expected: set[str] = set()
        if task.status != "cancelled":
            task.status, task.lease = "cancelled", None
            if reason is not None:
                task.error = reason
            expected = {task_id} | m.cascade(task)
        assert sorted(got) == sorted(expected)

    async def op_delete(self) -> None:
        m = self.model
        task_id = self.some_task_id()
        note(f"delete_task({task_id})")
        if any(task_id in t.deps for t in m.tasks.values()):
            await self.expect(ConflictError, self.storage.delete_task(task_id))
            return
        await self.storage.delete_task(task_id)
        m.tasks.pop(task_id, None)

    def _retryable(self, task: _Task) -> bool:
        dead = ("failed", "cancelled")
        return task.status == "failed" and not any(
            self.model.tasks[d].status in dead for d in task.deps
        )

    def _requeue(self, task: _Task) -> None:
        self.model.retried.add(task.id)
        task.status, task.retry_count, task.assigned_to = "pending", 0, None
        task.lease = task.run_after = task.result = None

    async def op_retry(self) -> None:
        """Requeue a dead letter (or all of them); refused for any other task."""
        m = self.model
        if self.choose(4) == 0:
            note("retry_failed_tasks()")
            chosen = [t for t in m.tasks.values() if self._retryable(t)]
            assert await self.storage.retry_failed_tasks() == len(chosen)
            for dead in chosen:
                self._requeue(dead)
            return
        task_id = self.some_task_id("failed")
        note(f"retry_task({task_id})")
        task = m.tasks.get(task_id)
        if task is None:
            await self.expect(NotFoundError, self.storage.retry_task(task_id))
            return
        if not self._retryable(task):
            await self.expect(ConflictError, self.storage.retry_task(task_id))
            return
        await self.storage.retry_task(task_id)
        self._requeue(task)

    async def op_advance(self) -> None:
        """Move time on; the claim that follows requeues whatever leases ran out."""
        seconds = self.pick([0.5, 1, 2, 4, 9.999999, 10, 11, 30])
        note(f"advance the clock {seconds} s")
        self.clock.advance(seconds)
        await self.op_claim_next()

    # --- checks -----------------------------------------------------------------------------

    async def check(self) -> None:
        m, s = self.model, self.storage
        stored = {t.id: t for t in await s.query(QueryBuilder(TaskModel))}
        assert set(stored) == set(m.tasks)
        for task_id, want in m.tasks.items():
            got = stored[task_id]
            _same(f"task {task_id}", _observed(got), _expected(want))
            if want.error == CASCADE:
                self._check_cascade_error(got)
        _same("get_ready_tasks", await _ids(s.get_ready_tasks()), m.ready_ids())
        _same("get_pending_tasks", await _ids(s.get_pending_tasks()), m.pending_ids())
        for agent in AGENTS:
            expected = m.claim_order([t for t in m.tasks.values() if t.assigned_to == agent])
            _same(f"get_tasks_by_agent({agent})", await _ids(s.get_tasks_by_agent(agent)), expected)

    def _check_cascade_error(self, got: TaskModel) -> None:
        match = _CASCADE_ERROR.fullmatch(got.error or "")
        assert match is not None, got.error
        cause, status = match.groups()
        assert cause in got.dependencies, got.error
        was_retried = status == "failed" and cause in self.model.retried
        assert self.model.tasks[cause].status == status or was_retried, got.error


def _same(what: str, stored: Any, expected: Any) -> None:
    """Assert equality with a message that says what differs (plain asserts are not rewritten
    outside test modules)."""
    if stored == expected:
        return
    if isinstance(stored, dict) and isinstance(expected, dict):
        diff = {k: (stored.get(k), expected.get(k)) for k in stored if stored[k] != expected.get(k)}
        raise AssertionError(f"{what}: (stored, model) differ in {diff}")
    raise AssertionError(f"{what}: stored {stored!r}, model {expected!r}")


def _observed(task: TaskModel) -> dict[str, Any]:
    """The fields the model predicts, as stored."""
    return {
        "status": task.status.value,
        "retry_count": task.retry_count,
        "assigned_to": task.assigned_to,
        "dependencies": task.dependencies,
        "lease_expires_at": _us(task.lease_expires_at),
        "run_after": _us(task.run_after),
        "result": task.result if task.status == TaskStatus.Completed else None,
        "error": "<cascade>" if _CASCADE_ERROR.fullmatch(task.error or "") else task.error,
    }


def _expected(task: _Task) -> dict[str, Any]:
    """The same fields, as the model has them."""
    return {
        "status": task.status,
        "retry_count": task.retry_count,
        "assigned_to": task.assigned_to,
        "dependencies": task.deps,
        "lease_expires_at": task.lease,
        "run_after": task.run_after,
        "result": task.result if task.status == "completed" else None,
        "error": "<cascade>" if task.error == CASCADE else task.error,
    }


def _us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


async def _ids(call: Any) -> list[str]:
    return [t.id for t in await call]


#: Operations and their weights: enough claims and failures that retries run out in a program.
_OPS: Final = (
    ["store"] * 3
    + ["claim_next"] * 4
    + ["claim", "heartbeat", "cancel", "delete"]
    + ["start"] * 2
    + ["complete"] * 3
    + ["fail"] * 4
    + ["advance"] * 3
    + ["retry"] * 2
)


#: A program: (operation, seed of its choices) steps. Drawn as a list of runs of steps, so programs
#: are long on average (about 35 steps) yet shrink by dropping whole runs or single steps.
_STEPS: Final = st.lists(
    st.lists(
        st.tuples(st.sampled_from(_OPS), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=12,
    ),
    min_size=1,
    max_size=12,
).map(lambda runs: [step for run in runs for step in run])


@given(steps=_STEPS)
async def test_random_task_programs_follow_the_model(
    storage_factory: StorageFactory, steps: list[tuple[str, int]]
) -> None:
    clock = FakeClock()
    storage = await storage_factory(clock=clock, lease=LEASE_US / SECOND, retry_policy=POLICY)
    program = _Program(storage, clock)
    try:
        for op, seed in steps:
            await program.run(op, seed)
            await program.check()
    finally:
        await storage.close()


__all__ = [name for name in list(globals()) if name.startswith("test_")]
