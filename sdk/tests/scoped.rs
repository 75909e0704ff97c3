//! An SDK client with an app's client token on a config service that requires client tokens:
//! it receives only its app's scoped configuration (its clusters' secrets included, none of
//! another app's), produces and consumes through it on real Kafka, reports its status, and
//! cannot connect as another app.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use switchyard::{ErrorKind, Record, Switchyard};
use switchyard_config::client::{self, BearerToken};
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_proto::v1::{
    ApplyRequest, Change, ClientProfile, Cluster, ListClientsRequest, change::Op,
};

const ADMIN: &str = "sdk-admin-token-0123456789";

fn secret_cluster(name: &str, bootstrap: &str) -> Change {
    Change {
        op: Some(Op::UpsertCluster(Cluster {
            name: name.into(),
            bootstrap: vec![bootstrap.into()],
            // librdkafka accepts SASL settings on a plaintext connection and does not use them.
            properties: HashMap::from([("sasl.password".into(), format!("pw-{name}"))]),
            ..Default::default()
        })),
    }
}

fn profile(app: &str, topic: &str) -> Change {
    Change {
        op: Some(Op::UpsertProfile(ClientProfile {
            app: app.into(),
            allowed_topics: vec![topic.into()],
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_token_produces_and_consumes_through_its_scoped_view() {
    let (east, west) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let a = switchyard_config::tokens::mint("scoped-a").unwrap();
    let b = switchyard_config::tokens::mint("scoped-b").unwrap();
    let tokens = dir.path().join("client-tokens");
    std::fs::write(&tokens, format!("{}\n{}\n", a.line, b.line)).unwrap();
    let svc = switchyard_config::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreConfig::Memory,
        admin_token: Some(ADMIN.into()),
        client_tokens: Some(tokens),
        ..Default::default()
    })
    .await
    .expect("config service starts");
    let url = format!("http://{}", svc.local_addr());
    let ch = client::connect(&url, None).await.unwrap();
    let mut adm = client::admin(ch, BearerToken::new(Some(ADMIN)).unwrap());

    let (ta, tb) = (fresh("scoped-a"), fresh("scoped-b"));
    create_topic(&east, &ta, 2).await;
    create_topic(&west, &tb, 1).await;
    adm.apply(ApplyRequest {
        expected_version: 0,
        changes: vec![
            secret_cluster("east", &east),
            secret_cluster("west", &west),
            topic(&ta, "east", "", 2),
            topic(&tb, "west", "", 1),
            profile("scoped-a", &ta),
            profile("scoped-b", &tb),
        ],
        author: "test".into(),
        ..Default::default()
    })
    .await
    .expect("apply");

    let sy = Switchyard::builder("scoped-a")
        .endpoint(&url)
        .token(&a.token)
        .without_cache()
        .status_interval(Duration::from_millis(200))
        .connect()
        .await
        .expect("connects with its client token");
    let md = sy.metadata();
    assert_eq!(
        md.state.clusters.keys().collect::<Vec<_>>(),
        ["east"],
        "only the cluster its topics use"
    );
    assert_eq!(md.state.topics.keys().collect::<Vec<_>>(), [&ta]);
    assert_eq!(
        md.state.clusters["east"].properties["sasl.password"],
        "pw-east"
    );
    assert!(!format!("{:?}", md.state).contains("pw-west"));

    let p = sy.producer();
    for i in 0..20 {
        let d = p
            .send(
                Record::new(&ta)
                    .key(format!("k{i}"))
                    .payload(format!("v{i}")),
            )
            .await
            .unwrap();
        assert_eq!(d.cluster, "east");
    }
    // b's topic is not part of a's configuration at all.
    let err = p.send(Record::new(&tb).payload("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownTopic);
    assert_eq!(read_all(&east, &ta).len(), 20);

    let c = sy.consumer(&fresh("scoped-g"), &[&ta]).unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20 {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .expect("records arrive")
            .unwrap();
        assert_eq!(m.cluster, "east");
        seen.insert(m.payload.clone());
    }

    // The status report went through with the token, as app scoped-a.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let l = adm
            .list_clients(ListClientsRequest {
                app: "scoped-a".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if l.clients.iter().any(|c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.client_id == sy.client_id())
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client's status never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // a's token cannot connect as b.
    let err = Switchyard::builder("scoped-b")
        .endpoint(&url)
        .token(&a.token)
        .without_cache()
        .initial_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::NoConfig);
    assert!(
        err.to_string()
            .contains("the client token is for app \"scoped-a\""),
        "{err}"
    );
    drop(c);
    drop(p);
    drop(sy);
    svc.shutdown().await.unwrap();
}
