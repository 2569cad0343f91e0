//! Isolation: endpoints whose receivers hang hold few of herald's slots, and a healthy
//! endpoint keeps its latency and throughput beside them.

mod common;

use std::time::Duration;

use common::{Receiver, Reply, endpoint, open_with};
use herald::{EngineConfig, NewMessage};
use serde_json::json;

#[tokio::test]
async fn a_hanging_endpoint_cannot_starve_a_healthy_one() {
    let dead = Receiver::start(|_, _| Reply::Hang).await;
    let healthy = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let slow = common::policy(
        "slow",
        "[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\n[request]\ntimeout = \"30s\"\n",
    );
    let config = EngineConfig {
        endpoint_concurrency: 4,
        max_in_flight: 64,
        ..EngineConfig::default()
    };
    let herald = open_with(dir.path(), vec![slow], config).await;
    herald
        .create_endpoint(endpoint("dead", dead.url(), "slow"))
        .await
        .unwrap();
    herald
        .create_endpoint(endpoint("live", healthy.url(), "slow"))
        .await
        .unwrap();

    for i in 0..200 {
        herald
            .send(NewMessage::new("dead", "e", &json!({ "i": i })).unwrap())
            .await
            .unwrap();
    }
    assert!(dead.wait_for(1, Duration::from_secs(5)).await);
    for i in 0..200 {
        herald
            .send(NewMessage::new("live", "e", &json!({ "i": i })).unwrap())
            .await
            .unwrap();
    }
    assert!(
        healthy.wait_for(200, Duration::from_secs(10)).await,
        "healthy endpoint got {} of 200",
        healthy.count()
    );
    assert_eq!(
        dead.count(),
        1,
        "a receiver that never answers holds one attempt, not its whole budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_hung_endpoints_leave_room_for_a_healthy_one() {
    // 100 endpoints whose receiver accepts and never answers, 20 messages each: with 16
    // attempts each they would hold 1,600 claims, more than the global 1,024.
    let hung = Receiver::start(|_, _| Reply::Hang).await;
    let healthy = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let slow = common::policy(
        "slow",
        "[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\n[request]\ntimeout = \"60s\"\n",
    );
    let herald = open_with(dir.path(), vec![slow], EngineConfig::default()).await;
    for e in 0..100 {
        herald
            .create_endpoint(endpoint(
                &format!("hung-{e}"),
                format!("{}/{e}", hung.url()),
                "slow",
            ))
            .await
            .unwrap();
    }
    herald
        .create_endpoint(endpoint("live", healthy.url(), "slow"))
        .await
        .unwrap();
    for i in 0..20 {
        for e in 0..100 {
            herald
                .send(NewMessage::new(format!("hung-{e}"), "e", &json!({ "i": i })).unwrap())
                .await
                .unwrap();
        }
    }
    assert!(
        hung.wait_for(100, Duration::from_secs(10)).await,
        "{}",
        hung.count()
    );

    // The healthy endpoint's first delivery arrives at once.
    let sent = std::time::Instant::now();
    herald
        .send(NewMessage::new("live", "e", &json!({"first": true})).unwrap())
        .await
        .unwrap();
    assert!(
        healthy.wait_for(1, Duration::from_secs(5)).await,
        "a healthy endpoint starved behind hung ones"
    );
    let latency = sent.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "first delivery took {latency:?}"
    );
    // And it keeps its throughput.
    for i in 0..500 {
        herald
            .send(NewMessage::new("live", "e", &json!({ "i": i })).unwrap())
            .await
            .unwrap();
    }
    assert!(
        healthy.wait_for(501, Duration::from_secs(10)).await,
        "{}",
        healthy.count()
    );
    assert!(
        hung.count() <= 200,
        "hung endpoints got {} attempts",
        hung.count()
    );
    herald
        .shutdown_within(Duration::from_millis(100))
        .await
        .unwrap();
}

#[tokio::test]
async fn attempts_run_on_the_delivery_runtime_they_are_given() {
    let deliveries = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hung = Receiver::start(|_, _| Reply::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        delivery_runtime: Some(deliveries.handle().clone()),
        ..EngineConfig::default()
    };
    let quick = common::quick_policy("quick", "1s", 2);
    let herald = open_with(dir.path(), vec![quick], config).await;
    herald
        .create_endpoint(endpoint("acme", hung.url(), "quick"))
        .await
        .unwrap();
    let alive = || deliveries.metrics().num_alive_tasks();
    let idle = alive();
    herald
        .send(NewMessage::new("acme", "e", &json!({ "i": 1 })).unwrap())
        .await
        .unwrap();
    assert!(hung.wait_for(1, Duration::from_secs(5)).await);
    // The attempt's runner and its HTTP connection are tasks of the delivery runtime; on the
    // caller's runtime the count would not move.
    assert!(
        alive() >= idle + 2,
        "tasks on the delivery runtime: {idle} idle, {} with an attempt on the wire",
        alive()
    );
    herald
        .shutdown_within(Duration::from_millis(100))
        .await
        .unwrap();
    deliveries.shutdown_background();
}
