//! The delivery core against real local receivers.

mod common;

use std::time::Duration;

use common::{Receiver, Reply, endpoint, open, open_with, quick_policy, wait_final};
use herald::{DeliveryFilter, DeliveryStatus, EngineConfig, Error, NewMessage};
use serde_json::json;

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_exactly_three_requests_on_schedule() {
    let receiver = Receiver::start(|n, _| {
        if n < 2 {
            Reply::Status(500, "down")
        } else {
            Reply::Status(200, "ok")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("quick", "300ms", 5)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();

    let receipt = herald
        .send(NewMessage::new("acme", "job.completed", &json!({"job": 1})).unwrap())
        .await
        .unwrap();
    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(10)).await;

    assert_eq!(finals[0].delivery_status, DeliveryStatus::Succeeded);
    assert_eq!(finals[0].attempt, 3);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(280) && gap < Duration::from_millis(1500),
            "gap {gap:?}"
        );
    }
    let id = receipt.id.to_string();
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.header("herald-message-id"), id);
        assert_eq!(request.header("herald-attempt"), (i + 1).to_string());
        assert_eq!(request.body.as_ref(), br#"{"job":1}"#);
    }
    let delivery = herald.delivery(receipt.deliveries[0].id).await.unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    let attempts = herald.attempts(delivery.id).await.unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![Some(500), Some(500), Some(200)]);
    assert!(attempts[2].success && !attempts[0].success);
}

#[tokio::test]
async fn exhaustion_fails_after_the_policy_count_and_replay_starts_a_fresh_cycle() {
    let receiver = Receiver::start(|_, _| Reply::Status(503, "busy")).await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("three", "100ms", 3)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "three"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let receipt = herald
        .send(NewMessage::new("acme", "job.completed", &json!({"n": 1})).unwrap())
        .await
        .unwrap();
    let delivery_id = receipt.deliveries[0].id;

    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(10)).await;
    assert_eq!(finals[0].delivery_status, DeliveryStatus::Failed);
    assert_eq!(receiver.count(), 3);
    assert!(matches!(
        herald.replay(delivery_id).await,
        Ok(d) if d.status == DeliveryStatus::Pending && d.cycle == 2
    ));
    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(10)).await;
    assert_eq!(finals[0].delivery_status, DeliveryStatus::Failed);
    assert_eq!(receiver.count(), 6);

    let attempts = herald.attempts(delivery_id).await.unwrap();
    let cycles: Vec<_> = attempts.iter().map(|a| (a.attempt, a.cycle)).collect();
    assert_eq!(cycles, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]);
    let ids = receiver.message_ids();
    assert_eq!(
        ids.len(),
        1,
        "the message id is stable across retries and replays"
    );
}

#[tokio::test]
async fn replaying_a_pending_delivery_is_a_conflict() {
    let receiver = Receiver::start(|_, _| Reply::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("slow", "1h", 2)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "slow"))
        .await
        .unwrap();
    let receipt = herald
        .send(NewMessage::new("acme", "e", &json!({})).unwrap())
        .await
        .unwrap();
    let err = herald.replay(receipt.deliveries[0].id).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_stores_nothing() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;

    let unknown = herald
        .create_endpoint(endpoint("acme", receiver.url(), "no-such-policy"))
        .await;
    assert!(matches!(unknown, Err(Error::UnknownPolicy(ref p)) if p == "no-such-policy"));
    for url in [
        "ftp://x.example/",
        "not a url",
        "https://user:pw@x.example/",
    ] {
        let bad = herald
            .create_endpoint(endpoint("acme", url.into(), "gengo-15m-12h"))
            .await;
        assert!(
            matches!(bad, Err(Error::InvalidUrl { .. })),
            "{url}: {bad:?}"
        );
    }
    // What does not parse, or has no host, is not repeated (it might be credentials), and no
    // placeholder stands in for it.
    for (url, why) in [
        (
            "user:pw@x.example",
            "invalid URL: scheme \"user\" is not http or https",
        ),
        ("pw@x.example", "invalid URL: not an absolute URL"),
    ] {
        let said = herald
            .create_endpoint(endpoint("acme", url.into(), "gengo-15m-12h"))
            .await
            .unwrap_err()
            .to_string();
        assert!(said.starts_with(why) && !said.contains("pw"), "{said}");
    }
    assert!(herald.endpoints(None).await.unwrap().is_empty());

    herald
        .create_endpoint(endpoint("acme", receiver.url(), "ovesio"))
        .await
        .unwrap();
    let big = "x".repeat(70_000);
    let too_large = herald
        .send(NewMessage::new("acme", "e", &json!({ "blob": big })).unwrap())
        .await;
    match too_large {
        Err(Error::PayloadTooLarge { size, limit }) => {
            assert_eq!(limit, 61_440);
            assert!(size > 70_000);
        }
        other => panic!("{other:?}"),
    }
    let bad_callback = herald
        .send(
            NewMessage::new("acme", "e", &json!({}))
                .unwrap()
                .callback_url("gopher://x.example/"),
        )
        .await;
    assert!(matches!(bad_callback, Err(Error::InvalidUrl { .. })));
    let empty_tenant = herald
        .send(NewMessage::new("", "e", &json!({})).unwrap())
        .await;
    assert!(matches!(empty_tenant, Err(Error::InvalidRequest(_))));

    let all = DeliveryFilter {
        limit: 100,
        ..DeliveryFilter::default()
    };
    assert!(herald.deliveries(&all).await.unwrap().is_empty());
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_receipt_and_sends_once() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("quick", "100ms", 2)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await
        .unwrap();
    let message = || {
        NewMessage::new("acme", "e", &json!({"v": 1}))
            .unwrap()
            .idempotency_key("k-1")
    };
    let first = herald.send(message()).await.unwrap();
    let second = herald.send(message()).await.unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.id, second.id);
    assert_eq!(first.deliveries[0].id, second.deliveries[0].id);
    assert!(receiver.wait_for(1, Duration::from_secs(5)).await);
    // The same key with the same payload spelled differently is the same message ...
    let respelled = NewMessage {
        payload: serde_json::value::RawValue::from_string("{ \"v\" : 1 }".into()).unwrap(),
        ..message()
    };
    assert_eq!(herald.send(respelled).await.unwrap().id, first.id);
    // ... a different payload or event type under the same key is the producer's bug.
    let different = NewMessage::new("acme", "e", &json!({"v": 2}))
        .unwrap()
        .idempotency_key("k-1");
    let refused = herald.send(different).await;
    assert!(
        matches!(&refused, Err(herald::Error::Conflict(why)) if why.contains("k-1")),
        "{refused:?}"
    );
    let other_event = NewMessage::new("acme", "other", &json!({"v": 1}))
        .unwrap()
        .idempotency_key("k-1");
    assert!(matches!(
        herald.send(other_event).await,
        Err(herald::Error::Conflict(_))
    ));
    assert!(!receiver.wait_for(2, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn a_message_no_endpoint_takes_is_said_so_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    let receipt = herald
        .send(NewMessage::new("acme-typo", "e", &json!({})).unwrap())
        .await
        .unwrap();
    assert!(receipt.deliveries.is_empty());
    let reason = receipt
        .unrouted
        .expect("the answer says nothing is delivered");
    assert!(reason.contains("acme-typo"), "{reason}");
    herald.shutdown().await.unwrap();
    drop(herald);

    let strict = EngineConfig {
        unrouted: herald::Unrouted::Reject,
        ..EngineConfig::default()
    };
    let herald = open_with(dir.path(), vec![], strict).await;
    let refused = herald
        .send(NewMessage::new("acme-typo", "e", &json!({"n": 2})).unwrap())
        .await;
    assert!(
        matches!(refused, Err(herald::Error::Unrouted(_))),
        "{refused:?}"
    );
    let stored = herald
        .deliveries(&herald::DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(stored.is_empty());
}

#[tokio::test]
async fn pending_deliveries_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens yet: attempts fail with connect errors
    let policies = || vec![quick_policy("quick", "200ms", 100)];
    let herald = open(dir.path(), policies()).await;
    herald
        .create_endpoint(endpoint("acme", format!("http://{addr}/hook"), "quick"))
        .await
        .unwrap();
    for i in 0..20 {
        herald
            .send(NewMessage::new("acme", "e", &json!({ "i": i })).unwrap())
            .await
            .unwrap();
    }
    herald.shutdown().await.unwrap();
    drop(herald);

    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        |_, _| Reply::Status(200, "ok"),
    );
    let herald = open(dir.path(), policies()).await;
    assert!(receiver.wait_for(20, Duration::from_secs(10)).await);
    assert_eq!(receiver.message_ids().len(), 20);
    herald.shutdown().await.unwrap();
}

#[tokio::test]
async fn allowing_private_targets_survives_a_later_engine_config() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = herald::Herald::builder()
        .data_dir(dir.path())
        .policy(quick_policy("quick", "100ms", 5))
        .allow_private_targets(true)
        .engine_config(herald::EngineConfig::default())
        .open()
        .await
        .unwrap();
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await
        .unwrap();
    herald.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_ssrf_guard_is_on_by_default() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = herald::Herald::builder()
        .data_dir(dir.path())
        .policy(quick_policy("quick", "100ms", 5))
        .open()
        .await
        .unwrap();
    // A literal private address is refused when the endpoint is created.
    let literal = herald
        .create_endpoint(endpoint("acme", receiver.url(), "quick"))
        .await;
    match literal {
        Err(Error::InvalidUrl { reason, .. }) => assert!(reason.contains("loopback"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A name is checked on the addresses it resolves to, when connecting: refused, not retried.
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    herald
        .create_endpoint(endpoint("acme", by_name, "quick"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    herald
        .send(NewMessage::new("acme", "e", &json!({})).unwrap())
        .await
        .unwrap();
    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    assert_eq!(finals[0].delivery_status, DeliveryStatus::Failed);
    assert_eq!(finals[0].attempt, 1, "a refused target is not retried");
    assert_eq!(finals[0].error, Some(herald::ErrorKind::Refused));
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn deliveries_go_through_the_egress_proxy() {
    // A stand-in proxy on 127.0.0.1: it sees the absolute-form requests a client sends to an
    // HTTP proxy, records them and answers 200 itself.
    let proxy = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.client.proxy = Some(format!("http://{}", proxy.addr));
    let herald = herald::Herald::builder()
        .data_dir(dir.path())
        .engine_config(config)
        .policy(quick_policy("quick", "100ms", 3))
        .open()
        .await
        .unwrap();
    herald
        .create_endpoint(endpoint(
            "acme",
            "http://tms.example/callbacks?token=abc".into(),
            "quick",
        ))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    herald
        .send(NewMessage::new("acme", "e", &json!({"via": "proxy"})).unwrap())
        .await
        .unwrap();
    let finals = wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    assert_eq!(finals[0].delivery_status, DeliveryStatus::Succeeded);
    let seen = &proxy.requests()[0];
    assert_eq!(seen.uri, "http://tms.example/callbacks?token=abc");
    assert_eq!(seen.body.as_ref(), br#"{"via":"proxy"}"#);
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly_and_still_guarded() {
    // Through the proxy: a public name. Direct, because it is on the no-proxy list: `localhost`,
    // which the SSRF guard must still refuse (private targets are not allowed here) — had it
    // gone through the proxy, the proxy would have answered 200.
    let proxy = Receiver::ok().await;
    let direct = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.client.proxy = Some(format!("http://{}", proxy.addr));
    config.client.no_proxy = Some("localhost, .internal.example".into());
    let herald = herald::Herald::builder()
        .data_dir(dir.path())
        .engine_config(config)
        .policy(quick_policy("quick", "100ms", 3))
        .open()
        .await
        .unwrap();
    let mut proxied_endpoint = endpoint("acme", "http://tms.example/cb".into(), "quick");
    proxied_endpoint.event_types = vec!["proxied".into()];
    let mut direct_endpoint = endpoint(
        "acme",
        format!("http://localhost:{}/cb", direct.addr.port()),
        "quick",
    );
    direct_endpoint.event_types = vec!["direct".into()];
    direct_endpoint.default = false;
    herald.create_endpoint(proxied_endpoint).await.unwrap();
    herald.create_endpoint(direct_endpoint).await.unwrap();
    let mut outcomes = herald.outcomes();
    for event in ["proxied", "direct"] {
        herald
            .send(NewMessage::new("acme", event, &json!({"e": event})).unwrap())
            .await
            .unwrap();
    }
    let finals = wait_final(&mut outcomes, 2, Duration::from_secs(5)).await;
    let mut errors: Vec<_> = finals.iter().map(|o| o.error).collect();
    errors.sort_by_key(|e| e.is_some());
    assert_eq!(errors, vec![None, Some(herald::ErrorKind::Refused)]);
    assert_eq!(
        proxy.count(),
        1,
        "only the proxied host goes through the proxy"
    );
    assert_eq!(proxy.requests()[0].uri, "http://tms.example/cb");
    assert_eq!(
        direct.count(),
        0,
        "the guard refused the direct private target"
    );
}

#[tokio::test]
async fn the_pending_count_follows_every_transition_and_survives_a_restart() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open_with(
        dir.path(),
        vec![quick_policy("quick", "100ms", 3)],
        EngineConfig::default(),
    )
    .await;
    herald
        .create_endpoint(endpoint("live", receiver.url(), "quick"))
        .await
        .unwrap();
    let quiet = herald
        .create_endpoint(endpoint("quiet", receiver.url(), "quick"))
        .await
        .unwrap();
    herald.set_endpoint_enabled(quiet.id, false).await.unwrap();
    let mut outcomes = herald.outcomes();
    for (tenant, n) in [("live", 4), ("quiet", 3)] {
        for i in 0..n {
            herald
                .send(NewMessage::new(tenant, "e", &json!({"i": i})).unwrap())
                .await
                .unwrap();
        }
    }
    let finals = wait_final(&mut outcomes, 4, Duration::from_secs(5)).await;
    assert_eq!(
        herald.pending_deliveries().await.unwrap(),
        3,
        "only the held ones"
    );
    herald.replay(finals[0].delivery_id).await.unwrap();
    assert_eq!(herald.pending_deliveries().await.unwrap(), 4);
    wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    assert_eq!(herald.pending_deliveries().await.unwrap(), 3);
    herald.shutdown().await.unwrap();
    drop(herald);

    let herald = open_with(
        dir.path(),
        vec![quick_policy("quick", "100ms", 3)],
        EngineConfig::default(),
    )
    .await;
    assert_eq!(
        herald.pending_deliveries().await.unwrap(),
        3,
        "counted again at open"
    );
    herald.delete_endpoint(quiet.id).await.unwrap();
    assert_eq!(herald.pending_deliveries().await.unwrap(), 0);
}

#[tokio::test]
async fn an_operator_can_retry_a_pending_delivery_now_or_cancel_it() {
    // Fails first, then accepts; retries are an hour apart.
    let receiver = Receiver::first_then_ok(Reply::Status(500, "down")).await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![quick_policy("slow", "1h", 3)]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "slow"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let first = herald
        .send(NewMessage::new("acme", "e", &json!({"n": 1})).unwrap())
        .await
        .unwrap();
    let event = outcomes.next().await.unwrap();
    assert_eq!(event.delivery_status, DeliveryStatus::Pending);
    let id = first.deliveries[0].id;

    // Retry now: attempted at once instead of in an hour.
    herald.retry_now(id).await.unwrap();
    let event = outcomes.next().await.unwrap();
    assert_eq!(
        (event.attempt, event.delivery_status),
        (2, DeliveryStatus::Succeeded)
    );
    assert!(matches!(
        herald.retry_now(id).await,
        Err(herald::Error::Conflict(_))
    ));

    // Cancel: a pending delivery (its endpoint held) becomes failed and is never attempted.
    let receipt = herald
        .send(NewMessage::new("acme", "e", &json!({"n": 2})).unwrap())
        .await
        .unwrap();
    wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    let endpoint_id = receipt.deliveries[0].endpoint_id;
    herald
        .set_endpoint_enabled(endpoint_id, false)
        .await
        .unwrap();
    let held = herald
        .send(NewMessage::new("acme", "e", &json!({"n": 3})).unwrap())
        .await
        .unwrap();
    let cancelled = herald.cancel(held.deliveries[0].id).await.unwrap();
    assert_eq!(cancelled.status, DeliveryStatus::Failed);
    assert_eq!(
        cancelled.last_error.as_deref(),
        Some("cancelled by an operator")
    );
    assert_eq!(herald.pending_deliveries().await.unwrap(), 0);
    herald
        .set_endpoint_enabled(endpoint_id, true)
        .await
        .unwrap();
    assert!(!receiver.wait_for(4, Duration::from_millis(300)).await);
    assert_eq!(receiver.count(), 3);
}
