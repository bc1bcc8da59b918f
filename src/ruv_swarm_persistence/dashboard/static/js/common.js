// What every page shares: fetching the JSON API, building DOM safely, formatting, actions.
// Pages register a renderer in Swarm.pages under their name (the body's data-page).
"use strict";

const Swarm = {
  pages: {},
  actions: document.querySelector('meta[name="actions"]').content === "on",
  csrf: document.querySelector('meta[name="csrf-token"]').content,
};

// GET a JSON API path; params may hold arrays (repeated keys). Throws with the server's reason.
Swarm.api = async function (path, params) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, v);
  }
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
};

// POST an action after the operator confirmed it; returns the answer or null if declined.
Swarm.act = async function (path, question) {
  if (!(await Swarm.confirm(question))) return null;
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": Swarm.csrf },
    body: JSON.stringify({ confirm: true }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
};

Swarm.confirm = function (question) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = question;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
};

// el("td", {class: "n", dataset: {testid: "x"}}, "text", childNode): never parses HTML.
Swarm.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

Swarm.table = function (columns, rows, attrs) {
  const { el } = Swarm;
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, columns.map((c) =>
      el("th", { class: c.numeric ? "n" : null }, c.label)))),
    el("tbody", {}, rows));
};

Swarm.badge = (status) => Swarm.el("span", { class: `badge s-${status}` }, status);

Swarm.number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

Swarm.decimal = function (n, digits) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits ?? 2 });
};

Swarm.age = function (seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
};

Swarm.time = function (iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    pad(d.getMilliseconds(), 3);
};

Swarm.short = function (text, width) {
  const s = typeof text === "string" ? text : JSON.stringify(text);
  if (s === undefined) return "";
  return s.length <= (width || 80) ? s : s.slice(0, (width || 80) - 1) + "…";
};

Swarm.taskLink = (id) => Swarm.el("a", { href: `/tasks/${encodeURIComponent(id)}`, class: "id" }, id);

Swarm.section = (title, ...children) =>
  Swarm.el("section", {}, Swarm.el("h2", {}, title), ...children);

// Replace the page's content; a failure shows its reason instead of a blank page.
Swarm.show = function (...nodes) {
  const main = document.getElementById("app");
  main.replaceChildren(...nodes);
  main.setAttribute("aria-busy", "false");
};

Swarm.fail = function (error) {
  const main = document.getElementById("app");
  const note = Swarm.el("p", { class: "error", role: "alert" }, `Could not load: ${error.message}`);
  const old = main.querySelector(".error");
  if (old) old.replaceWith(note);
  else main.prepend(note);
  main.setAttribute("aria-busy", "false");
};

// Run refresh() now and every `ms` while the tab is visible; errors are shown, not thrown.
Swarm.every = function (ms, refresh) {
  let timer = null;
  const tick = async () => {
    try {
      await refresh();
      const old = document.querySelector("#app > .error");
      if (old) old.remove();
    } catch (error) {
      Swarm.fail(error);
    }
    timer = setTimeout(tick, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { clearTimeout(timer); timer = null; } else if (timer === null) tick();
  });
  return tick();
};

document.addEventListener("DOMContentLoaded", async () => {
  const page = Swarm.pages[document.body.dataset.page];
  try {
    if (page) await page(document.getElementById("app"));
  } catch (error) {
    Swarm.fail(error);
  }
  document.body.dataset.ready = "true";
});
