//! Table tests of the delivery decision: each row is facts in, records out.

use std::time::Duration;

use super::*;
use crate::model::{DeliveryId, EndpointId, MessageId};

pub(super) const T0: u64 = 1_000_000;

/// Three attempts, 60 s apart; 410 disables; 3 consecutive failures disable.
pub(super) fn policy() -> Policy {
    Policy::from_toml(
        "test",
        r#"
name = "test"
[schedule]
kind = "fixed"
interval = "60s"
max_attempts = 3
honor_retry_after = true
max_retry_after = "10m"
[endpoint]
deactivate_after = 3
disable_on_gone = true
"#,
    )
    .expect("test policy")
}

pub(super) fn endpoint() -> Endpoint {
    Endpoint::sample("test")
}

/// A pending delivery whose cycle began at `T0`, with `made` attempts behind it.
pub(super) fn delivery(made: u32) -> Delivery {
    Delivery {
        id: DeliveryId::new(),
        message_id: MessageId::new(),
        endpoint_id: EndpointId::new(),
        url_override: None,
        status: DeliveryStatus::Pending,
        cycle: 1,
        cycle_attempts: made,
        total_attempts: made,
        anchor_ms: T0,
        next_attempt_at: Some(T0 + u64::from(made) * 60_000),
        last_status_code: None,
        last_error: None,
        created_at: T0,
        updated_at: T0,
    }
}

pub(super) fn answered(status: u16) -> Judged {
    let policy = policy();
    judge(
        &policy,
        Exchange::Response(crate::transport::ResponseSummary {
            status,
            body: b"body".to_vec(),
            retry_after: None,
        }),
        1024,
    )
}

fn timed_out() -> Judged {
    judge(
        &policy(),
        Exchange::Failed {
            kind: ErrorKind::Timeout,
            detail: "timed out".into(),
        },
        1024,
    )
}

fn decide_at(
    delivery: &Delivery,
    endpoint: &Endpoint,
    judged: Judged,
    started_at: u64,
) -> Decision {
    let policy = policy();
    decide(AttemptFacts {
        policy: Some(&policy),
        delivery,
        endpoint,
        due_ms: delivery.next_attempt_at.unwrap_or(started_at),
        judged,
        started_at,
        duration_ms: 10,
        dedup: Some(("k".into(), [7; 32])),
        ordering_key: None,
        random: 0.0,
    })
}

#[test]
fn attempt_outcomes_table() {
    struct Row {
        name: &'static str,
        made: u32,
        judged: Judged,
        status: DeliveryStatus,
        next_at: Option<u64>,
        health: HealthChange,
        dedup: bool,
    }
    let mut too_many = answered(429);
    too_many.retry_after = Some(Duration::from_secs(300));
    let mut ignored_retry_after = answered(500);
    ignored_retry_after.retry_after = Some(Duration::from_secs(300));
    let mut huge_retry_after = answered(503);
    huge_retry_after.retry_after = Some(Duration::from_secs(86_400));
    let rows = [
        Row {
            name: "2xx succeeds, resets health, keeps the digest",
            made: 0,
            judged: answered(200),
            status: DeliveryStatus::Succeeded,
            next_at: None,
            health: HealthChange::Reset,
            dedup: true,
        },
        Row {
            name: "500 retries on the schedule",
            made: 0,
            judged: answered(500),
            status: DeliveryStatus::Pending,
            next_at: Some(T0 + 60_000),
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "a timeout retries",
            made: 1,
            judged: timed_out(),
            status: DeliveryStatus::Pending,
            next_at: Some(T0 + 120_000),
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "the last attempt of the cycle fails the delivery",
            made: 2,
            judged: answered(500),
            status: DeliveryStatus::Failed,
            next_at: None,
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "Retry-After on 429 lengthens the gap",
            made: 0,
            judged: too_many,
            status: DeliveryStatus::Pending,
            next_at: Some(T0 + 10 + 300_000),
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "Retry-After on 500 is ignored",
            made: 0,
            judged: ignored_retry_after,
            status: DeliveryStatus::Pending,
            next_at: Some(T0 + 60_000),
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "Retry-After is bounded by max_retry_after",
            made: 0,
            judged: huge_retry_after,
            status: DeliveryStatus::Pending,
            next_at: Some(T0 + 10 + 600_000),
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "410 under disable_on_gone is final",
            made: 0,
            judged: answered(410),
            status: DeliveryStatus::Failed,
            next_at: None,
            health: HealthChange::Increment,
            dedup: false,
        },
        Row {
            name: "a refused target is never retried",
            made: 0,
            judged: refused("10.0.0.1 is private"),
            status: DeliveryStatus::Failed,
            next_at: None,
            health: HealthChange::Increment,
            dedup: false,
        },
    ];
    for row in rows {
        let before = delivery(row.made);
        let decision = decide_at(&before, &endpoint(), row.judged, T0);
        let after = &decision.delivery;
        assert_eq!(after.status, row.status, "{}", row.name);
        assert_eq!(after.next_attempt_at, row.next_at, "{}", row.name);
        assert_eq!(decision.health, row.health, "{}", row.name);
        assert_eq!(decision.dedup.is_some(), row.dedup, "{}", row.name);
        assert_eq!(decision.attempt.attempt, row.made + 1, "{}", row.name);
        assert_eq!(after.cycle_attempts, row.made + 1, "{}", row.name);
        assert_eq!(after.total_attempts, row.made + 1, "{}", row.name);
        assert_eq!(decision.attempt.cycle, 1, "{}", row.name);
        assert_eq!(after.updated_at, T0 + 10, "{}", row.name);
    }
}

#[test]
fn a_missing_policy_fails_the_delivery_at_once() {
    let before = delivery(0);
    let decision = decide(AttemptFacts {
        policy: None,
        delivery: &before,
        endpoint: &endpoint(),
        due_ms: T0,
        judged: refused("policy \"gone\" is not loaded"),
        started_at: T0,
        duration_ms: 0,
        dedup: None,
        ordering_key: None,
        random: 0.0,
    });
    assert_eq!(decision.delivery.status, DeliveryStatus::Failed);
}

#[test]
fn deactivation_table() {
    let policy = policy();
    let mut own_url = delivery(0);
    own_url.url_override = Some("https://elsewhere.example/cb".into());
    let rows: [(&str, Delivery, Judged, u32, bool); 6] = [
        ("a success never", delivery(0), answered(200), 0, false),
        ("below the threshold", delivery(0), answered(500), 2, false),
        ("at the threshold", delivery(0), answered(500), 3, true),
        ("410 at once", delivery(0), answered(410), 1, true),
        (
            "a callback URL's 410 never",
            own_url.clone(),
            answered(410),
            0,
            false,
        ),
        (
            "a callback URL's failures never",
            own_url,
            answered(500),
            99,
            false,
        ),
    ];
    for (name, before, judged, failures, disables) in rows {
        let decision = decide_at(&before, &endpoint(), judged, T0);
        let reason = deactivation(&policy, decision.health, &decision.attempt, failures);
        assert_eq!(reason.is_some(), disables, "{name}: {reason:?}");
    }
}

#[test]
fn a_callback_url_never_moves_the_endpoints_health() {
    let mut before = delivery(0);
    before.url_override = Some("https://elsewhere.example/cb".into());
    for judged in [answered(200), answered(500), answered(410)] {
        let decision = decide_at(&before, &endpoint(), judged, T0);
        assert_eq!(decision.health, HealthChange::Untouched);
    }
}

#[test]
fn a_released_hold_restarts_the_pacing() {
    // Attempt 1 failed at T0; attempt 2 was due at T0+60s, but the endpoint was disabled
    // until two hours later. The attempt after the release keeps the policy's 60 s gap.
    let before = delivery(1);
    let released = T0 + 7_200_000;
    let mut endpoint = endpoint();
    endpoint.released_at = Some(released);
    let started = released + 5;
    let decision = decide_at(&before, &endpoint, answered(500), started);
    let next = decision.delivery.next_attempt_at.expect("a third attempt");
    assert_eq!(next, started + 60_000);

    // Without a hold, a late attempt keeps the original anchor (attempt 3 at T0 + 120 s,
    // which has passed: now).
    let decision = decide_at(&before, &self::endpoint(), answered(500), started);
    assert_eq!(decision.delivery.next_attempt_at, Some(started + 10));
}

#[test]
fn commands_table() {
    let kept = CommandFacts {
        message_kept: true,
        endpoint_exists: true,
    };
    let purged = CommandFacts {
        message_kept: false,
        endpoint_exists: true,
    };
    let orphan = CommandFacts {
        message_kept: true,
        endpoint_exists: false,
    };
    let mut failed = delivery(3);
    failed.status = DeliveryStatus::Failed;
    failed.next_attempt_at = None;
    let pending = delivery(1);
    let now = T0 + 999;

    let replayed = command(&Command::Replay, &failed, &kept, None, now)
        .expect("replay")
        .delivery;
    assert_eq!(replayed.status, DeliveryStatus::Pending);
    assert_eq!(
        (
            replayed.cycle,
            replayed.cycle_attempts,
            replayed.total_attempts
        ),
        (2, 0, 3)
    );
    assert_eq!(
        (replayed.anchor_ms, replayed.next_attempt_at),
        (now, Some(now))
    );
    for (name, delivery, facts) in [
        ("pending", &pending, &kept),
        ("purged", &failed, &purged),
        ("endpoint deleted", &failed, &orphan),
    ] {
        assert!(
            command(&Command::Replay, delivery, facts, None, now).is_err(),
            "replay when {name}"
        );
    }

    let retried = command(&Command::RetryNow, &pending, &kept, None, now)
        .expect("retry")
        .delivery;
    assert_eq!(retried.next_attempt_at, Some(now));
    assert_eq!(retried.anchor_ms, pending.anchor_ms);
    assert!(command(&Command::RetryNow, &failed, &kept, None, now).is_err());

    let cancelled = command(&Command::Cancel, &pending, &kept, None, now)
        .expect("cancel")
        .delivery;
    assert_eq!(cancelled.status, DeliveryStatus::Failed);
    assert_eq!(cancelled.next_attempt_at, None);
    assert_eq!(
        cancelled.last_error.as_deref(),
        Some("cancelled by an operator")
    );
    assert!(command(&Command::Cancel, &failed, &kept, None, now).is_err());
}

#[test]
fn held_reasons_say_why() {
    let mut endpoint = endpoint();
    assert_eq!(held_reason(&endpoint), None);
    endpoint.enabled = false;
    assert_eq!(held_reason(&endpoint).as_deref(), Some("endpoint disabled"));
    endpoint.disabled_reason = Some("by an operator".into());
    assert_eq!(
        held_reason(&endpoint).as_deref(),
        Some("endpoint disabled: by an operator")
    );
}
