// Agents: status, heartbeat age, capabilities, tasks held; stale agents first and highlighted.
"use strict";

Swarm.pages.agents = async function () {
  const { el, number, badge } = Swarm;
  const params = new URLSearchParams(location.search);
  let staleAfter = params.get("stale_after") || "";
  const input = el("input", { type: "number", min: "0", step: "any", id: "stale-after",
    value: staleAfter, placeholder: "default" });
  input.addEventListener("change", () => { staleAfter = input.value; refresh(); });
  const holder = el("div", {});
  const controls = el("p", { class: "controls" },
    el("label", { for: "stale-after" }, "Stale after (s) "), input);

  async function refresh() {
    const data = await Swarm.api("/api/agents", { stale_after: staleAfter });
    if (!staleAfter) input.placeholder = String(data.stale_after_s);
    const rows = data.agents.map((a) =>
      el("tr", { class: a.stale ? "stale" : null, dataset: { agent: a.id, stale: a.stale } },
        el("td", {}, el("div", { class: "name" }, a.name),
          a.name !== a.id ? el("div", { class: "id muted" }, a.id) : null),
        el("td", {}, a.agent_type),
        el("td", { dataset: { testid: "status" } }, badge(a.status),
          a.stale ? el("span", { class: "badge stale-flag" }, "stale") : null),
        el("td", { class: "n", dataset: { testid: "heartbeat-age" },
          title: Swarm.time(a.heartbeat) }, Swarm.age(a.heartbeat_age_s)),
        el("td", {}, a.capabilities.map((c) => el("span", { class: "chip" }, c))),
        el("td", { class: "n", dataset: { testid: "held" } }, number(a.tasks_held))));
    const counts = Object.entries(data.by_status).filter(([, n]) => n > 0)
      .map(([s, n]) => el("span", { class: "count" }, badge(s), " ",
        el("b", { dataset: { testid: `count-${s}` } }, number(n))));
    holder.replaceChildren(
      el("p", { class: "summary" },
        el("b", { dataset: { testid: "agents-total" } }, number(data.total)), " agents, ",
        el("b", { dataset: { testid: "agents-stale" }, class: data.stale ? "warn" : null },
          number(data.stale)), ` stale (no heartbeat for ${data.stale_after_s}s) `, ...counts),
      Swarm.table([{ label: "Agent" }, { label: "Type" }, { label: "Status" },
        { label: "Heartbeat age", numeric: true }, { label: "Capabilities" },
        { label: "Tasks held", numeric: true }], rows, { id: "agents" }));
  }

  Swarm.show(el("h1", {}, "Agents"), controls, holder);
  await Swarm.every(2000, refresh);
};
