// Time-series charts drawn with the vendored uPlot; one chart object per container.
"use strict";

Swarm.colors = {
  waiting: "#bf8700", pending: "#bf8700", assigned: "#1b7c83", running: "#2f81f7",
  completed: "#2da44e", failed: "#cf222e", cancelled: "#8250df",
  p50: "#2f81f7", p95: "#bf8700", p99: "#cf222e", mean: "#57606a", count: "#8c959f",
};
Swarm.palette = ["#2f81f7", "#2da44e", "#bf8700", "#cf222e", "#8250df", "#1b7c83",
  "#e16f24", "#57606a", "#bf3989", "#0a3069"];

// Draw (or redraw) a chart in `target`: t in epoch seconds, series [{label, values, color}].
Swarm.chart = function (target, title, t, series, options) {
  const opts = options || {};
  const width = Math.max(320, target.clientWidth || 800);
  const config = {
    title,
    width,
    height: opts.height || 260,
    scales: { x: { time: true } },
    cursor: { drag: { x: true, y: false } },
    series: [{ label: "time", value: (u, v) => (v === null ? "–" : Swarm.time(new Date(v * 1000))) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || Swarm.palette[i % Swarm.palette.length],
        width: 1.6,
        fill: s.fill || undefined,
        // Buckets without a measurement are null: the line goes on to the next one.
        spanGaps: true,
        points: { show: t.length <= 90, size: 4 },
        value: (u, v) => (v === null || v === undefined ? "–" : Swarm.decimal(v, 3)),
      }))],
    axes: [{}, { label: opts.unit || "", size: 60,
      values: (u, ticks) => ticks.map((v) => Swarm.decimal(v, 2)) }],
  };
  const data = [t, ...series.map((s) => s.values)];
  const old = target.uplot;
  const sameShape = old && old.series.length === config.series.length &&
    config.series.every((s, i) => i === 0 || old.series[i].label === s.label) &&
    old.root.querySelector(".u-title")?.textContent === title;
  if (sameShape) {
    old.setData(data);
    return old;
  }
  if (old) old.destroy();
  target.replaceChildren();
  target.uplot = new uPlot(config, data, target);
  return target.uplot;
};

window.addEventListener("resize", () => {
  for (const node of document.querySelectorAll(".chart")) {
    if (node.uplot) node.uplot.setSize({ width: Math.max(320, node.clientWidth), height: node.uplot.height });
  }
});
