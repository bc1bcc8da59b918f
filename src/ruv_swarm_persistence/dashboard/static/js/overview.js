// Overview: the headline numbers, each linking to its page.
"use strict";

Swarm.pages.overview = async function () {
  const { el, number, decimal, badge } = Swarm;
  const card = (title, href, value, testid, ...detail) =>
    el("a", { class: "card", href },
      el("h3", {}, title),
      el("div", { class: "big", dataset: { testid } }, value),
      el("div", { class: "detail" }, ...detail));
  const breakdown = (counts, prefix) =>
    el("ul", { class: "counts" }, Object.entries(counts).filter(([, n]) => n > 0).map(([s, n]) =>
      el("li", {}, badge(s), " ", el("span", { dataset: { testid: `${prefix}-${s}` } }, number(n)))));

  await Swarm.every(3000, async () => {
    const o = await Swarm.api("/api/overview");
    Swarm.show(
      el("h1", {}, "Swarm overview"),
      el("div", { class: "cards" },
        card("Agents", "/agents", number(o.agents_total), "agents-total",
          breakdown(o.agents, "agents")),
        card("Tasks", "/tasks", number(o.tasks_total), "tasks-total",
          breakdown(o.tasks, "tasks"),
          el("p", {}, "ready now: ", el("b", { dataset: { testid: "tasks-ready" } },
            number(o.tasks_ready)))),
        card("Events", "/events", number(o.events_last_sequence), "events-last",
          el("p", {}, "last sequence; ",
            el("b", { dataset: { testid: "events-rate" } }, decimal(o.events_per_second, 1)),
            " events/s over the last minute")),
        card("Unread messages", "/messages", number(o.messages_unread), "messages-unread"),
        card("Metrics", "/charts", "p50 · p95 · p99", "metrics", "per time bucket")),
      el("p", { class: "muted" }, `Read at ${Swarm.time(o.taken_at)}. `,
        o.actions ? "Actions are on: tasks can be cancelled and dead letters retried."
          : "Read-only: start with --allow-actions to cancel or retry tasks."));
  });
};
