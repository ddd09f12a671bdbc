// Isobar console: a small single-page app over /api/v1. No framework, no
// build step. Every value coming from the broker (client identifiers,
// topics, payloads) is inserted as text, never as HTML.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const state = { csrf: "", user: "", role: "", view: "", timers: [], info: null, clustered: false };

  // ---------- DOM helpers ----------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const fmt = {
    int: (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US")),
    rate: (n) => (n >= 100 ? Math.round(n).toLocaleString("en-US") : n >= 10 ? n.toFixed(1) : n.toFixed(2)),
    bytes: (n) => {
      const u = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
      return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + u[i];
    },
    duration: (s) => {
      const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
      if (d) return `${d}d ${h}h`;
      if (h) return `${h}h ${m}m`;
      if (m) return `${m}m ${Math.floor(s % 60)}s`;
      return `${Math.floor(s)}s`;
    },
    since: (iso) => {
      const t = new Date(iso);
      return fmt.duration(Math.max(0, (Date.now() - t.getTime()) / 1000)) + " ago";
    },
    time: (iso) => new Date(iso).toLocaleString(),
  };

  // ---------- API ----------
  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { "X-Requested-With": "XMLHttpRequest", Accept: "application/json" };
    const opts = { method, headers, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") headers["X-Isobar-CSRF"] = state.csrf;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      setOnline(false);
      throw new APIError(0, "The broker is unreachable");
    }
    setOnline(true);
    if (res.status === 401 && path !== "/api/v1/login") {
      showLogin("Your session has ended. Please sign in again.");
      throw new APIError(401, "not signed in");
    }
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (e) { /* empty body */ }
    if (!res.ok) throw new APIError(res.status, (data && data.error) || res.statusText);
    return data;
  }

  function setOnline(ok) {
    const d = $("#status-dot");
    if (d) d.classList.toggle("down", !ok);
  }

  // ---------- toast and modal ----------
  let toastTimer = 0;
  function toast(msg, error) {
    const t = $("#toast");
    t.textContent = msg;
    t.classList.toggle("error", !!error);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
  }

  function modal(title, body, okLabel, danger) {
    return new Promise((resolve) => {
      $("#modal-title").textContent = title;
      const b = $("#modal-body");
      b.replaceChildren(body instanceof Node ? body : el("p", { text: body }));
      const ok = $("#confirm-ok"), cancel = $("#modal-cancel");
      ok.textContent = okLabel || "OK";
      ok.className = "btn " + (danger ? "btn-danger" : "btn-primary");
      ok.hidden = okLabel === null;
      cancel.textContent = okLabel === null ? "Close" : "Cancel";
      $("#modal").hidden = false;
      const done = (v) => {
        $("#modal").hidden = true;
        ok.onclick = cancel.onclick = null;
        resolve(v);
      };
      ok.onclick = () => done(true);
      cancel.onclick = () => done(false);
      (okLabel === null ? cancel : ok).focus();
    });
  }

  // ---------- theme ----------
  function applyTheme(t) {
    if (t) document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
  }
  function currentTheme() {
    return document.documentElement.dataset.theme ||
      (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  }
  applyTheme(localStorage.getItem("isobar-theme"));

  // ---------- login ----------
  function showLogin(message) {
    stopTimers();
    state.csrf = "";
    $("#app").hidden = true;
    $("#login").hidden = false;
    const err = $("#login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("#login-username").focus();
  }

  async function doLogin(ev) {
    ev.preventDefault();
    const btn = $("#login-submit");
    btn.disabled = true;
    try {
      const s = await api("POST", "/api/v1/login", {
        username: $("#login-username").value, password: $("#login-password").value,
      });
      $("#login-password").value = "";
      enter(s);
    } catch (e) {
      const err = $("#login-error");
      err.textContent = e.status === 401 ? "Invalid username or password." : e.message;
      err.hidden = false;
    } finally {
      btn.disabled = false;
    }
  }

  async function enter(session) {
    state.csrf = session.csrf_token || "";
    state.user = session.username;
    state.role = session.role || "";
    $("#user-name").textContent = session.username;
    $("#login").hidden = true;
    $("#app").hidden = false;
    try {
      state.info = await api("GET", "/api/v1/broker");
      $("#node-name").textContent = state.info.node;
      $("#node-version").textContent = "Isobar " + state.info.version;
      document.title = state.info.node + " · Isobar Console";
    } catch (e) { /* shown by the views */ }
    route();
  }

  // probeCluster shows the Cluster page in the sidebar exactly when the
  // node is clustered (GET /api/v1/cluster answers, rather than 404). It
  // runs at every change of page.
  async function probeCluster() {
    try {
      await api("GET", "/api/v1/cluster");
      state.clustered = true;
    } catch (e) {
      if (e.status === 404) state.clustered = false;
    }
    $("#nav-cluster").hidden = !state.clustered;
    // The Bridges page shows when the node has bridges.
    try {
      const b = await api("GET", "/api/v1/bridges");
      $("#nav-bridges").hidden = !(Array.isArray(b) && b.length > 0);
    } catch (e) { /* keep it as it was */ }
  }

  async function logout() {
    try { await api("POST", "/api/v1/logout"); } catch (e) { /* ignore */ }
    showLogin("");
  }

  // ---------- routing ----------
  const views = {
    overview: { title: "Overview", render: renderOverview },
    clients: { title: "Clients", render: renderClients },
    subscriptions: { title: "Subscriptions", render: renderSubscriptions },
    retained: { title: "Retained messages", render: renderRetained },
    publish: { title: "Publish a message", render: renderPublish },
    listeners: { title: "Listeners", render: renderListeners },
    cluster: { title: "Cluster", render: renderCluster },
    bridges: { title: "Bridges", render: renderBridges },
  };

  function stopTimers() {
    state.timers.forEach(clearInterval);
    state.timers = [];
  }
  function every(ms, fn) {
    fn();
    state.timers.push(setInterval(fn, ms));
  }

  function route() {
    if ($("#app").hidden) return;
    const name = (location.hash.replace(/^#\/?/, "") || "overview").split("?")[0];
    const v = views[name] || views.overview;
    stopTimers();
    state.view = name;
    $("#view-title").textContent = v.title;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === name);
    const root = $("#view");
    root.replaceChildren();
    v.render(root);
    probeCluster();
  }

  // ---------- overview ----------
  function statCard(label, id, sub) {
    return el("div", { class: "card stat" },
      el("div", { class: "label", text: label }),
      el("div", { class: "value", id: id, text: "–" }),
      el("div", { class: "sub", id: id + "-sub", text: sub || "" }));
  }

  function renderOverview(root) {
    root.append(
      el("div", { class: "stats" },
        statCard("Connections", "st-conn"),
        statCard("Sessions", "st-sess"),
        statCard("Subscriptions", "st-subs"),
        statCard("Retained", "st-ret"),
        statCard("Messages in / s", "st-in"),
        statCard("Messages out / s", "st-out")),
      el("div", { class: "charts" },
        chartCard("Message rate", "chart-msgs", [["s1", "Received"], ["s2", "Sent"]], "msg/s"),
        chartCard("Connections", "chart-conns", [["s1", "Connected clients"]], ""),
        chartCard("Throughput", "chart-bytes", [["s1", "In"], ["s2", "Out"]], "bytes/s"),
        chartCard("Dropped messages", "chart-drop", [["s1", "Dropped"]], "msg/s")),
      el("div", { class: "card" },
        el("div", { class: "card-head" }, el("h2", { text: "Totals since start" })),
        el("div", { class: "card-body" }, el("dl", { class: "kv", id: "totals" }))));

    let samples = [];
    let last = "";
    const charts = {
      msgs: new Chart($("#chart-msgs"), fmt.rate),
      conns: new Chart($("#chart-conns"), (v) => fmt.int(Math.round(v)), true),
      bytes: new Chart($("#chart-bytes"), (v) => fmt.bytes(v)),
      drop: new Chart($("#chart-drop"), fmt.rate),
    };
    const draw = () => {
      const t = samples.map((s) => new Date(s.time).getTime());
      charts.msgs.draw(t, [samples.map((s) => s.messages_received_per_second), samples.map((s) => s.messages_sent_per_second)]);
      charts.conns.draw(t, [samples.map((s) => s.connections)]);
      charts.bytes.draw(t, [samples.map((s) => s.bytes_received_per_second), samples.map((s) => s.bytes_sent_per_second)]);
      charts.drop.draw(t, [samples.map((s) => s.messages_dropped_per_second)]);
      const s = samples[samples.length - 1];
      if (s) {
        $("#st-in").textContent = fmt.rate(s.messages_received_per_second);
        $("#st-out").textContent = fmt.rate(s.messages_sent_per_second);
        $("#st-in-sub").textContent = fmt.bytes(s.bytes_received_per_second) + "/s";
        $("#st-out-sub").textContent = fmt.bytes(s.bytes_sent_per_second) + "/s";
      }
    };
    const onResize = () => draw();
    window.addEventListener("resize", onResize);
    const viewAtStart = state.view;

    every(2000, async () => {
      if (state.view !== viewAtStart) { window.removeEventListener("resize", onResize); return; }
      try {
        const [h, st] = await Promise.all([
          api("GET", "/api/v1/stats/history" + (last ? "?since=" + encodeURIComponent(last) : "")),
          api("GET", "/api/v1/stats"),
        ]);
        if (h.samples.length) {
          samples = samples.concat(h.samples).slice(-300);
          last = samples[samples.length - 1].time;
        }
        updateStats(st);
        draw();
      } catch (e) { if (e.status !== 401) setOnline(false); }
    });
  }

  function updateStats(st) {
    const set = (id, v, sub) => {
      const e = $("#" + id);
      if (!e) return;
      e.textContent = v;
      if (sub !== undefined) $("#" + id + "-sub").textContent = sub;
    };
    set("st-conn", fmt.int(st.connections),
      Object.entries(st.connections_by_protocol_version || {}).map(([k, v]) => `v${k}: ${v}`).join(" · ") || "no clients");
    set("st-sess", fmt.int(st.sessions_online + st.sessions_offline), `${fmt.int(st.sessions_offline)} offline`);
    set("st-subs", fmt.int(st.subscriptions), "");
    set("st-ret", fmt.int(st.retained_messages), "");
    $("#uptime").textContent = "up " + fmt.duration(st.uptime_seconds);
    const totals = $("#totals");
    if (!totals) return;
    const dropped = Object.values(st.messages_dropped).reduce((a, b) => a + b, 0);
    const lat = st.delivery_latency;
    const rows = [
      ["Messages received", fmt.int(st.messages_received) + `  (QoS 0/1/2: ${st.messages_received_by_qos.join(" / ")})`],
      ["Messages sent", fmt.int(st.messages_sent) + `  (QoS 0/1/2: ${st.messages_sent_by_qos.join(" / ")})`],
      ["Bytes received / sent", fmt.bytes(st.bytes_received) + " / " + fmt.bytes(st.bytes_sent)],
      ["Messages dropped", fmt.int(dropped) + (dropped ? "  (" + Object.entries(st.messages_dropped).filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`).join(", ") + ")" : "")],
      ["Connects / refused / auth failures", `${fmt.int(st.connects)} / ${fmt.int(st.connects_refused)} / ${fmt.int(st.auth_failures)}`],
      ["In-flight / queued", `${fmt.int(st.inflight_messages)} / ${fmt.int(st.queued_messages)}`],
      ["Mean delivery latency", lat.count ? (1000 * lat.sum_seconds / lat.count).toFixed(3) + " ms" : "–"],
      ["Slow consumers disconnected", fmt.int(st.slow_consumer_disconnects)],
    ];
    totals.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function chartCard(title, id, series, unit) {
    return el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: title }),
        el("div", { class: "legend" }, series.map(([c, n]) => el("span", {}, el("i", { class: c }), n)), unit ? el("span", { text: unit }) : null)),
      el("div", { class: "card-body" }, el("div", { class: "chart-wrap" }, el("canvas", { id }))));
  }

  // Chart draws time series on a canvas: area + line, gridlines, axes.
  class Chart {
    constructor(canvas, yfmt, integer) { this.c = canvas; this.yfmt = yfmt; this.integer = integer; }
    draw(times, series) {
      const c = this.c, dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth, h = c.clientHeight;
      if (!w || !h) return;
      c.width = w * dpr; c.height = h * dpr;
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      c.dataset.points = String(times.length);
      const cs = getComputedStyle(document.documentElement);
      const colors = [cs.getPropertyValue("--accent").trim(), cs.getPropertyValue("--series-2").trim()];
      const grid = cs.getPropertyValue("--border").trim(), muted = cs.getPropertyValue("--muted").trim();
      const padL = 56, padR = 10, padT = 8, padB = 22;
      const pw = w - padL - padR, ph = h - padT - padB;
      let ymax = 0;
      for (const s of series) for (const v of s) ymax = Math.max(ymax, v);
      ymax = this.integer ? Math.max(4, Math.ceil(ymax / 4) * 4) : niceMax(ymax);
      // The window grows with the data from one minute to ten.
      const now = times.length ? times[times.length - 1] : Date.now();
      const span = times.length ? now - times[0] : 0;
      const t0 = now - Math.min(10 * 60 * 1000, Math.max(60 * 1000, span));
      const tfmt = now - t0 <= 3 * 60 * 1000
        ? { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }
        : { hour: "2-digit", minute: "2-digit", hour12: false };
      const x = (t) => padL + ((t - t0) / (now - t0)) * pw;
      const y = (v) => padT + ph - (v / ymax) * ph;
      g.font = "11px -apple-system, Segoe UI, Roboto, sans-serif";
      g.fillStyle = muted; g.strokeStyle = grid; g.lineWidth = 1;
      g.textAlign = "right"; g.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const v = (ymax * i) / 4, yy = Math.round(y(v)) + 0.5;
        g.beginPath(); g.moveTo(padL, yy); g.lineTo(w - padR, yy); g.stroke();
        g.fillText(this.yfmt(v), padL - 8, yy);
      }
      g.textAlign = "center"; g.textBaseline = "top";
      for (let i = 0; i <= 5; i++) {
        const t = t0 + (i * (now - t0)) / 5;
        const d = new Date(t);
        g.fillText(d.toLocaleTimeString([], tfmt), Math.min(Math.max(x(t), padL + 24), w - padR - 24), padT + ph + 6);
      }
      if (!times.length) {
        g.textBaseline = "middle";
        g.fillText("Collecting data…", padL + pw / 2, padT + ph / 2);
        return;
      }
      series.forEach((s, k) => {
        const col = colors[k % colors.length];
        g.beginPath();
        s.forEach((v, i) => { const px = x(times[i]), py = y(v); i ? g.lineTo(px, py) : g.moveTo(px, py); });
        g.strokeStyle = col; g.lineWidth = 2; g.lineJoin = "round"; g.stroke();
        if (series.length === 1 || k === 0) {
          g.lineTo(x(times[times.length - 1]), y(0)); g.lineTo(x(times[0]), y(0)); g.closePath();
          const grad = g.createLinearGradient(0, padT, 0, padT + ph);
          grad.addColorStop(0, hexAlpha(col, 0.28)); grad.addColorStop(1, hexAlpha(col, 0.02));
          g.fillStyle = grad; g.fill();
        }
      });
    }
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function hexAlpha(c, a) {
    const m = /^#([0-9a-f]{6})$/i.exec(c);
    if (!m) return c;
    const n = parseInt(m[1], 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  // ---------- tables ----------
  // pagedTable renders a card with a toolbar, a table and a pager, loading
  // pages from load(offset, limit) -> {total, items}.
  function pagedTable(root, opts) {
    const pageSize = 50;
    let offset = 0;
    const tbody = el("tbody");
    const info = el("span");
    const prev = el("button", { class: "btn btn-sm", type: "button", text: "Previous" });
    const next = el("button", { class: "btn btn-sm", type: "button", text: "Next" });
    const card = el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: opts.title }), el("div", { class: "toolbar" }, opts.toolbar || [])),
      el("div", { class: "table-wrap" },
        el("table", { id: opts.id }, el("thead", {}, el("tr", {}, opts.columns.map(([n, cls]) => el("th", { class: cls, text: n })))), tbody)),
      el("div", { class: "pager" }, info, el("div", { class: "btns" }, prev, next)));
    root.append(card);
    async function load() {
      try {
        const r = await opts.load(offset, pageSize);
        if (r.items.length === 0 && offset > 0 && r.total > 0) { offset = Math.max(0, offset - pageSize); return load(); }
        tbody.replaceChildren(...(r.items.length ? r.items.map(opts.row)
          : [el("tr", {}, el("td", { class: "empty", colspan: String(opts.columns.length), text: opts.empty }))]));
        info.textContent = r.total ? `${offset + 1}–${offset + r.items.length} of ${fmt.int(r.total)}` : "";
        prev.disabled = offset === 0;
        next.disabled = offset + r.items.length >= r.total;
      } catch (e) {
        if (e.status !== 401) tbody.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: String(opts.columns.length), text: e.message })));
      }
    }
    prev.addEventListener("click", () => { offset = Math.max(0, offset - pageSize); load(); });
    next.addEventListener("click", () => { offset += pageSize; load(); });
    return { load, reset: () => { offset = 0; return load(); } };
  }

  function debounce(fn, ms) {
    let t = 0;
    return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) u.set(k, v);
    return u.toString();
  }

  // ---------- clients ----------
  function renderClients(root) {
    const search = el("input", { id: "client-search", type: "search", placeholder: "Search client ID, user or address" });
    const t = pagedTable(root, {
      id: "clients-table", title: "Connected clients", empty: "No client is connected.",
      toolbar: [search],
      columns: [["Client ID"], ["User"], ["Listener"], ["Protocol"], ["Address"], ["Connected"], ["Subs", "num"], ["In-flight", "num"], ["Queued", "num"], ["", "actions"]],
      load: (offset, limit) => api("GET", "/api/v1/clients?" + qs({ search: search.value.trim(), offset, limit })),
      row: (c) => el("tr", { dataset: { clientId: c.client_id } },
        el("td", { class: "mono", text: c.client_id }),
        el("td", { text: c.username || "—" }),
        el("td", {}, el("span", { class: "pill pill-muted", text: c.listener })),
        el("td", {}, el("span", { class: "pill", text: "v" + c.protocol_version })),
        el("td", { class: "mono", text: c.remote_addr }),
        el("td", { title: fmt.time(c.connected_at), text: fmt.since(c.connected_at) }),
        el("td", { class: "num", text: fmt.int(c.subscriptions) }),
        el("td", { class: "num", text: fmt.int(c.inflight) }),
        el("td", { class: "num", text: fmt.int(c.queued) }),
        el("td", { class: "actions" },
          el("button", { class: "btn btn-sm", type: "button", text: "Details", onclick: () => clientDetails(c.client_id) }), " ",
          el("button", { class: "btn btn-sm btn-outline-danger kick", type: "button", text: "Kick", onclick: () => kick(c.client_id, t) }))),
    });
    search.addEventListener("input", debounce(() => t.reset(), 250));
    every(5000, () => { if ($("#modal").hidden) t.load(); });
  }

  async function kick(id, table) {
    const body = el("p", {}, "Disconnect ", el("code", { text: id }), "? MQTT 5 clients are told “Administrative action” (0x98). Its session is kept according to its expiry interval.");
    if (!(await modal("Disconnect client", body, "Disconnect", true))) return;
    try {
      await api("DELETE", "/api/v1/clients/" + encodeURIComponent(id));
      toast(`Client ${id} disconnected`);
    } catch (e) {
      toast(e.message, true);
    }
    table.load();
  }

  async function clientDetails(id) {
    try {
      const c = await api("GET", "/api/v1/clients/" + encodeURIComponent(id));
      const subs = c.subscription_list.length
        ? el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Filter" }), el("th", { text: "QoS" }))),
          el("tbody", {}, c.subscription_list.map((s) => el("tr", {}, el("td", { class: "mono", text: s.filter }), el("td", { text: String(s.qos) })))))
        : el("p", { class: "muted", text: "No subscriptions." });
      const kv = [["Client ID", c.client_id], ["User", c.username || "—"], ["Address", c.remote_addr], ["Listener", c.listener],
        ["Protocol", "MQTT " + c.protocol_version], ["Keep alive", c.keep_alive + " s"], ["Connected", fmt.time(c.connected_at)],
        ["Session expiry", c.session_expiry_interval + " s"], ["Pending output", fmt.bytes(c.pending_bytes)]];
      await modal("Client details", el("div", { class: "form-stack" },
        el("dl", { class: "kv" }, kv.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])), subs), null);
    } catch (e) { toast(e.message, true); }
  }

  // ---------- subscriptions ----------
  function renderSubscriptions(root) {
    const cid = el("input", { type: "search", placeholder: "Client ID" });
    const prefix = el("input", { type: "search", placeholder: "Filter starts with…" });
    const t = pagedTable(root, {
      id: "subs-table", title: "Subscriptions", empty: "No subscriptions.",
      toolbar: [cid, prefix],
      columns: [["Topic filter"], ["Client ID"], ["QoS", "num"], ["Options"]],
      load: (offset, limit) => api("GET", "/api/v1/subscriptions?" + qs({ client_id: cid.value.trim(), prefix: prefix.value, offset, limit })),
      row: (s) => el("tr", {},
        el("td", { class: "mono wrap", text: s.filter }),
        el("td", { class: "mono", text: s.client_id }),
        el("td", { class: "num", text: String(s.qos) }),
        el("td", {}, [s.no_local && "no local", s.retain_as_published && "retain as published",
          s.retain_handling ? "retain handling " + s.retain_handling : "", s.subscription_identifier ? "id " + s.subscription_identifier : ""]
          .filter(Boolean).map((o) => el("span", { class: "pill pill-muted", text: o })))),
    });
    const reload = debounce(() => t.reset(), 250);
    cid.addEventListener("input", reload);
    prefix.addEventListener("input", reload);
    every(10000, () => t.load());
  }

  // ---------- retained ----------
  function renderRetained(root) {
    const filter = el("input", { id: "retained-filter", type: "search", value: "#", placeholder: "Topic filter, e.g. sensors/+/temp" });
    const err = el("span", { class: "form-error" });
    const t = pagedTable(root, {
      id: "retained-table", title: "Retained messages", empty: "No retained message matches this filter.",
      toolbar: [filter, err],
      columns: [["Topic"], ["Payload"], ["Size", "num"], ["QoS", "num"], ["Received"], ["", "actions"]],
      load: async (offset, limit) => {
        err.textContent = "";
        try {
          return await api("GET", "/api/v1/retained?" + qs({ filter: filter.value || "#", offset, limit }));
        } catch (e) {
          if (e.status === 400) { err.textContent = e.message; return { total: 0, items: [] }; }
          throw e;
        }
      },
      row: (m) => el("tr", {},
        el("td", { class: "mono wrap", text: m.topic }),
        el("td", {}, el("span", { class: "payload", title: m.payload_encoding, text: (m.payload_encoding === "base64" ? "base64: " : "") + m.payload })),
        el("td", { class: "num", text: fmt.bytes(m.payload_size) }),
        el("td", { class: "num", text: String(m.qos) }),
        el("td", { title: fmt.time(m.received_at), text: fmt.since(m.received_at) }),
        el("td", { class: "actions" },
          el("button", { class: "btn btn-sm", type: "button", text: "View", onclick: () => viewRetained(m.topic) }), " ",
          el("button", { class: "btn btn-sm btn-outline-danger", type: "button", text: "Delete", onclick: () => deleteRetained(m.topic, t) }))),
    });
    filter.addEventListener("input", debounce(() => t.reset(), 300));
    t.load();
  }

  async function viewRetained(topic) {
    try {
      const m = await api("GET", "/api/v1/retained/message?" + qs({ topic }));
      const kv = [["Topic", m.topic], ["QoS", String(m.qos)], ["Size", fmt.bytes(m.payload_size)], ["Received", fmt.time(m.received_at)],
        ["Publisher", m.from_client_id || "broker"], ["Content type", m.content_type || "—"], ["Encoding", m.payload_encoding]];
      if (m.expires_at) kv.push(["Expires", fmt.time(m.expires_at)]);
      for (const p of m.user_properties || []) kv.push(["Property " + p.key, p.value]);
      let text = m.payload;
      if (m.payload_encoding === "text") { try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ } }
      await modal("Retained message", el("div", { class: "form-stack" },
        el("dl", { class: "kv" }, kv.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
        el("pre", { class: "payload-full", text })), null);
    } catch (e) { toast(e.message, true); }
  }

  async function deleteRetained(topic, table) {
    if (!(await modal("Delete retained message", el("p", {}, "Delete the retained message on ", el("code", { text: topic }), "?"), "Delete", true))) return;
    try {
      await api("DELETE", "/api/v1/retained/message?" + qs({ topic }));
      toast("Retained message deleted");
    } catch (e) { toast(e.message, true); }
    table.load();
  }

  // ---------- publish ----------
  function renderPublish(root) {
    const props = el("div", { class: "props" });
    const addProp = () => {
      const row = el("div", { class: "prop-row" },
        el("input", { placeholder: "Key", class: "prop-key" }), el("input", { placeholder: "Value", class: "prop-value" }),
        el("button", { class: "btn", type: "button", text: "Remove", onclick: () => row.remove() }));
      props.append(row);
    };
    const form = el("form", { id: "publish-form", class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "Message" }),
        el("span", { class: "muted small", text: "Published by the broker itself, as if from a client with every permission." })),
      el("div", { class: "card-body form-stack" },
        el("label", {}, "Topic", el("input", { id: "pub-topic", required: true, placeholder: "e.g. devices/42/command", autocomplete: "off" })),
        el("label", {}, "Payload", el("textarea", { id: "pub-payload", placeholder: "Text, or base64 for binary payloads" })),
        el("div", { class: "form-grid" },
          el("label", {}, "QoS", el("select", { id: "pub-qos" }, el("option", { value: "0", text: "0 — at most once" }),
            el("option", { value: "1", text: "1 — at least once" }), el("option", { value: "2", text: "2 — exactly once" }))),
          el("label", {}, "Payload encoding", el("select", { id: "pub-encoding" }, el("option", { value: "text", text: "Text (UTF-8)" }),
            el("option", { value: "base64", text: "Base64 (binary)" }))),
          el("label", {}, "Content type", el("input", { id: "pub-content-type", placeholder: "optional, MQTT 5" })),
          el("label", {}, "Expiry (seconds)", el("input", { id: "pub-expiry", type: "number", min: "0", placeholder: "never" }))),
        el("label", { class: "check" }, el("input", { id: "pub-retain", type: "checkbox" }), "Retain"),
        el("div", { class: "form-stack" }, el("div", { class: "toolbar" }, el("strong", { text: "User properties" }),
          el("span", { class: "muted small", text: "MQTT 5 clients receive them" }),
          el("button", { class: "btn btn-sm", type: "button", text: "Add property", onclick: addProp })), props),
        el("p", { id: "pub-error", class: "form-error", hidden: true }),
        el("div", {}, el("button", { id: "pub-submit", class: "btn btn-primary", type: "submit", text: "Publish" }))));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const perr = $("#pub-error");
      perr.hidden = true;
      const body = {
        topic: $("#pub-topic").value, payload: $("#pub-payload").value, payload_encoding: $("#pub-encoding").value,
        qos: Number($("#pub-qos").value), retain: $("#pub-retain").checked,
        user_properties: [...props.querySelectorAll(".prop-row")].map((r) => ({
          key: r.querySelector(".prop-key").value, value: r.querySelector(".prop-value").value })).filter((p) => p.key !== ""),
      };
      if ($("#pub-content-type").value) body.content_type = $("#pub-content-type").value;
      if ($("#pub-expiry").value !== "") body.message_expiry_interval = Number($("#pub-expiry").value);
      const btn = $("#pub-submit");
      btn.disabled = true;
      try {
        const r = await api("POST", "/api/v1/publish", body);
        toast(`Published ${fmt.bytes(r.payload_size)} to ${r.topic}`);
      } catch (e) {
        perr.textContent = e.message;
        perr.hidden = false;
      } finally { btn.disabled = false; }
    });
    root.append(form);
  }

  // ---------- listeners ----------
  function renderListeners(root) {
    const tbody = el("tbody");
    root.append(el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "MQTT listeners" })),
      el("div", { class: "table-wrap" }, el("table", { id: "listeners-table" },
        el("thead", {}, el("tr", {}, ["Name", "Protocol", "Address", "Security", "Connections", "Accepted"].map((n, i) =>
          el("th", { class: i >= 4 ? "num" : "", text: n })))), tbody))));
    const limits = el("dl", { class: "kv" });
    root.append(el("div", { class: "card" }, el("div", { class: "card-head" }, el("h2", { text: "Limits and features" })),
      el("div", { class: "card-body" }, limits)));
    if (state.info) {
      const l = state.info.limits;
      const rows = [["Maximum connections", l.max_connections || "unlimited"], ["Maximum packet size", fmt.bytes(l.max_packet_size)],
        ["Maximum QoS", l.max_qos], ["Receive maximum", l.receive_maximum], ["In-flight window", l.max_inflight],
        ["Queued messages per session", l.max_queued_messages], ["Retained messages", l.retain_available ? "enabled" : "disabled"],
        ["Wildcard subscriptions", l.wildcard_subscriptions ? "enabled" : "disabled"],
        ["Shared subscriptions", l.shared_subscriptions ? "enabled" : "disabled"],
        ["Subscription identifiers", l.subscription_identifiers ? "enabled" : "disabled"],
        ["Go", state.info.go_version + " " + state.info.os + "/" + state.info.arch]];
      limits.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    }
    every(5000, async () => {
      try {
        const r = await api("GET", "/api/v1/listeners");
        tbody.replaceChildren(...r.items.map((l) => el("tr", {},
          el("td", { class: "mono", text: l.name }),
          el("td", {}, el("span", { class: "pill", text: (l.protocol === "ws" ? "WebSocket" : "MQTT") + (l.tls ? " + TLS" : "") })),
          el("td", { class: "mono", text: l.address + (l.ws_path ? l.ws_path : "") }),
          el("td", { text: [l.tls ? (l.client_certificates ? "TLS, client certificates" : "TLS") : "plain", l.proxy_protocol ? "PROXY protocol" : ""].filter(Boolean).join(", ") }),
          el("td", { class: "num", text: fmt.int(l.connections) }),
          el("td", { class: "num", text: fmt.int(l.connections_accepted) }))));
      } catch (e) { /* shown by the status dot */ }
    });
  }

  // ---------- bridges ----------
  function renderBridges(root) {
    const tbody = el("tbody");
    root.append(el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "Bridges" })),
      el("div", { class: "table-wrap" }, el("table", { id: "bridges-table" },
        el("thead", {}, el("tr", {}, ["Name", "Remote", "State", "Since", "In", "Out", "Buffered", "Dropped", "Last error"].map((n, i) =>
          el("th", { class: i >= 4 && i <= 7 ? "num" : "", text: n })))), tbody))));
    every(5000, async () => {
      try {
        const r = await api("GET", "/api/v1/bridges");
        tbody.replaceChildren(...r.map((b) => {
          const st = !b.running ? ["on another node", "pill-muted"] : b.connected ? ["connected", "pill-ok"] : ["down", "pill-bad"];
          const dropped = b.dropped_buffer_full + b.dropped_loop + b.dropped_max_hops + b.dropped_duplicate + b.dropped_refused;
          return el("tr", {},
            el("td", { class: "mono", text: b.name }),
            el("td", { class: "mono", text: b.url }),
            el("td", {}, el("span", { class: "pill " + st[1], text: st[0] })),
            el("td", b.running && b.since ? { title: fmt.time(b.since), text: fmt.since(b.since) } : { text: "–" }),
            el("td", { class: "num", text: fmt.int(b.messages_in) }),
            el("td", { class: "num", text: fmt.int(b.messages_out) }),
            el("td", { class: "num", text: fmt.int(b.buffered) }),
            el("td", { class: "num", title: `buffer full ${b.dropped_buffer_full}, loop ${b.dropped_loop}, max hops ${b.dropped_max_hops}, duplicate ${b.dropped_duplicate}, refused ${b.dropped_refused}`, text: fmt.int(dropped) }),
            el("td", { class: "small", text: b.last_error || "" }));
        }));
      } catch (e) { /* shown by the status dot */ }
    });
  }

  // ---------- cluster ----------
  const memberPill = { alive: "pill-ok", suspect: "pill-warn", dead: "pill-bad", left: "pill-muted" };
  const linkPill = { up: "pill-ok", connecting: "pill-warn", down: "pill-bad" };
  const nodePill = { running: "pill-ok", draining: "pill-warn", left: "pill-muted" };

  function renderCluster(root) {
    const summary = el("dl", { class: "kv", id: "cluster-summary" });
    const actions = el("div", { class: "toolbar" });
    const drainBtn = el("button", { id: "cluster-drain", class: "btn btn-sm btn-outline-danger", type: "button", text: "Drain this node", hidden: true,
      onclick: () => drain() });
    // Only administrators may drain: others do not get the button at all.
    if (state.role === "admin") actions.append(drainBtn);
    const tbody = el("tbody");
    const cols = [["Node"], ["Address"], ["State"], ["Link"], ["Routes", "num"], ["Queued", "num"], ["In-flight", "num"],
      ["Forwarded", "num"], ["Received", "num"], ["Dropped", "num"]];
    root.append(
      el("div", { class: "card" },
        el("div", { class: "card-head" }, el("h2", { text: "This node" }), actions),
        el("div", { class: "card-body" }, summary)),
      el("div", { class: "card" },
        el("div", { class: "card-head" }, el("h2", { text: "Members" })),
        el("div", { class: "table-wrap" }, el("table", { id: "cluster-table" },
          el("thead", {}, el("tr", {}, cols.map(([n, cls]) => el("th", { class: cls, text: n })))), tbody))));

    const show = (c) => {
      const d = c.drain;
      const rows = [["Node", c.node], ["State", el("span", { class: "pill " + (nodePill[c.state] || "pill-muted"), text: c.state })],
        ["Members", `${c.members.filter((m) => m.state === "alive").length} alive of ${c.members.length}`],
        ["Local routes", fmt.int(c.local_routes)], ["Retained tombstones", fmt.int(c.retained_tombstones)]];
      if (d) {
        rows.push(["Last drain", (d.running ? "running" : d.error ? "failed: " + d.error : "done") +
          ` (by ${d.requested_by}, ${fmt.since(d.started_at)})`]);
      }
      summary.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
      drainBtn.hidden = c.state !== "running" || !!(d && d.running);
      tbody.replaceChildren(...c.members.map((m) => el("tr", { dataset: { node: m.name } },
        el("td", { class: "mono" }, m.name, m.local ? [" ", el("span", { class: "pill pill-muted", text: "this node" })] : null),
        el("td", { class: "mono", text: m.addr }),
        el("td", {}, el("span", { class: "pill " + (memberPill[m.state] || "pill-muted"), text: m.state })),
        el("td", m.link_since ? { title: "since " + fmt.time(m.link_since) } : {},
          m.local ? "—" : el("span", { class: "pill " + (linkPill[m.link] || "pill-muted"), text: m.link || "none" })),
        el("td", { class: "num", text: fmt.int(m.routes) }),
        el("td", { class: "num", text: m.local ? "—" : fmt.bytes(m.queued_bytes) }),
        el("td", { class: "num", text: fmt.int(m.inflight) }),
        el("td", { class: "num", text: fmt.int(m.forwarded) }),
        el("td", { class: "num", text: fmt.int(m.received) }),
        el("td", { class: "num", text: fmt.int(m.dropped) }))));
    };
    const load = async () => {
      try {
        show(await api("GET", "/api/v1/cluster"));
      } catch (e) {
        if (e.status === 404) {
          state.clustered = false;
          $("#nav-cluster").hidden = true;
          summary.replaceChildren(el("dt", { text: "Cluster" }), el("dd", { text: "This node is not part of a cluster." }));
          tbody.replaceChildren();
          drainBtn.hidden = true;
        } else if (e.status !== 401) {
          tbody.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: String(cols.length), text: e.message })));
        }
      }
    };
    async function drain() {
      const body = el("p", {}, "Drain ", el("code", { text: (state.info && state.info.node) || "this node" }),
        "? It leaves the cluster gracefully; it takes part again only after a restart.");
      if (!(await modal("Drain node", body, "Drain", true))) return;
      try {
        await api("POST", "/api/v1/cluster/drain");
        toast("Drain started");
      } catch (e) { toast(e.message, true); }
      load();
    }
    every(5000, () => { if ($("#modal").hidden) load(); });
  }

  // ---------- start ----------
  document.addEventListener("DOMContentLoaded", async () => {
    $("#login-form").addEventListener("submit", doLogin);
    $("#logout").addEventListener("click", logout);
    $("#theme-toggle").addEventListener("click", () => {
      const t = currentTheme() === "dark" ? "light" : "dark";
      localStorage.setItem("isobar-theme", t);
      applyTheme(t);
      route();
    });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#modal").hidden) $("#modal-cancel").click(); });
    window.addEventListener("hashchange", route);
    try {
      const s = await api("GET", "/api/v1/session");
      if (!s.csrf_token) { showLogin(""); return; }
      enter(s);
    } catch (e) {
      if (e.status !== 401) showLogin(e.message);
    }
  });
})();
