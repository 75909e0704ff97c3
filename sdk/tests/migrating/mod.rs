//! Shared pieces of the live-migration tests: the config service they run, SDK clients that
//! report status often, and a consumer group whose members report every record they receive.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::{Consumer, ConsumerOptions, Switchyard};
use switchyard_config::client::{self, AdminClient, BearerToken};
use switchyard_config::migration::MigrationConfig;
use switchyard_config::{RunningServer, ServerConfig, StoreConfig};
use switchyard_proto::v1::{
    ClientEndpoint, ClientStatus, ListMigrationsRequest, Migration, ReportStatusRequest,
    StartMigrationRequest,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::workload::{eventually, parse_payload};

/// An in-memory config service whose coordinator advances from the start (every client here
/// reports before a migration starts) and whose client leases last `client_lease`.
pub async fn service(client_lease: Duration) -> RunningServer {
    switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        client_lease,
        migrations: MigrationConfig {
            client_grace: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("config service starts")
}

/// Starts moving `topic` to the tests' second cluster, `west` (StartMigration); returns the
/// migration as started.
pub async fn start_move(
    adm: &mut AdminClient,
    topic: &str,
    author: &str,
    allow_nonempty_destination: bool,
) -> Migration {
    adm.start_migration(StartMigrationRequest {
        topic: topic.to_string(),
        to_cluster: "west".into(),
        author: author.into(),
        allow_nonempty_destination,
        ..Default::default()
    })
    .await
    .expect("the migration starts")
    .into_inner()
}

/// Polls migration `id` (ListMigrations) until `pred` holds, and returns it; panics with `what`
/// after `timeout`.
pub async fn migration_until(
    adm: &AdminClient,
    id: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Migration) -> bool,
) -> Migration {
    let pred = &pred;
    eventually(timeout, what, || {
        let mut adm = adm.clone();
        let id = id.to_string();
        async move {
            adm.list_migrations(ListMigrationsRequest {
                id,
                active_only: false,
            })
            .await
            .ok()?
            .into_inner()
            .migrations
            .into_iter()
            .next()
            .filter(|m| pred(m))
        }
    })
    .await
}

/// An SDK client of `endpoint` reporting its status every 200 ms.
pub async fn connect(endpoint: &str, app: &str) -> Switchyard {
    connect_as(endpoint, app, None).await
}

/// [`connect`] with a bearer token.
pub async fn connect_as(endpoint: &str, app: &str, token: Option<&str>) -> Switchyard {
    let mut b = Switchyard::builder(app)
        .endpoint(endpoint)
        .without_cache()
        .status_interval(Duration::from_millis(200));
    if let Some(t) = token {
        b = b.token(t);
    }
    b.connect().await.expect("connect to the config service")
}

/// A record a member received: (member index, key, seq, cluster).
pub type Received = (usize, String, u64, String);

/// A consumer group of SDK clients, each receiving records of one topic and committing each
/// one after reporting it (so a member killed in between has it redelivered, never lost).
pub struct Group {
    pub members: Vec<(Switchyard, Arc<Consumer>)>,
    pub tasks: Vec<JoinHandle<()>>,
    pub rx: mpsc::UnboundedReceiver<Received>,
    stop: watch::Sender<bool>,
}

impl Group {
    /// Starts `n` members (apps `{app}-0`, …) of `group` on `topic`, manual commits.
    pub async fn start(
        endpoint: &str,
        app: &str,
        group: &str,
        topic: &str,
        n: usize,
        drain_grace: Duration,
    ) -> Self {
        let opts = ConsumerOptions {
            auto_commit: false,
            drain_grace,
            ..Default::default()
        };
        Self::start_with(endpoint, app, group, topic, n, opts).await
    }

    /// [`Group::start`] with the members' consumer options.
    pub async fn start_with(
        endpoint: &str,
        app: &str,
        group: &str,
        topic: &str,
        n: usize,
        opts: ConsumerOptions,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self::start_sending(endpoint, None, app, group, topic, n, opts, tx, rx).await
    }

    /// [`Group::start_with`] with members that present `token` to the config service.
    pub async fn start_as(
        endpoint: &str,
        token: &str,
        app: &str,
        group: &str,
        topic: &str,
        n: usize,
        opts: ConsumerOptions,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self::start_sending(endpoint, Some(token), app, group, topic, n, opts, tx, rx).await
    }

    /// [`Group::start_with`] reporting into `tx` (shared with other processes of the same
    /// group, so that what all of them receive is seen in one arrival order); its own `rx`
    /// then gets nothing.
    pub async fn start_into(
        endpoint: &str,
        app: &str,
        group: &str,
        topic: &str,
        n: usize,
        opts: ConsumerOptions,
        tx: mpsc::UnboundedSender<Received>,
    ) -> Self {
        let (_, rx) = mpsc::unbounded_channel();
        Self::start_sending(endpoint, None, app, group, topic, n, opts, tx, rx).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_sending(
        endpoint: &str,
        token: Option<&str>,
        app: &str,
        group: &str,
        topic: &str,
        n: usize,
        opts: ConsumerOptions,
        tx: mpsc::UnboundedSender<Received>,
        rx: mpsc::UnboundedReceiver<Received>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let mut members = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let sy = connect_as(endpoint, &format!("{app}-{i}"), token).await;
            let c = Arc::new(
                sy.consumer_with(group, &[topic], opts.clone())
                    .expect("consumer"),
            );
            let (c2, tx, mut stop_rx) = (c.clone(), tx.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let m = tokio::select! {
                        m = c2.recv() => m.expect("recv"),
                        _ = stop_rx.wait_for(|v| *v) => return,
                    };
                    let (k, seq) = parse_payload(m.payload.as_deref().unwrap_or_default());
                    if tx.send((i, k, seq, m.cluster.clone())).is_err() {
                        return;
                    }
                    c2.commit(&m).await.expect("commit");
                }
            }));
            members.push((sy, c));
        }
        Self {
            members,
            tasks,
            rx,
            stop,
        }
    }

    /// Receives until every record of `expected` arrived (panics after `timeout`), then for 2 s
    /// more, so that a record delivered twice is seen. Returns everything received.
    pub async fn receive_all(
        &mut self,
        expected: &HashSet<(String, u64)>,
        timeout: Duration,
    ) -> Vec<Received> {
        let mut got = Vec::new();
        let mut seen: HashSet<(String, u64)> = HashSet::new();
        let deadline = Instant::now() + timeout;
        while !expected.iter().all(|k| seen.contains(k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(r)) => {
                    seen.insert((r.1.clone(), r.2));
                    got.push(r);
                }
                Ok(None) => panic!("the consumer tasks ended early"),
                Err(_) => panic!(
                    "received {} of {} records within {timeout:?}",
                    expected.iter().filter(|k| seen.contains(*k)).count(),
                    expected.len()
                ),
            }
        }
        while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), self.rx.recv()).await {
            got.push(r);
        }
        got
    }

    /// Stops the members' tasks (bounded) and returns each task's outcome, in member order.
    pub async fn stop(&mut self) -> Vec<Result<(), tokio::task::JoinError>> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        for task in self.tasks.drain(..) {
            out.push(
                tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .expect("consumer task stops"),
            );
        }
        out
    }
}

/// Reports, every 300 ms, a producer of `topic` on `cluster` that has applied the service's
/// current version — one that never switches — until the task is aborted.
pub fn stuck_producer(
    endpoint: String,
    topic: String,
    cluster: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ch = client::connect(&endpoint, None).await.unwrap();
        let mut meta = client::metadata(ch, BearerToken::default());
        let mut applied = 0;
        loop {
            let r = meta
                .report_status(ReportStatusRequest {
                    status: Some(ClientStatus {
                        client_id: "stuck-producer".into(),
                        app: "legacy".into(),
                        language: "test".into(),
                        sdk_version: "0".into(),
                        applied_version: applied,
                        producing: vec![ClientEndpoint {
                            logical_topic: topic.clone(),
                            cluster: cluster.into(),
                            physical_topic: topic.clone(),
                            ..Default::default()
                        }],
                        consuming: Vec::new(),
                        hostname: "test".into(),
                        pid: 1,
                        instance_id: String::new(),
                    }),
                })
                .await;
            if let Ok(r) = r {
                applied = r.into_inner().current_version;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}
