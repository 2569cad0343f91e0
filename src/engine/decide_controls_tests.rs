//! Table tests of the delivery controls' rules: ordering keys and scheduled sends.

use super::tests::{T0, answered, delivery, endpoint, policy};
use super::*;

/// Decides an attempt of `before` for a message with `ordering_key`, started at `started_at`.
fn decide_keyed(
    before: &Delivery,
    ordering_key: Option<&str>,
    judged: Judged,
    started_at: u64,
) -> Decision {
    let policy = policy();
    decide(AttemptFacts {
        policy: Some(&policy),
        delivery: before,
        endpoint: &endpoint(),
        due_ms: before.next_attempt_at.unwrap_or(started_at),
        judged,
        started_at,
        duration_ms: 10,
        dedup: None,
        ordering_key,
        random: 0.0,
    })
}

#[test]
fn a_delivery_leaves_its_line_only_when_it_finishes_in_its_first_cycle() {
    let mut replayed = delivery(0);
    replayed.cycle = 2;
    /// (case, delivery, key, answer, leaves the line of)
    type Row<'a> = (&'a str, Delivery, Option<&'a str>, Judged, Option<&'a str>);
    let rows: Vec<Row> = vec![
        (
            "success",
            delivery(0),
            Some("job-7"),
            answered(200),
            Some("job-7"),
        ),
        (
            "retried failure",
            delivery(0),
            Some("job-7"),
            answered(500),
            None,
        ),
        (
            "last failure",
            delivery(2),
            Some("job-7"),
            answered(500),
            Some("job-7"),
        ),
        (
            "gone",
            delivery(0),
            Some("job-7"),
            answered(410),
            Some("job-7"),
        ),
        ("no key", delivery(0), None, answered(200), None),
        (
            "a replay is not in line",
            replayed,
            Some("job-7"),
            answered(200),
            None,
        ),
    ];
    for (case, before, key, judged, leaves) in rows {
        let decision = decide_keyed(&before, key, judged, T0);
        assert_eq!(decision.release.as_deref(), leaves, "{case}");
    }
}

#[test]
fn a_first_attempt_that_waited_for_its_line_starts_the_schedule_then() {
    // Accepted at T0, its turn came an hour later; the policy retries 60 s after a failure.
    let waited = T0 + 3_600_000;
    let keyed = decide_keyed(&delivery(0), Some("job-7"), answered(500), waited);
    assert_eq!(keyed.delivery.anchor_ms, waited);
    assert_eq!(keyed.delivery.next_attempt_at, Some(waited + 60_000));

    // So does any late first attempt (a backlog, a scheduled send): the cycle starts when its
    // first attempt does, and the retries keep the policy's gaps.
    let unkeyed = decide_keyed(&delivery(0), None, answered(500), waited);
    assert_eq!(unkeyed.delivery.anchor_ms, waited);
    assert_eq!(unkeyed.delivery.next_attempt_at, Some(waited + 60_000));

    // A retry of a keyed delivery keeps the anchor its first attempt set.
    let mut retried = delivery(1);
    retried.anchor_ms = waited;
    retried.next_attempt_at = Some(waited + 60_000);
    let again = decide_keyed(&retried, Some("job-7"), answered(500), waited + 60_500);
    assert_eq!(again.delivery.anchor_ms, waited);
    assert_eq!(again.delivery.next_attempt_at, Some(waited + 120_000));
}

#[test]
fn operators_commands_leave_the_line_when_they_finish_a_delivery() {
    let facts = CommandFacts {
        message_kept: true,
        endpoint_exists: true,
    };
    let mut failed = delivery(3);
    failed.status = DeliveryStatus::Failed;
    failed.next_attempt_at = None;
    let key = Some("job-7");
    let now = T0 + 5;
    let cancelled = command(&Command::Cancel, &delivery(0), &facts, key, now).unwrap();
    assert_eq!(cancelled.release.as_deref(), Some("job-7"));
    let retried = command(&Command::RetryNow, &delivery(0), &facts, key, now).unwrap();
    assert_eq!(retried.release, None, "still in line");
    let replayed = command(&Command::Replay, &failed, &facts, key, now).unwrap();
    assert_eq!(replayed.release, None, "a replay joins no line");
    let mut replay_cycle = replayed.delivery.clone();
    replay_cycle.cycle = 2;
    let cancelled_replay = command(&Command::Cancel, &replay_cycle, &facts, key, now).unwrap();
    assert_eq!(cancelled_replay.release, None, "it was never in line");
}

#[test]
fn first_attempt_times_table() {
    let now = 1_700_000_000_000; // 2023-11-14T22:13:20Z
    let year = 365 * 24 * 3_600_000;
    /// (deliver_at, delay, due or the error's tell-tale)
    type Row<'a> = (Option<&'a str>, Option<&'a str>, Result<u64, &'a str>);
    let rows: &[Row] = &[
        (None, None, Ok(now)),
        (None, Some("10m"), Ok(now + 600_000)),
        (None, Some("1h 30m"), Ok(now + 5_400_000)),
        (None, Some("0s"), Ok(now)),
        (None, Some("365d"), Ok(now + year)),
        (None, Some("366d"), Err("more than 365 days")),
        (None, Some("-5m"), Err("not a duration")),
        (None, Some("soon"), Err("not a duration")),
        (Some("2023-11-14T23:13:20Z"), None, Ok(now + 3_600_000)),
        (Some("2023-11-15T00:13:20+01:00"), None, Ok(now + 3_600_000)),
        (Some("2023-11-14T22:13:20.250Z"), None, Ok(now + 250)),
        (Some("2001-01-01T00:00:00Z"), None, Ok(now)),
        (Some("1969-01-01T00:00:00Z"), None, Ok(now)),
        (
            Some("2025-11-14T22:13:20Z"),
            None,
            Err("more than 365 days"),
        ),
        (Some("tomorrow"), None, Err("not an RFC 3339 time")),
        (Some("2023-11-14 23:13"), None, Err("not an RFC 3339 time")),
        (Some("2023-11-14T23:13:20Z"), Some("1m"), Err("not both")),
    ];
    for (deliver_at, delay, expected) in rows {
        let got = first_attempt_at(now, *deliver_at, *delay);
        match (expected, &got) {
            (Ok(due), Ok(got)) => assert_eq!(got, due, "{deliver_at:?} {delay:?}"),
            (Err(tell), Err(message)) => {
                assert!(
                    message.contains(tell),
                    "{deliver_at:?} {delay:?}: {message}"
                )
            }
            _ => panic!("{deliver_at:?} {delay:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_scheduled_delivery_is_pending_until_its_time() {
    let message = crate::model::Message {
        id: crate::model::MessageId::new(),
        tenant: "acme".into(),
        event_type: "job.reminder".into(),
        payload: serde_json::value::RawValue::NULL.to_owned(),
        callback_url: None,
        idempotency_key: None,
        dedup_key: None,
        ordering_key: None,
        traceparent: None,
        created_at: T0,
    };
    let due = T0 + 3_600_000;
    let scheduled = new_delivery(&message, &endpoint(), false, due);
    assert_eq!(scheduled.status, DeliveryStatus::Pending);
    assert_eq!(
        (scheduled.next_attempt_at, scheduled.anchor_ms),
        (Some(due), due)
    );
    assert_eq!(scheduled.created_at, T0);
}
