//! Switchyard quickstart: send 10 records to a logical topic and read them back with a consumer
//! group — the smallest complete SDK program, to copy from.
//!
//! Needs a running config service that routes the topic, e.g.:
//!
//! ```text
//! switchyard serve --in-memory                      # the config service, on 127.0.0.1:7070
//! switchyard apply -f examples/desired-state.yaml   # clusters and topics (edit the bootstraps)
//! cargo run -p switchyard-demo --bin quickstart -- --topic orders
//! ```

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use switchyard::{ConsumerOptions, ErrorKind, Record, Switchyard};

/// Sends 10 records to a logical topic through Switchyard, prints where each one went, then
/// consumes them back with a consumer group.
#[derive(Parser, Debug)]
#[command(name = "quickstart", version)]
struct Args {
    /// The Switchyard config service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7070",
        env = "SWITCHYARD_ENDPOINT"
    )]
    endpoint: String,

    /// The logical topic to use.
    #[arg(long, default_value = "orders")]
    topic: String,

    /// The consumer group.
    #[arg(long, default_value = "quickstart")]
    group: String,

    /// The application name reported to the service.
    #[arg(long, default_value = "quickstart")]
    app: String,

    /// How many records to send.
    #[arg(long, default_value_t = 10)]
    count: u32,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    // Connect: waits for the first configuration (or starts from the last-known-good cache in
    // ~/.cache/switchyard when the service is down and the app ran before).
    let sy = match Switchyard::builder(&args.app)
        .endpoint(&args.endpoint)
        .initial_timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(sy) => sy,
        Err(e) if e.kind() == ErrorKind::NoConfig => bail!(
            "cannot get a configuration from the Switchyard config service at {}: {e}\n\
             hint: start one (`switchyard serve --in-memory`) and register clusters and topics \
             (`switchyard apply -f examples/desired-state.yaml`), or pass --endpoint",
            args.endpoint
        ),
        Err(e) => return Err(e).context("connecting to the config service"),
    };
    println!("connected: configuration version {}", sy.version());

    // Produce: each send returns where the record was written.
    let run_id = format!("{:08x}", rand::random::<u32>());
    let producer = sy.producer();
    let mut ours = HashSet::new();
    for i in 0..args.count {
        let payload = format!("hello {i} from run {run_id}");
        let delivery = producer
            .send(
                Record::new(&args.topic)
                    .key(format!("key-{i}"))
                    .payload(payload.clone()),
            )
            .await
            .map_err(|e| e.error)
            .with_context(|| format!("sending record {i} to {}", args.topic))?;
        println!("sent {payload:?} -> {delivery:?}");
        ours.insert(payload);
    }

    // Consume them back, committing each record after handling it.
    let consumer = sy
        .consumer_with(
            &args.group,
            &[&args.topic],
            ConsumerOptions {
                auto_commit: false,
                ..Default::default()
            },
        )
        .context("creating the consumer")?;
    println!(
        "consuming {} in group {} (joining the group takes a few seconds)...",
        args.topic, args.group
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut others = 0u64;
    while !ours.is_empty() {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .with_context(|| format!("{} of our records not received within 60 s", ours.len()))?
            .context("receiving")?;
        let payload =
            String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()).into_owned();
        if ours.remove(&payload) {
            println!(
                "received {payload:?} key {:?} from {}/{} partition {} offset {}",
                m.key.as_deref().map(String::from_utf8_lossy),
                m.cluster,
                m.physical_topic,
                m.partition,
                m.offset
            );
        } else {
            // Written before this run (a new group starts at the topic's earliest record).
            others += 1;
        }
        // Commit once the record is handled: the group resumes after it next time.
        consumer.commit(&m).await.context("committing")?;
    }
    println!(
        "done: all {} records sent and received back ({others} older records skipped)",
        args.count
    );
    Ok(())
}
