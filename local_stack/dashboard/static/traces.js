// The trace view: /api/traces (list, search) and /api/traces/<id> (one trace) drawn as a waterfall.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4d7c0f", "#be185d"];
  const colorOf = new Map();
  let selected = new URLSearchParams(location.search).get("trace") || "";

  function color(proc) {
    if (!colorOf.has(proc)) colorOf.set(proc, COLORS[colorOf.size % COLORS.length]);
    return colorOf.get(proc);
  }
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const c of children) e.append(c);
    return e;
  }
  const proc = (s) => `${s.service}/${s.instance}${s.region && !s.instance.includes(s.region) ? " @" + s.region : ""}`;

  async function list() {
    const q = $("q").value;
    const r = await fetch(`/api/traces?limit=50&q=${encodeURIComponent(q)}`);
    const doc = await r.json();
    const s = doc.stats;
    $("stats").textContent = `${s.traces} traces, ${s.spans_received} spans received` +
      (s.spans_dropped ? `, ${s.spans_dropped} dropped (trace too big)` : "");
    const body = $("traces").tBodies[0];
    body.replaceChildren();
    if (!doc.traces.length) body.append(el("tr", {}, el("td", { colSpan: 6, className: "note", textContent: "no traces" })));
    for (const t of doc.traces) {
      const tr = el("tr", { className: "pick" + (t.trace_id === selected ? " sel" : "") },
        el("td", { textContent: new Date(t.start_ns / 1e6).toLocaleTimeString() }),
        el("td", { textContent: t.root + (t.rooms.length ? `  [${t.rooms.join(", ")}]` : "") }),
        el("td", { className: "note", textContent: t.processes.join(", ") }),
        el("td", { className: "num", textContent: t.spans }),
        el("td", { className: "num", textContent: t.duration_ms.toFixed(1) }),
        el("td", { className: "mono", textContent: t.trace_id }));
      tr.dataset.trace = t.trace_id;
      tr.addEventListener("click", () => { selected = t.trace_id; show(t.trace_id); list(); });
      body.append(tr);
    }
    if (!selected && doc.traces.length) { selected = doc.traces[0].trace_id; show(selected); }
  }

  function order(spans, linked) {
    // depth-first by start time; a linked span (other trace) goes under the span it links to
    const byId = new Map(spans.map((s) => [s.span_id, s]));
    const kids = new Map();
    const roots = [];
    const add = (parent, s) => { if (!kids.has(parent)) kids.set(parent, []); kids.get(parent).push(s); };
    for (const s of spans) {
      if (s.parent_span_id && byId.has(s.parent_span_id)) add(s.parent_span_id, s); else roots.push(s);
    }
    for (const s of linked) {
      const target = (s.links.find((l) => byId.has(l.span_id)) || {}).span_id;
      s._linked = true;
      if (target) add(target, s); else roots.push(s);
    }
    const out = [];
    const walk = (s, depth) => {
      out.push([s, depth]);
      for (const k of (kids.get(s.span_id) || []).sort((a, b) => a.start_ns - b.start_ns)) walk(k, depth + 1);
    };
    roots.sort((a, b) => a.start_ns - b.start_ns).forEach((r) => walk(r, 0));
    return out;
  }

  async function show(id) {
    const r = await fetch(`/api/traces/${id}`);
    if (!r.ok) { $("waterfall").textContent = "trace not found (yet)"; return; }
    const t = await r.json();
    const all = t.span_list.concat(t.linked);
    const t0 = Math.min(...all.map((s) => s.start_ns));
    const t1 = Math.max(...all.map((s) => s.end_ns));
    const total = Math.max(t1 - t0, 1);
    $("title").textContent = `Waterfall · trace ${t.trace_id} · ${(total / 1e6).toFixed(1)} ms · ${t.processes.length} processes`;
    const wf = $("waterfall");
    wf.replaceChildren();
    wf.dataset.trace = t.trace_id;
    const procs = new Set();
    for (const [s, depth] of order(t.span_list, t.linked)) {
      const p = proc(s);
      procs.add(p);
      const left = ((s.start_ns - t0) / total) * 100;
      const width = Math.max(((s.end_ns - s.start_ns) / total) * 100, 0.2);
      const ms = (s.end_ns - s.start_ns) / 1e6;
      const label = el("div", { className: "label", title: `${p} · ${s.name}` },
        el("span", { textContent: "\u00a0\u00a0".repeat(depth) }),
        el("span", { className: "name", textContent: s.name }), " ",
        el("span", { className: "proc", textContent: p }));
      const bar = el("div", { className: "bar" + (s.status === "error" ? " error" : "") });
      bar.style.left = left + "%";
      bar.style.width = width + "%";
      bar.style.background = color(p);
      const dur = el("div", { className: "dur", textContent: ms.toFixed(2) + " ms" });
      dur.style.left = Math.min(left + width, 92) + "%";
      const row = el("div", { className: "row span" + (s._linked ? " linked" : "") }, label, el("div", { className: "lane" }, bar, dur));
      row.dataset.service = s.service;
      row.dataset.instance = s.instance;
      row.dataset.name = s.name;
      row.addEventListener("click", () => {
        const d = $("detail");
        d.hidden = false;
        d.textContent = JSON.stringify({ name: s.name, process: p, kind: s.kind, status: s.status, span_id: s.span_id,
          parent_span_id: s.parent_span_id, links: s.links, attributes: s.attributes }, null, 2);
      });
      wf.append(row);
    }
    $("legend").replaceChildren(...[...procs].map((p) => el("span", {}, Object.assign(el("i"), { style: `background:${color(p)}` }), p)));
  }

  $("search").addEventListener("submit", (e) => { e.preventDefault(); selected = ""; list(); });
  list();
  if (selected) show(selected);
  setInterval(list, 3000);
})();
