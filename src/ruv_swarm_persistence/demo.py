"""A simulated swarm that exercises the whole Storage API: what ``swarmdb demo`` runs.

Agents with capabilities register and heartbeat; a DAG of tasks with priorities and
dependencies is stored at once; each agent works the queue with a
:class:`~ruv_swarm_persistence.worker.Worker` (two tasks at once) whose handler simulates the
work: the worker claims ready tasks under a lease, renews it, and completes or fails them
(failures retry with backoff; a few tasks fail for good and their dependents are cancelled).
One agent crashes mid-run while holding work: its worker stops dead, writing nothing more, as a
killed process would; its task comes back after the lease expires and others finish it, and the
supervisor reaps the agent. The other workers stop cleanly at the end (their agents are then
``shutdown``). Agents message each other and read their mail (read receipts); events and
metrics are recorded throughout: the workers record ``worker.started``/``worker.stopped`` and one
event per finished attempt (``task.completed``, ``task.failed``, ``task.lease_lost``), the
handler records ``task.claimed`` as it begins. The summary is computed from the database
afterwards, not from counters kept on the side, so it can be checked against the database.

The seed fixes the swarm and what it ends with. Every random choice is drawn from a generator
keyed by the seed and the entity it is about (the plan, a task, an agent), never by the agent
that happened to run a task, so two runs with the same seed and sizes agree on: the agents, the
task graph and its priorities, each task's planned failures, which agent crashes, the tasks by
status, the failed attempts and the retries after them, and the messages sent, read and unread
(whether a task's finisher writes to a peer, and what, is the task's to decide; agents
acknowledge all mail but low-priority notes, and read what is left once the work is done).

Scheduling decides the rest: which agent runs which task (the per-agent counts), when the
crash happens, events and metrics (events per claim and outcome, metrics per heartbeat),
durations and throughput, and the recovered leases: normally one, the task the crashed agent
held, but a machine under load may see a slow worker lose a lease too (the demo records it; a
task that runs out of attempts that way ends failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from ._time import utc_now
from .models import (
    AgentModel,
    AgentStatus,
    EventModel,
    MessageModel,
    MessagePriority,
    MetricModel,
    TaskModel,
    TaskPriority,
    TaskStatus,
)
from .query import QueryBuilder
from .rules import RetryPolicy
from .storage import Storage
from .worker import Outcome, TaskContext, TaskReport, Worker

__all__ = [
    "AgentReport",
    "DemoConfig",
    "DemoProgress",
    "DemoSummary",
    "demo_retry_policy",
    "has_data",
    "run_demo",
]

#: Agent kinds and what each can do; every task type is covered by at least two kinds.
ROSTER: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("researcher", ("research", "analysis")),
    ("coder", ("coding", "review")),
    ("analyst", ("analysis", "data-processing")),
    ("tester", ("testing", "coding")),
    ("reviewer", ("review", "testing")),
    ("data-engineer", ("data-processing", "research")),
    ("architect", ("design", "review", "coding")),
    ("coordinator", ("design", "research", "analysis")),
)

_PRIORITIES: Final = (
    (TaskPriority.Low, 20),
    (TaskPriority.Medium, 50),
    (TaskPriority.High, 22),
    (TaskPriority.Critical, 8),
)
_MESSAGE_KINDS: Final = ("handoff", "question", "status", "review-request")
_UNFINISHED: Final = [TaskStatus.Pending, TaskStatus.Assigned, TaskStatus.Running]
#: Planned failures of a task that can never succeed.
_DOOMED: Final = 1_000


class SimulatedFailure(Exception):
    """A planned failure of a demo task (the worker records ``SimulatedFailure: …``)."""


def demo_retry_policy() -> RetryPolicy:
    """Short backoff (50 ms, doubling, at most 400 ms) so retries show within seconds."""
    return RetryPolicy(base_us=50_000, factor=2.0, max_us=400_000)


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """How big the swarm is and how it behaves."""

    agents: int = 8
    tasks: int = 2_000
    seed: int = 7
    #: Tasks each agent's worker runs at once; the agent that will crash runs one, so that it
    #: crashes holding exactly one task.
    workers_per_agent: int = 2
    #: Seconds a claim holds a task; the crashed agent's work comes back after this.
    lease: float = 1.0
    #: Seconds between agent heartbeats (each also records cpu and memory metrics).
    heartbeat: float = 0.2
    #: An agent silent this long is reaped (longer than the lease: leases expire first).
    stale_after: float = 2.5
    #: Share of tasks that fail once or twice before succeeding.
    flaky: float = 0.08
    #: Share of tasks that always fail (they end failed; their dependents cancelled).
    doomed: float = 0.005
    #: Share of the run after which the chosen agent crashes.
    crash_at: float = 0.35
    crash: bool = True
    #: Chance that an agent messages a peer after finishing a task.
    chatter: float = 0.15
    #: Give up if the swarm has not finished after this many seconds.
    deadline: float = 600.0


@dataclass(slots=True)
class AgentProgress:
    """One agent as the live display shows it."""

    agent_id: str
    agent_type: str
    state: str = "starting"  # starting, working, idle, crashed, done
    current: str | None = None
    completed: int = 0
    failed_attempts: int = 0


@dataclass(slots=True)
class DemoProgress:
    """A snapshot of the running swarm, handed to the progress callback.

    Each one is a copy taken at one moment, between two awaits of the swarm, and never changed
    afterwards, so its numbers agree with each other: ``messages_read <= messages_sent``, the
    per-agent counts add up to the totals, and ``elapsed`` (seconds since the demo began, on
    one clock) never goes back from one snapshot to the next.
    """

    phase: str
    total: int
    stored: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    failed_attempts: int = 0
    lost_leases: int = 0
    messages_sent: int = 0
    messages_read: int = 0
    elapsed: float = 0.0
    crashed_agent: str | None = None
    agents: dict[str, AgentProgress] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Tasks in a final state: completed + failed + cancelled."""
        return self.completed + self.failed + self.cancelled

    def snapshot(self) -> DemoProgress:
        """A copy that the running swarm does not change afterwards."""
        return replace(self, agents={k: replace(a) for k, a in self.agents.items()})


@dataclass(slots=True)
class AgentReport:
    """Per-agent lines of the summary, read back from the database."""

    agent_id: str
    agent_type: str
    status: str
    capabilities: list[str]
    tasks_completed: int
    task_ms_count: int
    task_ms_mean: float
    task_ms_p95: float
    cpu_mean: float
    cpu_max: float


@dataclass(slots=True)
class DemoSummary:
    """What the demo did, computed from the database after the run."""

    seed: int
    agents: int
    tasks: int
    elapsed_s: float
    throughput_tasks_per_s: float
    tasks_by_status: dict[str, int]
    #: Retries after a failed attempt. The tasks' ``retry_count`` adds up to ``retries +
    #: recovered_leases``: an expired lease also costs its task an attempt.
    retries: int
    failed_attempts: int
    #: Claims that ended without an outcome (the lease ran out) and were claimed again.
    recovered_leases: int
    crashed_agent: str | None
    reaped_agents: list[str]
    messages_sent: int
    messages_read: int
    messages_unread: int
    events: int
    last_sequence: int
    metrics: int
    per_agent: list[AgentReport]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


async def has_data(storage: Storage) -> bool:
    """True when the storage holds any agent, task, event, message or metric."""
    for model in (AgentModel, TaskModel, MessageModel, MetricModel):
        if await storage.query(QueryBuilder(model).limit(1)):
            return True
    return bool(await storage.read_events(0, 1))


# --- the plan: everything the seed decides ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    agents: list[AgentModel]
    tasks: list[TaskModel]
    victim: str | None


def _plan(config: DemoConfig, now: datetime) -> _Plan:
    rng = random.Random(config.seed)
    agents: list[AgentModel] = []
    for i in range(config.agents):
        kind, caps = ROSTER[i % len(ROSTER)]
        number = i // len(ROSTER) + 1
        agents.append(
            AgentModel.new(
                f"{kind}-{number}",
                kind,
                list(caps),
                id=f"{kind}-{number}",
                metadata={"demo": {"seed": config.seed}, "region": rng.choice(["eu", "us"])},
            )
        )
    coverage = Counter(c for a in agents for c in a.capabilities)
    types = sorted(coverage)
    # The victim's work must be doable by someone else once it is gone.
    candidates = [a.id for a in agents if all(coverage[c] >= 2 for c in a.capabilities)]
    victim = rng.choice(candidates) if config.crash and candidates else None

    tasks: list[TaskModel] = []
    window = max(20, config.tasks // 10)
    levels = [p for p, _ in _PRIORITIES]
    weights = [w for _, w in _PRIORITIES]
    for i in range(config.tasks):
        deps: list[str] = []
        if i:
            k = rng.choice((0, 0, 1, 1, 1, 2, 3))
            pool = range(max(0, i - window), i)
            deps = [f"task-{j:05d}" for j in sorted(rng.sample(pool, min(k, len(pool))))]
        roll = rng.random()
        if roll < config.doomed:
            fail_attempts = _DOOMED
        elif roll < config.doomed + config.flaky:
            fail_attempts = rng.choice((1, 1, 2))
        else:
            fail_attempts = 0
        long = rng.random() < 0.01
        task = TaskModel.new(
            rng.choice(types),
            {
                "step": i,
                "work_ms": rng.randint(150, 300) if long else rng.randint(1, 6),
                "fail_attempts": fail_attempts,
            },
            rng.choices(levels, weights)[0],
            id=f"task-{i:05d}",
            dependencies=deps,
            max_retries=3,
        )
        task.created_at = task.updated_at = now
        tasks.append(task)
    return _Plan(agents, tasks, victim)


# --- the run ------------------------------------------------------------------------------


class _Swarm:
    def __init__(
        self,
        storage: Storage,
        config: DemoConfig,
        plan: _Plan,
        on_progress: Callable[[DemoProgress], None] | None,
    ) -> None:
        self.s = storage
        self.config = config
        self.plan = plan
        self.on_progress = on_progress
        self.progress = DemoProgress("starting", len(plan.tasks))
        self.progress.agents = {a.id: AgentProgress(a.id, a.agent_type) for a in plan.agents}
        self.done = asyncio.Event()
        self.crashed = asyncio.Event()
        self.started = time.monotonic()
        #: Planned failures done so far, per task: an expired lease is not one of them, so a
        #: task fails as planned whoever held it when.
        self.failures: Counter[str] = Counter()
        #: Messages acknowledged (or being): the workers of one agent share its inbox.
        self.acknowledged: set[str] = set()
        # Nobody writes to the agent that will crash: whether it read a message before
        # crashing would depend on timing.
        self.recipients = [a.id for a in plan.agents if a.id != plan.victim]
        #: Each agent's worker, by agent id (made in run()).
        self.workers: dict[str, Worker] = {}

    def rng(self, *key: object) -> random.Random:
        """A generator for one decision about one entity, the same in every run of the seed."""
        return random.Random(":".join(map(str, (self.config.seed, *key))))

    def report(self, phase: str | None = None) -> None:
        if phase is not None:
            self.progress.phase = phase
        self.progress.elapsed = time.monotonic() - self.started
        if self.on_progress is not None:
            # A copy: the callback may keep it (a display renders it from another thread)
            # while the swarm goes on changing its own.
            self.on_progress(self.progress.snapshot())

    async def event(
        self, kind: str, payload: Any = None, agent: str | None = None, task: str | None = None
    ) -> None:
        await self.s.store_event(EventModel.new(kind, payload, agent_id=agent, task_id=task))

    # --- setup ------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.report("registering agents")
        for a in self.plan.agents:
            await self.s.store_agent(a)
            a.set_status(AgentStatus.Active)
            await self.s.update_agent(a)
        await self.s.store_events(
            [
                EventModel.new("agent.registered", {"capabilities": a.capabilities}, agent_id=a.id)
                for a in self.plan.agents
            ]
        )
        self.report("storing tasks")
        chunk = 250
        for start in range(0, len(self.plan.tasks), chunk):
            await self.s.store_tasks(self.plan.tasks[start : start + chunk])
            self.progress.stored = min(start + chunk, len(self.plan.tasks))
            self.report()
        await self.event(
            "swarm.started",
            {
                "seed": self.config.seed,
                "agents": len(self.plan.agents),
                "tasks": len(self.plan.tasks),
            },
        )
        # The coordinator (or whoever comes first) briefs everyone.
        lead = self.plan.agents[0].id
        for a in self.plan.agents[1:]:
            await self.send(lead, a.id, "briefing", MessagePriority.High)

    # --- agents -----------------------------------------------------------------------------

    async def send(self, sender: str, to: str, kind: str, priority: MessagePriority) -> None:
        msg = MessageModel.new(
            sender, to, kind, {"note": f"{kind} from {sender}"}, priority=priority
        )
        # Counted before it is stored: once stored it may be read at once, and no snapshot
        # may show more messages read than sent.
        self.progress.messages_sent += 1
        await self.s.store_message(msg)

    async def read_mail(self, agent_id: str) -> None:
        """Acknowledge the agent's unread mail; low-priority notes are left unread."""
        for m in await self.s.get_unread_messages(agent_id):
            if m.priority == MessagePriority.Low or m.id in self.acknowledged:
                continue
            self.acknowledged.add(m.id)
            await self.s.mark_message_read(m.id)
            self.progress.messages_read += 1

    async def heartbeats(self, agent: AgentModel) -> None:
        rng = self.rng(agent.id)
        cpu, mem = rng.uniform(15, 40), rng.uniform(180, 420)
        while not self.done.is_set():
            if agent.id == self.plan.victim and self.crashed.is_set():
                return
            cpu = min(100.0, max(1.0, cpu + rng.uniform(-8, 9)))
            mem = max(64.0, mem + rng.uniform(-10, 12))
            await self.s.heartbeat(agent.id)
            await self.s.store_metrics(
                [
                    MetricModel.new("cpu_usage", round(cpu, 2), "percent", agent_id=agent.id),
                    MetricModel.new("memory_usage", round(mem, 1), "MiB", agent_id=agent.id),
                ]
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), self.config.heartbeat)

    async def handle(self, task: TaskModel, ctx: TaskContext) -> Any:
        """The simulated work of every task type: sleep, then fail as planned or succeed."""
        agent_id = ctx.agent_id
        me = self.progress.agents[agent_id]
        me.state, me.current = "working", task.id
        await self.event("task.claimed", {"attempt": ctx.attempt}, agent_id, task.id)
        began = time.monotonic()
        work_ms = int(task.payload["work_ms"])
        planned = int(task.payload["fail_attempts"])
        crash_point = self.config.crash_at * self.progress.total
        if (
            agent_id == self.plan.victim
            and planned == 0
            and not self.crashed.is_set()
            and self.progress.finished >= crash_point
        ):
            # The crash: stop mid-task, holding the lease, never to heartbeat again. The
            # victim runs one task at a time and crashes on one planned to succeed, so the
            # crash abandons exactly one task and takes no planned failure with it.
            self.crashed.set()
            self.progress.crashed_agent = agent_id
            me.state, me.current = "crashed", None
            self.workers[agent_id]._crash()
            await asyncio.Event().wait()  # cancelled at once: the worker is dead
        if work_ms > 100:
            # The worker renews the lease by itself (every third of it); a long task renews
            # it now as well, halfway.
            await asyncio.sleep(work_ms / 2000)
            await ctx.renew()
            await asyncio.sleep(work_ms / 2000)
        else:
            await asyncio.sleep(work_ms / 1000)
        if self.failures[task.id] < planned:
            raise SimulatedFailure(f"simulated failure on attempt {ctx.attempt}")
        return {"by": agent_id, "ms": round((time.monotonic() - began) * 1000, 2)}

    async def outcome(self, report: TaskReport) -> None:
        """What the swarm does after each attempt its workers finish."""
        agent_id, task = report.agent_id, report.task
        me = self.progress.agents[agent_id]
        if report.outcome is Outcome.Completed:
            me.completed += 1
            self.progress.completed += 1
            await self.s.store_metric(
                MetricModel.new(
                    "task_duration_ms",
                    round(report.duration * 1000, 3),
                    "ms",
                    agent_id=agent_id,
                    tags={"task_type": task.task_type},
                )
            )
            # Whether the task's finisher writes, what and how urgently is the task's to
            # decide (it completes once); the recipient is drawn last, as it depends on who
            # finished.
            rng = self.rng(task.id, "chatter")
            if rng.random() < self.config.chatter:
                kind = rng.choice(_MESSAGE_KINDS)
                priority = rng.choices(list(MessagePriority), (20, 60, 15, 5))[0]
                peers = [a for a in self.recipients if a != agent_id] or [agent_id]
                await self.send(agent_id, rng.choice(peers), kind, priority)
        elif report.outcome is Outcome.Failed:
            # Counted at once (the worker calls this before anything else can run), so a
            # retry of the task sees its planned failures done so far.
            self.failures[task.id] += 1
            me.failed_attempts += 1
            self.progress.failed_attempts += 1
            if task.status == TaskStatus.Failed:
                # Its dependents were cancelled with it: both counts change in one step.
                cancelled = await self.cancelled()
                self.progress.failed += 1
                self.progress.cancelled = max(self.progress.cancelled, cancelled)
        elif report.outcome is Outcome.LeaseLost:
            # Too slow (a machine under load): someone else will redo it.
            self.progress.lost_leases += 1
        if me.current == task.id:
            me.state, me.current = "idle", None
        if self.rng(task.id, task.retry_count, "mail").random() < 0.3:
            await self.read_mail(agent_id)

    async def cancelled(self) -> int:
        """Tasks cancelled so far, counted in the database."""
        rows = await self.s.query(QueryBuilder(TaskModel).where_eq("status", "cancelled"))
        return len(rows)

    # --- supervision ------------------------------------------------------------------------

    async def supervise(self) -> None:
        last_reap = time.monotonic()
        last_check = time.monotonic()
        while True:
            self.report("running")
            now = time.monotonic()
            if now - last_reap >= 0.5:
                last_reap = now
                await self.reap(self.config.stale_after)
            if self.progress.finished >= self.progress.total or now - last_check >= 1.0:
                last_check = now
                if not await self.s.query(
                    QueryBuilder(TaskModel).where_in("status", _UNFINISHED).limit(1)
                ):
                    return
            if now - self.started > self.config.deadline:
                raise TimeoutError(f"the swarm did not finish within {self.config.deadline:.0f} s")
            await asyncio.sleep(0.1)

    async def reap(self, older_than: float) -> list[str]:
        reaped = await self.s.reap_stale_agents(timedelta(seconds=older_than))
        for a in reaped:
            await self.event("agent.reaped", {"silent_for_s": round(older_than, 3)}, a.id)
        return [a.id for a in reaped]

    async def run(self) -> None:
        await self.setup()
        for a in self.plan.agents:
            await self.read_mail(a.id)  # the briefing, before any work
        config = self.config
        self.workers = {
            a.id: Worker(
                self.s,
                a,
                dict.fromkeys(a.capabilities, self.handle),
                concurrency=1 if a.id == self.plan.victim else config.workers_per_agent,
                lease=config.lease,
                grace=config.lease,
                # The swarm heartbeats its agents itself, with cpu and memory metrics.
                heartbeat=None,
                # An idle worker also claims every half lease, so the crashed agent's task
                # is taken soon after its lease runs out (nothing announces that).
                idle_check=config.lease / 2,
                on_outcome=self.outcome,
            )
            for a in self.plan.agents
        }
        tasks = [asyncio.create_task(self.heartbeats(a)) for a in self.plan.agents]
        tasks += [asyncio.create_task(w.run()) for w in self.workers.values()]
        try:
            await self.supervise()
        finally:
            self.done.set()
            for w in self.workers.values():
                w.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        # Mail that came late is read now by everyone still standing, so what ends up read
        # does not depend on who checked their mail when.
        for a in self.plan.agents:
            if a.id != self.progress.crashed_agent:
                await self.read_mail(a.id)
                self.progress.agents[a.id].state = "done"
            self.progress.agents[a.id].current = None
        self.progress.elapsed = time.monotonic() - self.started
        # Whoever stopped heartbeating (the crashed agent) is reaped now, if it was not yet;
        # the others' workers marked them shutdown as they stopped.
        await self.reap(max(3 * self.config.heartbeat, 0.5))
        await self.event(
            "swarm.finished",
            {"elapsed_s": round(self.progress.elapsed, 3), "crashed": self.progress.crashed_agent},
        )
        self.progress.cancelled = await self.cancelled()
        self.report("finished")


async def run_demo(
    storage: Storage,
    config: DemoConfig | None = None,
    on_progress: Callable[[DemoProgress], None] | None = None,
) -> DemoSummary:
    """Run the simulated swarm on ``storage`` (which should be empty) and summarise it.

    Open the storage with a short retry policy (:func:`demo_retry_policy`) so that retries
    show within seconds. ``on_progress`` receives snapshots while it runs.
    """
    config = config or DemoConfig()
    if config.agents < 1 or config.tasks < 1:
        raise ValueError("the demo needs at least one agent and one task")
    started_at = utc_now()
    plan = _plan(config, started_at)
    swarm = _Swarm(storage, config, plan, on_progress)
    await swarm.run()
    return await summarize(storage, config, swarm.progress, started_at)


async def summarize(
    storage: Storage, config: DemoConfig, progress: DemoProgress, since: datetime
) -> DemoSummary:
    """The summary of a finished demo, read from the database."""
    tasks = await storage.query(QueryBuilder(TaskModel))
    by_status = Counter(t.status.value for t in tasks)
    events = await _all_events(storage)
    claims: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for e in events:
        if e.task_id is None:
            continue
        if e.event_type == "task.claimed":
            claims[e.task_id] += 1
        elif e.event_type in ("task.completed", "task.failed"):
            outcomes[e.task_id] += 1
    messages = await storage.query(QueryBuilder(MessageModel))
    metrics = await storage.query(QueryBuilder(MetricModel))
    end = utc_now() + timedelta(seconds=1)
    durations = {
        a.group.get("agent_id"): a
        for a in await storage.aggregate_metrics("task_duration_ms", since, end)
    }
    cpu = {
        a.group.get("agent_id"): a for a in await storage.aggregate_metrics("cpu_usage", since, end)
    }
    done_by = Counter(t.assigned_to for t in tasks if t.status == TaskStatus.Completed)
    per_agent = []
    for a in await storage.list_agents():
        d, c = durations.get(a.id), cpu.get(a.id)
        per_agent.append(
            AgentReport(
                agent_id=a.id,
                agent_type=a.agent_type,
                status=a.status.value,
                capabilities=list(a.capabilities),
                tasks_completed=done_by.get(a.id, 0),
                task_ms_count=d.count if d else 0,
                task_ms_mean=round(d.mean, 3) if d else 0.0,
                task_ms_p95=round(d.p95, 3) if d else 0.0,
                cpu_mean=round(c.mean, 2) if c else 0.0,
                cpu_max=round(c.max, 2) if c else 0.0,
            )
        )
    completed = by_status.get(TaskStatus.Completed.value, 0)
    elapsed = progress.elapsed
    recovered = sum(claims[t] - outcomes[t] for t in claims)
    return DemoSummary(
        seed=config.seed,
        agents=len(per_agent),
        tasks=len(tasks),
        elapsed_s=round(elapsed, 3),
        throughput_tasks_per_s=round(completed / elapsed, 1) if elapsed > 0 else 0.0,
        tasks_by_status={s.value: by_status.get(s.value, 0) for s in TaskStatus},
        retries=sum(t.retry_count for t in tasks) - recovered,
        failed_attempts=sum(1 for e in events if e.event_type == "task.failed"),
        recovered_leases=recovered,
        crashed_agent=progress.crashed_agent,
        reaped_agents=sorted(
            e.agent_id for e in events if e.event_type == "agent.reaped" and e.agent_id
        ),
        messages_sent=len(messages),
        messages_read=sum(1 for m in messages if m.read),
        messages_unread=sum(1 for m in messages if not m.read),
        events=len(events),
        last_sequence=max((e.sequence or 0 for e in events), default=0),
        metrics=len(metrics),
        per_agent=per_agent,
    )


async def _all_events(storage: Storage) -> list[EventModel]:
    out: list[EventModel] = []
    after = 0
    while True:
        batch = await storage.read_events(after, 5_000)
        out.extend(batch)
        if len(batch) < 5_000:
            return out
        after = batch[-1].sequence or after
