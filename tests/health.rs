//! Endpoint health: deactivation after consecutive failures, 410 Gone, notifications, enable.

mod common;

use std::time::Duration;

use common::{Receiver, Reply, endpoint, open_with, policy, wait_final};
use herald::{DeliveryStatus, EngineConfig, NewMessage};
use serde_json::{Value, json};

#[tokio::test]
async fn five_failures_disable_the_endpoint_notify_once_and_hold_until_enabled() {
    // Fails the first five requests, then accepts everything.
    let receiver = Receiver::start(|n, _| {
        if n < 5 {
            Reply::Status(500, "down")
        } else {
            Reply::Status(200, "ok")
        }
    })
    .await;
    let operators = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let fragile = policy(
        "fragile",
        "[schedule]\nkind = \"fixed\"\ninterval = \"50ms\"\nmax_attempts = 100\n[request]\ntimeout = \"2s\"\n[endpoint]\ndeactivate_after = 5\n",
    );
    let config = EngineConfig {
        notify_url: Some(operators.url()),
        ..EngineConfig::default()
    };
    let herald = open_with(dir.path(), vec![fragile], config).await;
    let created = herald
        .create_endpoint(endpoint("acme", receiver.url(), "fragile"))
        .await
        .unwrap();
    herald
        .send(NewMessage::new("acme", "job.completed", &json!({"n": 1})).unwrap())
        .await
        .unwrap();

    assert!(
        operators.wait_for(1, Duration::from_secs(10)).await,
        "no notification"
    );
    let disabled = herald.endpoint(created.id).unwrap();
    assert!(!disabled.enabled);
    assert_eq!(disabled.consecutive_failures, 5);
    assert_eq!(
        receiver.count(),
        5,
        "no attempt after the endpoint was disabled"
    );
    let note: Value = serde_json::from_slice(&operators.requests()[0].body).unwrap();
    assert_eq!(note["type"], "endpoint.disabled");
    assert_eq!(note["endpoint_id"], created.id.to_string());
    assert_eq!(note["tenant"], "acme");
    assert_eq!(note["url"], receiver.url());
    assert_eq!(note["consecutive_failures"], 5);
    assert!(
        note["last_error"].as_str().unwrap().contains("500"),
        "{note}"
    );

    // New messages for a disabled endpoint are recorded as held.
    let mut held = Vec::new();
    for n in 2..4 {
        let receipt = herald
            .send(NewMessage::new("acme", "job.completed", &json!({ "n": n })).unwrap())
            .await
            .unwrap();
        assert_eq!(receipt.deliveries[0].status, DeliveryStatus::Held);
        held.push(receipt.id.to_string());
    }
    assert!(!receiver.wait_for(6, Duration::from_millis(300)).await);
    assert_eq!(operators.count(), 1, "exactly one notification");

    let mut outcomes = herald.outcomes();
    let enabled = herald.set_endpoint_enabled(created.id, true).await.unwrap();
    assert_eq!(enabled.consecutive_failures, 0);
    let finals = wait_final(&mut outcomes, 3, Duration::from_secs(10)).await;
    assert!(
        finals
            .iter()
            .all(|e| e.delivery_status == DeliveryStatus::Succeeded)
    );
    let seen = receiver.message_ids();
    assert!(held.iter().all(|id| seen.contains(id)));
    assert_eq!(operators.count(), 1);
}

#[tokio::test]
async fn gone_disables_at_once_under_disable_on_gone() {
    let receiver = Receiver::start(|_, _| Reply::Status(410, "gone")).await;
    let dir = tempfile::tempdir().unwrap();
    let gone = policy(
        "gone",
        "[schedule]\nkind = \"fixed\"\ninterval = \"50ms\"\nmax_attempts = 10\n[endpoint]\ndisable_on_gone = true\n",
    );
    let plain = policy(
        "plain",
        "[schedule]\nkind = \"fixed\"\ninterval = \"50ms\"\nmax_attempts = 2\n",
    );
    let herald = open_with(dir.path(), vec![gone, plain], EngineConfig::default()).await;
    let strict = herald
        .create_endpoint(endpoint("a", receiver.url(), "gone"))
        .await
        .unwrap();
    let lenient = herald
        .create_endpoint(endpoint("b", receiver.url(), "plain"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    for tenant in ["a", "b"] {
        herald
            .send(NewMessage::new(tenant, "e", &json!({})).unwrap())
            .await
            .unwrap();
    }
    let finals = wait_final(&mut outcomes, 2, Duration::from_secs(5)).await;
    assert!(
        finals
            .iter()
            .all(|e| e.delivery_status == DeliveryStatus::Failed)
    );
    let strict = herald.endpoint(strict.id).unwrap();
    assert!(!strict.enabled, "410 disables under disable_on_gone");
    assert_eq!(
        finals
            .iter()
            .find(|e| e.endpoint_id == strict.id)
            .unwrap()
            .attempt,
        1
    );
    assert!(
        herald.endpoint(lenient.id).unwrap().enabled,
        "410 is an ordinary failure otherwise"
    );
}
