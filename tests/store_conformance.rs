//! One suite every store backend passes: the contract of the `Store` trait, tested through
//! the trait alone. A backend is done when `conformance!(backend)` is green.
//!
//! Each test gets a fresh store from its backend's [`Harness`], and may reopen it (the same
//! data, a new handle) to check what survives.

#[path = "store_conformance/claims.rs"]
mod claims;
mod common;
#[path = "store_conformance/controls.rs"]
mod controls;

use std::sync::Arc;

use claims::claims_find_what_becomes_claimable_behind_earlier_claims;
use common::fixtures::{
    DUE, LEASE, delivery_record, endpoint_record, message_record, outcome, put_endpoint,
    put_message, put_message_due, record_attempt,
};
use controls::{
    a_replay_is_not_held_by_its_ordering_key,
    a_waiting_delivery_can_be_cancelled_or_retried_in_its_place,
    an_ordering_line_lets_one_delivery_through_at_a_time,
    concurrent_sends_of_one_key_keep_their_order_in_line,
    deleting_an_endpoint_closes_deliveries_waiting_in_line,
    rate_limits_ordering_keys_and_trace_context_are_kept,
    reserved_starts_leave_room_for_the_largest_tolerance,
};
use herald::DeliveryStatus;
use herald::model::now_ms;
use herald::store::{
    Closing, DeliveryFilter, HealthChange, Inserted, MessageWrite, PurgeCursor, ReplayJob,
    ReplayState, Store, StoreError, Transition,
};

/// Opens stores of one backend on the same data.
pub enum Harness {
    Sled(tempfile::TempDir),
    Postgres(String),
}

/// The key the tests seal with.
const KEY: [u8; 32] = [7; 32];

impl Harness {
    async fn sled() -> Option<Harness> {
        Some(Harness::Sled(tempfile::tempdir().unwrap()))
    }

    /// A fresh database on the test server; `None` (the test skips) where PostgreSQL is not
    /// installed outside CI.
    async fn postgres() -> Option<Harness> {
        common::postgres::database().await.map(Harness::Postgres)
    }

    /// A handle on the data; drop it before opening another (sled allows one at a time). For
    /// PostgreSQL every handle is a new node of the same cluster.
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Harness::Sled(dir) => {
                let options = herald::store::SledOptions {
                    secret_key: Some(KEY),
                    ..Default::default()
                };
                let dir = dir.path().to_path_buf();
                // Blocking: it waits for a handle dropped a moment ago to let go of the lock.
                let store = tokio::task::spawn_blocking(move || {
                    herald::store::SledStore::open(&dir, &options)
                        .unwrap_or_else(|e| panic!("open: {e}"))
                })
                .await
                .unwrap();
                Arc::new(store)
            }
            Harness::Postgres(url) => Arc::new(
                herald::store::PgStore::connect(url, &KEY)
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}")),
            ),
        }
    }
}

/// The leases of some claims.
fn leases(claims: Vec<herald::store::Claim>) -> Vec<herald::store::Lease> {
    claims.into_iter().map(|claim| claim.lease).collect()
}

/// Runs every test of the suite against one backend.
macro_rules! conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        conformance!($backend as $backend: $($test),*);
    };
    ($backend:ident as $module:ident: $($test:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(harness) = super::Harness::$backend().await {
                        super::$test(&harness).await;
                    }
                }
            )*
        }
    };
}

/// Every test of the suite.
macro_rules! suite {
    ($backend:ident) => {
        conformance!($backend:
            leases_are_exclusive_until_given_back_or_expired,
            claims_find_what_becomes_claimable_behind_earlier_claims,
            a_late_outcome_under_an_expired_lease_is_kept_but_moves_nothing,
            due_deliveries_are_claimed_earliest_first,
            idempotency_keys_hold_under_concurrent_inserts,
            an_outcome_moves_delivery_health_rollup_and_count_atomically,
            grouped_outcomes_compose_per_endpoint,
            the_pending_count_is_exact_across_transitions_and_reopen,
            a_replay_transition_keeps_the_history,
            transitions_are_all_or_nothing_and_conflict_on_change,
            a_retry_of_a_delivery_in_flight_is_refused,
            the_purge_never_removes_pending_deliveries,
            deleting_an_endpoint_closes_its_deliveries_revokes_leases_and_keeps_its_url,
            an_endpoint_is_disabled_once_and_enabling_resets_its_health,
            deliveries_page_oldest_or_newest_first,
            endpoint_reads_follow_every_change,
            bulk_replay_progress_is_stored_with_its_batch,
            a_shared_store_caps_the_leases_of_several_claimers_but_not_the_callers_settling_ones,
        );
    };
}

suite!(sled);
suite!(postgres);

// Ordering-key lines, and the fields kept for rate limits and tracing.
macro_rules! controls {
    ($backend:ident as $module:ident) => {
        conformance!($backend as $module:
            an_ordering_line_lets_one_delivery_through_at_a_time,
            a_waiting_delivery_can_be_cancelled_or_retried_in_its_place,
            a_replay_is_not_held_by_its_ordering_key,
            deleting_an_endpoint_closes_deliveries_waiting_in_line,
            concurrent_sends_of_one_key_keep_their_order_in_line,
            rate_limits_ordering_keys_and_trace_context_are_kept,
            reserved_starts_leave_room_for_the_largest_tolerance,
        );
    };
}

controls!(sled as sled_controls);
controls!(postgres as postgres_controls);

/// A shared store bounds an endpoint's leases over every claimer (its concurrency in a
/// cluster): a claimer alone leases ahead (its own scheduler holds its requests to the
/// window); beside others it counts theirs, each up to the cap, and its own, except its
/// settling ones (off the wire, waiting for their outcome).
async fn a_shared_store_caps_the_leases_of_several_claimers_but_not_the_callers_settling_ones(
    harness: &Harness,
) {
    let store = harness.open().await;
    if !store.shared() {
        return;
    }
    let endpoint = put_endpoint(store.as_ref()).await;
    for i in 0..6 {
        put_message(store.as_ref(), endpoint, 1_000 + i, DeliveryStatus::Pending).await;
    }
    let other = harness.open().await;
    // Claims of up to 10 under a cap of 2, leaving out `settling`.
    let claim = async |node: &Arc<dyn Store>, settling: &[herald::model::DeliveryId]| {
        leases(
            node.claim(endpoint, DUE + 1, 10, LEASE, 2, settling)
                .await
                .unwrap(),
        )
    };
    let first = claim(&store, &[]).await;
    assert_eq!(first.len(), 6, "a claimer alone leases ahead");
    assert!(
        claim(&other, &[]).await.is_empty(),
        "another counts its leases up to the cap"
    );
    // Given back but one: another node may claim at once, up to the cap.
    store.release(&first[1..]).await.unwrap();
    let second = claim(&other, &[]).await;
    assert_eq!(second.len(), 1, "one of the two is the first node's");
    assert!(claim(&other, &[]).await.is_empty());
    // One of its own is off the wire: room for one more, not two.
    let settling = [second[0].delivery_id];
    assert_eq!(claim(&other, &settling).await.len(), 1);
    assert!(claim(&other, &settling).await.is_empty());
    assert!(
        claim(&store, &[]).await.is_empty(),
        "the first node counts the other's settling lease too"
    );
    // Its outcome recorded, the settling lease is gone: it was left out already, so there is
    // no more room than before (no credit twice).
    other.release(&second).await.unwrap();
    assert!(claim(&other, &settling).await.is_empty());
}

async fn leases_are_exclusive_until_given_back_or_expired(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    for i in 0..4 {
        put_message(store.as_ref(), endpoint, 1_000 + i, DeliveryStatus::Pending).await;
    }
    let now = DUE + 1;
    let first = leases(
        store
            .claim(endpoint, now, 3, LEASE, usize::MAX, &[])
            .await
            .unwrap(),
    );
    assert_eq!(first.len(), 3);
    let second = leases(
        store
            .claim(endpoint, now, 10, LEASE, usize::MAX, &[])
            .await
            .unwrap(),
    );
    assert_eq!(second.len(), 1);
    assert!(!first.iter().any(|l| l.delivery_id == second[0].delivery_id));
    assert!(
        store
            .claim(endpoint, now, 10, LEASE, usize::MAX, &[])
            .await
            .unwrap()
            .is_empty()
    );
    // All leased: claimable again when the first lease expires (a dead claimer's are taken
    // over then).
    assert_eq!(
        store.due_head(endpoint, now).await.unwrap(),
        Some(now + LEASE.as_millis() as u64)
    );
    assert_eq!(first[0].expires_at_ms, now + LEASE.as_millis() as u64);

    // Given back: due as before, and claimable again.
    store.release(&second).await.unwrap();
    assert_eq!(store.due_head(endpoint, now).await.unwrap(), Some(DUE));
    let again = leases(
        store
            .claim(endpoint, now, 10, LEASE, usize::MAX, &[])
            .await
            .unwrap(),
    );
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, second[0].delivery_id);

    // Expired: taken over.
    let later = now + LEASE.as_millis() as u64 + 1;
    assert_eq!(store.due_head(endpoint, later).await.unwrap(), Some(DUE));
    assert_eq!(
        store
            .claim(endpoint, later, 10, LEASE, usize::MAX, &[])
            .await
            .unwrap()
            .len(),
        4
    );

    // Claiming wrote nothing durable: a reopened store, past the leases, has all four due.
    drop(store);
    let store = harness.open().await;
    let after_all = later + 2 * LEASE.as_millis() as u64;
    assert_eq!(
        store
            .claim(endpoint, after_all, 10, LEASE, usize::MAX, &[])
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(store.pending_count().await.unwrap(), 4);
}

async fn a_late_outcome_under_an_expired_lease_is_kept_but_moves_nothing(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, id) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Pending).await;
    let before = store.delivery(id).await.unwrap().unwrap();
    let old = store
        .claim(endpoint, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    let later = DUE + LEASE.as_millis() as u64 + 1;
    let new = store
        .claim(endpoint, later, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    assert_ne!(old.token, new.token);

    let late = outcome(old, &before, later, true, DeliveryStatus::Succeeded, None);
    let recorded = store.record_outcomes(&[late]).await.unwrap().remove(0);
    assert!(recorded.unwrap().stale);
    let kept = store.delivery(id).await.unwrap().unwrap();
    assert_eq!(kept.status, DeliveryStatus::Pending);
    assert_eq!(
        kept.total_attempts, 1,
        "numbering stays ahead of the kept attempt"
    );
    assert_eq!(store.attempts(id).await.unwrap().len(), 1);

    // The current holder's outcome counts, numbered after the stale one.
    let current = outcome(new, &kept, later + 5, true, DeliveryStatus::Succeeded, None);
    let recorded = store.record_outcomes(&[current]).await.unwrap().remove(0);
    assert!(!recorded.unwrap().stale);
    let done = store.delivery(id).await.unwrap().unwrap();
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    let numbers: Vec<u32> = store
        .attempts(id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

async fn due_deliveries_are_claimed_earliest_first(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let other = put_endpoint(store.as_ref()).await;
    let mut by_due = Vec::new();
    for (i, due) in [DUE + 30, DUE + 10, DUE + 20, DUE + 40]
        .into_iter()
        .enumerate()
    {
        let (_, id) = put_message_due(
            store.as_ref(),
            endpoint,
            1_000 + i as u64,
            DeliveryStatus::Pending,
            due,
        )
        .await;
        by_due.push((due, id));
    }
    put_message_due(store.as_ref(), other, 2_000, DeliveryStatus::Pending, DUE).await;
    by_due.sort();
    assert_eq!(store.due_head(endpoint, 0).await.unwrap(), Some(DUE + 10));
    let heads = store.due_heads(0).await.unwrap();
    assert!(heads.contains(&(endpoint, DUE + 10)) && heads.contains(&(other, DUE)));

    // Only what is due by `now`, earliest first, and only this endpoint's, with the records an
    // attempt needs.
    let claims = store
        .claim(endpoint, DUE + 30, 10, LEASE, usize::MAX, &[])
        .await
        .unwrap();
    for claim in &claims {
        assert_eq!(claim.delivery.id, claim.lease.delivery_id);
        let message = claim
            .message
            .as_ref()
            .expect("the message comes with the claim");
        assert_eq!(message.id, claim.delivery.message_id);
        assert!(message.payload.get().contains("\"at\""));
    }
    let leases = leases(claims);
    let claimed: Vec<_> = leases.iter().map(|l| (l.due_ms, l.delivery_id)).collect();
    assert_eq!(claimed, by_due[..3]);
    assert!(leases.iter().all(|l| l.endpoint_id == endpoint));
    assert_eq!(
        store.due_head(endpoint, DUE + 30).await.unwrap(),
        Some(DUE + 40)
    );
}

async fn idempotency_keys_hold_under_concurrent_inserts(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let message = message_record(5_000 + i, Some("job-7-completed"));
            let delivery = delivery_record(&message, endpoint, DeliveryStatus::Pending, DUE);
            let answer = store
                .insert_messages(&[MessageWrite {
                    message: message.clone(),
                    deliveries: vec![delivery],
                }])
                .await
                .unwrap();
            (message.id, answer[0].clone())
        }));
    }
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (id, Inserted::Created) => created.push(id),
            (_, Inserted::Existing(id)) => existing.push(id),
        }
    }
    assert_eq!(created.len(), 1, "exactly one insert wins");
    assert!(existing.iter().all(|id| *id == created[0]));
    assert_eq!(store.pending_count().await.unwrap(), 1);

    // The same key twice in one group: the second is the first's.
    let first = message_record(9_000, Some("k2"));
    let second = message_record(9_001, Some("k2"));
    let answers = store
        .insert_messages(&[
            MessageWrite {
                deliveries: vec![],
                message: first.clone(),
            },
            MessageWrite {
                deliveries: vec![],
                message: second,
            },
        ])
        .await
        .unwrap();
    assert_eq!(answers, [Inserted::Created, Inserted::Existing(first.id)]);
}

async fn an_outcome_moves_delivery_health_rollup_and_count_atomically(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, id) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Pending).await;
    let before = store.delivery(id).await.unwrap().unwrap();
    let lease = store
        .claim(endpoint, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    let at = DUE + 5;
    let mut failed = outcome(
        lease,
        &before,
        at,
        false,
        DeliveryStatus::Pending,
        Some(DUE + 60_000),
    );
    failed.dedup = Some(("k".into(), [9; 32])); // not kept: the attempt failed
    let recorded = store
        .record_outcomes(&[failed])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(!recorded.stale);
    assert_eq!(recorded.consecutive_failures, 1);
    assert_eq!(
        store.due_head(endpoint, at).await.unwrap(),
        Some(DUE + 60_000)
    );
    assert_eq!(store.dedup_digest(endpoint, "k").await.unwrap(), None);

    let before = store.delivery(id).await.unwrap().unwrap();
    let lease = store
        .claim(endpoint, DUE + 60_000, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    let mut delivered = outcome(
        lease,
        &before,
        DUE + 60_001,
        true,
        DeliveryStatus::Succeeded,
        None,
    );
    delivered.dedup = Some(("k".into(), [9; 32]));
    let recorded = store
        .record_outcomes(&[delivered])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(recorded.consecutive_failures, 0);

    // What a reopened store says: every part of both records is there.
    drop(store);
    let store = harness.open().await;
    let after = store.delivery(id).await.unwrap().unwrap();
    assert_eq!(after.status, DeliveryStatus::Succeeded);
    assert_eq!(after.total_attempts, 2);
    assert_eq!(store.attempts(id).await.unwrap().len(), 2);
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert_eq!(store.due_head(endpoint, u64::MAX).await.unwrap(), None);
    assert_eq!(
        store.dedup_digest(endpoint, "k").await.unwrap(),
        Some([9; 32])
    );
    let day = herald::store::day_of(DUE);
    let days = store.endpoint_days(endpoint, day, day + 1).await.unwrap();
    let total: u64 = days.iter().map(|(_, r)| r.attempts).sum();
    let successes: u64 = days.iter().map(|(_, r)| r.successes).sum();
    assert_eq!((total, successes), (2, 1));
    let health = store.endpoint(endpoint).await.unwrap().unwrap();
    assert_eq!(health.consecutive_failures, 0);
}

async fn grouped_outcomes_compose_per_endpoint(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            put_message(store.as_ref(), endpoint, 1_000 + i, DeliveryStatus::Pending)
                .await
                .1,
        );
    }
    let leases = leases(
        store
            .claim(endpoint, DUE, 3, LEASE, usize::MAX, &[])
            .await
            .unwrap(),
    );
    let mut outcomes = Vec::new();
    for lease in leases {
        let before = store.delivery(lease.delivery_id).await.unwrap().unwrap();
        outcomes.push(outcome(
            lease,
            &before,
            DUE,
            false,
            DeliveryStatus::Failed,
            None,
        ));
    }
    let answers = store.record_outcomes(&outcomes).await.unwrap();
    let counts: Vec<u32> = answers
        .into_iter()
        .map(|a| a.unwrap().consecutive_failures)
        .collect();
    assert_eq!(
        counts,
        [1, 2, 3],
        "each outcome sees the ones before it in the group"
    );
    let day = herald::store::day_of(DUE);
    let days = store.endpoint_days(endpoint, day, day).await.unwrap();
    assert_eq!(days[0].1.attempts, 3);
    assert_eq!(
        store
            .endpoint(endpoint)
            .await
            .unwrap()
            .unwrap()
            .consecutive_failures,
        3
    );

    // Untouched leaves the count alone; Reset clears it.
    let (_, id) = put_message(store.as_ref(), endpoint, 2_000, DeliveryStatus::Pending).await;
    let lease = store
        .claim(endpoint, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    let before = store.delivery(id).await.unwrap().unwrap();
    let mut own_url = outcome(lease, &before, DUE, false, DeliveryStatus::Failed, None);
    own_url.health = HealthChange::Untouched;
    let answer = store.record_outcomes(&[own_url]).await.unwrap().remove(0);
    assert_eq!(answer.unwrap().consecutive_failures, 3);
    assert_eq!(ids.len(), 3);
}

async fn the_pending_count_is_exact_across_transitions_and_reopen(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            put_message(store.as_ref(), endpoint, 1_000 + i, DeliveryStatus::Pending)
                .await
                .1,
        );
    }
    put_message(store.as_ref(), endpoint, 2_000, DeliveryStatus::Skipped).await;
    assert_eq!(store.pending_count().await.unwrap(), 5);
    // One finishes, one is rescheduled, one is cancelled.
    let leases = leases(
        store
            .claim(endpoint, DUE, 2, LEASE, usize::MAX, &[])
            .await
            .unwrap(),
    );
    let mut outcomes = Vec::new();
    for (lease, status) in leases
        .iter()
        .zip([DeliveryStatus::Succeeded, DeliveryStatus::Pending])
    {
        let before = store.delivery(lease.delivery_id).await.unwrap().unwrap();
        let next = (status == DeliveryStatus::Pending).then_some(DUE + 1_000);
        outcomes.push(outcome(*lease, &before, DUE, true, status, next));
    }
    store.record_outcomes(&outcomes).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 4);
    let cancel = store.delivery(ids[4]).await.unwrap().unwrap();
    let mut cancelled = cancel.clone();
    cancelled.status = DeliveryStatus::Failed;
    cancelled.next_attempt_at = None;
    store
        .apply_transitions(
            &[Transition {
                expected: cancel,
                delivery: cancelled,
                release: None,
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 3);
    store.sync().await.unwrap();
    drop(store);
    let store = harness.open().await;
    assert_eq!(store.pending_count().await.unwrap(), 3);
    assert_eq!(
        store
            .claim(endpoint, u64::MAX / 2, 10, LEASE, usize::MAX, &[])
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn a_replay_transition_keeps_the_history(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, id) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Pending).await;
    let before = store.delivery(id).await.unwrap().unwrap();
    let lease = store
        .claim(endpoint, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    store
        .record_outcomes(&[outcome(
            lease,
            &before,
            DUE,
            false,
            DeliveryStatus::Failed,
            None,
        )])
        .await
        .unwrap();
    let failed = store.delivery(id).await.unwrap().unwrap();
    let mut replayed = failed.clone();
    replayed.status = DeliveryStatus::Pending;
    replayed.cycle = 2;
    replayed.cycle_attempts = 0;
    replayed.next_attempt_at = Some(DUE + 10);
    store
        .apply_transitions(
            &[Transition {
                expected: failed,
                delivery: replayed.clone(),
                release: None,
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 1);
    let lease = store
        .claim(endpoint, DUE + 10, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    store
        .record_outcomes(&[outcome(
            lease,
            &replayed,
            DUE + 11,
            true,
            DeliveryStatus::Succeeded,
            None,
        )])
        .await
        .unwrap();
    let attempts = store.attempts(id).await.unwrap();
    let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2], "the first cycle's attempt is kept");
}

async fn transitions_are_all_or_nothing_and_conflict_on_change(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, a) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Failed).await;
    let (_, b) = put_message(store.as_ref(), endpoint, 1_001, DeliveryStatus::Failed).await;
    let a_now = store.delivery(a).await.unwrap().unwrap();
    let mut b_stale = store.delivery(b).await.unwrap().unwrap();
    b_stale.updated_at += 1; // not what is stored
    let replay = |d: &herald::Delivery| {
        let mut next = d.clone();
        next.status = DeliveryStatus::Pending;
        next.next_attempt_at = Some(DUE);
        Transition {
            expected: d.clone(),
            delivery: next,
            release: None,
        }
    };
    let job = bulk_job();
    let result = store
        .apply_transitions(&[replay(&a_now), replay(&b_stale)], Some(&job))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(
        store.delivery(a).await.unwrap().unwrap().status,
        DeliveryStatus::Failed
    );
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert_eq!(store.job(job.id).await.unwrap(), None, "nothing written");
}

async fn a_retry_of_a_delivery_in_flight_is_refused(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, id) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Pending).await;
    let before = store.delivery(id).await.unwrap().unwrap();
    let lease = store
        .claim(endpoint, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    let mut sooner = before.clone();
    sooner.next_attempt_at = Some(DUE - 1);
    let retry = Transition {
        expected: before.clone(),
        delivery: sooner,
        release: None,
    };
    let result = store.apply_transitions(&[retry], None).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

    // Cancelling is allowed, and revokes the lease: the attempt in flight is kept, stale.
    let mut cancelled = before.clone();
    cancelled.status = DeliveryStatus::Failed;
    cancelled.next_attempt_at = None;
    store
        .apply_transitions(
            &[Transition {
                expected: before.clone(),
                delivery: cancelled,
                release: None,
            }],
            None,
        )
        .await
        .unwrap();
    let late = outcome(
        lease,
        &before,
        DUE + 1,
        true,
        DeliveryStatus::Succeeded,
        None,
    );
    let recorded = store.record_outcomes(&[late]).await.unwrap().remove(0);
    assert!(recorded.unwrap().stale);
    assert_eq!(
        store.delivery(id).await.unwrap().unwrap().status,
        DeliveryStatus::Failed
    );
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

async fn the_purge_never_removes_pending_deliveries(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (old_done, done) =
        put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Succeeded).await;
    record_attempt(store.as_ref(), endpoint, done, 1_000, true).await;
    let (old_pending, pending) =
        put_message(store.as_ref(), endpoint, 1_001, DeliveryStatus::Pending).await;
    let (recent, _) = put_message(store.as_ref(), endpoint, 50_000, DeliveryStatus::Failed).await;
    let mut cursor: Option<PurgeCursor> = None;
    let mut removed = 0;
    loop {
        let page = store.purge_page(10_000, cursor, 1).await.unwrap();
        removed += page.messages;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(removed, 1);
    assert!(store.message(old_done).await.unwrap().is_none());
    assert!(store.delivery(done).await.unwrap().is_none());
    assert!(store.attempts(done).await.unwrap().is_empty());
    assert!(store.message(old_pending).await.unwrap().is_some());
    assert!(store.delivery(pending).await.unwrap().is_some());
    assert!(store.message(recent).await.unwrap().is_some());
    assert_eq!(store.pending_count().await.unwrap(), 1);
}

async fn deleting_an_endpoint_closes_its_deliveries_revokes_leases_and_keeps_its_url(
    harness: &Harness,
) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let kept = put_endpoint(store.as_ref()).await;
    let (_, leased) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Pending).await;
    let (_, waiting) = put_message(store.as_ref(), endpoint, 1_001, DeliveryStatus::Pending).await;
    put_message(store.as_ref(), kept, 1_002, DeliveryStatus::Pending).await;
    let before = store.delivery(leased).await.unwrap().unwrap();
    let lease = store
        .claim(endpoint, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    assert_eq!(lease.delivery_id, leased);
    let closing = Closing {
        status: DeliveryStatus::Failed,
        reason: "endpoint deleted".into(),
        at_ms: now_ms(),
        url: "https://acme.example/hooks".into(),
    };
    assert_eq!(store.deleted_endpoint_url(endpoint).await.unwrap(), None);
    // Both pending deliveries are closed, once.
    assert_eq!(
        store.delete_endpoint(endpoint, &closing).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store.delete_endpoint(endpoint, &closing).await.unwrap(),
        None
    );
    assert!(store.endpoint(endpoint).await.unwrap().is_none());
    for id in [leased, waiting] {
        let closed = store.delivery(id).await.unwrap().unwrap();
        assert_eq!(closed.status, DeliveryStatus::Failed);
        assert_eq!(closed.last_error.as_deref(), Some("endpoint deleted"));
    }
    assert_eq!(store.pending_count().await.unwrap(), 1);
    let late = outcome(
        lease,
        &before,
        DUE + 1,
        true,
        DeliveryStatus::Succeeded,
        None,
    );
    let recorded = store.record_outcomes(&[late]).await.unwrap().remove(0);
    assert!(recorded.unwrap().stale);
    assert_eq!(
        store.delivery(leased).await.unwrap().unwrap().status,
        DeliveryStatus::Failed
    );
    assert_eq!(store.due_head(endpoint, u64::MAX).await.unwrap(), None);
    // Its URL is kept for its deliveries' history, durably; the kept endpoint has none.
    drop(store);
    let store = harness.open().await;
    assert_eq!(
        store
            .deleted_endpoint_url(endpoint)
            .await
            .unwrap()
            .as_deref(),
        Some("https://acme.example/hooks")
    );
    assert_eq!(store.deleted_endpoint_url(kept).await.unwrap(), None);
}

async fn an_endpoint_is_disabled_once_and_enabling_resets_its_health(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, id) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Failed).await;
    record_attempt(store.as_ref(), endpoint, id, 1_000, false).await;
    record_attempt(store.as_ref(), endpoint, id, 1_001, false).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .disable_endpoint(endpoint, 5_000, "2 consecutive failed attempts")
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one caller disables it");
    let disabled = store.endpoint(endpoint).await.unwrap().unwrap();
    assert!(!disabled.enabled);
    assert_eq!(disabled.consecutive_failures, 2);
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("2 consecutive failed attempts")
    );
    assert_eq!(disabled.disabled_at, Some(5_000));

    let enabled = store
        .enable_endpoint(endpoint, 6_000)
        .await
        .unwrap()
        .unwrap();
    assert!(enabled.enabled);
    assert_eq!(enabled.consecutive_failures, 0);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.released_at, Some(6_000));
    drop(store);
    let store = harness.open().await;
    assert_eq!(
        store.endpoint(endpoint).await.unwrap().unwrap().released_at,
        Some(6_000)
    );
}

/// Reads of an endpoint, alone and in its tenant's list, follow every change to it, read
/// between each: its health after outcomes, disabling and enabling, a move to another tenant
/// and its deletion (a backend that keeps endpoints in memory must forget what changes).
async fn endpoint_reads_follow_every_change(harness: &Harness) {
    let store = harness.open().await;
    let mut endpoint = endpoint_record();
    store.put_endpoint(&endpoint).await.unwrap();
    let id = endpoint.id;
    let store = store.as_ref();
    let read = || async { store.endpoint(id).await.unwrap() };
    let listed = |tenant: &'static str| async move { store.endpoints(Some(tenant)).await.unwrap() };
    assert_eq!(read().await.unwrap().consecutive_failures, 0);
    assert_eq!(listed("acme").await[0].consecutive_failures, 0);

    let (_, delivery) = put_message(store, id, 1_000, DeliveryStatus::Failed).await;
    record_attempt(store, id, delivery, 1_000, false).await;
    assert_eq!(read().await.unwrap().consecutive_failures, 1);
    assert_eq!(listed("acme").await[0].consecutive_failures, 1);
    record_attempt(store, id, delivery, 1_001, true).await;
    assert_eq!(read().await.unwrap().consecutive_failures, 0);

    assert!(store.disable_endpoint(id, 5_000, "by hand").await.unwrap());
    let disabled = read().await.unwrap();
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("by hand"));
    assert_eq!(listed("acme").await[0].disabled_at, Some(5_000));
    store.enable_endpoint(id, 6_000).await.unwrap();
    assert_eq!(read().await.unwrap().released_at, Some(6_000));
    assert!(listed("acme").await[0].enabled);

    endpoint.tenant = "globex".into();
    endpoint.url = "https://globex.example/cb".into();
    store.put_endpoint(&endpoint).await.unwrap();
    assert_eq!(read().await.unwrap().url, endpoint.url);
    assert!(listed("acme").await.is_empty());
    assert_eq!(listed("globex").await[0].id, id);

    let closing = Closing {
        status: DeliveryStatus::Failed,
        reason: "endpoint deleted".into(),
        at_ms: now_ms(),
        url: "https://globex.example/cb".into(),
    };
    assert_eq!(store.delete_endpoint(id, &closing).await.unwrap(), Some(0));
    assert!(read().await.is_none());
    assert!(listed("globex").await.is_empty());
}

async fn deliveries_page_oldest_or_newest_first(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            put_message(store.as_ref(), endpoint, 1_000 + i, DeliveryStatus::Failed)
                .await
                .1,
        );
    }
    let page = |after, newest_first| {
        let store = store.clone();
        async move {
            store
                .deliveries(&DeliveryFilter {
                    after,
                    newest_first,
                    limit: 2,
                    ..Default::default()
                })
                .await
                .unwrap()
                .iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, false).await, ids[..2]);
    assert_eq!(page(Some(ids[1]), false).await, ids[2..4]);
    assert_eq!(page(None, true).await, [ids[4], ids[3]]);
    assert_eq!(page(Some(ids[3]), true).await, [ids[2], ids[1]]);
    assert_eq!(page(Some(ids[0]), true).await, []);
    let filtered = store
        .deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(filtered.is_empty());
}

fn bulk_job() -> ReplayJob {
    ReplayJob {
        id: uuid::Uuid::now_v7(),
        state: ReplayState::Running,
        status: DeliveryStatus::Failed,
        endpoint_ids: vec![],
        since_ms: None,
        until_ms: None,
        matched: 2,
        queued: 0,
        skipped: 0,
        cursor: None,
        created_at: 0,
    }
}

async fn bulk_replay_progress_is_stored_with_its_batch(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(store.as_ref()).await;
    let (_, id) = put_message(store.as_ref(), endpoint, 1_000, DeliveryStatus::Failed).await;
    let mut job = bulk_job();
    store.put_job(&job).await.unwrap();
    assert!(
        store.adopt_jobs(now_ms()).await.unwrap().is_empty(),
        "the job is being run by whoever stored it"
    );
    // Its runner is gone (a new process, or a node that stopped long ago): it is adopted once.
    drop(store);
    let store = harness.open().await;
    let later = now_ms() + 3_600_000;
    assert_eq!(store.adopt_jobs(later).await.unwrap(), [job.clone()]);
    assert!(store.adopt_jobs(later).await.unwrap().is_empty());
    let failed = store.delivery(id).await.unwrap().unwrap();
    let mut replayed = failed.clone();
    replayed.status = DeliveryStatus::Pending;
    replayed.next_attempt_at = Some(DUE);
    job.queued = 1;
    job.cursor = Some(id);
    job.state = ReplayState::Done;
    store
        .apply_transitions(
            &[Transition {
                expected: failed,
                delivery: replayed,
                release: None,
            }],
            Some(&job),
        )
        .await
        .unwrap();
    drop(store);
    let store = harness.open().await;
    assert_eq!(store.job(job.id).await.unwrap(), Some(job));
    assert!(store.adopt_jobs(now_ms()).await.unwrap().is_empty());
    assert_eq!(store.pending_count().await.unwrap(), 1);
}
