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
//   6. a screenshot is saved as a test artifact.
//
// Environment: SWITCHYARD_BIN (the `switchyard` binary), ARTIFACT_DIR (screenshots),
// CHROMIUM (default /usr/bin/chromium), ROUNDS (live-update measurements, default 5).
import { spawn } from "node:child_process";
import http2 from "node:http2";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const BIN = process.env.SWITCHYARD_BIN;
const ARTIFACTS = process.env.ARTIFACT_DIR || "../target/dashboard-test";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ROUNDS = Number(process.env.ROUNDS || 5);
const STEP_MS = 15_000; // bound on any single wait
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
