// Tasks: counts by type and status, the tasks over time, dead letters and a filterable list.
"use strict";

Swarm.pages.tasks = async function () {
  const { el, number, badge } = Swarm;
  const STATUSES = ["pending", "assigned", "running", "completed", "failed", "cancelled"];
  const query = new URLSearchParams(location.search);
  let status = query.get("status") || "";
  const counts = el("div", { id: "counts" });
  const stateChart = el("div", { class: "chart", id: "chart-states" });
  const typeChart = el("div", { class: "chart", id: "chart-types" });
  const failed = el("div", { id: "failed" });
  const schedules = el("div", { id: "schedules" });
  const list = el("div", { id: "task-list" });
  const select = el("select", { id: "status-filter" },
    el("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)));
  select.addEventListener("change", () => {
    status = select.value;
    history.replaceState(null, "", status ? `?status=${status}` : location.pathname);
    refresh();
  });

  function countsTable(stats) {
    const head = [{ label: "Type" }, ...STATUSES.map((s) => ({ label: s, numeric: true })),
      { label: "ready", numeric: true }, { label: "total", numeric: true }];
    const cell = (type, s, n) => el("td", { class: "n" + (n ? "" : " zero"),
      dataset: { testid: `count-${type}-${s}` } }, number(n));
    const rows = Object.entries(stats.by_type).map(([type, c]) => el("tr", {},
      el("td", {}, type), STATUSES.map((s) => cell(type, s, c[s])), cell(type, "ready", c.ready),
      cell(type, "total", STATUSES.reduce((sum, s) => sum + c[s], 0))));
    rows.push(el("tr", { class: "total" }, el("td", {}, "all types"),
      STATUSES.map((s) => cell("all", s, stats.by_status[s])), cell("all", "ready", stats.ready),
      cell("all", "total", stats.total)));
    return Swarm.table(head, rows, { id: "counts-table" });
  }

  function charts(stats) {
    const tl = stats.timeline;
    Swarm.chart(stateChart, `Tasks by state (every ${tl.bucket_s}s)`, tl.t,
      Object.entries(tl.by_state).map(([s, v]) => ({ label: s, values: v, color: Swarm.colors[s] })),
      { unit: "tasks" });
    Swarm.chart(typeChart, `Tasks finished per ${tl.bucket_s}s, by type`, tl.t,
      Object.entries(tl.finished_by_type).map(([type, v]) => ({ label: type, values: v })),
      { unit: "tasks" });
  }

  async function retry(task) {
    const done = await Swarm.act(`/api/tasks/${encodeURIComponent(task.id)}/retry`,
      `Requeue task ${task.id} (${task.task_type}), which failed after ` +
      `${task.retry_count} retries?`);
    if (done) await refresh();
  }

  async function cancel(task) {
    const done = await Swarm.act(`/api/tasks/${encodeURIComponent(task.id)}/cancel`,
      `Cancel task ${task.id} (${task.task_type}) and every task that depends on it?`);
    if (done) await refresh();
  }

  async function retryAll(count) {
    const done = await Swarm.act("/api/dead-letters/retry",
      `Requeue every dead letter that can run again (${count} failed for good)?`);
    if (done) await refresh();
  }

  function failedSection(data) {
    const retryButton = (t) => (Swarm.actions ?
      el("button", { class: "small", onclick: () => retry(t).catch(Swarm.fail) }, "Retry") : null);
    const rows = (tasks, withButton) => tasks.map((t) => el("tr", { dataset: { task: t.id } },
      el("td", {}, Swarm.taskLink(t.id)), el("td", {}, t.task_type), el("td", {}, badge(t.status)),
      el("td", { class: "n" }, `${t.retry_count}/${t.max_retries}`),
      el("td", { class: "error-text" }, t.error || ""),
      el("td", {}, Swarm.time(t.updated_at)),
      withButton ? el("td", {}, retryButton(t)) : null));
    const head = [{ label: "Task" }, { label: "Type" }, { label: "Status" },
      { label: "Retries", numeric: true }, { label: "Last error" }, { label: "Changed" }];
    failed.replaceChildren(
      Swarm.section("Dead letters",
        el("p", { class: "summary" }, el("b", { dataset: { testid: "dead-letters" } },
          number(data.total_failed)), " tasks failed for good ",
        Swarm.actions && data.total_failed ? el("button", { class: "small", id: "retry-all",
          onclick: () => retryAll(data.total_failed).catch(Swarm.fail) }, "Retry all") : null),
        data.dead_letters.length ? Swarm.table([...head, { label: "" }],
          rows(data.dead_letters, true), { id: "dead-letters" }) : null),
      Swarm.section("Retrying",
        el("p", { class: "summary" }, el("b", { dataset: { testid: "retrying" } },
          number(data.total_retrying)), " unfinished tasks have failed an attempt"),
        data.retrying.length ? Swarm.table(head, rows(data.retrying, false)) : null));
  }

  async function toggle(s) {
    const kind = s.paused ? "resume" : "pause";
    const done = await Swarm.act(`/api/schedules/${encodeURIComponent(s.name)}/${kind}`,
      `${s.paused ? "Resume" : "Pause"} schedule ${s.name} (${s.spec})?`);
    if (done) await refresh();
  }

  function schedulesSection(data) {
    const rows = data.schedules.map((s) => el("tr", { dataset: { schedule: s.name } },
      el("td", {}, s.name), el("td", { class: "id" }, s.spec), el("td", {}, s.timezone),
      el("td", {}, s.task_type || ""),
      el("td", { dataset: { testid: "paused" } }, s.paused ? el("span", { class: "badge s-paused" },
        "paused") : el("span", { class: "badge s-active" }, "active")),
      el("td", {}, s.paused ? "–" : Swarm.time(s.next_due)), el("td", {}, Swarm.time(s.last_due)),
      el("td", {}, Swarm.actions ? el("button", { class: "small",
        onclick: () => toggle(s).catch(Swarm.fail) }, s.paused ? "Resume" : "Pause") : null)));
    schedules.replaceChildren(Swarm.section("Schedules",
      data.schedules.length ? Swarm.table([{ label: "Name" }, { label: "When" },
        { label: "Zone" }, { label: "Task type" }, { label: "State" }, { label: "Next due" },
        { label: "Last due" }, { label: "" }], rows, { id: "schedules-table" }) :
        el("p", { class: "muted" }, "No schedules.")));
  }

  function listSection(data) {
    const rows = data.tasks.map((t) => el("tr", { class: "clickable", dataset: { task: t.id },
      onclick: (e) => { if (e.target.tagName !== "BUTTON") location.href = `/tasks/${encodeURIComponent(t.id)}`; } },
    el("td", {}, Swarm.taskLink(t.id)), el("td", {}, t.task_type),
    el("td", {}, badge(t.status), t.ready ? el("span", { class: "badge ready" }, "ready") : null),
    el("td", {}, t.priority_name), el("td", {}, t.assigned_to || ""),
    el("td", { class: "n" }, `${t.retry_count}/${t.max_retries}`),
    el("td", { class: "n" }, number(t.dependencies.length)),
    el("td", {}, Swarm.time(t.updated_at)),
    el("td", {}, Swarm.actions && !["completed", "failed", "cancelled"].includes(t.status) ?
      el("button", { class: "small", onclick: () => cancel(t).catch(Swarm.fail) }, "Cancel") :
      null)));
    list.replaceChildren(Swarm.section("Tasks",
      el("p", { class: "controls" }, select, " ", el("span", { dataset: { testid: "list-total" } },
        number(data.total)), ` tasks${data.total > data.tasks.length ? `, the ${data.tasks.length} most recently changed shown` : ""}`),
      Swarm.table([{ label: "Task" }, { label: "Type" }, { label: "Status" },
        { label: "Priority" }, { label: "Agent" }, { label: "Retries", numeric: true },
        { label: "Deps", numeric: true }, { label: "Changed" }, { label: "" }], rows,
      { id: "tasks" })));
  }

  async function refresh() {
    const [stats, dead, tasks, plans] = await Promise.all([
      Swarm.api("/api/task-stats"), Swarm.api("/api/dead-letters", { limit: 50 }),
      Swarm.api("/api/tasks", { status, limit: 50 }), Swarm.api("/api/schedules")]);
    counts.replaceChildren(countsTable(stats));
    charts(stats);
    failedSection(dead);
    schedulesSection(plans);
    listSection(tasks);
  }

  Swarm.show(el("h1", {}, "Tasks"), Swarm.section("By type and status", counts),
    Swarm.section("Over time", el("div", { class: "charts" }, stateChart, typeChart)),
    failed, schedules, list);
  await Swarm.every(5000, refresh);
};
