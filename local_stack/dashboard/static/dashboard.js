// The local stack's dashboard (local_stack/dashboard/): one EventSource on /events, fed by the
// server's collector once a second; plots drawn with uPlot (node_modules/uplot, served locally).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const HISTORY = 300;                       // seconds kept in the plots
  const COLORS = ["#1f6feb", "#d9480f", "#2b8a3e", "#862e9c"];
  const series = { t: [], rate: {}, latency: {} };
  let regionNames = [];
  let plots = null;
  let lastSeq = 0;                           // newest plot point shown (a reconnect resends history)

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  const num = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

  function renderNodes(nodes) {
    const body = $("nodes").tBodies[0];
    body.replaceChildren();
    for (const n of nodes) {
      const tr = el("tr");
      tr.dataset.node = n.id;
      tr.dataset.state = n.state;
      const state = el("td");
      state.append(el("span", n.state === "ready" ? "ready" : n.state === "down" ? "down" : "not ready", `state ${n.state}`));
      if (n.throttled) state.append(el("span", "throttled", "state throttled"));
      if (n.reason) state.append(el("div", n.reason, "reason"));
      if (n.metricsError) state.append(el("div", `metrics: ${n.metricsError}`, "reason"));
      const link = el("td");
      if (n.url) {
        const a = el("a", "open");
        a.href = n.url;
        a.target = "_blank";
        link.append(a);
      }
      const forgedCell = (row) => {
        const td = el("td", row.forged ?? "–", "num forged");
        const reasons = Object.entries(row.forgedReasons || {}).map(([r, c]) => `${r}: ${c}`).join(", ");
        if (reasons) td.title = reasons;
        return td;
      };
      tr.append(el("td", n.id), el("td", n.region), el("td", n.onPrem ? "yes" : "no"), state,
        el("td", n.clients ?? "–", "num clients"), el("td", num(n.inPerSec), "num in"),
        el("td", num(n.outPerSec), "num out"), el("td", n.bufferDepth ?? "–", "num buffer"),
        el("td", n.reconnects ?? "–", "num reconnects"), el("td", num(n.latencyMs), "num latency"),
        el("td", n.restarts ?? "–", "num restarts"), forgedCell(n), link);
      body.append(tr);
    }
  }

  // the stack's processes: supervision state (running / restarting / starting / stopped), whether
  // the port answers, restarts and the last exit
  function renderServices(services) {
    const body = $("services").tBodies[0];
    body.replaceChildren();
    for (const s of services || []) {
      const tr = el("tr");
      tr.dataset.service = s.name;
      tr.dataset.state = s.state;
      tr.dataset.up = s.up ? "up" : "down";
      const shown = s.state === "running" ? (s.up ? "running" : "running, port not answering") : s.state;
      const state = el("td");
      state.append(el("span", shown, `state ${s.state === "running" && s.up ? "ready" : "down"}`));
      if (s.state === "restarting" && s.nextAttemptAt) {
        state.append(el("div", `next try in ${Math.max(0, s.nextAttemptAt - Date.now() / 1000).toFixed(0)} s`, "reason"));
      }
      if (s.error) state.append(el("div", s.error, "reason"));
      const exit = s.lastExit === null || s.lastExit === undefined ? "–"
        : `${s.lastExit}${s.lastExitAt ? " at " + new Date(s.lastExitAt * 1000).toLocaleTimeString() : ""}`;
      tr.append(el("td", s.name), state, el("td", s.port ?? "–", "num"), el("td", s.pid ?? "–", "num"),
        el("td", s.restarts ?? 0, "num restarts"), el("td", exit));
      body.append(tr);
    }
  }

  function renderRegions(regions) {
    const box = $("regions");
    box.replaceChildren();
    for (const r of regions) {
      const card = el("div", null, r.up ? "region" : "region down");
      card.dataset.region = r.name;
      card.dataset.state = r.up ? "up" : "down";
      const title = el("h3", `${r.name} `);
      title.append(el("span", r.up ? "up" : "down", `state ${r.up ? "ready" : "down"}`));
      card.append(title, el("div", `namespace ${r.namespace} · topic ${r.topic} · scheduled ${r.scheduled ?? "–"}`, "meta"));
      if (r.credits) {
        const c = r.credits;
        const head = c.headroom == null ? "–" : `${Math.round(c.headroom * 100)} %`;
        card.append(el("div", `credits ${Math.round(c.perSecond)}/s of ${Math.round(c.budget)} (${c.tier}) · headroom ${head}` +
          ` · throttled ${Math.round(c.refusedPerSecond)}/s, ${c.refusedTotal} in total`, c.headroom != null && c.headroom < 0.2 ? "meta credits low" : "meta credits"));
      }
      if (!r.up) card.append(el("div", r.error || "no answer", "reason"));
      const table = el("table");
      const head = el("tr");
      for (const h of ["subscription", "active", "dead-letter"]) head.append(el("th", h));
      table.append(head);
      for (const s of r.subscriptions) {
        const tr = el("tr");
        tr.dataset.subscription = s.name;
        const name = el("td", `${s.name} `);
        name.append(el("span", s.kind, "kind"));
        tr.append(name, el("td", s.active, "num"), el("td", s.deadLetter, s.deadLetter ? "num dlq" : "num"));
        table.append(tr);
      }
      card.append(table);
      box.append(card);
    }
  }

  function renderDeadLetters(items) {
    const body = $("dead").tBodies[0];
    body.replaceChildren();
    if (!items.length) {
      const td = el("td", "none", "note");
      td.colSpan = 7;
      const tr = el("tr");
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const d of items) {
      const tr = el("tr");
      tr.dataset.region = d.region;
      tr.dataset.subscription = d.subscription;
      tr.append(el("td", d.region), el("td", d.subscription), el("td", d.sequenceNumber, "num"),
        el("td", d.enqueued ? new Date(d.enqueued).toLocaleTimeString() : "–"), el("td", d.reason || "–"),
        el("td", d.description || "–"), el("td", d.body, "body"));
      body.append(tr);
    }
  }

  function renderWebPubSub(wps) {
    const body = $("webpubsub").tBodies[0];
    const note = $("webpubsub-state");
    body.replaceChildren();
    if (!wps) { note.textContent = "no Web PubSub service in this stack"; return; }
    note.dataset.state = wps.up ? "up" : "down";
    note.textContent = wps.up ? "local Web PubSub service: up" : `local Web PubSub service: down (${wps.error || "no answer"})`;
    if (!wps.hubs.length) {
      const td = el("td", "no hub has connections", "note");
      td.colSpan = 4;
      const tr = el("tr");
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const h of wps.hubs) {
      const tr = el("tr");
      tr.dataset.hub = h.hub;
      const groups = Object.entries(h.groups).map(([g, n]) => `${g} (${n})`).join(", ");
      tr.append(el("td", h.hub), el("td", h.connections, "num connections"), el("td", h.users, "num"),
        el("td", groups || "–", "groups"));
      body.append(tr);
    }
  }

  function makePlot(target, label, key) {
    if (typeof uPlot !== "function") {
      $(target).append(el("p", "uPlot missing: run `npm ci` (make run does it)", "note"));
      return null;
    }
    const width = Math.max(320, $(target).clientWidth || 480);
    return new uPlot({
      width, height: 200, title: label,
      scales: { x: { time: true } },
      series: [{}, ...regionNames.map((name, i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false }))],
      axes: [{}, { size: 50 }],
    }, [series.t, ...regionNames.map((name) => series[key][name])], $(target));
  }

  function addPoints(points, regions) {
    const names = regions.map((r) => r.name);
    if (!plots || names.join() !== regionNames.join()) {
      regionNames = names;
      for (const name of names) {
        series.rate[name] = series.rate[name] || series.t.map(() => null);
        series.latency[name] = series.latency[name] || series.t.map(() => null);
      }
      if (plots) { for (const p of plots) if (p) p.destroy(); }
      $("plot-rate").replaceChildren();
      $("plot-latency").replaceChildren();
      plots = [makePlot("plot-rate", "envelopes/s per region", "rate"), makePlot("plot-latency", "latency ms per region", "latency")];
    }
    for (const p of points) {
      series.t.push(p.t);
      for (const name of regionNames) {
        series.rate[name].push(p.rates[name] ?? null);
        series.latency[name].push(p.latencyMs[name] ?? null);
      }
    }
    const cutoff = (series.t[series.t.length - 1] || 0) - HISTORY;
    let drop = 0;
    while (drop < series.t.length && series.t[drop] < cutoff) drop++;
    if (drop) {
      series.t.splice(0, drop);
      for (const name of regionNames) { series.rate[name].splice(0, drop); series.latency[name].splice(0, drop); }
    }
    if (plots[0]) plots[0].setData([series.t, ...regionNames.map((n) => series.rate[n])]);
    if (plots[1]) plots[1].setData([series.t, ...regionNames.map((n) => series.latency[n])]);
  }

  const events = new EventSource("/events");
  events.onmessage = (ev) => {
    const message = JSON.parse(ev.data);
    const state = message.state;
    let points = message.points;
    if (state.seq < lastSeq) {               // the dashboard restarted: start the plots afresh
      series.t.length = 0;
      for (const name of regionNames) { series.rate[name].length = 0; series.latency[name].length = 0; }
      lastSeq = 0;
    }
    points = points.filter((p) => p.seq > lastSeq);
    if (points.length) lastSeq = points[points.length - 1].seq;
    const live = $("live");
    const ready = state.nodes.filter((n) => n.state === "ready").length;
    const up = state.regions.filter((r) => r.up).length;
    live.textContent = `live · ${new Date(state.ts * 1000).toLocaleTimeString()} · nodes ready ${ready}/${state.nodes.length} · regions up ${up}/${state.regions.length}`;
    live.className = "ok";
    live.dataset.seq = state.seq;
    renderNodes(state.nodes);
    renderServices(state.services);
    renderRegions(state.regions);
    renderDeadLetters(state.deadLetters);
    renderWebPubSub(state.webpubsub);
    addPoints(points, state.regions);
  };
  events.onerror = () => {
    $("live").textContent = "dashboard server unreachable; retrying…";
    $("live").className = "bad";
  };
})();
