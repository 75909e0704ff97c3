// Switchyard dashboard: read-only views of the config service, kept live by server-sent
// events (/events). Everything is rendered with DOM APIs (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(ms).toLocaleString();
}

class AuthError extends Error {}

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401 || r.status === 403) throw new AuthError(r.status);
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// One refresher per view: runs at most one fetch at a time and re-runs once if asked again
// meanwhile, so bursts of events cost one extra fetch, not one per event.
function refresher(name, fn) {
  let running = false;
  let again = false;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        await fn();
      } while (again);
      setStatus(name, null);
    } catch (e) {
      if (e instanceof AuthError) showLogin();
      else setStatus(name, e.message);
    } finally {
      running = false;
    }
  };
  return run;
}

const problems = new Map();
function setStatus(name, msg) {
  if (msg) problems.set(name, msg); else problems.delete(name);
  $("status").textContent = [...problems.values()].join(" · ");
}

// Rows seen before, to flash what is new.
const seen = { topics: new Set(), versions: new Set(), clients: new Set() };
let firstRender = { topics: true, versions: true, clients: true };
function isFresh(kind, key) {
  const fresh = !firstRender[kind] && !seen[kind].has(key);
  seen[kind].add(key);
  return fresh;
}

// ---- clusters and topics ----

const refreshState = refresher("state", async () => {
  const q = $("filter").value.trim();
  const s = await getJSON("/api/state" + (q ? "?q=" + encodeURIComponent(q) : ""));
  $("version").textContent = "version " + s.version;
  document.body.dataset.version = s.version;
  const byCluster = new Map(s.clusters.map((c) => [c.name, []]));
  for (const t of s.topics) {
    if (!byCluster.has(t.cluster)) byCluster.set(t.cluster, []);
    byCluster.get(t.cluster).push(t);
  }
  const list = $("cluster-list");
  const out = [];
  for (const c of s.clusters) {
    const topics = byCluster.get(c.name) || [];
    const labels = Object.entries(c.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
    const head = el("div", { class: "cluster-head" },
      el("b", {}, c.name),
      el("span", { class: "badge " + c.state }, c.state),
      el("span", { class: "label" }, c.topics + (c.topics === 1 ? " topic" : " topics")),
      labels ? el("span", { class: "label" }, labels) : null,
      el("span", { class: "label", title: "bootstrap servers" }, (c.bootstrap || []).join(", ")));
    const body = topics.length
      ? el("table", { class: "topics" },
          el("thead", {}, el("tr", {}, el("th", {}, "Logical topic"), el("th", {}, "Physical topic"),
            el("th", {}, "Partitions"), el("th", {}, "Owner"))),
          el("tbody", {}, ...topics.map((t) => {
            const tr = el("tr", { "data-topic": t.name },
              el("td", {}, t.name), el("td", {}, t.physical),
              el("td", { class: "num" }, t.partitions || "–"), el("td", {}, t.owner || "–"));
            if (isFresh("topics", c.name + "/" + t.name)) tr.classList.add("fresh");
            return tr;
          })))
      : el("p", { class: "empty" }, q && c.topics ? "No topic matches the filter." : "No topics.");
    out.push(el("div", { class: "cluster", "data-cluster": c.name }, head, body));
  }
  list.replaceChildren(...(out.length ? out : [el("p", { class: "empty" }, "No clusters configured yet.")]));
  firstRender.topics = false;
  let summary = s.topics_total + " topics on " + s.clusters.length + " clusters";
  if (q) summary += " · " + s.topics_matched + " match";
  if (s.truncated) summary += " · showing the first " + s.topics.length;
  $("topics-summary").textContent = summary;
});

let filterTimer;
$("filter").addEventListener("input", () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(refreshState, 200);
});

// ---- clients ----

// "orders@east, audit@west (group g)" — what a client produces or consumes, where.
function ends(list, groups) {
  if (!list || !list.length) return "–";
  const shown = list.slice(0, 4).map((e) => e.logical_topic + (e.cluster ? "@" + e.cluster : "") +
    (groups && e.group ? " (" + e.group + ")" : ""));
  return shown.join(", ") + (list.length > 4 ? ", +" + (list.length - 4) + " more" : "");
}

const refreshClients = refresher("clients", async () => {
  const l = await getJSON("/api/clients");
  const rows = l.clients.map((c) => {
    const behind = c.versions_behind > 0;
    const tr = el("tr", { "data-client": c.client_id },
      el("td", {}, c.app),
      el("td", { title: c.client_id }, c.client_id),
      el("td", {}, [c.language, c.sdk_version].filter(Boolean).join(" ") || "–"),
      el("td", {}, el("span", { class: "applied" }, c.applied_version), " ",
        el("span", { class: "badge " + (behind ? "behind" : "current") },
          behind ? c.versions_behind + " behind" : "current")),
      el("td", { class: "ends" }, ends(c.producing)),
      el("td", { class: "ends" }, ends(c.consuming, true)),
      el("td", {}, c.hostname ? c.hostname + (c.pid ? ":" + c.pid : "") : "–"),
      el("td", { "data-seen": c.last_seen_unix_ms }, ago(c.last_seen_unix_ms)));
    if (isFresh("clients", c.client_id)) tr.classList.add("fresh");
    return tr;
  });
  firstRender.clients = false;
  $("client-rows").replaceChildren(...rows);
  $("clients-empty").hidden = rows.length > 0;
  let summary = l.total + (l.total === 1 ? " client" : " clients");
  if (l.behind) summary += " · " + l.behind + " behind version " + l.current_version;
  if (l.truncated) summary += " · showing " + l.clients.length;
  $("clients-summary").textContent = summary;
});

// ---- history ----

function diffLines(diff) {
  const box = el("div", { class: "diff" });
  for (const d of diff) {
    const sign = d.action === "added" ? "+" : d.action === "removed" ? "-" : "~";
    box.append(el("div", { class: d.action }, sign + " " + d.kind + " " + d.name));
    for (const f of d.fields) {
      let text;
      if (d.action === "added") text = f.new;
      else if (d.action === "removed") text = f.old;
      else text = (f.old || "(unset)") + " → " + (f.new || "(unset)");
      box.append(el("div", { class: d.action }, "    " + f.field + ": " + text));
    }
  }
  return box;
}

const HISTORY_PAGE = 50;
let historyShown = HISTORY_PAGE; // grows with "Older versions"
const refreshHistory = refresher("history", async () => {
  const h = await getJSON("/api/history?limit=" + historyShown);
  // Keep the diffs the reader opened or closed as they were; otherwise only the newest is open.
  const toggled = new Map([...document.querySelectorAll("#history-list li[data-version] details[data-user]")]
    .map((d) => [d.closest("li").dataset.version, d.open]));
  const items = h.entries.map((e, i) => {
    const li = el("li", { "data-version": e.version },
      el("div", { class: "meta" },
        el("span", { class: "v" }, "v" + e.version),
        el("span", {}, e.author || "anonymous"),
        el("span", { class: "muted", title: new Date(e.created_unix_ms).toLocaleString() }, ago(e.created_unix_ms)),
        el("span", { class: "counts" },
          el("span", { class: "a" }, "+" + e.added), " ",
          el("span", { class: "c" }, "~" + e.changed), " ",
          el("span", { class: "r" }, "-" + e.removed))),
      e.comment ? el("div", { class: "comment" }, e.comment) : null);
    if (e.diff && e.diff.length) {
      const key = String(e.version);
      const open = toggled.has(key) ? toggled.get(key) : i === 0;
      const det = el("details", { open, "data-user": toggled.has(key) ? "1" : null },
        el("summary", {}, "diff"), diffLines(e.diff));
      det.querySelector("summary").addEventListener("click", () => { det.dataset.user = "1"; });
      li.append(det);
    }
    if (isFresh("versions", e.version)) li.classList.add("fresh");
    return li;
  });
  firstRender.versions = false;
  $("history-list").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "No changes yet.")]));
  $("history-summary").textContent = "current " + h.current_version + " · oldest kept " + h.oldest_version;
  const oldestShown = h.entries.length ? h.entries[h.entries.length - 1].version : 0;
  $("history-more").hidden = !(oldestShown > h.oldest_version + 1 && historyShown < 200);
});

$("history-more").addEventListener("click", () => {
  historyShown = Math.min(200, historyShown + HISTORY_PAGE);
  refreshHistory();
});

// ---- migrations ----

const PHASES = ["prepare", "switch", "sealed", "drain", "complete"];

function when(label, ms) {
  if (!ms) return null;
  return el("span", { class: "when" }, label + " ",
    el("span", { "data-seen": ms, title: new Date(ms).toLocaleString() }, ago(ms)));
}

// A duration: "0.8 s", "42 s", "12 min", "3.5 h".
function duration(ms) {
  if (ms < 10_000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 120_000) return Math.round(ms / 1000) + " s";
  if (ms < 7_200_000) return Math.round(ms / 60_000) + " min";
  return (ms / 3_600_000).toFixed(1) + " h";
}

// PREPARE → SWITCH → SEALED → DRAIN → COMPLETE, the current phase highlighted; an aborted
// migration shows the phases it reached, then ABORTING or ABORTED.
function stepper(x) {
  // An abort in progress (ABORTING: sends held while the destination's records are copied
  // back) shows like a finished one, with its own label.
  const aborted = x.phase === "aborted" || x.phase === "aborting";
  let reached = PHASES.indexOf(x.phase);
  if (aborted) reached = x.switched_unix_ms ? 1 : 0;
  const steps = PHASES.map((p, i) => {
    let state = i < reached ? "done" : i === reached ? "current" : "todo";
    if (aborted) state = i <= reached ? "done" : "skipped";
    return el("li", { class: state, "data-step": p, "aria-current": state === "current" ? "step" : null }, p.toUpperCase());
  });
  if (aborted) steps.splice(reached + 1, 0, el("li", { class: "current aborted", "data-step": x.phase, "aria-current": "step" }, x.phase.toUpperCase()));
  return el("ol", { class: "stepper" + (aborted ? " is-aborted" : "") }, ...steps);
}

function migrationCard(x) {
  const drained = x.groups.filter((g) => !x.groups_draining.includes(g));
  const active = !["complete", "aborted"].includes(x.phase);
  const from = x.from.cluster + "/" + x.from.topic;
  const to = x.to.cluster + "/" + x.to.topic;
  const producers = el("div", { class: "kv producers" },
    el("span", { class: "k" }, "Producers switched"),
    el("progress", { max: x.producers || 1, value: x.producers ? x.producers_switched : 0 }),
    el("span", { class: "num", "data-switched": x.producers_switched, "data-producers": x.producers },
      x.producers_switched + "/" + x.producers));
  const groups = el("div", { class: "kv groups" },
    el("span", { class: "k" }, "Consumer groups"),
    x.groups.length
      ? el("ul", { class: "group-list" }, ...x.groups.map((g) => {
          const draining = x.groups_draining.includes(g);
          const released = (x.ignored_groups || []).includes(g);
          const behind = (x.groups_behind || {})[g];
          const label = released ? "released" : draining ? "draining" : "drained";
          return el("li", { "data-group": g, "data-state": label },
            el("span", { class: "group-name" }, g),
            el("span", { class: "badge " + (draining ? "draining" : "drained") }, label),
            draining && behind > 0
              ? el("span", { class: "num", "data-behind": behind, title: "records below the seal the group has not committed yet" }, behind + " behind")
              : null);
        }))
      : el("span", { class: "muted" }, "none reporting"),
    x.groups.length ? el("span", { class: "num" }, drained.length + "/" + x.groups.length + " drained") : null);
  const late = el("div", { class: "kv" },
    el("span", { class: "k" }, "Late writes"),
    el("span", { class: "late" + (x.late_writes > 0 ? " warn" : ""), "data-late": x.late_writes,
      "data-copied": x.late_writes_copied,
      title: "records that reached the source after the seal, and how many were copied to the destination" },
      x.late_writes > 0 ? x.late_writes + " (" + x.late_writes_copied + " copied)" : String(x.late_writes)),
    x.phase === "complete"
      ? el("span", { class: "badge " + (x.source_retired ? "drained" : "draining"), "data-source": x.source_retired ? "retired" : "watched",
          title: "after COMPLETE the source is watched and late writes copied until it is retired" },
          x.source_retired ? "source retired" : "source watched")
      : null);
  const behind = x.clients_behind && active
    ? el("div", { class: "kv" }, el("span", { class: "k" }, "Clients behind"),
        el("span", { class: "badge behind", title: "clients of the topic that have not applied the route change yet" },
          x.clients_behind + " not on version " + x.switch_version))
    : null;
  const times = el("div", { class: "times muted" },
    when("started", x.created_unix_ms), when("switched", x.switched_unix_ms),
    when("sealed", x.sealed_unix_ms), when(x.phase === "aborted" ? "aborted" : "finished", x.finished_unix_ms),
    x.finished_unix_ms && x.created_unix_ms ? el("span", {}, "took " + duration(x.finished_unix_ms - x.created_unix_ms)) : null,
    x.author ? el("span", {}, "by " + x.author) : null);
  return el("div", {
    class: "migration phase-" + x.phase + (active ? " active" : ""),
    "data-migration": x.id, "data-migration-topic": x.topic, "data-phase": x.phase,
  },
    el("div", { class: "cluster-head" },
      el("b", {}, x.topic),
      el("span", { class: "badge phase " + x.phase }, x.phase.toUpperCase()),
      x.forced ? el("span", { class: "badge forced", title: "an operator forced a phase on (move-topic --advance)" }, "forced") : null,
      el("span", { class: "label mig-id" }, x.id)),
    el("div", { class: "route" }, from + " → " + to,
      el("span", { class: "muted" }, " · " + x.partitions + (x.partitions === 1 ? " partition" : " partitions"))),
    stepper(x),
    producers, groups, late, behind,
    x.note ? el("div", { class: "note" }, x.note) : null,
    x.comment ? el("div", { class: "comment muted" }, x.comment) : null,
    times);
}

const refreshMigrations = refresher("migrations", async () => {
  const m = await getJSON("/api/migrations");
  const list = $("migration-list");
  const active = m.migrations.filter((x) => !["complete", "aborted"].includes(x.phase)).length;
  $("migrations-summary").textContent = m.migrations.length
    ? active + " active · " + (m.migrations.length - active) + " finished" : "";
  if (!m.migrations.length) {
    list.replaceChildren(el("p", { class: "empty" },
      m.supported ? "No migrations." : "No migrations. (This config service version has no migration coordinator yet.)"));
    return;
  }
  // Newest first, as the service lists them.
  list.replaceChildren(...m.migrations.map(migrationCard));
});

// ---- live updates ----

let source;
function connect() {
  if (source) source.close();
  source = new EventSource("/events");
  const live = $("live");
  source.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  source.onerror = () => {
    live.className = "live off";
    live.textContent = "reconnecting…";
    // A refused stream (e.g. 401) closes for good: check whether we need to sign in.
    if (source.readyState === EventSource.CLOSED) {
      getJSON("/api/migrations").then(() => setTimeout(connect, 2000)).catch((e) => {
        if (e instanceof AuthError) showLogin(); else setTimeout(connect, 2000);
      });
    }
  };
  source.addEventListener("hello", () => {
    refreshState(); refreshClients(); refreshHistory(); refreshMigrations();
  });
  source.addEventListener("version", () => {
    refreshState(); refreshHistory(); refreshClients();
  });
  source.addEventListener("clients", () => refreshClients());
  source.addEventListener("migrations", () => refreshMigrations());
}

function showLogin() {
  if (source) { source.close(); source = null; }
  $("main").hidden = true;
  $("login").hidden = false;
  $("live").className = "live off";
  $("live").textContent = "signed out";
  $("login-token").focus();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = new URLSearchParams({ token: $("login-token").value });
  const r = await fetch("/login", { method: "POST", body, credentials: "same-origin" });
  if (r.ok) {
    $("login-token").value = "";
    $("login-error").hidden = true;
    $("login").hidden = true;
    $("main").hidden = false;
    connect();
  } else {
    $("login-error").textContent = r.status === 403 ? "That token is not valid." : "Sign-in failed (HTTP " + r.status + ").";
    $("login-error").hidden = false;
  }
});

// Relative times age without a refetch.
setInterval(() => {
  for (const e of document.querySelectorAll("[data-seen]")) e.textContent = ago(Number(e.dataset.seen));
}, 5000);

connect();
