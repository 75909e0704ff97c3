//! The `switchyard` binary as processes: `serve` on a data directory, the CLI against it, a
//! SIGKILL and restart, SIGTERM, and a second server on the same directory.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use switchyard_config::desired::{DesiredState, TopicSpec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A `switchyard serve` process, killed when dropped (also when a test fails).
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn command() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("SWITCHYARD_TOKEN")
        .env_remove("SWITCHYARD_ENDPOINT")
        .env_remove("SWITCHYARD_CA_CERT")
        .env("SWITCHYARD_AUTHOR", "binary-test")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Collects a child's stderr in the background so a full pipe never blocks it.
fn drain(mut r: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            b.lock().push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

impl Server {
    /// Starts `switchyard serve` on a free port and waits for "listening on ADDR".
    async fn start(data_dir: &Path) -> Self {
        let mut child = command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard serve");
        let stderr = drain(child.stderr.take().unwrap());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = within(STEP, "\"listening on\" line", async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(l) => {
                        if let Some(a) = l.strip_prefix("listening on ") {
                            break a.trim().to_string();
                        }
                    }
                    None => panic!("serve exited before listening: {}", stderr.lock()),
                }
            }
        })
        .await;
        // Keep reading stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            addr,
            stderr,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, and wait for the process to be gone.
    async fn kill(mut self) {
        within(STEP, "SIGKILL", self.child.kill()).await.unwrap();
    }

    /// SIGTERM, and the exit status.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let st = within(
            STEP,
            "kill -TERM",
            Command::new("kill").args(["-TERM", &pid]).status(),
        )
        .await
        .unwrap();
        assert!(st.success());
        within(
            Duration::from_secs(15),
            "exit after SIGTERM",
            self.child.wait(),
        )
        .await
        .unwrap()
    }
}

#[derive(Debug)]
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the CLI against `endpoint`.
async fn cli(endpoint: &str, args: &[&str]) -> Out {
    let o = within(
        STEP,
        &format!("switchyard {args:?}"),
        command()
            .arg("--endpoint")
            .arg(endpoint)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("run switchyard");
    Out {
        status: o.status,
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

async fn cli_ok(endpoint: &str, args: &[&str]) -> String {
    let o = cli(endpoint, args).await;
    assert!(o.status.success(), "switchyard {args:?} failed: {o:?}");
    o.stdout
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Desired state number `i`: the topic set and sizes change every time.
fn desired(i: u32) -> String {
    let mut s = String::from(
        "clusters:\n  - name: east\n    bootstrap: [\"127.0.0.1:9092\"]\n    properties: { compression.type: lz4 }\n  - name: west\n    bootstrap: [\"127.0.0.1:9093\"]\n    labels: { region: west }\ntopics:\n",
    );
    s.push_str(&format!(
        "  - name: orders\n    cluster: east\n    partitions: {}\n    owner: checkout\n",
        i + 1
    ));
    for j in 0..i {
        s.push_str(&format!(
            "  - name: t{j}\n    cluster: {}\n    partitions: 2\n",
            if j % 2 == 0 { "east" } else { "west" }
        ));
    }
    s.push_str(
        "quotas:\n  - { app: \"*\", topic: orders, produce_msgs_per_sec: 100, policy: reject }\nprofiles:\n  - app: checkout\n    properties: { linger.ms: 5 }\n    allowed_topics: [orders]\n",
    );
    s
}

fn applied_version(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("applied: version "))
        .unwrap_or_else(|| panic!("no \"applied: version\" line in {stdout:?}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// The desired-state part of `get snapshot -o json`, and its version.
fn snapshot_json(text: &str) -> (u64, DesiredState) {
    let mut v: Value = serde_json::from_str(text).unwrap();
    let m = v.as_object_mut().unwrap();
    let version = m.remove("version").unwrap().as_u64().unwrap();
    for k in ["author", "comment", "created_unix_ms"] {
        m.remove(k);
    }
    (version, serde_json::from_value(v).unwrap())
}

fn same(a: &DesiredState, b: &DesiredState) -> bool {
    a.to_state().unwrap().same_content(&b.to_state().unwrap())
}

#[tokio::test]
async fn acknowledged_versions_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();

    let server = Server::start(&data).await;
    let ep = server.endpoint();
    // An invalid file is refused with a one-line error and changes nothing.
    let typo = write(
        &files,
        "typo.yaml",
        "clusters:\n  - name: east\n    bootstrap: [\"127.0.0.1:9092\"]\ntopics:\n  - name: orders\n    cluster: east\n    partitons: 3\n",
    );
    let zero = write(
        &files,
        "zero.yaml",
        "clusters:\n  - name: east\n    bootstrap: [\"127.0.0.1:9092\"]\ntopics:\n  - name: orders\n    cluster: east\n    partitions: 0\n",
    );
    for (f, needle) in [(&typo, "partitons"), (&zero, "partitions")] {
        let o = cli(&ep, &["apply", "-f", f.to_str().unwrap()]).await;
        assert!(!o.status.success(), "{o:?}");
        assert_eq!(o.stderr.lines().count(), 1, "not one line: {:?}", o.stderr);
        assert!(o.stderr.starts_with("error: "), "{:?}", o.stderr);
        assert!(o.stderr.contains(needle), "{:?}", o.stderr);
    }
    let (v, _) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(v, 0);

    let mut acked = Vec::new();
    for i in 0..6 {
        let f = write(&files, &format!("v{i}.yaml"), &desired(i));
        let out = cli_ok(
            &ep,
            &[
                "apply",
                "-f",
                f.to_str().unwrap(),
                "-m",
                &format!("step {i}"),
            ],
        )
        .await;
        acked.push(applied_version(&out));
    }
    assert_eq!(acked, (1..=6).collect::<Vec<u64>>());

    // kill -9 right after the last acknowledged apply, then restart on the same directory.
    server.kill().await;
    let server = Server::start(&data).await;
    let ep = server.endpoint();

    let (v, content) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(v, 6);
    let want = DesiredState::parse(&desired(5)).unwrap();
    assert!(same(&content, &want), "{content:?}\n!=\n{want:?}");

    let h: Value =
        serde_json::from_str(&cli_ok(&ep, &["history", "-o", "json", "--limit", "100"]).await)
            .unwrap();
    assert_eq!(h["current_version"], 6);
    let entries = h["entries"].as_array().unwrap();
    let versions: Vec<u64> = entries
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![6, 5, 4, 3, 2, 1]);
    for e in entries {
        let v = e["version"].as_u64().unwrap();
        assert_eq!(e["author"], "binary-test");
        assert_eq!(e["comment"], format!("step {}", v - 1));
    }
    // Every acknowledged version is readable with its content.
    for (i, v) in acked.iter().enumerate() {
        let y = cli_ok(
            &ep,
            &["get", "snapshot", "-o", "json", "--version", &v.to_string()],
        )
        .await;
        let (got, content) = snapshot_json(&y);
        assert_eq!(got, *v);
        let want = DesiredState::parse(&desired(i as u32)).unwrap();
        assert!(same(&content, &want), "version {v}");
    }

    // The new process keeps appending after the recovered log.
    let f = write(&files, "v6.yaml", &desired(6));
    let out = cli_ok(&ep, &["apply", "-f", f.to_str().unwrap()]).await;
    assert_eq!(applied_version(&out), 7);
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn get_output_reapplies_as_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data")).await;
    let ep = server.endpoint();
    let f = write(dir.path(), "d.yaml", &desired(3));
    assert_eq!(
        applied_version(&cli_ok(&ep, &["apply", "-f", f.to_str().unwrap()]).await),
        1
    );
    let want = DesiredState::parse(&desired(3)).unwrap();

    // `get topics -o yaml` is the topic list of the desired-state format.
    let topics_yaml = cli_ok(&ep, &["get", "topics", "-o", "yaml"]).await;
    let topics: Vec<TopicSpec> = serde_yaml_ng::from_str(&topics_yaml).unwrap();
    let mut names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["orders", "t0", "t1", "t2"]);

    // Assembled with the other sections into a file, it re-applies as no change.
    let mut file = String::new();
    for what in ["clusters", "topics", "quotas", "profiles"] {
        let y = if what == "topics" {
            topics_yaml.clone()
        } else {
            cli_ok(&ep, &["get", what, "-o", "yaml"]).await
        };
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
        let mut m = serde_yaml_ng::Mapping::new();
        m.insert(what.into(), v);
        file.push_str(&serde_yaml_ng::to_string(&m).unwrap());
    }
    let back = DesiredState::parse(&file).unwrap();
    assert!(same(&back, &want));
    let p = write(dir.path(), "back.yaml", &file);
    let out = cli_ok(&ep, &["apply", "-f", p.to_str().unwrap()]).await;
    assert!(out.contains("no changes"), "{out}");

    // `get snapshot -o yaml` (the whole desired state) re-applies as no change as well.
    let snap = cli_ok(&ep, &["get", "snapshot", "-o", "yaml"]).await;
    let p = write(dir.path(), "snap.yaml", &snap);
    let out = cli_ok(&ep, &["apply", "-f", p.to_str().unwrap()]).await;
    assert!(out.contains("no changes: version 1"), "{out}");

    // JSON is accepted too; a misspelled top-level key still is not.
    let snap = cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await;
    let p = write(dir.path(), "snap.json", &snap);
    let out = cli_ok(&ep, &["apply", "-f", p.to_str().unwrap()]).await;
    assert!(out.contains("no changes: version 1"), "{out}");
    let p = write(
        dir.path(),
        "typo.yaml",
        &snap.replacen("\"topics\"", "\"topcs\"", 1),
    );
    let o = cli(&ep, &["apply", "-f", p.to_str().unwrap()]).await;
    assert!(!o.status.success());
    assert!(
        o.stderr.starts_with("error: ") && o.stderr.contains("topcs"),
        "{o:?}"
    );

    let (v, _) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(v, 1);
    drop(server);
}

#[tokio::test]
async fn second_server_on_the_same_directory_fails_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;

    let o = within(
        STEP,
        "second serve",
        command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("listening on"),
        "the second server listened"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(last.contains("in use by another process"), "{stderr}");
    assert!(last.contains(&data.display().to_string()), "{stderr}");

    // The first one is unaffected and stops cleanly on SIGTERM.
    let ep = server.endpoint();
    let (v, _) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(v, 0);
    let stderr = server.stderr.clone();
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", stderr.lock());

    // Once it is gone the directory can be used again.
    let server = Server::start(&data).await;
    assert_eq!(server.terminate().await.code(), Some(0));
}

/// The edit workflow: `get snapshot`, edit, `apply --if-version N`. A change made by someone
/// else in between makes the apply fail, naming the current version and that change, instead
/// of silently reverting it; re-read and re-applied at the new version, the edit goes through
/// and the other change stays.
#[tokio::test]
async fn an_edit_based_on_an_old_version_is_refused_with_if_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data")).await;
    let ep = server.endpoint();
    let f = write(dir.path(), "d.yaml", &desired(1));
    assert_eq!(
        applied_version(&cli_ok(&ep, &["apply", "-f", f.to_str().unwrap()]).await),
        1
    );
    // Alice reads version 1 and edits it (orders gets 9 partitions).
    let (base, _) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(base, 1);
    let alice = cli_ok(&ep, &["get", "snapshot", "-o", "yaml"]).await;
    let alice = alice.replacen("partitions: 2", "partitions: 9", 1);
    let alice = write(dir.path(), "alice.yaml", &alice);
    // Meanwhile Bob adds a topic.
    let bob = write(dir.path(), "bob.yaml", &desired(2));
    let bob_out = cli_ok(
        &ep,
        &["apply", "-f", bob.to_str().unwrap(), "-m", "bob adds t1"],
    )
    .await;
    assert_eq!(applied_version(&bob_out), 2);

    // Without the precondition Alice's file would delete Bob's topic; with it, it is refused.
    let dry = cli_ok(&ep, &["apply", "-f", alice.to_str().unwrap(), "--dry-run"]).await;
    assert!(
        dry.contains("- topic t1"),
        "the blind apply would revert Bob's change: {dry}"
    );
    let o = cli(
        &ep,
        &["apply", "-f", alice.to_str().unwrap(), "--if-version", "1"],
    )
    .await;
    assert!(!o.status.success(), "{o:?}");
    for want in [
        "the configuration moved on: it is at version 2, the edit was based on version 1",
        "nothing was applied",
        "version 2 by binary-test (bob adds t1)",
        "--if-version 2",
    ] {
        assert!(o.stderr.contains(want), "{want:?} in {o:?}");
    }
    let (v, state) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(v, 2);
    assert!(
        state.topics.iter().any(|t| t.name == "t1"),
        "Bob's change stays"
    );

    // Re-read, redo the edit, apply at the version it is based on.
    let again = cli_ok(&ep, &["get", "snapshot", "-o", "yaml"]).await;
    let again = write(
        dir.path(),
        "alice2.yaml",
        &again.replacen("partitions: 3", "partitions: 9", 1),
    );
    let out = cli_ok(
        &ep,
        &["apply", "-f", again.to_str().unwrap(), "--if-version", "2"],
    )
    .await;
    assert_eq!(applied_version(&out), 3);
    let (_, state) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    let orders = state.topics.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!(orders.partitions, 9);
    assert!(state.topics.iter().any(|t| t.name == "t1"));

    // A version from the future is refused too.
    let o = cli(
        &ep,
        &["apply", "-f", again.to_str().unwrap(), "--if-version", "7"],
    )
    .await;
    assert!(
        !o.status.success() && o.stderr.contains("ahead of the current version 3"),
        "{o:?}"
    );
    drop(server);
}

/// `switchyard diff -f FILE…` follows kubectl diff's contract, from the real binary: 0 when
/// nothing would change, 1 when something would (the diff printed), 2 on an error — a bad
/// file, a change the service refuses, an unreachable service. Several files are read as one
/// configuration. Nothing is applied.
#[tokio::test]
async fn diff_exit_codes_follow_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data")).await;
    let ep = server.endpoint();
    let f1 = write(dir.path(), "d1.yaml", &desired(1));
    assert_eq!(
        applied_version(&cli_ok(&ep, &["apply", "-f", f1.to_str().unwrap()]).await),
        1
    );
    let code = |o: &Out| o.status.code().expect("exit code");

    let o = cli(&ep, &["diff", "-f", f1.to_str().unwrap()]).await;
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(o.stdout.contains("no changes: version 1"), "{o:?}");

    let f2 = write(dir.path(), "d2.yaml", &desired(2));
    let o = cli(&ep, &["diff", "-f", f2.to_str().unwrap()]).await;
    assert_eq!(code(&o), 1, "{o:?}");
    assert!(o.stdout.contains("+ topic t1"), "{o:?}");
    let (v, _) = snapshot_json(&cli_ok(&ep, &["get", "snapshot", "-o", "json"]).await);
    assert_eq!(v, 1, "diff applies nothing");

    // The same configuration split over two files is one configuration.
    let text = desired(1);
    let (head, tail) = text.split_at(text.find("topics:").unwrap());
    let a = write(dir.path(), "clusters.yaml", head);
    let b = write(dir.path(), "rest.yaml", tail);
    let o = cli(
        &ep,
        &["diff", "-f", a.to_str().unwrap(), "-f", b.to_str().unwrap()],
    )
    .await;
    assert_eq!(code(&o), 0, "{o:?}");

    // Errors are 2: a typo in the file, a change the service refuses, no service.
    let typo = write(
        dir.path(),
        "typo.yaml",
        &desired(1).replacen("topics:", "topcs:", 1),
    );
    let o = cli(&ep, &["diff", "-f", typo.to_str().unwrap()]).await;
    assert_eq!(code(&o), 2, "{o:?}");
    assert!(o.stderr.contains("topcs"), "{o:?}");
    let refused = write(
        dir.path(),
        "refused.yaml",
        &desired(1).replacen("cluster: east", "cluster: nowhere", 1),
    );
    let o = cli(&ep, &["diff", "-f", refused.to_str().unwrap()]).await;
    assert_eq!(code(&o), 2, "{o:?}");
    assert!(o.stderr.contains("nowhere"), "{o:?}");
    let o = cli("http://127.0.0.1:1", &["diff", "-f", f1.to_str().unwrap()]).await;
    assert_eq!(code(&o), 2, "{o:?}");
    drop(server);
}

/// Shell completion and the man page come from the CLI's own definition; the history table
/// shows local dates (JSON keeps the milliseconds).
#[tokio::test]
async fn completion_man_page_and_local_dates() {
    for shell in ["bash", "zsh", "fish"] {
        let o = cli("http://127.0.0.1:1", &["completion", shell]).await;
        assert!(o.status.success(), "{shell}: {o:?}");
        assert!(
            o.stdout.contains("switchyard") && o.stdout.contains("move-topic"),
            "{shell}: {}",
            &o.stdout[..o.stdout.len().min(300)]
        );
    }
    let o = cli("http://127.0.0.1:1", &["completion", "tcsh"]).await;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = cli("http://127.0.0.1:1", &["man"]).await;
    assert!(
        o.status.success() && o.stdout.contains(".TH switchyard 1"),
        "{o:?}"
    );
    assert!(
        o.stdout.contains("apply"),
        "the man page lists the commands"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data")).await;
    let ep = server.endpoint();
    let f = write(dir.path(), "d.yaml", &desired(1));
    cli_ok(&ep, &["apply", "-f", f.to_str().unwrap()]).await;
    let table = cli_ok(&ep, &["history"]).await;
    let year = jiff::Zoned::now().year().to_string();
    assert!(
        table.contains("CREATED") && table.contains(&format!("{year}-")),
        "{table}"
    );
    let json: Value = serde_json::from_str(&cli_ok(&ep, &["history", "-o", "json"]).await).unwrap();
    assert!(
        json.to_string().contains("created_unix_ms"),
        "JSON keeps the milliseconds: {json}"
    );
    drop(server);
}
