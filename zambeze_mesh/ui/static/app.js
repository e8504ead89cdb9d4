// zambeze-mesh web view: plain JS, no build step, no external requests.
// Pages (hash routes): #/mesh, #/campaigns, #/campaign/<id>, #/data. Live data comes from
// Server-Sent Events; every text from the mesh goes through textContent.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token")
  || sessionStorage.getItem("zmesh_token") || "";
if (TOKEN) sessionStorage.setItem("zmesh_token", TOKEN);
const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"]);
const FINAL_CAMPAIGN = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const COLORS = {
  SUCCEEDED: "#4caf50", RUNNING: "#2196f3", STAGING: "#03a9f4", AWARDED: "#5c6bc0",
  BIDDING: "#9575cd", READY: "#b39ddb", PENDING: "#cfd4da", RETRYING: "#ffb300",
  FAILED: "#f44336", CANCELLED: "#795548", SKIPPED: "#ff9800", QUEUED: "#9c27b0",
};
const DARK = new Set(["CANCELLED", "FAILED", "AWARDED", "BIDDING", "QUEUED"]);  // white text
const MAX_EVENT_ROWS = 300;
const DENSE_EDGES = 150;  // above this many edges a DAG page draws the selected activity's only
const SVGNS = "http://www.w3.org/2000/svg";
// Figures for tests and the benchmark.
window.zmeshStats = { firstPaint: null, events: 0, lastSeq: 0, finalAt: null, renders: 0 };

let current = null; // cleanup function of the page shown

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

// Replace el's children; nested arrays flattened, null/undefined skipped.
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined));
}

function s(tag, attrs) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

async function api(path, opts) {
  const resp = await fetch(path, { credentials: "same-origin", ...(opts || {}) });
  const body = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function live(url, handlers) {
  const src = new EventSource(url);
  const conn = document.getElementById("conn");
  src.onopen = () => conn.classList.add("live");
  src.onerror = () => conn.classList.remove("live");
  for (const [name, fn] of Object.entries(handlers)) {
    src.addEventListener(name, (e) => fn(JSON.parse(e.data), e));
  }
  return src;
}

function ago(seconds) {
  const d = Math.max(0, Date.now() / 1000 - seconds);
  if (d < 60) return `${Math.floor(d)} s ago`;
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  return `${Math.floor(d / 3600)} h ago`;
}

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "—";
  const sec = ms / 1000;
  if (sec < 60) return `${sec.toFixed(1)} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${Math.floor(sec % 60)} s`;
  return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
}

function bar(done, total, failed) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  const b = h("span", { class: "bar" + (failed ? " failed" : "") }, h("span"));
  b.firstChild.style.width = pct + "%";
  return b;
}

// ---------------------------------------------------------------- Mesh page
function meshPage(main) {
  const tbody = h("tbody");
  const title = h("span", { class: "muted" });
  const err = h("p", { class: "error" });
  main.append(
    h("h2", {}, "Mesh ", title),
    err,
    h("table", { id: "members" },
      h("thead", {}, h("tr", {}, ["Name", "Status", "Address", "Labels", "Plugins",
        "Slots used / free", "Incarnation", "Last change"].map((t) => h("th", {}, t)))),
      tbody));
  let last = null;
  function render() {
    if (!last) return;
    fill(tbody, last.members.map((m) => h("tr", {
      "data-member": m.name, "data-status": m.status,
    },
      h("td", {}, h("b", {}, m.name), m.self ? h("span", { class: "muted" }, " (this agent)") : null),
      h("td", {}, h("span", { class: "badge " + m.status }, m.status)),
      h("td", {}, m.address),
      h("td", {}, Object.entries(m.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))),
      h("td", {}, m.plugins.map((p) => h("span", { class: "chip" }, p))),
      h("td", { class: "num" }, `${m.used} / ${m.free}`),
      h("td", { class: "num" }, m.incarnation),
      h("td", { class: "muted" }, m.changed === null ? "not since the view started" : ago(m.changed)))));
  }
  const src = live("/api/stream/members", {
    members: (snap) => {
      if (snap.error) { err.textContent = snap.error; return; }
      err.textContent = "";
      last = snap;
      title.textContent = `${snap.mesh} · seen from ${snap.self}`;
      render();
    },
  });
  const timer = setInterval(render, 1000);
  return () => { src.close(); clearInterval(timer); };
}

// ----------------------------------------------------------- Campaigns page
function campaignsPage(main) {
  const tbody = h("tbody");
  const err = h("p", { class: "error" });
  const filter = h("select", { id: "state-filter" },
    ["all", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"].map((v) => h("option", { value: v }, v)));
  main.append(
    h("h2", {}, "Campaigns"),
    h("div", { class: "toolbar" }, h("label", {}, "State ", filter)),
    err,
    h("table", { id: "campaigns" },
      h("thead", {}, h("tr", {}, ["Name", "State", "Progress", "Monitor", "Started", "Duration"]
        .map((t) => h("th", {}, t)))),
      tbody));
  let last = null;
  function render() {
    if (!last) return;
    const want = filter.value;
    const rows = last.campaigns.filter((c) => want === "all" || c.state === want);
    fill(tbody, rows.map((c) => h("tr", { "data-campaign": c.id, "data-state": c.state },
      h("td", {}, h("a", { href: `#/campaign/${encodeURIComponent(c.id)}` }, c.name),
        h("div", { class: "muted" }, c.id)),
      h("td", {}, h("span", { class: "badge " + c.state }, c.state)),
      h("td", {}, bar(c.done, c.total, c.failed), ` ${c.done}/${c.total}`,
        c.failed ? h("span", { class: "error" }, ` (${c.failed} failed)`) : null),
      h("td", {}, c.monitor),
      h("td", {}, new Date(c.created_ms).toLocaleString()),
      h("td", { class: "num" }, c.state === "RUNNING" ? duration(Date.now() - c.created_ms) : "—"))));
  }
  filter.addEventListener("change", render);
  const src = live("/api/stream/campaigns", {
    campaigns: (snap) => {
      if (snap.error) { err.textContent = snap.error; return; }
      err.textContent = "";
      last = snap;
      render();
    },
  });
  const timer = setInterval(render, 1000);
  return () => { src.close(); clearInterval(timer); };
}

// ------------------------------------------------------------ Campaign page
function campaignPage(main, cid) {
  const st = { acts: new Map(), campaign: null, page: 0, nodes: new Map(), dirty: new Set(),
    newEvents: [], selected: null, src: null, closed: false, endMs: null, lastSeq: 0 };
  const head = h("div", { class: "card" });
  const pager = h("span", { class: "muted", id: "pager" });
  const prev = h("button", { id: "prev", onclick: () => showPage(st.page - 1) }, "◀");
  const next = h("button", { id: "next", onclick: () => showPage(st.page + 1) }, "▶");
  const svgBox = h("div", { class: "dagbox" });
  const detail = h("div", { class: "card", id: "detail" }, h("p", { class: "muted" }, "Click an activity."));
  const events = h("tbody");
  const legend = h("div", { class: "legend" }, Object.entries(COLORS).map(([k, c]) => {
    const i = h("i"); i.style.background = c; return h("span", {}, i, k);
  }));
  main.append(head,
    h("div", { class: "layout" },
      h("div", {}, h("div", { class: "toolbar" }, h("b", {}, "DAG"), prev, pager, next, legend), svgBox),
      detail),
    h("h3", {}, "Events"),
    h("div", { class: "events card" }, h("table", { id: "events" },
      h("thead", {}, h("tr", {}, ["Seq", "Time", "Activity", "State", "Attempt", "Agent", "Message"]
        .map((t) => h("th", {}, t)))), events)));

  const cancel = h("button", { class: "danger", id: "cancel", onclick: doCancel }, "Cancel campaign");

  function renderHead() {
    const c = st.campaign;
    const acts = [...st.acts.values()];
    const done = acts.filter((a) => FINAL.has(a.state)).length;
    const failed = acts.filter((a) => a.state === "FAILED").length;
    const final = FINAL_CAMPAIGN.has(c.state);
    const end = final ? st.endMs : Date.now();
    cancel.disabled = final;  // one button for the page's lifetime
    fill(head,
      h("div", { class: "toolbar" },
        h("h2", { style: "margin:0" }, c.name),
        h("span", { class: "badge " + c.state, id: "campaign-state", "data-state": c.state }, c.state),
        h("span", { class: "muted" }, c.id), cancel),
      h("div", {}, bar(done, acts.length, failed),
        h("span", { id: "progress" }, ` ${done}/${acts.length} done`),
        failed ? h("span", { class: "error" }, ` · ${failed} failed`) : null,
        h("span", { class: "muted" }, ` · monitor ${c.monitor} · started `
          + `${new Date(c.created_ms).toLocaleString()} · ${duration(end ? end - c.created_ms : null)}`)),
      final && c.message ? h("pre", { id: "campaign-message" }, c.message) : null);
  }

  async function doCancel() {
    if (!confirm(`Cancel campaign ${st.campaign.name}?`)) return;
    try {
      await api(`/api/campaigns/${encodeURIComponent(cid)}/cancel`, {
        method: "POST", headers: { "X-Zmesh-Token": TOKEN },
      });
    } catch (e) {
      alert("Cancel failed: " + e.message);
    }
  }

  function nodeColor(a) { return COLORS[a.state] || "#e0e0e0"; }

  function showPage(n) {
    const pages = st.layout.pages;
    st.page = Math.max(0, Math.min(pages.length - 1, n));
    const p = pages[st.page] || { nodes: [], edges: [], cols: 1, rows: 1 };
    pager.textContent = `page ${st.page + 1} of ${pages.length} · ${p.nodes.length} activities`;
    prev.disabled = st.page === 0;
    next.disabled = st.page >= pages.length - 1;
    const W = 170, H = 44, GX = 60, GY = 14, PAD = 16;
    const width = PAD * 2 + p.cols * W + (p.cols - 1) * GX;
    const height = PAD * 2 + p.rows * H + (p.rows - 1) * GY;
    const svg = s("svg", { id: "dag", width, height, viewBox: `0 0 ${width} ${height}` });
    const defs = s("defs");
    const marker = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
    marker.append(s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9ca3af" }));
    defs.append(marker); svg.append(defs);
    const at = new Map();
    for (const [name, col, row] of p.nodes) at.set(name, [PAD + col * (W + GX), PAD + row * (H + GY)]);
    // A dense page draws only the selected activity's edges (else they hide the nodes).
    const dense = p.edges.length > DENSE_EDGES;
    const edgeLayer = s("g");
    svg.append(edgeLayer);
    st.drawEdges = () => {
      const sel = st.selected;
      const shown = dense ? p.edges.filter(([u, v]) => u === sel || v === sel) : p.edges;
      edgeLayer.replaceChildren(...shown.map(([u, v]) => {
        const [x1, y1] = at.get(u), [x2, y2] = at.get(v);
        const sx = x1 + W, sy = y1 + H / 2, ex = x2, ey = y2 + H / 2, mx = (sx + ex) / 2;
        return s("path", { class: "edge", d: `M${sx},${sy} C${mx},${sy} ${mx},${ey} ${ex},${ey}` });
      }));
    };
    st.drawEdges();
    if (dense) pager.textContent += ` · ${p.edges.length} edges: click an activity to see its own`;
    st.nodes.clear();
    for (const [name] of p.nodes) {
      const a = st.acts.get(name);
      const [x, y] = at.get(name);
      const g = s("g", { class: "node", transform: `translate(${x},${y})` });
      const rect = s("rect", { width: W, height: H });
      const t1 = s("text", { x: 8, y: 17 });
      t1.textContent = name.length > 24 ? name.slice(0, 23) + "…" : name;
      const t2 = s("text", { x: 8, y: 34, class: "sub" });
      g.append(rect, t1, t2);
      g.addEventListener("click", () => select(name));
      svg.append(g);
      st.nodes.set(name, { g, rect, t2 });
      paintNode(a);
    }
    svgBox.replaceChildren(svg);
  }

  function paintNode(a) {
    const n = st.nodes.get(a.name);
    if (!n) return;
    n.g.setAttribute("data-name", a.name);
    n.g.setAttribute("data-state", a.state);
    n.g.classList.toggle("sel", st.selected === a.name);
    n.rect.setAttribute("fill", nodeColor(a));
    n.g.classList.toggle("dark", DARK.has(a.state));
    n.t2.textContent = `${a.state.toLowerCase()}${a.agent ? " · " + a.agent : ""}${a.attempt > 1 ? " · #" + a.attempt : ""}`;
  }

  function select(name) {
    const a = st.acts.get(name);
    if (!a) return;
    if (a.page !== undefined && a.page !== st.page) showPage(a.page);
    const old = st.selected;
    st.selected = name;
    if (old && st.acts.has(old)) paintNode(st.acts.get(old));
    paintNode(st.acts.get(name));
    if (st.drawEdges) st.drawEdges();
    renderDetail();
  }

  function renderDetail() {
    const a = st.acts.get(st.selected);
    if (!a) return;
    const d = a.detail || {};
    const rows = [["State", h("span", { class: "badge " + a.state, id: "detail-state" }, a.state)],
      ["Agent", a.agent || "—"], ["Attempt", a.attempt || "—"], ["Message", a.message || "—"]];
    if (d.exit_code !== undefined) rows.push(["Exit code", h("span", { id: "exit-code" }, d.exit_code)]);
    if (d.output_dir) rows.push(["Output dir", d.output_dir]);
    if (a.staged && a.staged.size) {
      rows.push(["Staged", h("div", { id: "staged" }, [...a.staged].map(([uri, x]) => h("div", {},
        `${Number(x.bytes).toLocaleString()} bytes` + (x.rate ? ` at ${x.rate} MiB/s` : ""),
        h("div", { class: "muted" }, uri))))]);
    }
    if (a.depends_on && a.depends_on.length) rows.push(["Depends on", a.depends_on.join(", ")]);
    fill(detail,
      h("h3", { style: "margin-top:0" }, a.name),
      h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      d.stdout_tail ? [h("h3", {}, "stdout (tail)"), h("pre", { id: "stdout-tail" }, d.stdout_tail)] : null,
      d.stderr_tail ? [h("h3", {}, "stderr (tail)"), h("pre", { id: "stderr-tail" }, d.stderr_tail)] : null);
  }

  // What an event older than the snapshot still tells: staging figures, the end time.
  function remember(ev) {
    const a = ev.activity && st.acts.get(ev.activity);
    if (a && ev.detail && ev.detail.bytes && ev.attempt === a.attempt) {
      staged(a, ev.detail);
      st.dirty.add(a.name);
    } else if (!ev.activity && FINAL_CAMPAIGN.has(ev.campaign_state)) {
      st.endMs = ev.time_ms;
    }
  }

  // Inputs staged by the current attempt: uri -> {bytes, rate}.
  function staged(a, d) {
    if (!a.staged) a.staged = new Map();
    a.staged.set(d.uri || "input", { bytes: d.bytes, rate: d.rate_mib_s });
  }

  function apply(ev) {
    if (ev.activity) {
      const a = st.acts.get(ev.activity);
      if (!a) return;
      if (ev.attempt && ev.attempt !== a.attempt) { a.detail = {}; a.staged = null; }
      a.state = ev.state; a.attempt = ev.attempt || a.attempt;
      if (ev.agent) a.agent = ev.agent;
      a.message = ev.message;
      a.detail = Object.assign(a.detail || {}, ev.detail);
      if (ev.detail && ev.detail.bytes) staged(a, ev.detail);
      st.dirty.add(a.name);
    } else if (ev.campaign_state) {
      st.campaign.state = ev.campaign_state;
      if (ev.message) st.campaign.message = ev.message;
      if (FINAL_CAMPAIGN.has(ev.campaign_state)) {
        st.endMs = ev.time_ms;
        window.zmeshStats.finalAt = performance.now();
      }
    }
  }

  let frame = 0;
  function schedule() {
    if (!frame) frame = requestAnimationFrame(flush);
  }
  function flush() {
    frame = 0;
    for (const name of st.dirty) paintNode(st.acts.get(name));
    if (st.selected && st.dirty.has(st.selected)) renderDetail();
    st.dirty.clear();
    const fresh = st.newEvents.slice(-MAX_EVENT_ROWS);
    st.newEvents = [];
    const frag = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i--) {
      const e = fresh[i];
      frag.append(h("tr", { "data-seq": e.seq, "data-activity": e.activity, "data-state": e.state || e.campaign_state },
        h("td", { class: "num" }, e.seq),
        h("td", { class: "num" }, new Date(e.time_ms).toLocaleTimeString()),
        h("td", {}, e.activity ? h("a", { class: "link", onclick: () => select(e.activity) }, e.activity) : h("i", {}, "campaign")),
        h("td", {}, h("span", { class: "badge " + (e.state || e.campaign_state) }, e.state || e.campaign_state)),
        h("td", { class: "num" }, e.attempt || ""),
        h("td", {}, e.agent),
        h("td", {}, e.message)));
    }
    events.prepend(frag);
    while (events.childElementCount > MAX_EVENT_ROWS) events.lastElementChild.remove();
    renderHead();
    window.zmeshStats.renders++;
  }

  function follow(after) {
    if (st.closed) return;
    st.src = live(`/api/stream/campaigns/${encodeURIComponent(cid)}?after=${after}`, {
      events: (batch) => {
        for (const ev of batch) {
          if (ev.seq <= st.lastSeq) continue;  // already seen
          st.lastSeq = ev.seq;
          if (ev.seq > st.snapshotSeq) apply(ev);
          else remember(ev);
          st.newEvents.push(ev);
        }
        window.zmeshStats.events = st.lastSeq;
        window.zmeshStats.lastSeq = st.lastSeq;
        schedule();
      },
      end: () => { st.src.close(); },
      failure: (e) => {
        st.src.close();
        setTimeout(() => follow(st.lastSeq), 1000);
      },
    });
  }

  api(`/api/campaigns/${encodeURIComponent(cid)}`).then((c) => {
    st.campaign = c;
    st.layout = c.layout;
    st.snapshotSeq = c.last_seq;
    for (const a of c.activities) st.acts.set(a.name, a);
    renderHead();
    showPage(0);
    window.zmeshStats.firstPaint = performance.now();
    document.body.setAttribute("data-ready", "1");
    // The event table shows the latest events before the snapshot too.
    st.lastSeq = Math.max(0, c.last_seq - 200);
    follow(st.lastSeq);
  }).catch((e) => {
    fill(head, h("p", { class: "error" }, `Campaign ${cid}: ${e.message}`));
  });
  const timer = setInterval(() => { if (st.campaign) renderHead(); }, 1000);
  return () => { st.closed = true; if (st.src) st.src.close(); clearInterval(timer); };
}

// ----------------------------------------------------------------- Data page
// Browse an agent's @agentdir and exported roots; files download through this server.
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i ? `${v.toFixed(1)} ${units[i]}` : `${n} B`;
}

function dataPage(main) {
  const agentSel = h("select", { id: "data-agent" });
  const rootSel = h("select", { id: "data-root" });
  const up = h("button", { id: "data-up", onclick: () => { if (st.parent) open(st.parent); } }, "Up");
  const refresh = h("button", { id: "data-refresh", onclick: () => open(st.uri) }, "Refresh");
  const where = h("code", { id: "data-uri" });
  const info = h("span", { class: "muted", id: "data-info" });
  const err = h("p", { class: "error", id: "data-error" });
  const tbody = h("tbody");
  main.append(
    h("h2", {}, "Data"),
    h("div", { class: "toolbar" }, h("label", {}, "Agent ", agentSel), h("label", {}, "Root ", rootSel),
      up, refresh),
    h("div", { class: "toolbar" }, where, info),
    err,
    h("table", { id: "data-entries" },
      h("thead", {}, h("tr", {}, ["Name", "Size", "Modified"].map((t) => h("th", {}, t)))),
      tbody));
  const st = { members: [], uri: null, root: null, parent: null, seq: 0, closed: false };

  function rootsOf(name) {
    const m = st.members.find((x) => x.name === name);
    return [["@agentdir", `${name}://.`], ...((m && m.roots) || []).map((r) => [r, `${name}://${r}`])];
  }

  // The parent of uri, not above the chosen root (null at the root).
  function parentOf(uri) {
    if (uri === st.root) return null;
    const [name, path] = uri.split(/:\/\/(.*)/s);
    const cut = path.replace(/\/+$/, "").lastIndexOf("/");
    const parent = `${name}://${cut < 0 ? "." : (cut === 0 ? "/" : path.slice(0, cut))}`;
    return parent.length < st.root.length ? st.root : parent;
  }

  async function open(uri) {
    const seq = ++st.seq;
    st.uri = uri;
    st.parent = parentOf(uri);
    up.disabled = !st.parent;
    where.textContent = uri;
    document.body.removeAttribute("data-ready");
    try {
      const r = await api(`/api/data/list?uri=${encodeURIComponent(uri)}`);
      if (seq !== st.seq || st.closed) return;
      err.textContent = "";
      info.textContent = `${r.entries.length} ${r.entries.length === 1 ? "entry" : "entries"}`
        + (r.truncated ? " (truncated: the first 10,000 by name)" : "");
      fill(tbody, r.entries.map((e) => h("tr", { "data-name": e.name, "data-kind": e.is_dir ? "dir" : "file" },
        h("td", {}, e.is_dir
          ? h("a", { class: "link dir", onclick: () => open(e.uri) }, e.name + "/")
          : h("a", { class: "file", href: `/api/data/download?uri=${encodeURIComponent(e.uri)}`,
            download: e.name }, e.name)),
        h("td", { class: "num" }, e.is_dir ? "—" : bytes(e.size)),
        h("td", { class: "num" }, new Date(e.mtime_ms).toLocaleString()))));
    } catch (e) {
      if (seq !== st.seq || st.closed) return;
      err.textContent = `${uri}: ${e.message}`;
      info.textContent = "";
      tbody.replaceChildren();
    }
    document.body.setAttribute("data-ready", "1");
  }

  function pickRoot() {
    st.root = rootSel.value;
    open(st.root);
  }

  function pickAgent() {
    fill(rootSel, rootsOf(agentSel.value).map(([label, uri]) => h("option", { value: uri }, label)));
    pickRoot();
  }

  agentSel.addEventListener("change", pickAgent);
  rootSel.addEventListener("change", pickRoot);
  api("/api/members").then((snap) => {
    if (st.closed) return;
    st.members = snap.members;
    const usable = snap.members.filter((m) => m.status === "alive" || m.status === "suspect");
    fill(agentSel, usable.map((m) => h("option", { value: m.name, selected: m.self },
      m.name + (m.self ? " (this agent)" : ""))));
    pickAgent();
  }).catch((e) => { err.textContent = e.message; });
  return () => { st.closed = true; };
}

// ------------------------------------------------------------------ router
function route() {
  if (current) current();
  const main = document.getElementById("main");
  main.replaceChildren();
  document.body.removeAttribute("data-ready");
  const hash = location.hash || "#/mesh";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  }
  const m = hash.match(/^#\/campaign\/(.+)$/);
  if (m) current = campaignPage(main, decodeURIComponent(m[1]));
  else if (hash.startsWith("#/campaigns")) current = campaignsPage(main);
  else if (hash.startsWith("#/data")) current = dataPage(main);
  else current = meshPage(main);
}

window.addEventListener("hashchange", route);
route();
