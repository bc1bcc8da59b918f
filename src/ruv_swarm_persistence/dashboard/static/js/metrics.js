// Metrics: count, mean and p50/p95/p99 per time bucket (aggregate_metrics), one chart per unit.
"use strict";

Swarm.pages.metrics = async function () {
  const { el, number, decimal } = Swarm;
  const query = new URLSearchParams(location.search);
  const names = (await Swarm.api("/api/metrics")).metrics;
  const state = {
    metric: query.get("metric") || names[0] || "",
    window: query.get("window") || "3600",
    group: query.get("group") || "none",
    stat: query.get("stat") || "p95",
  };
  const select = (id, options, key) => {
    const s = el("select", { id }, options.map(([v, label]) =>
      el("option", { value: v, selected: v === state[key] }, label)));
    s.addEventListener("change", () => {
      state[key] = s.value;
      history.replaceState(null, "", `?${new URLSearchParams(state)}`);
      refresh().catch(Swarm.fail);
    });
    return s;
  };
  const charts = el("div", { class: "charts", id: "metric-charts" });
  const summary = el("div", { id: "metric-summary" });
  if (!names.length) {
    Swarm.show(el("h1", {}, "Metrics"), el("p", { class: "muted" }, "No metrics stored yet."));
    return;
  }

  async function refresh() {
    const data = await Swarm.api(`/api/metrics/${encodeURIComponent(state.metric)}`,
      { window: state.window, group: state.group });
    const units = [...new Set(data.series.map((s) => s.unit))];
    // In the page before drawing, so that each chart takes its box's width.
    const boxes = units.map((unit) => charts.querySelector(`[data-unit="${CSS.escape(unit)}"]`) ||
      el("div", { class: "chart", dataset: { unit } }));
    charts.replaceChildren(...boxes);
    units.forEach((unit, i) => {
      const series = data.series.filter((s) => s.unit === unit);
      if (state.group === "agent") {
        Swarm.chart(boxes[i], `${data.metric_type} ${state.stat} per agent (${unit}, every ${data.bucket_s}s)`,
          data.t, series.map((s) => ({ label: s.agent_id || "(none)", values: s[state.stat] })),
          { unit });
      } else {
        Swarm.chart(boxes[i], `${data.metric_type} (${unit}, every ${data.bucket_s}s)`, data.t,
          ["p50", "p95", "p99", "mean"].map((k) => ({ label: k, values: series[0][k], color: Swarm.colors[k] })),
          { unit });
      }
    });
    const rows = data.series.map((s) => {
      const total = s.count.reduce((a, b) => a + (b || 0), 0);
      const last = s.count.map((c, i) => (c ? i : -1)).filter((i) => i >= 0).pop();
      const at = (k) => (last === undefined ? null : s[k][last]);
      return el("tr", { dataset: { unit: s.unit, agent: s.agent_id || "" } },
        el("td", {}, s.agent_id || "all agents"), el("td", {}, s.unit),
        el("td", { class: "n", dataset: { testid: "total-count" } }, number(total)),
        ...["mean", "p50", "p95", "p99", "max"].map((k) =>
          el("td", { class: "n", dataset: { testid: `last-${k}` } }, decimal(at(k), 3))));
    });
    summary.replaceChildren(
      el("p", { class: "muted" }, `${Swarm.time(data.start)} to ${Swarm.time(data.end)}; ` +
        "the last columns are the newest bucket's."),
      Swarm.table([{ label: "Group" }, { label: "Unit" }, { label: "Count", numeric: true },
        ...["mean", "p50", "p95", "p99", "max"].map((k) => ({ label: `last ${k}`, numeric: true }))],
      rows, { id: "metric-table" }));
  }

  Swarm.show(el("h1", {}, "Metrics"),
    el("p", { class: "controls" },
      select("metric", names.map((n) => [n, n]), "metric"), " ",
      select("window", [["300", "5 minutes"], ["900", "15 minutes"], ["3600", "1 hour"],
        ["21600", "6 hours"], ["86400", "1 day"]], "window"), " ",
      select("group", [["none", "all agents together"], ["agent", "per agent"]], "group"), " ",
      select("stat", [["p50", "p50"], ["p95", "p95"], ["p99", "p99"], ["mean", "mean"]], "stat")),
    charts, summary);
  await Swarm.every(5000, refresh);
};
