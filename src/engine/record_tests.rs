//! The record thread answers every outcome it is given, whatever its store does.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::model::{Attempt, Delivery, DeliveryId, DeliveryStatus, EndpointId, MessageId};
use crate::store::{HealthChange, Lease, LeaseToken};

fn outcome() -> Outcome {
    let delivery = Delivery {
        id: DeliveryId::new(),
        message_id: MessageId::new(),
        endpoint_id: EndpointId::new(),
        url_override: None,
        status: DeliveryStatus::Succeeded,
        cycle: 1,
        cycle_attempts: 1,
        total_attempts: 1,
        anchor_ms: 0,
        next_attempt_at: None,
        last_status_code: Some(200),
        last_error: None,
        created_at: 0,
        updated_at: 0,
    };
    Outcome {
        lease: Lease {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            due_ms: 0,
            expires_at_ms: u64::MAX,
            token: LeaseToken::new(),
        },
        attempt: Attempt {
            attempt: 1,
            cycle: 1,
            started_at: 0,
            duration_ms: 1,
            status_code: Some(200),
            error: None,
            error_detail: None,
            response_excerpt: String::new(),
            success: true,
        },
        delivery,
        health: HealthChange::Reset,
        dedup: None,
        release: None,
    }
}

const RECORDED: Recorded = Recorded {
    stale: false,
    consecutive_failures: 0,
    released_due: None,
};

/// Records `outcome` and returns what its follow-up was given.
fn answer_of(recorder: &Recorder, outcome: Outcome) -> (DeliveryId, Result<Recorded, StoreError>) {
    let (tx, rx) = mpsc::channel();
    recorder.record(
        outcome,
        Box::new(move |outcome, answer| {
            let _ = tx.send((outcome.lease.delivery_id, answer));
        }),
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("every outcome gets an answer")
}

#[test]
fn a_panicking_store_fails_its_group_and_the_thread_records_the_next() {
    let mut groups = 0;
    let recorder = Recorder::writing_with(move |outcomes| {
        groups += 1;
        if groups == 1 {
            panic!("the store broke");
        }
        Ok(vec![Ok(RECORDED); outcomes.len()])
    })
    .unwrap();
    let first = outcome();
    let id = first.lease.delivery_id;
    let (answered, answer) = answer_of(&recorder, first);
    assert_eq!(answered, id, "the follow-up gets its own outcome back");
    assert!(
        matches!(&answer, Err(StoreError::Backend(reason)) if reason.contains("panicked")),
        "{answer:?}"
    );
    let (_, answer) = answer_of(&recorder, outcome());
    assert!(matches!(answer, Ok(RECORDED)), "{answer:?}");
}

#[test]
fn a_panicking_follow_up_does_not_stop_the_thread() {
    let recorder =
        Recorder::writing_with(|outcomes| Ok(vec![Ok(RECORDED); outcomes.len()])).unwrap();
    recorder.record(outcome(), Box::new(|_, _| panic!("a follow-up broke")));
    let (_, answer) = answer_of(&recorder, outcome());
    assert!(matches!(answer, Ok(RECORDED)), "{answer:?}");
}

#[test]
fn a_failed_write_answers_every_outcome_of_its_group_with_the_error() {
    let recorder =
        Recorder::writing_with(|_| Err(StoreError::Unavailable("disk full".into()))).unwrap();
    let answers: Vec<_> = (0..3)
        .map(|_| {
            let (tx, rx) = mpsc::channel();
            recorder.record(
                outcome(),
                Box::new(move |_, answer| {
                    let _ = tx.send(answer);
                }),
            );
            rx
        })
        .collect();
    for rx in answers {
        let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{answer:?}"
        );
    }
}
