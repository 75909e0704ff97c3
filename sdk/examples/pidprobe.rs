use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::{Duration, Instant};
struct Ctx(Instant);
impl ClientContext for Ctx {
    fn log(&self, _l: RDKafkaLogLevel, fac: &str, msg: &str) {
        eprintln!(
            "{:>8.1?} {fac} {}",
            self.0.elapsed(),
            &msg[..msg.len().min(160)]
        );
    }
}
#[tokio::main]
async fn main() {
    let b = std::env::args().nth(1).unwrap();
    let topic = format!("pidprobe-{}", std::process::id());
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 0..3 {
        let t0 = Instant::now();
        let p: FutureProducer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("debug", "eos")
            .create_with_context(Ctx(t0))
            .unwrap();
        for _ in 0..std::env::args().nth(2).map_or(2, |s| s.parse().unwrap()) {
            let _ = p
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5));
        }
        eprintln!("round {round}: warm-up {:?}", t0.elapsed());
        let t1 = Instant::now();
        let r = p
            .send(
                FutureRecord::<[u8], [u8]>::to(&topic).payload(&b"x"[..]),
                Duration::from_secs(5),
            )
            .await;
        eprintln!(
            "round {round}: first send {:?} {:?}",
            t1.elapsed(),
            r.map(|x| x.partition).map_err(|e| e.0)
        );
    }
}
