// The dependency graph around a task: laid out by the vendored dagre, drawn as SVG.
"use strict";

Swarm.graph = function (data, onSelect) {
  const NS = "http://www.w3.org/2000/svg";
  const svgEl = (tag, attrs, ...children) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
    return node;
  };
  const W = 178, H = 48;
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 16, ranksep: 56, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of data.nodes) g.setNode(n.id, { width: W, height: H });
  for (const e of data.edges) g.setEdge(e.from, e.to);
  dagre.layout(g);

  const size = g.graph();
  const svg = svgEl("svg", { class: "graph", width: Math.ceil(size.width),
    height: Math.ceil(size.height), viewBox: `0 0 ${Math.ceil(size.width)} ${Math.ceil(size.height)}`,
    role: "img", "aria-label": `Dependency graph around task ${data.root}` });
  svg.append(svgEl("defs", {}, svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10",
    refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
  svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));

  for (const e of g.edges()) {
    const points = g.edge(e).points;
    const d = points.map((p, i) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
    svg.append(svgEl("path", { d, class: "edge", "marker-end": "url(#arrow)",
      "data-from": e.v, "data-to": e.w }));
  }
  const byId = Object.fromEntries(data.nodes.map((n) => [n.id, n]));
  for (const id of g.nodes()) {
    const n = byId[id], p = g.node(id);
    const label = id.length > 24 ? id.slice(0, 23) + "…" : id;
    const node = svgEl("g", { class: `node s-${n.status}${id === data.root ? " root" : ""}`,
      transform: `translate(${(p.x - W / 2).toFixed(1)} ${(p.y - H / 2).toFixed(1)})`,
      "data-task": id, tabindex: "0", role: "link" },
    svgEl("title", {}, `${id}\n${n.task_type} · ${n.status}` +
      (n.error ? `\n${n.error}` : "") + `\nretries ${n.retry_count}/${n.max_retries}`),
    svgEl("rect", { width: W, height: H, rx: 6 }),
    svgEl("text", { x: 10, y: 19, class: "label" }, label),
    svgEl("text", { x: 10, y: 37, class: "sub" }, `${n.task_type} · ${n.status}` +
      (n.retry_count ? ` · ${n.retry_count} retr.` : "")));
    node.addEventListener("click", () => onSelect(id));
    node.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(id); });
    svg.append(node);
  }
  return svg;
};
