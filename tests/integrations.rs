//! The shipped integration policies, end to end against real local receivers.

mod common;

use std::time::Duration;

use common::{Receiver, Reply, endpoint, open, wait_final};
use herald::policy::Backoff;
use herald::{
    DeliveryStatus, EndpointUpdate, Error, Herald, NewEndpoint, NewMessage, Policy, PolicySet,
};
use serde_json::{Value, json};

/// A shipped policy with its schedule shortened to `delays` (same success rule, encoding, ...).
fn shipped_with_quick_schedule(name: &str, delays_ms: &[u64]) -> Policy {
    let mut policy = PolicySet::built_in().get(name).unwrap().as_ref().clone();
    policy.schedule.backoff = Backoff::Explicit {
        delays: delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        jitter: 0.0,
    };
    policy
}

#[test]
fn shipped_schedules_match_the_integrations() {
    let set = PolicySet::built_in();
    let secs = |name: &str| -> Vec<u64> {
        set.get(name)
            .unwrap()
            .schedule
            .offsets()
            .iter()
            .map(Duration::as_secs)
            .collect()
    };
    let gengo = secs("gengo-15m-12h");
    assert_eq!(gengo.len(), 49);
    assert_eq!(gengo.last(), Some(&(12 * 3600)));
    assert!(gengo.windows(2).all(|w| w[1] - w[0] == 900));
    assert_eq!(secs("gengo-3x-hourly"), vec![0, 3600, 7200]);
    let phrase = secs("phrase");
    assert_eq!(phrase.len(), 11);
    assert!(phrase.windows(2).all(|w| w[1] - w[0] <= 1800));
    assert_eq!(secs("ovesio").len(), 3);
    assert_eq!(
        secs("standard-webhooks"),
        vec![0, 5, 305, 2105, 9305, 27305, 63305, 99305]
    );
    assert_eq!(set.get("phrase").unwrap().endpoint.deactivate_after, 3000);
}

#[tokio::test]
async fn gengo_callbacks_are_form_encoded_with_the_json_in_job_or_comment() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "gengo-3x-hourly"))
        .await
        .unwrap();
    let job =
        json!({"job_id": "384985", "status": "approved", "body_tgt": "Grüße & \"quotes\" = 100%"});
    let comment = json!({"job_id": "384985", "body": "Please check line 2 + 3"});
    herald
        .send(NewMessage::new("acme", "job.approved", &job).unwrap())
        .await
        .unwrap();
    herald
        .send(NewMessage::new("acme", "comment.added", &comment).unwrap())
        .await
        .unwrap();
    assert!(receiver.wait_for(2, Duration::from_secs(5)).await);

    let mut fields = Vec::new();
    for request in receiver.requests() {
        assert_eq!(
            request.header("content-type"),
            "application/x-www-form-urlencoded"
        );
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
        assert_eq!(pairs.len(), 1);
        let (field, value) = pairs.into_iter().next().unwrap();
        fields.push((field, serde_json::from_str::<Value>(&value).unwrap()));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fields,
        vec![("comment".into(), comment), ("job".into(), job)]
    );
}

#[tokio::test]
async fn tolq_signature_equals_an_independently_computed_hmac_sha1() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    let mut tolq = endpoint("acme", receiver.url(), "tolq");
    tolq.secret = Some("api-key-123".into());
    herald.create_endpoint(tolq).await.unwrap();
    herald
        .send(NewMessage::new("acme", "translation.completed", &json!({"id": 7})).unwrap())
        .await
        .unwrap();
    assert!(receiver.wait_for(1, Duration::from_secs(5)).await);
    let request = &receiver.requests()[0];
    assert_eq!(request.body.as_ref(), br#"{"id":7}"#);
    // printf '%s' '{"id":7}' | openssl dgst -sha1 -hmac 'api-key-123'
    assert_eq!(
        request.header("x-tolq-signature"),
        "7543b97f0ba4ca8ded25cd3cd95bbefc8684991d"
    );
    assert_eq!(request.header("content-type"), "application/json");
}

#[tokio::test]
async fn phrase_sends_the_endpoint_token() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    let mut phrase = endpoint("acme", receiver.url(), "phrase");
    let missing = herald.create_endpoint(phrase.clone()).await;
    assert!(
        matches!(missing, Err(Error::InvalidRequest(_))),
        "{missing:?}"
    );
    phrase.token = Some("memsource-token-1".into());
    herald.create_endpoint(phrase).await.unwrap();
    herald
        .send(
            NewMessage::new(
                "acme",
                "JOB_STATUS_CHANGED",
                &json!({"event": "JOB_STATUS_CHANGED"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(receiver.wait_for(1, Duration::from_secs(5)).await);
    assert_eq!(
        receiver.requests()[0].header("x-memsource-token"),
        "memsource-token-1"
    );
}

#[tokio::test]
async fn standard_webhooks_signs_with_both_secrets_during_rotation() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_c2VjcmV0LXR3by1ieXRlcy1mb3ItdGVzdGluZw==";
    let mut sw = endpoint("acme", receiver.url(), "standard-webhooks");
    sw.secret = Some("not-a-whsec-secret".into());
    assert!(herald.create_endpoint(sw.clone()).await.is_err());
    sw.secret = Some(old.into());
    let created = herald.create_endpoint(sw).await.unwrap();
    herald
        .update_endpoint(
            created.id,
            EndpointUpdate {
                secret: Some(new.into()),
                ..EndpointUpdate::default()
            },
        )
        .await
        .unwrap();
    let receipt = herald
        .send(NewMessage::new("acme", "invoice.paid", &json!({"test": 2432232314_u64})).unwrap())
        .await
        .unwrap();
    assert!(receiver.wait_for(1, Duration::from_secs(5)).await);
    let request = &receiver.requests()[0];
    assert_eq!(request.header("webhook-id"), receipt.id.to_string());
    let timestamp: u64 = request.header("webhook-timestamp").parse().unwrap();
    let signatures: Vec<String> = request
        .header("webhook-signature")
        .split(' ')
        .map(str::to_string)
        .collect();
    assert_eq!(signatures.len(), 2);
    // Verify each signature the way a receiver would, with the published algorithm.
    for (secret, signature) in [new, old].iter().zip(&signatures) {
        let expected = herald::transport::sign(
            &herald::policy::Signing::StandardWebhooks {},
            &herald::transport::SignInput {
                message_id: &receipt.id.to_string(),
                timestamp,
                body: &request.body,
                secrets: &[secret],
                token: None,
            },
        )
        .unwrap();
        assert_eq!(&expected[2].1, signature);
    }
}

#[tokio::test]
async fn ovesio_counts_only_200_with_success_true_and_fails_after_three_attempts() {
    let replies = [
        (200, r#"{"success": false}"#),
        (200, "OK"),
        (500, r#"{"success": true}"#),
    ];
    let failing = Receiver::start(move |n, _| {
        let (code, body) = replies[n.min(2)];
        Reply::Status(code, body)
    })
    .await;
    let succeeding = Receiver::start(|_, _| Reply::Status(200, r#"{"success": true}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(
        dir.path(),
        vec![shipped_with_quick_schedule("ovesio", &[50, 50])],
    )
    .await;
    herald
        .create_endpoint(endpoint("bad", failing.url(), "ovesio"))
        .await
        .unwrap();
    herald
        .create_endpoint(endpoint("good", succeeding.url(), "ovesio"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let bad = herald
        .send(NewMessage::new("bad", "translation", &json!({"ref": "p/1"})).unwrap())
        .await
        .unwrap();
    herald
        .send(NewMessage::new("good", "translation", &json!({"ref": "p/1"})).unwrap())
        .await
        .unwrap();
    let finals = wait_final(&mut outcomes, 2, Duration::from_secs(10)).await;
    for event in finals {
        let expected = if event.message_id == bad.id {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Succeeded
        };
        assert_eq!(event.delivery_status, expected);
    }
    assert_eq!(failing.count(), 3);
    assert_eq!(succeeding.count(), 1);
    let attempts = herald.attempts(bad.deliveries[0].id).await.unwrap();
    assert!(attempts.iter().all(|a| !a.success));
    assert_eq!(attempts[1].response_excerpt, "OK");
}

/// A payload whose encoded body under `policy` is exactly `size` bytes.
fn payload_of_encoded_size(herald: &Herald, policy: &str, size: usize) -> NewMessage {
    let spec = &herald.policies().get(policy).unwrap().request;
    let mut filler = size;
    loop {
        let payload = json!({ "t": "x".repeat(filler) });
        let text = serde_json::to_string(&payload).unwrap();
        let encoded = herald::transport::encode(spec, "job.x", &text).bytes.len();
        if encoded == size {
            return NewMessage::new("acme", "job.x", &payload).unwrap();
        }
        filler -= encoded - size;
    }
}

#[tokio::test]
async fn the_limit_is_exact_on_the_encoded_body_for_json_and_form() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    for (i, policy) in ["tolq", "gengo-3x-hourly"].into_iter().enumerate() {
        let tenant_endpoint = NewEndpoint {
            secret: Some("k".into()),
            ..endpoint("acme", receiver.url(), policy)
        };
        let created = herald.create_endpoint(tenant_endpoint).await.unwrap();
        let fits = payload_of_encoded_size(&herald, policy, 61_440);
        assert!(herald.send(fits).await.is_ok(), "{policy}: 61,440 refused");
        let over = payload_of_encoded_size(&herald, policy, 61_441);
        match herald.send(over).await {
            Err(Error::PayloadTooLarge { size, limit }) => {
                assert_eq!((size, limit), (61_441, 61_440), "{policy}")
            }
            other => panic!("{policy}: {other:?}"),
        }
        assert!(receiver.wait_for(i + 1, Duration::from_secs(5)).await);
        herald.delete_endpoint(created.id).await.unwrap();
    }
    let sizes: Vec<usize> = receiver.requests().iter().map(|r| r.body.len()).collect();
    assert_eq!(sizes, vec![61_440, 61_440]);
}

#[tokio::test]
async fn credentials_in_urls_are_refused_by_gengo_and_allowed_by_tolq() {
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    let with_credentials = "https://user:secret@tms.example/callback".to_string();
    for policy in ["gengo-15m-12h", "gengo-3x-hourly"] {
        let result = herald
            .create_endpoint(endpoint("acme", with_credentials.clone(), policy))
            .await;
        match result {
            Err(Error::InvalidUrl { url, .. }) => assert!(!url.contains("secret"), "{url}"),
            other => panic!("{policy}: {other:?}"),
        }
    }
    let tolq = NewEndpoint {
        secret: Some("k".into()),
        ..endpoint("acme", "https://tms.example/cb?token=abc".into(), "tolq")
    };
    let created = herald.create_endpoint(tolq).await.unwrap();
    let view = herald::EndpointView::from(&created);
    assert_eq!(view.url, "https://tms.example/cb", "the token is not shown");
    let tolq_creds = NewEndpoint {
        secret: Some("k".into()),
        ..endpoint("other", with_credentials.clone(), "tolq")
    };
    assert!(herald.create_endpoint(tolq_creds).await.is_ok());

    // A per-message callback URL is checked against the default endpoint's policy too.
    herald
        .create_endpoint(endpoint(
            "gengo",
            "https://tms.example/cb".into(),
            "gengo-3x-hourly",
        ))
        .await
        .unwrap();
    let result = herald
        .send(
            NewMessage::new("gengo", "job.x", &json!({}))
                .unwrap()
                .callback_url(with_credentials),
        )
        .await;
    assert!(
        matches!(result, Err(Error::InvalidUrl { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_callback_url_overrides_the_default_endpoint_url_for_one_message() {
    let account = Receiver::ok().await;
    let per_job = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    herald
        .create_endpoint(endpoint("acme", account.url(), "gengo-3x-hourly"))
        .await
        .unwrap();
    let receipt = herald
        .send(
            NewMessage::new("acme", "job.approved", &json!({"job_id": 1}))
                .unwrap()
                .callback_url(per_job.url()),
        )
        .await
        .unwrap();
    assert_eq!(receipt.deliveries.len(), 1);
    assert!(per_job.wait_for(1, Duration::from_secs(5)).await);
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&per_job.requests()[0].body).unwrap();
    assert_eq!(pairs[0].0, "job", "the default endpoint's policy applies");
    assert_eq!(account.count(), 0);
}

#[tokio::test]
async fn delta_mode_skips_an_unchanged_payload_and_sends_a_changed_one() {
    let receiver = Receiver::start(|_, _| Reply::Status(200, r#"{"success": true}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    let herald = open(dir.path(), vec![]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "ovesio"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let send = |text: &'static str| {
        let herald = herald.clone();
        async move {
            herald
                .send(
                    NewMessage::new(
                        "acme",
                        "translation",
                        &json!({"ref": "product/7492", "text": text}),
                    )
                    .unwrap()
                    .dedup_key("product/7492:en"),
                )
                .await
                .unwrap()
        }
    };
    let first = send("Hello").await;
    assert_eq!(first.deliveries[0].status, DeliveryStatus::Pending);
    wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;

    let same = send("Hello").await;
    assert_eq!(same.deliveries[0].status, DeliveryStatus::Skipped);
    assert_eq!(
        herald.delivery(same.deliveries[0].id).await.unwrap().status,
        DeliveryStatus::Skipped
    );
    let changed = send("Hello, world").await;
    assert_eq!(changed.deliveries[0].status, DeliveryStatus::Pending);
    wait_final(&mut outcomes, 1, Duration::from_secs(5)).await;
    assert_eq!(receiver.count(), 2);
}
