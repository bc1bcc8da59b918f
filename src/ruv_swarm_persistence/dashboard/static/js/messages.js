// Messages: unread mail per agent by priority; an agent's unread messages on click.
"use strict";

Swarm.pages.messages = async function () {
  const { el, number } = Swarm;
  const holder = el("div", {});
  const mailbox = el("div", { id: "mailbox" });
  let selected = null;

  async function open(agentId) {
    selected = agentId;
    const data = await Swarm.api(`/api/messages/${encodeURIComponent(agentId)}/unread`);
    const rows = data.messages.map((m) => el("tr", {},
      el("td", {}, Swarm.time(m.created_at)),
      el("td", {}, m.from_agent),
      el("td", {}, el("span", { class: `badge p-${m.priority_name.toLowerCase()}` },
        m.priority_name)),
      el("td", {}, m.message_type),
      el("td", { class: "payload" }, Swarm.short(m.content, 120))));
    mailbox.replaceChildren(Swarm.section(`Unread for ${agentId} (${number(data.total)})`,
      Swarm.table([{ label: "Sent" }, { label: "From" }, { label: "Priority" },
        { label: "Type" }, { label: "Content" }], rows)));
  }

  async function refresh() {
    const data = await Swarm.api("/api/messages");
    const rows = data.agents.map((a) => el("tr", {
      class: "clickable" + (a.agent_id === selected ? " selected" : ""),
      dataset: { agent: a.agent_id }, onclick: () => open(a.agent_id).catch(Swarm.fail) },
    el("td", {}, a.name || a.agent_id),
    el("td", { class: "n", dataset: { testid: "unread" } }, number(a.unread)),
    ...["urgent", "high", "normal", "low"].map((p) =>
      el("td", { class: "n" }, number(a.by_priority[p]))),
    el("td", { class: "n" }, Swarm.age(a.oldest_unread_age_s))));
    holder.replaceChildren(
      el("p", { class: "summary" }, el("b", { dataset: { testid: "total-unread" } },
        number(data.total_unread)), " unread messages for ", number(data.agents.length),
      " agents"),
      data.agents.length === 0 ? el("p", { class: "muted" }, "Every message has been read.") :
        Swarm.table([{ label: "Agent" }, { label: "Unread", numeric: true },
          { label: "Urgent", numeric: true }, { label: "High", numeric: true },
          { label: "Normal", numeric: true }, { label: "Low", numeric: true },
          { label: "Oldest unread", numeric: true }], rows, { id: "unread" }));
    if (selected) await open(selected);
  }

  Swarm.show(el("h1", {}, "Messages"), holder, mailbox);
  await Swarm.every(3000, refresh);
};
