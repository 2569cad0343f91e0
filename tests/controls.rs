//! Delivery controls through the library, against real receivers: ordering keys, rate limits,
//! scheduled sends, and the inputs they refuse.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::{Receiver, Reply, endpoint, open, quick_policy, wait_final};
use herald::{DeliveryStatus, EndpointUpdate, Error, NewMessage};
use serde_json::json;

/// The payload field `n` of each request, in arrival order.
fn arrivals(receiver: &Receiver) -> Vec<(String, u64, Instant)> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (
                body["key"].as_str().unwrap_or("-").to_string(),
                body["n"].as_u64().unwrap(),
                r.at,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_head_holds_only_its_own_key_and_order_is_kept() {
    // The first message of job-7 fails twice before it is accepted; everything else succeeds.
    let receiver = Receiver::start(|_, request| {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let tries = request.header("herald-attempt").parse::<u32>().unwrap();
        if body["key"] == "job-7" && body["n"] == 0 && tries < 3 {
            Reply::Status(500, "not yet")
        } else {
            Reply::Status(200, "ok")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("quick", "300ms", 10)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let mut sent = 0;
    for n in 0..6u64 {
        for key in ["job-7", "job-8", "-"] {
            let mut message =
                NewMessage::new("acme", "job.status", &json!({"key": key, "n": n})).unwrap();
            if key != "-" {
                message = message.ordering_key(key);
            }
            herald.send(message).await.unwrap();
            sent += 1;
        }
    }
    wait_final(&mut outcomes, sent, Duration::from_secs(30)).await;

    let seen = arrivals(&receiver);
    let by_key = |key: &str| -> Vec<u64> {
        seen.iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, n, _)| *n)
            .collect()
    };
    // One at a time, in acceptance order: the head's retries come before its successors.
    assert_eq!(by_key("job-7"), [0, 0, 0, 1, 2, 3, 4, 5]);
    assert_eq!(by_key("job-8"), [0, 1, 2, 3, 4, 5]);
    // The other key and unkeyed messages were not held by job-7's retrying head.
    let head_done = seen
        .iter()
        .filter(|(k, n, _)| k == "job-7" && *n == 0)
        .map(|(_, _, at)| *at)
        .max()
        .unwrap();
    for (key, n, at) in &seen {
        if key != "job-7" {
            assert!(*at < head_done, "{key} #{n} waited for job-7's head");
        }
    }
    herald.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_attempts_and_leaves_other_endpoints_alone() {
    let limited = Receiver::ok().await;
    let free = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("quick", "300ms", 10)]).await;
    let mut slow = endpoint("slow", limited.url(), "quick");
    slow.rate_limit = Some(20.0);
    let slow = herald.create_endpoint(slow).await.unwrap();
    herald
        .create_endpoint(endpoint("fast", free.url(), "quick"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let started = Instant::now();
    let sends = (0..100u64).flat_map(|n| {
        ["slow", "fast"].map(|tenant| {
            let herald = herald.clone();
            async move {
                herald
                    .send(NewMessage::new(tenant, "e", &json!({"n": n})).unwrap())
                    .await
                    .unwrap()
            }
        })
    });
    futures_util::future::join_all(sends).await;
    assert!(free.wait_for(100, Duration::from_secs(20)).await);
    let free_done = started.elapsed();
    let pacing = herald.endpoint_pacing(slow.id).await.unwrap().unwrap();
    assert_eq!(pacing.rate_limit, 20.0);
    assert!(pacing.wait_ms <= 50, "{pacing:?}");
    assert!(limited.wait_for(100, Duration::from_secs(30)).await);
    let limited_done = started.elapsed();

    let times: Vec<Instant> = limited.requests().iter().map(|r| r.at).collect();
    let span = times[99] - times[0];
    assert!(
        span >= Duration::from_millis(4_900),
        "100 attempts at 20/s took {span:?}"
    );
    // No second holds more than 20 (10 ms allowed for the way from sender to receiver).
    for (i, first) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|t| **t - *first < Duration::from_millis(990))
            .count();
        assert!(within <= 20, "{within} attempts within a second from #{i}");
    }
    assert!(
        free_done * 2 < limited_done,
        "the other endpoint was slowed: {free_done:?} against {limited_done:?}"
    );
    // Waiting is neither a failure nor an attempt.
    wait_final(&mut outcomes, 200, Duration::from_secs(10)).await;
    for delivery in herald
        .deliveries(&herald::DeliveryFilter {
            endpoint_id: Some(slow.id),
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        assert_eq!(
            (delivery.status, delivery.total_attempts),
            (DeliveryStatus::Succeeded, 1)
        );
    }

    // Removing the limit lets the endpoint go at full speed.
    herald
        .update_endpoint(
            slow.id,
            EndpointUpdate {
                rate_limit: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(herald.endpoint_pacing(slow.id).await.unwrap(), None);
    herald.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_waits_for_its_time() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("quick", "300ms", 10)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await
        .unwrap();
    let accepted = Instant::now();
    let later = herald
        .send(
            NewMessage::new("acme", "job.deadline", &json!({"n": 1}))
                .unwrap()
                .delay(Duration::from_millis(1_500)),
        )
        .await
        .unwrap();
    let at = SystemTime::now() + Duration::from_millis(700);
    herald
        .send(
            NewMessage::new("acme", "job.deadline", &json!({"n": 2}))
                .unwrap()
                .deliver_at(at),
        )
        .await
        .unwrap();
    let delivery = herald.delivery(later.deliveries[0].id).await.unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert!(later.deliveries[0].next_attempt_at.is_some());
    assert_eq!(herald.pending_deliveries().await.unwrap(), 2);

    assert!(receiver.wait_for(2, Duration::from_secs(10)).await);
    let requests = receiver.requests();
    let first_at = requests[0].at - accepted;
    let second_at = requests[1].at - accepted;
    assert!(first_at >= Duration::from_millis(650), "{first_at:?}");
    assert!(second_at >= Duration::from_millis(1_450), "{second_at:?}");
    herald.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_controls_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("quick", "300ms", 10)]).await;
    herald
        .create_endpoint(endpoint("acme", "http://127.0.0.1:9/hook".into(), "quick"))
        .await
        .unwrap();
    let message = || NewMessage::new("acme", "e", &json!({})).unwrap();
    let mut both = message().delay(Duration::from_secs(60));
    both.deliver_at = Some("2030-01-01T00:00:00Z".into());
    let mut negative = message();
    negative.delay = Some("-5m".into());
    let mut unparsable = message();
    unparsable.deliver_at = Some("next tuesday".into());
    let cases: HashMap<&str, NewMessage> = HashMap::from([
        ("both", both),
        ("negative", negative),
        ("unparsable", unparsable),
        (
            "too far",
            message().delay(Duration::from_secs(366 * 86_400)),
        ),
        ("long key", message().ordering_key("k".repeat(257))),
        ("empty key", message().ordering_key("")),
        ("control key", message().ordering_key("job\n7")),
    ]);
    for (case, message) in cases {
        match herald.send(message).await {
            Err(Error::InvalidRequest(reason)) => assert!(!reason.is_empty(), "{case}"),
            other => panic!("{case}: {other:?}"),
        }
    }
    assert_eq!(herald.pending_deliveries().await.unwrap(), 0);
    assert!(
        herald
            .send(message().ordering_key("k".repeat(256)))
            .await
            .is_ok()
    );

    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut new = endpoint("acme", "http://127.0.0.1:9/hook".into(), "quick");
        new.rate_limit = Some(rate);
        assert!(
            matches!(
                herald.create_endpoint(new).await,
                Err(Error::InvalidRequest(_))
            ),
            "rate_limit {rate}"
        );
    }
    herald.shutdown().await.unwrap();
}
