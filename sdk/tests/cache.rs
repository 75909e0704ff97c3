//! The last-known-good cache: a process starts and produces while the config service is down;
//! a corrupt cache is reported, never applied, and replaced by the service's version.

mod common;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use switchyard::{ErrorKind, Record, SnapshotCache, Switchyard};
use switchyard_config::{RunningServer, StoreConfig};
use workload::*;

/// A config service with topic `t` on east (created on Kafka too); returns it with its version.
async fn service_with_topic(t: &str) -> (RunningServer, u64) {
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    create_topic(&east, t, 3).await;
    let v = apply(
        &mut adm,
        vec![cluster("east", &east), topic(t, "east", "", 3)],
    )
    .await;
    (svc, v)
}

/// An address nothing listens on.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Waits until the cache file holds version `v`.
async fn wait_for_cache(path: &Path, v: u64) {
    let p = path.to_path_buf();
    eventually(
        Duration::from_secs(10),
        &format!("the cache {} holds version {v}", path.display()),
        || {
            let p = p.clone();
            async move {
                match SnapshotCache::new(&p).load() {
                    Ok(Some(s)) if s.version == v => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
}

/// Connects to `svc` with cache `path`, waits until version `v` is in use and in the cache.
async fn connect_and_cache(svc: &RunningServer, path: &Path, v: u64) {
    let sy = Switchyard::builder("cached")
        .endpoint(format!("http://{}", svc.local_addr()))
        .cache_path(path)
        .connect()
        .await
        .expect("connect");
    sy.wait_for_version(v, Duration::from_secs(10))
        .await
        .unwrap();
    wait_for_cache(path, v).await;
}

/// Starts from the cache alone (the endpoint is dead) and produces `n` records to `t` on east.
async fn start_from_cache_and_produce(path: &Path, t: &str, v: u64, n: usize) {
    let (east, _) = kafka();
    let started = Instant::now();
    let sy = Switchyard::builder("cached")
        .endpoint(dead_endpoint())
        .cache_path(path)
        .initial_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect() runs from the last-known-good cache while the service is down");
    let took = started.elapsed();
    println!("cache: connect from the cache took {took:.2?}");
    assert!(
        took < Duration::from_secs(2),
        "connect() from the cache took {took:?}: it waited for the service"
    );
    assert_eq!(sy.version(), v, "runs the cached version");
    assert!(sy.cache_error().is_none(), "{:?}", sy.cache_error());
    let before = read_all(&east, t).len();
    let p = sy.producer();
    for i in 0..n {
        let d = p
            .send(
                Record::new(t)
                    .key(format!("k{i}"))
                    .payload(format!("from-cache-{i}")),
            )
            .await
            .expect("send while the service is down");
        assert_eq!(d.cluster, "east");
        assert_eq!(d.version, v);
    }
    let after = read_all(&east, t);
    assert_eq!(after.len(), before + n, "every record reached Kafka");
    assert!(
        after
            .iter()
            .any(|r| r.3 == format!("from-cache-{}", n - 1).into_bytes())
    );
    // The watch keeps trying the service meanwhile and says why it fails.
    eventually(
        Duration::from_secs(10),
        "the watch reports the unreachable service",
        || async { sy.last_watch_error() },
    )
    .await;
}

fn flip_byte(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let i = data.len() - 3;
    data[i] ^= 0x5a;
    std::fs::write(path, &data).unwrap();
}

fn truncate_half(path: &Path) {
    let data = std::fs::read(path).unwrap();
    std::fs::write(path, &data[..data.len() / 2]).unwrap();
}

fn cache_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("cached.snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_produces_from_the_cache_while_the_service_is_down() {
    let t = fresh("cache-a");
    let (svc, v) = service_with_topic(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let path = cache_path(&dir);
    connect_and_cache(&svc, &path, v).await;
    svc.shutdown().await.unwrap();
    start_from_cache_and_produce(&path, &t, v, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cache_with_the_service_down_is_no_config() {
    let t = fresh("cache-b");
    let (svc, v) = service_with_topic(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let path = cache_path(&dir);
    connect_and_cache(&svc, &path, v).await;
    svc.shutdown().await.unwrap();
    let good = std::fs::read(&path).unwrap();

    for (what, corrupt) in [
        ("flipped byte", flip_byte as fn(&Path)),
        ("truncated", truncate_half),
    ] {
        std::fs::write(&path, &good).unwrap();
        corrupt(&path);
        let started = Instant::now();
        let err = Switchyard::builder("cached")
            .endpoint(dead_endpoint())
            .cache_path(&path)
            .initial_timeout(Duration::from_millis(800))
            .connect()
            .await
            .expect_err("a corrupt cache must not be used");
        println!("cache ({what}): {err}");
        assert_eq!(err.kind(), ErrorKind::NoConfig, "{what}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("cache") && msg.contains("checksum"),
            "{what}: the error should explain the cache problem: {msg}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "connect gave up late: {:?}",
            started.elapsed()
        );
    }
    // Not a cache file at all.
    std::fs::write(&path, b"definitely not a snapshot").unwrap();
    let err = Switchyard::builder("cached")
        .endpoint(dead_endpoint())
        .cache_path(&path)
        .initial_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoConfig);
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cache_with_the_service_up_is_reported_and_replaced() {
    let (east, _) = kafka();
    let t = fresh("cache-c");
    let (svc, v) = service_with_topic(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let path = cache_path(&dir);
    connect_and_cache(&svc, &path, v).await;
    // A newer version on the service, so "from the service" is distinguishable.
    let mut adm = admin(svc.local_addr()).await;
    let t2 = fresh("cache-c2");
    create_topic(&east, &t2, 1).await;
    let v2 = apply(&mut adm, vec![topic(&t2, "east", "", 1)]).await;
    flip_byte(&path);

    let sy = Switchyard::builder("cached")
        .endpoint(format!("http://{}", svc.local_addr()))
        .cache_path(&path)
        .connect()
        .await
        .expect("connect succeeds from the service despite the corrupt cache");
    let why = sy.cache_error().expect("the corrupt cache is reported");
    println!("cache (service up): cache_error = {why}");
    assert!(
        why.contains("checksum") || why.contains("corrupt"),
        "cache_error should say what is wrong: {why}"
    );
    assert_eq!(sy.version(), v2, "runs the service's version");
    let d = sy
        .producer()
        .send(Record::new(&t2).key("k").payload("fresh"))
        .await
        .expect("send to a topic only the service's version has");
    assert_eq!((d.cluster.as_str(), d.version), ("east", v2));
    // The cache is rewritten with the service's version…
    wait_for_cache(&path, v2).await;
    drop(sy);
    svc.shutdown().await.unwrap();
    // …so a later start works from the cache alone.
    start_from_cache_and_produce(&path, &t, v2, 5).await;
}
