//! Shared helpers for the config-service integration tests: a real gRPC server on loopback,
//! clients, entity builders and bounded waits.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use switchyard_config::client::{self, AdminClient, BearerToken, MetadataClient};
use switchyard_config::{RunningServer, ServerConfig, StoreConfig};
use switchyard_proto::state::State;
use switchyard_proto::v1::{
    ApplyRequest, ApplyResponse, Change, ClientProfile, Cluster, GetSnapshotRequest, Quota,
    QuotaKey, Snapshot, Topic, WatchEvent, WatchRequest, change::Op, watch_event::Event,
};
use tonic::Streaming;
use tonic::transport::Channel;

/// Upper bound for any single step that should be quick (an RPC, one watch event).
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A config service on a loopback port with clients connected to it.
#[derive(Debug)]
pub struct TestServer {
    pub server: RunningServer,
    pub channel: Channel,
    pub admin: AdminClient,
    pub meta: MetadataClient,
    /// Keeps the data directory of a file store alive.
    pub dir: Option<tempfile::TempDir>,
}

/// A config for a loopback server on a free port with an in-memory store.
pub fn memory_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        ..Default::default()
    }
}

impl TestServer {
    /// In-memory store, no auth, no TLS.
    pub async fn memory() -> Self {
        Self::start(memory_config(), None).await
    }

    /// File store in a fresh temporary directory.
    pub async fn file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig {
            store: StoreConfig::File {
                dir: dir.path().to_path_buf(),
            },
            ..memory_config()
        };
        Self::start(cfg, Some(dir)).await
    }

    /// Starts `cfg` and connects plain-text clients (with the admin token, if any).
    pub async fn start(cfg: ServerConfig, dir: Option<tempfile::TempDir>) -> Self {
        let token = cfg.admin_token.clone();
        let server = within(STEP, "server start", switchyard_config::start(cfg))
            .await
            .expect("server starts");
        let channel = connect_plain(&server).await;
        let token = BearerToken::new(token.as_deref()).unwrap();
        Self {
            admin: client::admin(channel.clone(), token.clone()),
            meta: client::metadata(channel.clone(), token),
            channel,
            server,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    /// A metadata client on a new connection (a separate HTTP/2 connection, as a separate
    /// process would have).
    pub async fn new_meta(&self) -> MetadataClient {
        let ch = connect_plain(&self.server).await;
        client::metadata(ch, BearerToken::default())
    }

    /// The current snapshot.
    pub async fn snapshot(&self) -> Snapshot {
        let mut m = self.meta.clone();
        within(STEP, "GetSnapshot", m.get_snapshot(GetSnapshotRequest {}))
            .await
            .expect("GetSnapshot")
            .into_inner()
    }

    /// The current version.
    pub async fn version(&self) -> u64 {
        self.snapshot().await.version
    }

    /// Applies `changes` at `expected`.
    pub async fn try_apply(
        &self,
        expected: u64,
        changes: Vec<Change>,
    ) -> Result<ApplyResponse, tonic::Status> {
        let mut a = self.admin.clone();
        within(
            STEP,
            "Apply",
            a.apply(ApplyRequest {
                expected_version: expected,
                changes,
                dry_run: false,
                author: "tester".into(),
                comment: String::new(),
            }),
        )
        .await
        .map(|r| r.into_inner())
    }

    /// Applies `changes` on top of the current version and returns the new version.
    pub async fn apply(&self, changes: Vec<Change>) -> u64 {
        let v = self.version().await;
        let r = self
            .try_apply(v, changes)
            .await
            .unwrap_or_else(|e| panic!("apply at version {v} failed: {e}"));
        assert!(r.applied, "apply at version {v} stored nothing");
        assert_eq!(r.version, v + 1);
        r.version
    }

    /// Opens a watch stream on the default connection.
    pub async fn watch(&self, known_version: u64) -> Streaming<WatchEvent> {
        watch(&mut self.meta.clone(), known_version).await
    }
}

/// Connects a plain-text channel to `server`.
pub async fn connect_plain(server: &RunningServer) -> Channel {
    within(
        STEP,
        "connect",
        client::connect(&format!("http://{}", server.local_addr()), None),
    )
    .await
    .expect("connect")
}

/// Opens a watch stream.
pub async fn watch(meta: &mut MetadataClient, known_version: u64) -> Streaming<WatchEvent> {
    within(
        STEP,
        "Watch",
        meta.watch(WatchRequest {
            known_version,
            client_id: "test-watcher".into(),
            app: "tests".into(),
        }),
    )
    .await
    .expect("Watch")
    .into_inner()
}

/// The next event of a watch stream; fails on timeout, error or end of stream.
pub async fn next_event(s: &mut Streaming<WatchEvent>) -> Event {
    within(STEP, "next watch event", s.message())
        .await
        .expect("watch stream failed")
        .expect("watch stream ended")
        .event
        .expect("watch event without content")
}

/// The next event, which must be the delta `from` → `from + 1`.
pub async fn expect_delta(s: &mut Streaming<WatchEvent>, from: u64) -> switchyard_proto::v1::Delta {
    match next_event(s).await {
        Event::Delta(d) => {
            assert_eq!(
                (d.from_version, d.to_version),
                (from, from + 1),
                "expected the delta {from}→{}",
                from + 1
            );
            d
        }
        Event::Snapshot(s) => panic!(
            "expected the delta {from}→{}, got a snapshot at version {}",
            from + 1,
            s.version
        ),
    }
}

/// The next event, which must be a full snapshot.
pub async fn expect_snapshot(s: &mut Streaming<WatchEvent>) -> Snapshot {
    match next_event(s).await {
        Event::Snapshot(s) => s,
        Event::Delta(d) => panic!(
            "expected a snapshot, got the delta {}→{}",
            d.from_version, d.to_version
        ),
    }
}

/// Same entities (ignoring version and metadata).
pub fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    State::from_snapshot(a.clone()).same_content(&State::from_snapshot(b.clone()))
}

pub fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        bootstrap: vec!["127.0.0.1:9092".into()],
        ..Default::default()
    }
}

pub fn topic(name: &str, cluster: &str, partitions: i32) -> Topic {
    Topic {
        name: name.into(),
        cluster: cluster.into(),
        partitions,
        ..Default::default()
    }
}

pub fn quota(app: &str, topic: &str, produce_msgs_per_sec: u64) -> Quota {
    Quota {
        app: app.into(),
        topic: topic.into(),
        produce_msgs_per_sec,
        ..Default::default()
    }
}

pub fn profile(app: &str) -> ClientProfile {
    ClientProfile {
        app: app.into(),
        ..Default::default()
    }
}

pub fn up_cluster(c: Cluster) -> Change {
    Change {
        op: Some(Op::UpsertCluster(c)),
    }
}

pub fn up_topic(t: Topic) -> Change {
    Change {
        op: Some(Op::UpsertTopic(t)),
    }
}

pub fn up_quota(q: Quota) -> Change {
    Change {
        op: Some(Op::UpsertQuota(q)),
    }
}

pub fn up_profile(p: ClientProfile) -> Change {
    Change {
        op: Some(Op::UpsertProfile(p)),
    }
}

pub fn del_cluster(name: &str) -> Change {
    Change {
        op: Some(Op::DeleteCluster(name.into())),
    }
}

pub fn del_topic(name: &str) -> Change {
    Change {
        op: Some(Op::DeleteTopic(name.into())),
    }
}

pub fn del_quota(app: &str, topic: &str) -> Change {
    Change {
        op: Some(Op::DeleteQuota(QuotaKey {
            app: app.into(),
            topic: topic.into(),
        })),
    }
}
