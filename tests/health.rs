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
    let disabled = herald.endpoint(created.id).await.unwrap();
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
    let strict = herald.endpoint(strict.id).await.unwrap();
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
        herald.endpoint(lenient.id).await.unwrap().enabled,
        "410 is an ordinary failure otherwise"
    );
}

#[tokio::test]
async fn test_send_reports_the_answer_and_does_not_move_the_failure_count() {
    let receiver = Receiver::start(|_, _| Reply::Status(503, "busy")).await;
    let dir = tempfile::tempdir().unwrap();
    let fragile = policy(
        "fragile",
        "[schedule]\nkind = \"fixed\"\ninterval = \"1h\"\nmax_attempts = 2\n[endpoint]\ndeactivate_after = 1\n",
    );
    let herald = open_with(dir.path(), vec![fragile], EngineConfig::default()).await;
    let created = herald
        .create_endpoint(endpoint("acme", receiver.url(), "fragile"))
        .await
        .unwrap();
    for _ in 0..3 {
        let result = herald.test_endpoint(created.id).await.unwrap();
        assert_eq!(result.status_code, Some(503));
        assert!(!result.success);
        assert_eq!(result.response_excerpt, "busy");
    }
    let after = herald.endpoint(created.id).await.unwrap();
    assert!(
        after.enabled,
        "test-sends never disable (deactivate_after = 1)"
    );
    assert_eq!(after.consecutive_failures, 0);
    assert_eq!(
        receiver.requests()[0].header("herald-event-type"),
        "herald.test"
    );
    assert_eq!(
        herald.endpoint_stats(created.id, 1).await.unwrap()[0].attempts,
        0
    );
}

#[tokio::test]
async fn todays_stats_count_exactly_what_the_receiver_saw() {
    let receiver = Receiver::flaky().await;
    let dir = tempfile::tempdir().unwrap();
    let quick = common::quick_policy("quick", "50ms", 10);
    let herald = open_with(dir.path(), vec![quick], EngineConfig::default()).await;
    let created = herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    for i in 0..8 {
        herald
            .send(NewMessage::new("acme", "e", &json!({ "i": i })).unwrap())
            .await
            .unwrap();
    }
    wait_final(&mut outcomes, 8, Duration::from_secs(10)).await;
    let days = herald.endpoint_stats(created.id, 14).await.unwrap();
    assert_eq!(days.len(), 14);
    let today = days.last().unwrap();
    let requests = receiver.count() as u64;
    let failures = (0..requests).filter(|n| n % 3 == 0).count() as u64;
    assert_eq!(
        (today.attempts, today.successes, today.failures),
        (requests, requests - failures, failures)
    );
    assert!(today.median_latency_ms.is_some());
    assert!(
        days[..13]
            .iter()
            .all(|d| d.attempts == 0 && d.median_latency_ms.is_none())
    );
}

#[tokio::test]
async fn the_roll_up_is_exact_per_day() {
    use common::fixtures::{put_endpoint, put_message, record_attempt};
    use herald::store::{SledOptions, SledStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let endpoint = put_endpoint(&store).await;
    let (_, delivery) = put_message(&store, endpoint, 0, DeliveryStatus::Pending).await;
    let day = 86_400_000_u64;
    // (day index, success) for a known mix over three days.
    let mix = [
        (100, true),
        (100, false),
        (100, false),
        (101, true),
        (103, true),
        (103, true),
        (103, false),
    ];
    for (d, success) in mix {
        record_attempt(&store, endpoint, delivery, d * day + 3_600_000, success).await;
    }
    let days: Vec<(u32, u64, u64, u64)> = store
        .endpoint_days(endpoint, 99, 104)
        .await
        .unwrap()
        .into_iter()
        .map(|(d, r)| (d, r.attempts, r.successes, r.failures()))
        .collect();
    assert_eq!(days, vec![(100, 3, 1, 2), (101, 1, 1, 0), (103, 3, 2, 1)]);
}

#[tokio::test]
async fn a_callback_urls_failures_never_touch_the_default_endpoints_health() {
    // The tenant's own endpoint is healthy; one message's own callback URL answers 410.
    let own = Receiver::ok().await;
    let gone = Receiver::start(|_, _| Reply::Status(410, "gone")).await;
    let dir = tempfile::tempdir().unwrap();
    let strict = policy(
        "strict",
        "[schedule]\nkind = \"fixed\"\ninterval = \"50ms\"\nmax_attempts = 3\n[endpoint]\ndisable_on_gone = true\ndeactivate_after = 2\n",
    );
    let herald = open_with(dir.path(), vec![strict], EngineConfig::default()).await;
    let default = herald
        .create_endpoint(endpoint("acme", own.url(), "strict"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    for n in 0..3 {
        herald
            .send(
                NewMessage::new("acme", "e", &json!({ "n": n }))
                    .unwrap()
                    .callback_url(gone.url()),
            )
            .await
            .unwrap();
    }
    let finals = wait_final(&mut outcomes, 3, Duration::from_secs(5)).await;
    assert!(
        finals
            .iter()
            .all(|e| e.delivery_status == DeliveryStatus::Failed)
    );
    let after = herald.endpoint(default.id).await.unwrap();
    assert!(
        after.enabled,
        "a 410 from a message's own URL disabled the endpoint"
    );
    assert_eq!(after.consecutive_failures, 0);
    // The endpoint itself still delivers.
    herald
        .send(NewMessage::new("acme", "e", &json!({"n": "own"})).unwrap())
        .await
        .unwrap();
    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    assert_eq!(finals[0].delivery_status, DeliveryStatus::Succeeded);
    assert_eq!(own.count(), 1);
}

#[tokio::test]
async fn releasing_a_hold_keeps_the_schedules_gaps() {
    // Every attempt fails; three attempts 400 ms apart.
    let receiver = Receiver::start(|_, _| Reply::Status(500, "down")).await;
    let dir = tempfile::tempdir().unwrap();
    let paced = policy(
        "paced",
        "[schedule]\nkind = \"fixed\"\ninterval = \"400ms\"\nmax_attempts = 3\n[request]\ntimeout = \"2s\"\n",
    );
    let herald = open_with(dir.path(), vec![paced], EngineConfig::default()).await;
    let created = herald
        .create_endpoint(endpoint("acme", receiver.url(), "paced"))
        .await
        .unwrap();
    herald
        .send(NewMessage::new("acme", "e", &json!({})).unwrap())
        .await
        .unwrap();
    assert!(receiver.wait_for(1, Duration::from_secs(5)).await);
    herald
        .set_endpoint_enabled(created.id, false)
        .await
        .unwrap();
    // Held for longer than the rest of the schedule: attempts 2 and 3 were due meanwhile.
    assert!(!receiver.wait_for(2, Duration::from_millis(1_200)).await);
    let mut outcomes = herald.outcomes();
    herald.set_endpoint_enabled(created.id, true).await.unwrap();
    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    assert_eq!(finals[0].delivery_status, DeliveryStatus::Failed);
    let times: Vec<_> = receiver.requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 3);
    let gap = times[2] - times[1];
    assert!(
        gap >= Duration::from_millis(350),
        "the attempts after the release came {gap:?} apart, not the policy's 400 ms"
    );
}

#[tokio::test]
async fn a_delivery_of_a_deleted_endpoint_cannot_be_replayed() {
    let receiver = Receiver::start(|_, _| Reply::Status(500, "down")).await;
    let dir = tempfile::tempdir().unwrap();
    let once = policy(
        "once",
        "[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 1\n",
    );
    let herald = open_with(dir.path(), vec![once], EngineConfig::default()).await;
    let created = herald
        .create_endpoint(endpoint("acme", receiver.url(), "once"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let receipt = herald
        .send(NewMessage::new("acme", "e", &json!({})).unwrap())
        .await
        .unwrap();
    wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    herald.delete_endpoint(created.id).await.unwrap();
    let replay = herald.replay(receipt.deliveries[0].id).await;
    assert!(
        matches!(&replay, Err(herald::Error::Conflict(why)) if why.contains("deleted")),
        "{replay:?}"
    );
    assert_eq!(herald.pending_deliveries().await.unwrap(), 0);
}
