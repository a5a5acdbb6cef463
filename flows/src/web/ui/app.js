// Manul flows: the flow table and the service graph, from the aggregator's
// JSON API. Plain JavaScript, no framework and nothing loaded from
// elsewhere. Every name shown comes from the cluster (namespaces, pods,
// labels, policy names are user input): it is only ever set as text
// (textContent, attribute values), never parsed as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;
const state = { edge: null, timer: null, seq: 0, graph: null };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// The form's filters (empty fields left out), as the API takes them.
function formFilters() {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData($("filters"))) {
    const t = String(v).trim();
    if (t !== "") p.set(k, t);
  }
  return p;
}

async function getJSON(path, params) {
  const r = await fetch(path + "?" + params.toString(), { cache: "no-store" });
  if (!r.ok) throw new Error((await r.text()) || (r.status + " " + r.statusText));
  return r.json();
}

function endpointName(e) {
  if (!e) return "-";
  if (e.namespace) return e.namespace + "/" + e.workload;
  return e.kind + ":" + e.workload;
}

function endpointId(e) {
  if (!e) return "unknown";
  return e.namespace ? e.namespace + "/" + e.workload : e.workload;
}

const PROTOCOLS = { 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP" };

function hitText(h) {
  const at = h.rule_index === null || h.rule_index === undefined ? "(end)" : "#" + h.rule_index;
  return h.display + at + ":" + h.action;
}

function renderTable(records) {
  const rows = [];
  // Newest first.
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i];
    const tr = el("tr", { "data-action": r.action });
    const cell = (cls, text) => tr.appendChild(el("td", { class: cls }, String(text)));
    cell("time", new Date(r.end_time * 1000).toISOString().slice(11, 19));
    cell("node", r.node);
    cell("side", r.reporter);
    cell("source", endpointName(r.source));
    cell("destination", endpointName(r.destination));
    cell("port", r.dest_port + "/" + (PROTOCOLS[r.protocol] || r.protocol));
    cell("verdict " + (r.action === "allow" ? "allow" : "deny"), r.action === "allow" ? "ALLOW" : "DENY");
    const hits = r.policies.enforced.map(hitText).join(", ");
    cell("policies", hits || "-");
    cell("num flows", r.flows_started + r.flows_denied);
    cell("num packets", r.packets_forward + r.packets_reverse);
    cell("num bytes", r.bytes_forward + r.bytes_reverse);
    rows.push(tr);
  }
  $("flow-rows").replaceChildren(...rows);
}

// A layered layout: a node's column is the longest path of edges that
// leads to it (cycles cut), nodes in a column sorted by namespace, and
// each namespace's run in a column drawn as a box around its workloads.
// Columns are at least COL_W apart and spread over the width the pane
// has (`avail`); the graph is drawn at its own scale, never shrunk (a
// graph wider than the pane scrolls).
const NODE_W = 170, NODE_H = 28, COL_W = 290, ROW_H = 48, PAD = 36, RIGHT = 60;

function layout(g, avail) {
  const ids = g.nodes.map(n => n.id);
  const layer = new Map(ids.map(i => [i, 0]));
  for (let k = 0; k < ids.length; k++) {
    let changed = false;
    for (const e of g.edges) {
      if (e.source === e.target) continue;
      const l = layer.get(e.source) + 1;
      if (l > layer.get(e.target) && l < ids.length) { layer.set(e.target, l); changed = true; }
    }
    if (!changed) break;
  }
  const columns = [];
  for (const n of g.nodes) {
    const l = layer.get(n.id);
    (columns[l] = columns[l] || []).push(n);
  }
  const ncols = Math.max(1, columns.length);
  const spread = ncols > 1 ? (avail - PAD * 2 - NODE_W - RIGHT) / (ncols - 1) : 0;
  const colW = Math.max(COL_W, Math.floor(spread) || 0);
  const pos = new Map();
  const boxes = [];
  let height = 0;
  columns.forEach((col, c) => {
    col.sort((a, b) => (a.namespace || "~").localeCompare(b.namespace || "~") || a.name.localeCompare(b.name));
    let y = PAD, prevNs = null;
    col.forEach(n => {
      if (n.namespace !== prevNs) {
        if (prevNs !== null) y += 14;
        if (n.namespace) boxes.push({ ns: n.namespace, x: PAD + c * colW - 10, y: y - 6, last: null });
        prevNs = n.namespace;
      }
      pos.set(n.id, { x: PAD + c * colW, y: y + 12, layer: c, node: n });
      const box = boxes[boxes.length - 1];
      if (n.namespace && box && box.ns === n.namespace) box.last = y + 12 + NODE_H;
      y += ROW_H;
    });
    height = Math.max(height, y);
  });
  const width = Math.max(avail, PAD * 2 + (ncols - 1) * colW + NODE_W + RIGHT);
  return { pos, boxes, width, height: height + PAD };
}

function edgePath(a, b) {
  if (a === b) {
    const x = a.x + NODE_W, y = a.y;
    return `M ${x} ${y + 6} C ${x + 55} ${y - 22}, ${x + 55} ${y + NODE_H + 22}, ${x} ${y + NODE_H - 6}`;
  }
  if (b.layer > a.layer) {
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const dx = (x2 - x1) / 2;
    return `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
  }
  // Within a column or backwards: around the right of both.
  const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x + NODE_W, y2 = b.y + NODE_H / 2;
  const out = 50 + Math.abs(y2 - y1) / 4;
  return `M ${x1} ${y1} C ${x1 + out} ${y1}, ${x2 + out} ${y2}, ${x2} ${y2}`;
}

function sameEdge(e) {
  return state.edge !== null && state.edge.source === e.source && state.edge.target === e.target;
}

// The width the graph pane offers its drawing.
function graphRoom() {
  const pane = $("graph").parentElement;
  const style = getComputedStyle(pane);
  return Math.floor(pane.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight));
}

function renderGraph(g) {
  state.graph = g;
  const root = $("graph");
  const { pos, boxes, width, height } = layout(g, graphRoom());
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.setAttribute("width", String(width));
  root.setAttribute("height", String(height));
  root.replaceChildren();
  for (const b of boxes) {
    root.appendChild(svg("rect", { class: "ns-box", x: b.x, y: b.y, width: NODE_W + 20, height: b.last - b.y + 8 }));
    root.appendChild(svg("text", { class: "ns-label", x: b.x + 4, y: b.y + 12 }, "namespace " + b.ns));
  }
  // Lines under the nodes, labels over everything: a label is never
  // covered by another edge's line or its wide click target.
  const lines = svg("g", { class: "edge-lines" });
  const nodes = svg("g", { class: "nodes" });
  const edges = svg("g", { class: "edges" });
  root.appendChild(lines);
  root.appendChild(nodes);
  root.appendChild(edges);
  for (const [id, p] of pos) {
    const n = svg("g", { class: "node " + p.node.kind, "data-id": id, transform: `translate(${p.x},${p.y})` });
    n.appendChild(svg("rect", { width: NODE_W, height: NODE_H }));
    const label = p.node.label;
    const t = svg("text", { x: 8, y: 18 }, label);
    t.appendChild(svg("title", {}, id));
    n.appendChild(t);
    nodes.appendChild(n);
  }
  for (const e of g.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const kind = e.denied > 0 && e.allowed > 0 ? "both" : e.denied > 0 ? "deny" : "allow";
    const cls = kind + (sameEdge(e) ? " selected" : "");
    const wire = svg("g", { class: "edge-line " + cls });
    const d = edgePath(a, b);
    const line = svg("path", { class: "line", d });
    wire.appendChild(line);
    wire.appendChild(svg("path", { class: "hit", d }));
    wire.addEventListener("click", () => selectEdge(e));
    lines.appendChild(wire);
    const grp = svg("g", { class: "edge " + cls, "data-source": e.source, "data-target": e.target });
    edges.appendChild(grp);
    const mid = line.getPointAtLength(line.getTotalLength() / 2);
    const lab = svg("g", { class: "edge-label" });
    const text = svg("text", { x: mid.x, y: mid.y + 4, "text-anchor": "middle" });
    text.appendChild(svg("tspan", { class: "n-allowed" }, "✓" + e.allowed));
    text.appendChild(svg("tspan", { class: "n-denied", dx: 6 }, "✗" + e.denied));
    lab.appendChild(text);
    grp.appendChild(lab);
    const bb = text.getBBox();
    lab.insertBefore(svg("rect", { x: bb.x - 4, y: bb.y - 2, width: bb.width + 8, height: bb.height + 4 }), text);
    grp.appendChild(svg("title", {}, `${e.source} → ${e.target}: ${e.allowed} allowed, ${e.denied} denied`));
    grp.addEventListener("click", () => selectEdge(e));
  }
  if (g.nodes.length === 0) {
    root.setAttribute("viewBox", "0 0 400 60");
    root.setAttribute("width", "400");
    root.setAttribute("height", "60");
    root.appendChild(svg("text", { x: 10, y: 30, class: "ns-label" }, "no flows match"));
  }
  renderEdgeDetail(g);
}

function renderEdgeDetail(g) {
  const box = $("edge-detail");
  const chip = $("edge-filter");
  if (state.edge === null) {
    box.hidden = true;
    chip.hidden = true;
    return;
  }
  const e = g.edges.find(sameEdge) || { source: state.edge.source, target: state.edge.target, allowed: 0, denied: 0, ports: [], policies: [] };
  box.querySelector(".edge-source").textContent = e.source;
  box.querySelector(".edge-target").textContent = e.target;
  box.querySelector(".edge-allowed").textContent = String(e.allowed);
  box.querySelector(".edge-denied").textContent = String(e.denied);
  box.querySelector(".edge-ports").textContent = e.ports.join(", ") || "-";
  const items = e.policies.map(p => {
    const li = el("li", { class: "policy", "data-name": p.name });
    li.appendChild(el("b", {}, p.name));
    li.appendChild(document.createTextNode(` (${p.kind}): ${p.allowed} allowed, ${p.denied} denied`));
    return li;
  });
  box.querySelector(".edge-policies").replaceChildren(...items);
  box.hidden = false;
  $("edge-filter-text").textContent = e.source + " → " + e.target;
  chip.hidden = false;
}

function selectEdge(e) {
  state.edge = sameEdge(e) ? null : { source: e.source, target: e.target };
  refresh();
}

async function refresh() {
  const seq = ++state.seq;
  const filters = formFilters();
  const table = new URLSearchParams(filters);
  table.set("limit", "500");
  if (state.edge !== null) {
    table.set("from_pod", state.edge.source);
    table.set("to_pod", state.edge.target);
  }
  try {
    const [list, graph] = await Promise.all([getJSON("api/flows", table), getJSON("api/graph", filters)]);
    // A newer refresh started meanwhile: its answer wins.
    if (seq !== state.seq) return;
    $("error").hidden = true;
    renderTable(list.records);
    renderGraph(graph);
    $("status").textContent = `${list.records.length} records, ${graph.edges.length} edges · ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = String(seq);
  } catch (err) {
    if (seq !== state.seq) return;
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = $("live").checked ? setInterval(refresh, POLL_MS) : null;
}

document.addEventListener("DOMContentLoaded", () => {
  let debounce = null;
  $("filters").addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(refresh, 300);
  });
  $("filters").addEventListener("submit", ev => { ev.preventDefault(); refresh(); });
  $("filters").addEventListener("reset", () => { state.edge = null; setTimeout(refresh, 0); });
  $("edge-filter-clear").addEventListener("click", () => { state.edge = null; refresh(); });
  $("live").addEventListener("change", schedule);
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => { if (state.graph) renderGraph(state.graph); }, 100);
  });
  refresh();
  schedule();
});
