//! The two Kafka clusters: in-process librdkafka mock clusters (nothing to install), or real
//! clusters given on the command line; topic creation; and an independent raw rdkafka reader
//! for the final cross-check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long the mock broker waits for more members before forming a new consumer group
/// (`group.initial.rebalance.delay.ms`; the mock's default is 3 s).
const MOCK_INITIAL_REBALANCE_DELAY_MS: i32 = 500;

/// One cluster: its name, bootstrap address and, for a mock, the client that owns the mock
/// cluster (the cluster lives as long as that client).
pub struct Cluster {
    pub name: &'static str,
    pub bootstrap: String,
    mock: Option<BaseProducer>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("bootstrap", &self.bootstrap)
            .field("mock", &self.mock.is_some())
            .finish()
    }
}

impl Cluster {
    /// An in-process single-broker librdkafka mock cluster.
    ///
    /// Made like `rdkafka::mocking::MockCluster::new(1)`, but owned by a client created with
    /// `test.mock.num.brokers`, so that the mock's group rebalance delay can be shortened.
    pub fn mock(name: &'static str) -> Result<Self> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .map_err(|e| anyhow!("cannot start the in-process mock Kafka cluster {name}: {e}"))?;
        let bootstrap = owner
            .client()
            .mock_cluster()
            .ok_or_else(|| anyhow!("the mock Kafka cluster {name} did not start"))?
            .bootstrap_servers();
        tune_mock_groups(&owner);
        Ok(Self {
            name,
            bootstrap,
            mock: Some(owner),
        })
    }

    /// A real cluster at `bootstrap`.
    pub fn real(name: &'static str, bootstrap: String) -> Self {
        Self {
            name,
            bootstrap,
            mock: None,
        }
    }

    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// Creates `topic` with `partitions` partitions and waits until its metadata is visible.
    /// On a mock cluster this uses the mock's own API (the mock broker does not implement
    /// CreateTopics); on a real one, the Kafka admin API.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        if let Some(owner) = &self.mock {
            let m = owner
                .client()
                .mock_cluster()
                .ok_or_else(|| anyhow!("the mock Kafka cluster {} is gone", self.name))?;
            m.create_topic(topic, partitions, 1)
                .map_err(|e| anyhow!("cluster {}: creating topic {topic}: {e}", self.name))?;
        } else {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .create()
                .with_context(|| format!("cluster {}: admin client", self.name))?;
            let res = tokio::time::timeout(
                Duration::from_secs(40),
                admin.create_topics(
                    &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
                ),
            )
            .await
            .map_err(|_| {
                anyhow!(
                    "cluster {} at {}: creating topic {topic} timed out (is the broker reachable?)",
                    self.name,
                    self.bootstrap
                )
            })?
            .with_context(|| format!("cluster {}: creating topic {topic}", self.name))?;
            for r in res {
                match r {
                    Ok(_) => {}
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => bail!(
                        "cluster {}: topic {topic} already exists (the demo makes a fresh one each run)",
                        self.name
                    ),
                    Err((t, code)) => bail!("cluster {}: creating topic {t}: {code}", self.name),
                }
            }
        }
        let bootstrap = self.bootstrap.clone();
        let (name, topic2) = (self.name, topic.to_string());
        tokio::task::spawn_blocking(move || wait_for_topic(name, &bootstrap, &topic2, partitions))
            .await
            .context("topic wait task")?
    }
}

/// Makes the mock broker's consumer groups form and rebalance quickly. rdkafka's safe mock API
/// does not offer these settings; the defaults (a 3 s `group.initial.rebalance.delay.ms`; for
/// the KIP-848 `consumer` protocol a 3 s heartbeat interval) would stall the demo's consumers
/// for seconds at every group join: at the start, and on the new cluster after the move.
#[allow(unsafe_code)]
fn tune_mock_groups(owner: &BaseProducer) {
    use rdkafka::bindings as rd;
    // SAFETY: `owner` is a live client created with `test.mock.num.brokers`, so it owns a mock
    // cluster, which lives until `owner` is dropped (not before this returns); each setter only
    // stores an integer under the mock cluster's lock.
    unsafe {
        let mcluster = rd::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if !mcluster.is_null() {
            rd::rd_kafka_mock_group_initial_rebalance_delay_ms(
                mcluster,
                MOCK_INITIAL_REBALANCE_DELAY_MS,
            );
            rd::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(mcluster, 250);
            rd::rd_kafka_mock_set_group_consumer_session_timeout_ms(mcluster, 6000);
        }
    }
}

fn wait_for_topic(cluster: &str, bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("metadata client")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = c
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map(|m| {
                m.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                })
            })
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cluster {cluster} at {bootstrap}: topic {topic} did not appear within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record's payload in `topic` on a cluster, read with plain rdkafka (no SDK, no group
/// offsets): from each partition's low to its high watermark.
pub fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<Vec<u8>>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("switchyard-demo-check-{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("checker consumer")?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("checker: metadata")?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("checker: topic {topic} not found");
    };
    let parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("checker: watermarks of {topic}/{p}"))?;
        if hi > lo {
            ends.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))
                .context("checker: partition list")?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl).context("checker: assign")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "checker: reading {topic} timed out with {} partitions unfinished",
                ends.len()
            );
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.context("checker: read")?;
            out.push(m.payload().unwrap_or_default().to_vec());
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
        }
    }
    Ok(out)
}
