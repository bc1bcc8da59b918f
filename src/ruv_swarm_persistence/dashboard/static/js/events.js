// Events: the newest events, then a live tail (server-sent events) filtered by type and agent.
"use strict";

Swarm.pages.events = async function () {
  const { el, number } = Swarm;
  const MAX_ROWS = 500;
  const query = new URLSearchParams(location.search);
  const filters = { type: query.get("type") || "", agent: query.get("agent") || "" };
  const typeSelect = el("select", { id: "type-filter" }, el("option", { value: "" }, "all types"));
  const agentSelect = el("select", { id: "agent-filter" }, el("option", { value: "" }, "all agents"));
  const state = el("span", { class: "live", id: "live-state" }, "connecting");
  const received = el("b", { dataset: { testid: "received" } }, "0");
  const body = el("tbody", {});
  let source = null, count = 0;

  // A live row keeps the time it arrived (epoch ms), which the live-tail delay is measured by.
  const row = (e, fresh) => el("tr", { class: fresh ? "fresh" : null,
    dataset: { sequence: e.sequence, type: e.event_type, received: fresh ? Date.now() : null } },
  el("td", { class: "n" }, number(e.sequence)),
  el("td", {}, Swarm.time(e.timestamp)),
  el("td", {}, el("span", { class: `etype${/fail|lost|error/.test(e.event_type) ? " bad" : ""}` },
    e.event_type)),
  el("td", {}, e.agent_id || ""),
  el("td", {}, e.task_id ? Swarm.taskLink(e.task_id) : ""),
  el("td", { class: "payload" }, Swarm.short(e.payload, 120)));

  function follow(after) {
    if (source) source.close();
    const url = new URL("/api/events/stream", location.origin);
    url.searchParams.set("after", after);
    if (filters.type) url.searchParams.set("type", filters.type);
    if (filters.agent) url.searchParams.set("agent", filters.agent);
    source = new EventSource(url);
    source.onopen = () => { state.textContent = "live"; state.className = "live on"; };
    source.onerror = () => { state.textContent = "reconnecting"; state.className = "live off"; };
    source.addEventListener("swarm-event", (message) => {
      const e = JSON.parse(message.data);
      body.prepend(row(e, true));
      while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
      count += 1;
      received.textContent = number(count);
    });
  }

  async function load() {
    const data = await Swarm.api("/api/events", { type: filters.type, agent: filters.agent,
      limit: 100 });
    body.replaceChildren(...data.events.map((e) => row(e, false)));
    follow(data.last_sequence);
  }

  function changed() {
    filters.type = typeSelect.value;
    filters.agent = agentSelect.value;
    const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    load().catch(Swarm.fail);
  }
  typeSelect.addEventListener("change", changed);
  agentSelect.addEventListener("change", changed);

  const [types, agents] = await Promise.all([Swarm.api("/api/events/types"),
    Swarm.api("/api/agents")]);
  for (const t of new Set([...types.event_types, filters.type].filter(Boolean))) {
    typeSelect.append(el("option", { value: t, selected: t === filters.type }, t));
  }
  for (const a of agents.agents) {
    agentSelect.append(el("option", { value: a.id, selected: a.id === filters.agent }, a.name));
  }
  if (filters.agent && agentSelect.value !== filters.agent) {
    agentSelect.append(el("option", { value: filters.agent, selected: true }, filters.agent));
  }
  Swarm.show(el("h1", {}, "Events"),
    el("p", { class: "controls" }, typeSelect, " ", agentSelect, " ", state, " ", received,
      " new since the page opened"),
    el("table", { id: "events" }, el("thead", {}, el("tr", {},
      ["Seq", "Time", "Type", "Agent", "Task", "Payload"].map((h, i) =>
        el("th", { class: i === 0 ? "n" : null }, h)))), body));
  await load();
  window.addEventListener("pagehide", () => source && source.close());
};
