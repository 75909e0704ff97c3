// Browser test of the config service's dashboard, in Debian's chromium driven by
// playwright-core (no browser download):
//   1. `switchyard serve --admin-listen`, an initial configuration applied with the CLI;
//   2. the dashboard shows clusters, topics and history, and its event stream is live;
//   3. changes applied with `switchyard apply -f` appear without a reload; the time from the
//      version's commit, and from the CLI printing / returning / starting, to the change
//      appearing on the page is measured and printed (not asserted);
//   4. SDK clients reporting their status (a minimal gRPC call over node's http2) appear in the
//      clients section without a reload, marked behind when their applied version is old;
//   5. with an admin token, the page asks for it and shows the data once signed in;
//   6. a topic moved between two real Kafka clusters (`switchyard move-topic`, forced on with
//      `--advance`) shows its migration's phase advance on the page, SWITCH → DRAIN → COMPLETE,
//      without a reload, with the producers switched and each group's drain status following
//      an SDK client's reports; the time from each CLI command returning to the phase showing
//      is printed (not asserted);
//   7. screenshots are saved as test artifacts.
//
// Environment: SWITCHYARD_BIN (the `switchyard` binary), ARTIFACT_DIR (screenshots),
// CHROMIUM (default /usr/bin/chromium), ROUNDS (live-update measurements, default 5),
// SWITCHYARD_KAFKA_CLUSTERS ("host:port;host:port", required: the migrations check fails
// without it), KAFKA_SH (default scripts/kafka.sh, creates the topic to move).
import { spawn } from "node:child_process";
import http2 from "node:http2";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const BIN = process.env.SWITCHYARD_BIN;
const ARTIFACTS = process.env.ARTIFACT_DIR || "../target/dashboard-test";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ROUNDS = Number(process.env.ROUNDS || 5);
const KAFKA_SH = process.env.KAFKA_SH || fileURLToPath(new URL("../scripts/kafka.sh", import.meta.url));
const STEP_MS = 15_000; // bound on any single wait
const KAFKA_MS = 90_000; // bound on creating a Kafka topic with the Kafka tools (a JVM start)
if (!BIN) throw new Error("set SWITCHYARD_BIN to the switchyard binary");

const work = mkdtempSync(join(tmpdir(), "switchyard-dashboard-"));
const cleanups = [];
let passed = 0;
let failed = 0;

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

/** Starts `switchyard serve` and resolves once it printed both of its addresses. */
async function serve(extraArgs = []) {
  const child = spawn(BIN, ["serve", "--in-memory", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  cleanups.push(() => child.kill("SIGTERM"));
  const lines = createInterface({ input: child.stdout });
  const addrs = await withTimeout(new Promise((resolve, reject) => {
    const found = {};
    lines.on("line", (l) => {
      let m;
      if ((m = l.match(/^listening on (\S+)$/))) found.grpc = m[1];
      if ((m = l.match(/^admin (http:\/\/\S+?)\/? /))) found.admin = m[1];
      if (found.grpc && found.admin) resolve(found);
    });
    child.on("exit", (code) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
  }), STEP_MS, "switchyard serve to print its addresses");
  return { child, endpoint: "http://" + addrs.grpc, admin: addrs.admin };
}

/** Runs the CLI; resolves with its output and the time it returned. */
function cli(endpoint, args, env = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const child = spawn(BIN, ["--endpoint", endpoint, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SWITCHYARD_AUTHOR: "browser-test", ...env },
    });
    let out = "";
    let printed = 0; // when the CLI printed that the service applied the change
    child.stdout.on("data", (d) => {
      out += d;
      if (!printed && /applied: version \d+/.test(out)) printed = Date.now();
    });
    child.stderr.on("data", (d) => { out += d; });
    child.on("exit", (code) => {
      const returned = Date.now();
      if (code === 0) resolve({ out, returned, printed });
      else reject(new Error(`switchyard ${args.join(" ")} exited ${code}: ${out}`));
    });
  }), STEP_MS, "switchyard " + args.join(" "));
}

// ---- a minimal MetadataService.ReportStatus client (protobuf encoded by hand) ----

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}
const key = (field, wireType) => varint((field << 3) | wireType);
const str = (field, s) => { const b = Buffer.from(s, "utf8"); return Buffer.concat([key(field, 2), varint(b.length), b]); };
const num = (field, n) => Buffer.concat([key(field, 0), varint(n)]);

/** ReportStatus(ClientStatus{...}); resolves when the call returns OK. */
function reportStatus(endpoint, c) {
  const ep = (field, e) => {
    const b = Buffer.concat([str(1, e.logical_topic), str(2, e.cluster), str(3, e.logical_topic), str(4, e.group || "")]);
    return Buffer.concat([key(field, 2), varint(b.length), b]);
  };
  const status = Buffer.concat([
    str(1, c.client_id), str(2, c.app), str(3, c.language), str(4, c.sdk_version),
    num(5, c.applied_version),
    ...(c.producing || []).map((e) => ep(6, e)),
    ...(c.consuming || []).map((e) => ep(7, e)),
    str(8, c.hostname), num(9, c.pid),
  ]);
  const msg = Buffer.concat([key(1, 2), varint(status.length), status]);
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(msg.length, 1);
  return withTimeout(new Promise((resolve, reject) => {
    const session = http2.connect(endpoint);
    session.on("error", reject);
    const req = session.request({
      ":method": "POST",
      ":path": "/switchyard.v1.MetadataService/ReportStatus",
      "content-type": "application/grpc",
      te: "trailers",
    });
    let code;
    req.on("response", (h) => { if (h["grpc-status"] !== undefined) code = h["grpc-status"]; });
    req.on("trailers", (t) => { if (t["grpc-status"] !== undefined) code = t["grpc-status"]; });
    req.on("data", () => {});
    req.on("error", reject);
    req.on("end", () => {
      session.close();
      if (code === "0") resolve();
      else reject(new Error(`ReportStatus ended with grpc-status ${code}`));
    });
    req.end(Buffer.concat([frame, msg]));
  }), STEP_MS, "ReportStatus");
}

function desired(topics) {
  const lines = [
    "clusters:",
    "  - name: east",
    '    bootstrap: ["127.0.0.1:9092"]',
    "    labels: { region: eu-west-1 }",
    "  - name: west",
    '    bootstrap: ["127.0.0.1:9093"]',
    "    labels: { region: us-east-1 }",
    "topics:",
  ];
  for (const [name, cluster, partitions] of topics) {
    lines.push(`  - name: ${name}`, `    cluster: ${cluster}`, `    partitions: ${partitions}`, "    owner: billing");
  }
  const f = join(work, `desired-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(f, lines.join("\n") + "\n");
  return f;
}

async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "switchyard-chromium-"));
  cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1366, height: 768 }, // a laptop screen
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  cleanups.push(() => ctx.close());
  return ctx;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

// ---- migrations (real Kafka) ----

/** The two Kafka clusters of the test command ("h:p;h:p"), or an error saying how to get them. */
function kafkaClusters() {
  const v = process.env.SWITCHYARD_KAFKA_CLUSTERS || "";
  const c = v.split(";").map((s) => s.trim()).filter(Boolean);
  if (c.length < 2) {
    throw new Error("SWITCHYARD_KAFKA_CLUSTERS must name two real Kafka clusters (\"host:port;host:port\"; " +
      `got ${JSON.stringify(v)}): the migrations test moves a topic between them. scripts/test.sh starts them; ` +
      "by hand: eval \"$(scripts/kafka.sh start 2)\"");
  }
  return c;
}

/** Creates a Kafka topic with the repo's Kafka tools (scripts/kafka.sh run TopicCommand). */
function createKafkaTopic(bootstrap, topic, partitions) {
  const args = [KAFKA_SH, "run", "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bootstrap,
    "--create", "--topic", topic, "--partitions", String(partitions), "--replication-factor", "1"];
  return withTimeout(new Promise((resolve, reject) => {
    const child = spawn("bash", args, { stdio: ["ignore", "pipe", "pipe"] });
    cleanups.push(() => child.kill("SIGTERM"));
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { out += d; });
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`kafka.sh run TopicCommand --create ${topic} exited ${code}: ${out}`))));
  }), KAFKA_MS, `creating Kafka topic ${topic} on ${bootstrap}`);
}

/** A desired-state file: clusters `first` and `second` on the real Kafka clusters, `topic` on first. */
function kafkaDesired(clusters, topic, partitions) {
  const f = join(work, `desired-kafka-${Date.now()}.yaml`);
  writeFileSync(f, [
    "clusters:",
    "  - name: first",
    `    bootstrap: ["${clusters[0]}"]`,
    "  - name: second",
    `    bootstrap: ["${clusters[1]}"]`,
    "topics:",
    `  - name: ${topic}`,
    "    cluster: first",
    `    partitions: ${partitions}`,
    "    owner: billing",
  ].join("\n") + "\n");
  return f;
}

async function migrationsCheck(ctx, topicReady, topic) {
  const clusters = kafkaClusters();
  const created = await topicReady;
  if (created instanceof Error) throw created;
  const srv = await serve(["--migration-client-grace-secs", "3600"]);
  const { out: applied } = await cli(srv.endpoint, ["apply", "-f", kafkaDesired(clusters, topic, 3), "-m", "topic to move"]);
  const v1 = Number((applied.match(/applied: version (\d+)/) || [])[1]);
  if (!v1) throw new Error("apply printed: " + applied);

  const p = await ctx.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(String(e)));
  p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await p.goto(srv.admin + "/", { timeout: STEP_MS });
  await p.waitForSelector("#live.on", { timeout: STEP_MS });
  await p.waitForSelector("#migration-list .empty", { timeout: STEP_MS });
  // Record, in the page, when each phase of the topic's migration first shows.
  await p.evaluate((t) => {
    window.__sameDocument = true;
    window.__phases = {};
    const sel = `[data-migration-topic="${CSS.escape(t)}"]`;
    const seen = () => {
      const card = document.querySelector(sel);
      if (card && !window.__phases[card.dataset.phase]) window.__phases[card.dataset.phase] = performance.timeOrigin + performance.now();
    };
    new MutationObserver(seen).observe(document.getElementById("migration-list"), { childList: true, subtree: true, attributes: true });
  }, topic);
  const shown = async (phase, returned) => {
    await p.waitForFunction((ph) => window.__phases[ph] > 0, phase, { timeout: STEP_MS, polling: 20 });
    return (await p.evaluate((ph) => window.__phases[ph], phase)) - returned;
  };
  const card = `[data-migration-topic="${topic}"]`;
  const text = async (sel) => (await p.textContent(`${card} ${sel}`)).trim();

  // An SDK client producing and consuming the topic on the source.
  const client = (applied_version, producesOn, consumesOn) => reportStatus(srv.endpoint, {
    client_id: "mover-1", app: "billing", language: "rust", sdk_version: "0.1.0", applied_version, hostname: "pay-2", pid: 5150,
    producing: [{ logical_topic: topic, cluster: producesOn }],
    consuming: [{ logical_topic: topic, cluster: consumesOn, group: "ledger" }],
  });
  await client(v1, "first", "first");

  const latency = {};
  // SWITCH: the route changed; the producer has not switched yet, the group reads the source.
  const started = await cli(srv.endpoint, ["move-topic", topic, "--to", "second"]);
  const id = (started.out.match(/^(mig-[0-9a-f]+) /m) || [])[1];
  const v2 = Number((started.out.match(/switched: version (\d+)/) || [])[1]);
  if (!id || !v2) throw new Error("move-topic printed: " + started.out);
  latency.switch = await shown("switch", started.returned);
  await p.waitForSelector(`${card}[data-migration="${id}"][data-phase="switch"] .stepper li.current[data-step="switch"]`, { timeout: STEP_MS });
  const route = await text(".route");
  if (route !== `first/${topic} → second/${topic} · 3 partitions`) throw new Error("route: " + route);
  await p.waitForSelector(`${card} .producers [data-switched="0"][data-producers="1"]`, { timeout: STEP_MS });
  await p.waitForSelector(`${card} li[data-group="ledger"][data-state="draining"]`, { timeout: STEP_MS });
  // The client has not applied the route change yet.
  await p.waitForSelector(`${card} .badge.behind`, { timeout: STEP_MS });
  if ((await p.$$(`${card} .stepper li.done`)).length !== 1) throw new Error("SWITCH: PREPARE is not the only phase done");

  // Progress updates live: the producer reports the destination.
  await client(v2, "second", "first");
  await p.waitForSelector(`${card} .producers [data-switched="1"][data-producers="1"]`, { timeout: STEP_MS });
  await p.waitForSelector(`${card} .badge.behind`, { state: "detached", timeout: STEP_MS });

  // DRAIN: forced on by the operator (SWITCH → SEALED, then the coordinator moves to DRAIN).
  const sealed = await cli(srv.endpoint, ["move-topic", "--advance", id]);
  latency.drain = await shown("drain", sealed.returned);
  await p.waitForSelector(`${card}[data-phase="drain"] .stepper li.current[data-step="drain"]`, { timeout: STEP_MS });
  if ((await p.$$(`${card} .stepper li.done`)).length !== 3) throw new Error("DRAIN: PREPARE, SWITCH and SEALED are not all done");
  await p.waitForSelector(`${card} .badge.forced`, { timeout: STEP_MS });
  await p.waitForSelector(`${card} li[data-group="ledger"][data-state="draining"]`, { timeout: STEP_MS });
  // The group finished the source.
  await client(v2, "second", "second");
  await p.waitForSelector(`${card} li[data-group="ledger"][data-state="drained"]`, { timeout: STEP_MS });
  await p.locator("#migrations").screenshot({ path: join(ARTIFACTS, "dashboard-migration-drain.png") });

  // COMPLETE.
  const done = await cli(srv.endpoint, ["move-topic", "--advance", id]);
  latency.complete = await shown("complete", done.returned);
  await p.waitForSelector(`${card}[data-phase="complete"] .stepper li.current[data-step="complete"]`, { timeout: STEP_MS });
  const late = await p.getAttribute(`${card} .late`, "data-late");
  if (late !== "0") throw new Error("late writes: " + late);
  if (!(await text(".times")).includes("finished")) throw new Error("no finish time: " + (await text(".times")));
  const summary = await p.textContent("#migrations-summary");
  if (summary !== "0 active · 1 finished") throw new Error("summary: " + summary);

  // ABORTED: moving the topic back (its old home is empty) and aborting before the seal shows
  // a second card, first in the list (newest first), with ABORTED after the phases it reached.
  const back = await cli(srv.endpoint, ["move-topic", topic, "--to", "first"]);
  const backId = (back.out.match(/^(mig-[0-9a-f]+) /m) || [])[1];
  if (!backId) throw new Error("move-topic printed: " + back.out);
  await p.waitForSelector(`[data-migration="${backId}"][data-phase="switch"]`, { timeout: STEP_MS });
  const aborting = await cli(srv.endpoint, ["move-topic", "--abort", backId]);
  // (The observer follows the topic's first card, which is now this one.) ABORTING: routed
  // back, producers hold their sends until the destination's records are copied back; this
  // service's coordinator waits for its clients (a start-up grace of an hour), so the operator
  // forces it: the first --advance releases the producers, the second finishes the abort.
  latency.aborting = await shown("aborting", aborting.returned);
  const stepsOf = () => p.$$eval(`[data-migration="${backId}"] .stepper li`, (ls) => ls.map((l) => l.dataset.step + ":" + l.className).join(" "));
  const abortingSteps = await stepsOf();
  if (abortingSteps !== "prepare:done switch:done aborting:current aborted sealed:skipped drain:skipped complete:skipped") {
    throw new Error("stepper of the aborting migration: " + abortingSteps);
  }
  await cli(srv.endpoint, ["move-topic", "--advance", backId]);
  const aborted = await cli(srv.endpoint, ["move-topic", "--advance", backId]);
  latency.aborted = await shown("aborted", aborted.returned);
  await p.waitForSelector(`[data-migration="${backId}"][data-phase="aborted"]`, { timeout: STEP_MS });
  const steps = await stepsOf();
  if (steps !== "prepare:done switch:done aborted:current aborted sealed:skipped drain:skipped complete:skipped") {
    throw new Error("stepper of the aborted migration: " + steps);
  }
  const order = await p.$$eval("#migration-list [data-migration]", (cs) => cs.map((c) => c.dataset.migration));
  if (order.join(" ") !== `${backId} ${id}`) throw new Error("cards not newest first: " + order.join(" "));
  if (!(await p.evaluate(() => window.__sameDocument === true))) throw new Error("the page was reloaded");

  const path = join(ARTIFACTS, "dashboard-migrations.png");
  await p.locator("#migrations").screenshot({ path });
  console.log("screenshot: " + path);
  for (const [phase, ms] of Object.entries(latency)) {
    console.log(`migration phase on the page, CLI returned -> ${phase.toUpperCase().padEnd(8)} shown: ${ms.toFixed(1)} ms`);
  }
  if (errors.length) throw new Error("errors in the page: " + errors.join(" | "));
  await p.close();
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const ctx = await launch();
  const browserErrors = [];

  // ---- open dashboard ----
  const srv = await serve();
  const topics = [["orders", "east", 6], ["payments", "east", 3], ["audit", "west", 1]];
  await cli(srv.endpoint, ["apply", "-f", desired(topics), "-m", "initial layout"]);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => browserErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") browserErrors.push(m.text()); });
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(srv.admin)) external.push(r.url()); });

  await check("the dashboard shows clusters, topics, history and a live event stream", async () => {
    await page.goto(srv.admin + "/", { timeout: STEP_MS });
    await page.waitForSelector("#live.on", { timeout: STEP_MS });
    await page.waitForSelector('.cluster[data-cluster="west"] tr[data-topic="audit"]', { timeout: STEP_MS });
    await page.waitForSelector('.cluster[data-cluster="east"] tr[data-topic="orders"]', { timeout: STEP_MS });
    await page.waitForSelector('#history-list li[data-version="1"]', { timeout: STEP_MS });
    const text = await page.textContent("#history-list");
    if (!text.includes("initial layout") || !text.includes("browser-test")) throw new Error("history lacks the comment or author: " + text);
    const version = await page.textContent("#version");
    if (version !== "version 1") throw new Error("header shows " + version);
    const migrations = await page.textContent("#migration-list");
    if (!migrations.includes("No migrations")) throw new Error("migrations section: " + migrations);
  });

  await check("SDK clients appear live in the clients section, the lagging one marked behind", async () => {
    const clients = [
      { client_id: "billing-7f3a", app: "billing", language: "rust", sdk_version: "0.1.0", applied_version: 1, hostname: "pay-1", pid: 4242,
        producing: [{ logical_topic: "orders", cluster: "east" }, { logical_topic: "payments", cluster: "east" }] },
      { client_id: "search-19c2", app: "search", language: "python", sdk_version: "0.1.0", applied_version: 0, hostname: "idx-3", pid: 77,
        consuming: [{ logical_topic: "orders", cluster: "east", group: "indexer" }] },
    ];
    for (const c of clients) await reportStatus(srv.endpoint, c);
    await page.waitForSelector('tr[data-client="billing-7f3a"]', { timeout: STEP_MS });
    await page.waitForSelector('tr[data-client="search-19c2"]', { timeout: STEP_MS });
    const behind = await page.textContent('tr[data-client="search-19c2"] .badge');
    const current = await page.textContent('tr[data-client="billing-7f3a"] .badge');
    if (behind !== "1 behind" || current !== "current") throw new Error(`badges: search "${behind}", billing "${current}"`);
    const produces = await page.textContent('tr[data-client="billing-7f3a"] td.ends');
    if (produces !== "orders@east, payments@east") throw new Error("billing produces: " + produces);
    const summary = await page.textContent("#clients-summary");
    if (!summary.includes("2 clients") || !summary.includes("1 behind")) throw new Error("summary: " + summary);
  });

  // ---- live updates ----
  const latencies = [];
  const fromStart = [];
  const fromPrinted = [];
  const fromCommit = [];
  await check(`changes applied with the CLI appear without a reload (${ROUNDS} rounds)`, async () => {
    await page.evaluate(() => { window.__sameDocument = true; });
    for (let i = 0; i < ROUNDS; i++) {
      const name = `live-${i}-${Date.now().toString(36)}`;
      // Record, in the page, when the new topic's row appears.
      await page.evaluate((n) => {
        window.__appeared = 0;
        const sel = `tr[data-topic="${CSS.escape(n)}"]`;
        const obs = new MutationObserver(() => {
          if (document.querySelector(sel)) {
            window.__appeared = performance.timeOrigin + performance.now();
            obs.disconnect();
          }
        });
        obs.observe(document.body, { childList: true, subtree: true });
      }, name);
      topics.push([name, i % 2 ? "west" : "east", 3]);
      const file = desired(topics);
      const started = Date.now();
      const { returned, printed, out } = await cli(srv.endpoint, ["apply", "-f", file, "-m", `round ${i}`]);
      const m = out.match(/applied: version (\d+)/);
      if (!m) throw new Error("apply printed: " + out);
      await page.waitForFunction(() => window.__appeared > 0, null, { timeout: STEP_MS, polling: 50 });
      const appeared = await page.evaluate(() => window.__appeared);
      latencies.push(appeared - returned);
      fromPrinted.push(appeared - printed);
      const h = await withTimeout(fetch(`${srv.admin}/api/history?limit=1`).then((r) => r.json()), STEP_MS, "history");
      if (String(h.entries[0].version) !== m[1]) throw new Error("history starts at " + h.entries[0].version);
      fromCommit.push(appeared - h.entries[0].created_unix_ms);
      fromStart.push(appeared - started);
      await page.waitForSelector(`#history-list li[data-version="${m[1]}"]`, { timeout: STEP_MS });
      const v = await page.textContent("#version");
      if (v !== "version " + m[1]) {
        await page.waitForFunction((want) => document.getElementById("version").textContent === want, "version " + m[1], { timeout: STEP_MS });
      }
    }
    if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error("the page was reloaded");
  });
  if (latencies.length) {
    const fmt = (xs) => `median ${median(xs).toFixed(1)} ms, min ${Math.min(...xs).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;
    console.log(`live update latency, version committed   -> row on the page (${fromCommit.length} rounds): ${fmt(fromCommit)}`);
    console.log(`live update latency, CLI printed "applied" -> row on the page (${fromPrinted.length} rounds): ${fmt(fromPrinted)}`);
    console.log(`live update latency, CLI apply returned -> row on the page (${latencies.length} rounds): ${fmt(latencies)}`);
    console.log(`live update latency, CLI apply started  -> row on the page (${fromStart.length} rounds): ${fmt(fromStart)}`);
  }

  await check("the screenshot is saved and the page loaded nothing from elsewhere", async () => {
    const path = join(ARTIFACTS, "dashboard.png");
    await page.screenshot({ path, fullPage: true });
    console.log("screenshot: " + path);
    if (external.length) throw new Error("requests outside the admin port: " + external.join(", "));
    if (browserErrors.length) throw new Error("errors in the page: " + browserErrors.join(" | "));
  });

  // The topic to move is created on the first Kafka cluster (a JVM start: seconds) while the
  // token check runs, which measures nothing.
  const moved = `moved-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  let topicReady;
  try {
    topicReady = createKafkaTopic(kafkaClusters()[0], moved, 3).then(() => null, (e) => e);
  } catch (e) {
    topicReady = Promise.resolve(e);
  }

  // ---- with an admin token ----
  await check("with an admin token the page asks for it, and shows the data once signed in", async () => {
    const token = "browser-test-token-" + Math.random().toString(36).slice(2);
    const tokenFile = join(work, "token");
    writeFileSync(tokenFile, token + "\n");
    const secured = await serve(["--admin-token-file", tokenFile]);
    await cli(secured.endpoint, ["apply", "-f", desired([["orders", "east", 6]]), "-m", "secured"], { SWITCHYARD_TOKEN: token });
    const p = await ctx.newPage();
    await p.goto(secured.admin + "/", { timeout: STEP_MS });
    await p.waitForSelector("#login:not([hidden])", { timeout: STEP_MS });
    if ((await p.$$('tr[data-topic]')).length) throw new Error("data shown before signing in");
    await p.fill("#login-token", "not-the-token-000000000");
    await p.click('#login-form button[type="submit"]');
    await p.waitForSelector("#login-error:not([hidden])", { timeout: STEP_MS });
    await p.fill("#login-token", token);
    await p.click('#login-form button[type="submit"]');
    await p.waitForSelector('tr[data-topic="orders"]', { timeout: STEP_MS });
    await p.waitForSelector("#live.on", { timeout: STEP_MS });
    // Live updates work through the session cookie too.
    await cli(secured.endpoint, ["apply", "-f", desired([["orders", "east", 6], ["refunds", "west", 2]]), "-m", "more"], { SWITCHYARD_TOKEN: token });
    await p.waitForSelector('tr[data-topic="refunds"]', { timeout: STEP_MS });
    await p.screenshot({ path: join(ARTIFACTS, "dashboard-signed-in.png") });
    await p.close();
  });

  await check("a migration's phase advances on the page: SWITCH → DRAIN → COMPLETE, with its progress", async () => {
    await migrationsCheck(ctx, topicReady, moved);
  });
}

try {
  await main();
} catch (e) {
  failed++;
  console.log("FAIL setup: " + (e.stack || e));
} finally {
  for (const c of cleanups.reverse()) {
    try { await c(); } catch { /* already gone */ }
  }
  rmSync(work, { recursive: true, force: true });
}
console.log(`dashboard: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
