// One task: its fields, the dependency graph around it (click a node to go there), actions.
"use strict";

Swarm.pages.task = async function () {
  const { el, number, badge } = Swarm;
  const taskId = decodeURIComponent(location.pathname.split("/").slice(2).join("/"));
  const query = new URLSearchParams(location.search);
  let depth = Number(query.get("depth")) || 2;
  const graphBox = el("div", { class: "graph-box", id: "graph" });
  const details = el("div", { id: "details" });
  const depthSelect = el("select", { id: "depth" }, [1, 2, 3, 4, 6, 10].map((d) =>
    el("option", { value: d, selected: d === depth }, `${d} step${d > 1 ? "s" : ""} each way`)));
  depthSelect.addEventListener("change", () => { depth = Number(depthSelect.value); refresh(); });
  const go = (id) => { location.href = `/tasks/${encodeURIComponent(id)}?depth=${depth}`; };

  const field = (label, value, testid) =>
    [el("dt", {}, label), el("dd", { dataset: { testid: testid || null } }, value)];

  async function act(kind, question) {
    const done = await Swarm.act(`/api/tasks/${encodeURIComponent(taskId)}/${kind}`, question);
    if (done) await refresh();
  }

  async function refresh() {
    const [t, graph] = await Promise.all([
      Swarm.api(`/api/tasks/${encodeURIComponent(taskId)}`),
      Swarm.api(`/api/tasks/${encodeURIComponent(taskId)}/graph`, { depth })]);
    const finished = ["completed", "failed", "cancelled"].includes(t.status);
    const buttons = [];
    if (Swarm.actions && !finished) {
      buttons.push(el("button", { class: "danger", id: "cancel", onclick: () =>
        act("cancel", `Cancel task ${t.id} and every task that depends on it?`).catch(Swarm.fail) },
      "Cancel task"));
    }
    if (Swarm.actions && t.status === "failed") {
      buttons.push(el("button", { id: "retry", onclick: () =>
        act("retry", `Requeue task ${t.id}, which failed after ${t.retry_count} retries?`)
          .catch(Swarm.fail) }, "Retry"));
    }
    details.replaceChildren(
      el("dl", { class: "fields" },
        field("Status", badge(t.status), "status"),
        field("Type", t.task_type), field("Priority", t.priority_name),
        field("Assigned to", t.assigned_to || "–"),
        field("Retries", `${t.retry_count} of ${t.max_retries}`, "retries"),
        field("Error", t.error || "–"),
        field("Created", Swarm.time(t.created_at)), field("Started", Swarm.time(t.started_at)),
        field("Finished", Swarm.time(t.completed_at)),
        field("Lease until", Swarm.time(t.lease_expires_at)),
        field("Run after", Swarm.time(t.run_after)),
        field("Depends on", number(t.dependencies.length), "dependencies"),
        field("Needed by", number(t.dependents.length), "dependents"),
        field("Payload", el("code", {}, Swarm.short(t.payload, 300))),
        field("Result", el("code", {}, Swarm.short(t.result, 300)))),
      el("p", { class: "actions" }, buttons));
    graphBox.replaceChildren(
      el("p", { class: "controls" }, depthSelect, " ",
        el("span", { dataset: { testid: "graph-size" } }, `${graph.nodes.length} tasks, ` +
          `${graph.edges.length} dependencies`), graph.truncated ? " (truncated)" : "",
        el("span", { class: "legend" }, ["pending", "assigned", "running", "completed", "failed",
          "cancelled"].map((s) => badge(s)))),
      Swarm.graph(graph, go));
  }

  Swarm.show(el("h1", {}, "Task ", el("span", { class: "id" }, taskId)),
    el("p", {}, el("a", { href: "/tasks" }, "← all tasks")),
    el("div", { class: "task-layout" }, details, Swarm.section("Dependencies", graphBox)));
  await Swarm.every(5000, refresh);
};
