// Demo page for the relay node's built-in chat app (relay_node/chat.py).
// Uses the official socket.io client served by the node itself (/socket.io.min.js): no CDN.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const messages = $("messages");
  const joined = new Set();
  const seen = new Set();          // message ids already shown (live + history overlap)
  const lastTs = {};               // room -> ts of the newest message shown
  const proofs = {};               // room -> the last history token: proves the membership after a reconnect
  const lastCursor = {};           // room -> history cursor of the newest event read from the history API
  let config = { node: "?", region: "?", historyUrl: null, chatRoomPrefix: "chat:" };
  let socket = null;

  function setStatus(text, cls) {
    status.textContent = text;
    status.className = cls || "";
  }

  function line(text, cls) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    li.textContent = text;
    messages.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function showChat(m) {
    if (!m || (m.id && seen.has(m.id))) return;
    if (m.id) seen.add(m.id);
    if (typeof m.ts === "number") lastTs[m.room] = Math.max(lastTs[m.room] || 0, m.ts);
    const li = document.createElement("li");
    li.className = "chat";
    li.dataset.room = m.room;
    li.dataset.node = m.node;
    li.dataset.region = m.region;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `[${m.room}] ${m.user || (m.sid || "").slice(0, 6)} via ${m.node}/${m.region}`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = m.text;
    li.append(meta, text);
    if (typeof m.trace === "string" && /^[0-9a-f]{32}$/.test(m.trace)) {
      // the trace id of this message (docs/observability.md): small, for support
      const trace = document.createElement("span");
      trace.className = "trace";
      trace.title = "trace id";
      trace.textContent = m.trace;
      li.dataset.trace = m.trace;
      li.append(trace);
    }
    messages.appendChild(li);
    li.scrollIntoView({ block: "end" });
  }

  // A history token for one room, from the node this socket is connected to (relay_node/history.py):
  // short-lived, only for a room this socket is in; the history API requires it (docs/security.md).
  // It opens the room from the time this socket joined; the previous token ("resume") proves that
  // this page was in the room before a reconnect, so the new one opens the room from that earlier join.
  function askToken(room, resume) {
    const req = { room: config.chatRoomPrefix + room };
    if (resume) req.resume = resume;
    return new Promise((resolve, reject) => {
      socket.timeout(10000).emit("relay:history_token", req, (err, ack) => {
        if (err) reject(new Error("no answer to relay:history_token"));
        else if (!ack || !ack.ok) reject(new Error((ack && ack.error) || "no history token"));
        else resolve(ack.token);
      });
    });
  }

  async function historyToken(room) {
    let token;
    try {
      token = await askToken(room, proofs[room]);
    } catch (err) {
      if (!proofs[room]) throw err;
      token = await askToken(room, null);  // the proof expired too long ago: from this join on
    }
    proofs[room] = token;
    return token;
  }

  // Missed messages after a reconnect, from the Functions history API (when configured):
  // GET <historyUrl>?ns=/&room=chat:<room>&after=<cursor> with Authorization: Bearer <history token>
  // -> {"events": [{data: {...chat}}], "next"}
  // The cursor is that of the last event read from the history before; the first time, a live
  // message carries no cursor, so "<13-digit ms>-0" (which sorts before every sequence cursor)
  // reads the room from the start of its sequenced events. Duplicates are dropped by id.
  async function fetchHistory(room) {
    if (!config.historyUrl || !lastTs[room]) return;
    let after = lastCursor[room] || String(Math.floor(lastTs[room] * 1000)).padStart(13, "0") + "-0";
    let n = 0;
    try {
      const token = await historyToken(room);
      for (let page = 0; page < 10 && after; page++) {
        const url = new URL(config.historyUrl, location.href);
        url.searchParams.set("ns", "/");
        url.searchParams.set("room", config.chatRoomPrefix + room);
        url.searchParams.set("after", after);
        url.searchParams.set("limit", "200");
        const res = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const body = await res.json();
        for (const ev of body.events || []) {
          if (ev && ev.cursor) lastCursor[room] = ev.cursor;
          const m = ev && ev.data && ev.data.text !== undefined ? ev.data : null;
          if (m && !(m.id && seen.has(m.id))) { showChat(m); n++; }
        }
        after = body.next;
      }
      if (n) line(`${n} missed message(s) in ${room} from history`, "system");
    } catch (err) {
      line(`history for ${room} unavailable: ${err.message}`, "error");
    }
  }

  function rejoin() {
    for (const room of joined) {
      socket.emit("join", room, (ack) => {
        if (ack && ack.ok) fetchHistory(room);
      });
    }
  }

  function connect() {
    const params = new URLSearchParams(location.search);
    const token = params.get("token") || sessionStorage.getItem("relayToken");
    if (params.get("token")) {
      sessionStorage.setItem("relayToken", params.get("token"));
      // out of the address bar, so it lands in neither the browser history nor a shared link
      params.delete("token");
      const rest = params.toString();
      history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
    socket = io({ auth: token ? { token } : {}, transports: params.get("polling") ? ["polling"] : undefined });

    socket.on("connect", () => {
      setStatus(`connected to ${config.node} (${config.region}) as ${socket.id}`, "ok");
      rejoin();
    });
    socket.on("connect_error", (err) => {
      setStatus(`connection error: ${err.message}`, "bad");
    });
    socket.on("disconnect", (reason) => {
      setStatus(`disconnected (${reason}); reconnecting…`, "bad");
      // a server-side socket.io disconnect does not reconnect by itself; transport errors do
      if (reason === "io server disconnect") setTimeout(() => socket.connect(), 500 + Math.random() * 1000);
    });
    socket.on("relay:reconnect", (info) => line(`node ${info.node} is draining; moving to another node`, "system"));
    socket.on("chat", showChat);
    socket.on("error", (err) => line(`error: ${err && err.error}`, "error"));
  }

  $("room-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const room = $("room").value.trim();
    if (!room || !socket) return;
    socket.emit("join", room, (ack) => {
      if (ack && ack.ok) {
        joined.add(room);
        line(`joined ${room} on ${ack.node}/${ack.region}`, "system");
        // a token now: after a reconnect it proves since when this page is in the room
        if (config.historyTokens && config.historyUrl) historyToken(room).catch(() => {});
      } else {
        line(`join failed: ${ack && ack.error}`, "error");
      }
    });
  });

  $("who").addEventListener("click", () => {
    const room = $("room").value.trim();
    if (!room || !socket) return;
    socket.emit("who", room, (ack) => {
      if (ack && ack.members) {
        line(`${ack.count} in ${room}: ${ack.members.map((m) => `${m.sid.slice(0, 6)}@${m.node}`).join(", ")}`, "system");
        const missing = ack.missing || [];
        if (missing.length) {
          line(`${missing.length} node${missing.length === 1 ? "" : "s"} did not answer (${missing.join(", ")}): their members are not listed`, "error");
        }
      } else line(`who failed: ${ack && ack.error}`, "error");
    });
  });

  $("text-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const room = $("room").value.trim();
    const text = $("text").value;
    if (!text.trim() || !socket) return;
    socket.emit("chat", { room, text }, (ack) => {
      if (ack && ack.ok) $("text").value = "";
      else line(`not sent: ${ack && ack.error}`, "error");
    });
  });

  // a link to the local stack's dashboard, only when the node is told one runs (--dashboard-url)
  function showDashboardLink() {
    if (!config.dashboardUrl) return;
    $("dashboard-link").href = config.dashboardUrl;
    $("dashboard").hidden = false;
  }

  fetch("/config.json")
    .then((r) => r.json())
    .then((c) => { config = Object.assign(config, c); showDashboardLink(); })
    .catch(() => {})
    .finally(() => {
      if (typeof io !== "function") {
        setStatus("socket.io client missing: run `make run` / `npm install` on the server", "bad");
        return;
      }
      setStatus("connecting…");
      connect();
    });
})();
