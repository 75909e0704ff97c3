//! Status reports: the service's client inventory (admin ListClients) shows what an SDK client
//! runs, produces and consumes, and follows a route change.

mod common;
mod workload;

use std::time::Duration;

use common::*;
use switchyard::{Record, Switchyard};
use switchyard_config::StoreConfig;
use switchyard_config::client::AdminClient;
use switchyard_proto::v1::{ClientInfo, ListClientsRequest};
use workload::*;

/// Polls ListClients until `pred` holds for the entry of `client_id`; returns that entry.
async fn wait_for_client(
    adm: &AdminClient,
    client_id: &str,
    what: &str,
    pred: impl Fn(&ClientInfo) -> bool,
) -> ClientInfo {
    let pred = &pred;
    eventually(Duration::from_secs(15), what, || {
        let mut adm = adm.clone();
        let id = client_id.to_string();
        async move {
            let r = adm
                .list_clients(ListClientsRequest { app: String::new() })
                .await
                .expect("ListClients")
                .into_inner();
            r.clients
                .into_iter()
                .find(|c| c.status.as_ref().is_some_and(|s| s.client_id == id))
                .filter(|c| pred(c))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_clients_shows_what_the_sdk_does() {
    let (east, west) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("status");
    create_topic(&east, &t, 2).await;
    create_topic(&west, &t, 2).await;
    let v1 = apply(
        &mut adm,
        vec![
            cluster("east", &east),
            cluster("west", &west),
            topic(&t, "east", "", 2),
        ],
    )
    .await;
    let sy = Switchyard::builder("status-app")
        .endpoint(format!("http://{}", svc.local_addr()))
        .without_cache()
        .status_interval(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    for i in 0..10 {
        p.send(Record::new(&t).key(format!("k{i}")).payload("x"))
            .await
            .unwrap();
    }
    let id = sy.client_id().to_string();
    let info = wait_for_client(
        &adm,
        &id,
        "the client reports producing to the topic on east",
        |c| {
            c.status
                .as_ref()
                .unwrap()
                .producing
                .iter()
                .any(|e| e.logical_topic == t && e.cluster == "east")
        },
    )
    .await;
    let st = info.status.as_ref().unwrap();
    println!("status: {st:?}");
    assert_eq!(st.app, "status-app");
    assert_eq!(st.language, "rust");
    assert_eq!(st.applied_version, sy.version());
    assert_eq!(st.applied_version, v1);
    assert_eq!(info.versions_behind, 0);
    assert_eq!(st.pid, std::process::id());
    assert!(!st.sdk_version.is_empty());
    let e = st.producing.iter().find(|e| e.logical_topic == t).unwrap();
    assert_eq!(e.physical_topic, t);
    assert!(st.consuming.is_empty());
    // Filtering by app finds it too; another app's filter does not.
    let by_app = adm
        .list_clients(ListClientsRequest {
            app: "status-app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        by_app
            .clients
            .iter()
            .any(|c| c.status.as_ref().unwrap().client_id == id)
    );
    let other = adm
        .list_clients(ListClientsRequest {
            app: "someone-else".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        other
            .clients
            .iter()
            .all(|c| c.status.as_ref().unwrap().client_id != id)
    );

    // A consumer shows up with its group.
    let group = fresh("g");
    let c = sy.consumer(&group, &[&t]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("a record arrives")
        .unwrap();
    c.commit(&m).await.unwrap();
    wait_for_client(
        &adm,
        &id,
        "the client reports consuming the topic on east in its group",
        |c| {
            c.status
                .as_ref()
                .unwrap()
                .consuming
                .iter()
                .any(|e| e.logical_topic == t && e.cluster == "east" && e.group == group)
        },
    )
    .await;
    drop(c);

    // Some history on east, so a rate that counted it after the move would stand out.
    let sends = (0..2_000).map(|i| p.send(Record::new(&t).key(format!("h{i}")).payload("z")));
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.unwrap().cluster, "east");
    }

    // Records keep flowing at ~200/s from here on; once the burst is out of the reports'
    // window, record every report through the move.
    let load = Load::start(p.clone(), &t, 1, 4, 200.0, Duration::from_secs(60));
    let quiet = wait_for_client(&adm, &id, "the burst leaves the rate window", |c| {
        c.status
            .as_ref()
            .unwrap()
            .producing
            .iter()
            .any(|e| e.logical_topic == t && e.msgs_per_sec > 0.0 && e.msgs_per_sec < 1_000.0)
    })
    .await
    .last_seen_unix_ms;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(record_reports(adm.clone(), id.clone(), t.clone(), stop_rx));

    // After a move, the report follows: new version, new cluster.
    let v2 = apply(&mut adm, vec![topic(&t, "west", "", 2)]).await;
    sy.wait_for_version(v2, Duration::from_secs(10))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the producer switches", || {
        let (p, t) = (p.clone(), t.clone());
        async move {
            (p.current_route(&t).await.map(|r| r.0).as_deref() == Some("west")).then_some(())
        }
    })
    .await;
    let info = wait_for_client(
        &adm,
        &id,
        "the client reports the new version, cluster and a send rate",
        |c| {
            let s = c.status.as_ref().unwrap();
            s.applied_version == v2
                && s.producing
                    .iter()
                    .any(|e| e.logical_topic == t && e.cluster == "west" && e.msgs_per_sec > 0.0)
        },
    )
    .await;
    assert_eq!(info.versions_behind, 0);
    println!(
        "status after the move: {:?}",
        info.status.unwrap().producing
    );
    // A few more reports on west.
    let last = info.last_seen_unix_ms;
    wait_for_client(&adm, &id, "three more reports", |c| {
        c.last_seen_unix_ms >= last + 3 * 200
    })
    .await;
    let _ = stop.send(true);
    let reports = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("poller stops")
        .unwrap();
    let report = load.finish().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors.first());
    let reports: Vec<_> = reports.into_iter().filter(|r| r.0 > quiet).collect();
    println!(
        "status: reports around the move (last seen ms, version, [(cluster, msgs/s)]): {reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|r| r.1 == v2 && r.2.iter().any(|e| e.0 == "west"))
    );
    // The rate is the ~200/s actually sent: the records a lane sent to east before the move are
    // not counted again as if just sent to west.
    assert!(
        reports.iter().all(|r| r.2.iter().all(|e| e.1 < 1_000.0)),
        "a reported rate is far above the ~200/s sent: {reports:?}"
    );
    drop(sy);
    svc.shutdown().await.unwrap();
}

/// A report seen: (last seen ms, applied version, [(cluster, msgs/s)] for one topic).
type Seen = (i64, u64, Vec<(String, f64)>);

/// Every distinct report of client `id` until `stop`.
async fn record_reports(
    mut adm: AdminClient,
    id: String,
    topic: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    loop {
        let r = adm
            .list_clients(ListClientsRequest { app: String::new() })
            .await
            .expect("ListClients")
            .into_inner();
        if let Some(s) = r
            .clients
            .iter()
            .find(|c| c.status.as_ref().is_some_and(|s| s.client_id == id))
            && out.last().is_none_or(|l| l.0 != s.last_seen_unix_ms)
        {
            let st = s.status.as_ref().unwrap();
            out.push((
                s.last_seen_unix_ms,
                st.applied_version,
                st.producing
                    .iter()
                    .filter(|e| e.logical_topic == topic)
                    .map(|e| (e.cluster.clone(), e.msgs_per_sec))
                    .collect(),
            ));
        }
        // Poll well within the 200 ms report interval so no report is missed.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.wait_for(|v| *v) => return out,
        }
    }
}

/// Every config-service replica keeps its own client inventory (the migration coordinator runs
/// on one of them), so a client reports to every endpoint it is given — also while one of them
/// is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reports_to_every_endpoint_it_is_given() {
    init_tracing();
    let (east, _) = kafka();
    let a = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let b = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    // A third endpoint nobody listens on: reporting there fails and delays nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let t = fresh("status-all");
    create_topic(&east, &t, 1).await;
    let mut adm_a = admin(a.local_addr()).await;
    let mut adm_b = admin(b.local_addr()).await;
    for adm in [&mut adm_a, &mut adm_b] {
        apply(adm, vec![cluster("east", &east), topic(&t, "east", "", 1)]).await;
    }
    let sy = Switchyard::builder("status-all-app")
        .endpoint(format!("http://{}", a.local_addr()))
        .endpoint(format!("http://{dead_addr}"))
        .endpoint(format!("http://{}", b.local_addr()))
        .without_cache()
        .status_interval(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    p.send(Record::new(&t).key("k").payload("x")).await.unwrap();
    let id = sy.client_id().to_string();
    for (name, adm) in [("a", &adm_a), ("b", &adm_b)] {
        let info = wait_for_client(adm, &id, &format!("replica {name} lists the client"), |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.producing.iter().any(|e| e.logical_topic == t))
        })
        .await;
        assert_eq!(info.status.unwrap().app, "status-all-app");
    }
    drop(p);
    drop(sy);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A client that closes tells the service it left (a last report without endpoints), so a
/// migration does not wait for its lease to end (30 s here) before the seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_client_reports_that_it_left() {
    let (east, _) = kafka();
    let svc = config_service(StoreConfig::Memory, "127.0.0.1:0".parse().unwrap()).await;
    let mut adm = admin(svc.local_addr()).await;
    let t = fresh("leaving");
    create_topic(&east, &t, 1).await;
    apply(
        &mut adm,
        vec![cluster("east", &east), topic(&t, "east", "", 1)],
    )
    .await;
    let sy = Switchyard::builder("leaving-app")
        .endpoint(format!("http://{}", svc.local_addr()))
        .without_cache()
        .status_interval(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let p = sy.producer();
    p.send(Record::new(&t).payload("x")).await.unwrap();
    let id = sy.client_id().to_string();
    wait_for_client(&adm, &id, "the client reports producing", |c| {
        !c.status.as_ref().unwrap().producing.is_empty()
    })
    .await;
    drop(p);
    drop(sy);
    wait_for_client(&adm, &id, "the client reports that it left", |c| {
        let s = c.status.as_ref().unwrap();
        s.producing.is_empty() && s.consuming.is_empty()
    })
    .await;
    svc.shutdown().await.unwrap();
}
