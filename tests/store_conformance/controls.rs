//! The conformance suite's part on delivery controls: ordering-key lines, and the fields the
//! store keeps for rate limits and tracing.

use std::time::{Duration, Instant};

use herald::DeliveryStatus;
use herald::model::{DeliveryId, EndpointId, MessageId};
use herald::store::{Closing, MessageWrite, StartRequest, Store, Transition};

use super::Harness;
use crate::common::fixtures::{
    DUE, LEASE, delivery_record, endpoint_record, message_record, outcome, put_endpoint,
};

/// A message created at `at_ms` with `ordering_key`, delivered to each of `endpoints`, pending
/// and due at `due_ms`. Returns the delivery ids, in the order of `endpoints`.
async fn put_keyed(
    store: &dyn Store,
    endpoints: &[EndpointId],
    at_ms: u64,
    ordering_key: Option<&str>,
    due_ms: u64,
) -> Vec<DeliveryId> {
    let mut message = message_record(at_ms, None);
    message.ordering_key = ordering_key.map(str::to_string);
    let deliveries: Vec<_> = endpoints
        .iter()
        .map(|e| delivery_record(&message, *e, DeliveryStatus::Pending, due_ms))
        .collect();
    let ids = deliveries.iter().map(|d| d.id).collect();
    store
        .insert_messages(&[MessageWrite {
            message,
            deliveries,
        }])
        .await
        .unwrap();
    ids
}

/// Three messages of key `job-7` to `endpoint`, accepted in order (ms 1,000 to 1,002), due at
/// `DUE`: a line with a front and two behind it.
async fn line_of_three(store: &dyn Store, endpoint: EndpointId) -> [DeliveryId; 3] {
    let mut line = [DeliveryId::new(); 3];
    for (n, place) in line.iter_mut().enumerate() {
        *place = put_keyed(store, &[endpoint], 1_000 + n as u64, Some("job-7"), DUE).await[0];
    }
    line
}

/// The deliveries of `endpoint` claimable at `now`, sorted.
async fn claimable(store: &dyn Store, endpoint: EndpointId, now: u64) -> Vec<DeliveryId> {
    let leases: Vec<_> = store
        .claim(endpoint, now, 100, LEASE, usize::MAX, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.lease)
        .collect();
    store.release(&leases).await.unwrap();
    let mut ids: Vec<_> = leases.iter().map(|l| l.delivery_id).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<DeliveryId>) -> Vec<DeliveryId> {
    ids.sort();
    ids
}

/// Claims `id` at `now`, records an attempt that finishes it (`release` = its key) or retries
/// it at `retry_at`, and returns when the next delivery of its line became due.
async fn attempt(
    store: &dyn Store,
    endpoint: EndpointId,
    id: DeliveryId,
    now: u64,
    finish: Option<&str>,
    retry_at: Option<u64>,
) -> Option<u64> {
    let leases: Vec<_> = store
        .claim(endpoint, now, 100, LEASE, usize::MAX, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.lease)
        .collect();
    let lease = *leases
        .iter()
        .find(|l| l.delivery_id == id)
        .expect("claimable");
    let others: Vec<_> = leases.into_iter().filter(|l| l.delivery_id != id).collect();
    store.release(&others).await.unwrap();
    let before = store.delivery(id).await.unwrap().unwrap();
    let (status, success) = match retry_at {
        Some(_) => (DeliveryStatus::Pending, false),
        None => (DeliveryStatus::Succeeded, true),
    };
    let mut next = outcome(lease, &before, now, success, status, retry_at);
    next.release = finish.map(str::to_string);
    let recorded = store.record_outcomes(&[next]).await.unwrap().remove(0);
    let recorded = recorded.unwrap();
    assert!(!recorded.stale);
    recorded.released_due
}

pub(super) async fn an_ordering_line_lets_one_delivery_through_at_a_time(harness: &Harness) {
    let store = harness.open().await;
    let (e, f) = (
        put_endpoint(store.as_ref()).await,
        put_endpoint(store.as_ref()).await,
    );
    let a1 = put_keyed(store.as_ref(), &[e, f], 1_000, Some("job-7"), DUE).await;
    let b1 = put_keyed(store.as_ref(), &[e], 1_001, Some("job-8"), DUE).await[0];
    let a2 = put_keyed(store.as_ref(), &[e], 1_002, Some("job-7"), DUE + 5).await[0];
    let unkeyed = put_keyed(store.as_ref(), &[e], 1_003, None, DUE).await[0];
    let a3 = put_keyed(store.as_ref(), &[e], 1_004, Some("job-7"), DUE).await[0];
    assert_eq!(
        store.pending_count().await.unwrap(),
        6,
        "waiting ones count"
    );

    // Each line's front, other keys and unkeyed deliveries; each endpoint has its own lines.
    assert_eq!(
        claimable(store.as_ref(), e, DUE + 10).await,
        sorted(vec![a1[0], b1, unkeyed])
    );
    assert_eq!(claimable(store.as_ref(), f, DUE + 10).await, [a1[1]]);

    // A retrying front keeps its line waiting, and only its line.
    let released = attempt(store.as_ref(), e, a1[0], DUE, None, Some(DUE + 1_000)).await;
    assert_eq!(released, None);
    assert_eq!(
        claimable(store.as_ref(), e, DUE + 500).await,
        sorted(vec![b1, unkeyed])
    );
    // It finishes: the next in line is due at its own time, in the same write.
    let released = attempt(store.as_ref(), e, a1[0], DUE + 1_000, Some("job-7"), None).await;
    assert_eq!(released, Some(DUE + 5));
    assert_eq!(
        claimable(store.as_ref(), e, DUE + 1_000).await,
        sorted(vec![a2, b1, unkeyed])
    );

    // The line survives a reopen: a3 still waits behind a2.
    drop(store);
    let store = harness.open().await;
    assert_eq!(store.pending_count().await.unwrap(), 5);
    assert_eq!(
        claimable(store.as_ref(), e, DUE + 1_000).await,
        sorted(vec![a2, b1, unkeyed])
    );
    let released = attempt(store.as_ref(), e, a2, DUE + 1_000, Some("job-7"), None).await;
    assert_eq!(released, Some(DUE));
    assert!(
        claimable(store.as_ref(), e, DUE + 1_000)
            .await
            .contains(&a3)
    );
    let released = attempt(store.as_ref(), e, a3, DUE + 1_000, Some("job-7"), None).await;
    assert_eq!(released, None, "the line is empty");
    // An empty line takes a new delivery at its front.
    let a4 = put_keyed(store.as_ref(), &[e], 1_005, Some("job-7"), DUE).await[0];
    assert!(
        claimable(store.as_ref(), e, DUE + 1_000)
            .await
            .contains(&a4)
    );
    assert_eq!(store.pending_count().await.unwrap(), 4);
}

pub(super) async fn a_waiting_delivery_can_be_cancelled_or_retried_in_its_place(harness: &Harness) {
    let store = harness.open().await;
    let e = put_endpoint(store.as_ref()).await;
    let [a1, a2, a3] = line_of_three(store.as_ref(), e).await;

    // Cancelling a2 (it leaves the line) and retrying a3 now (it stays in its place).
    let waiting = store.delivery(a2).await.unwrap().unwrap();
    let mut cancelled = waiting.clone();
    cancelled.status = DeliveryStatus::Failed;
    cancelled.next_attempt_at = None;
    let last = store.delivery(a3).await.unwrap().unwrap();
    let mut sooner = last.clone();
    sooner.next_attempt_at = Some(DUE - 5);
    store
        .apply_transitions(
            &[
                Transition {
                    expected: waiting,
                    delivery: cancelled,
                    release: Some("job-7".into()),
                },
                Transition {
                    expected: last,
                    delivery: sooner,
                    release: None,
                },
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 2);
    assert_eq!(claimable(store.as_ref(), e, DUE).await, [a1]);

    // a1 finishes: a3 is next (a2 gave up its place), due at its new time.
    let released = attempt(store.as_ref(), e, a1, DUE, Some("job-7"), None).await;
    assert_eq!(released, Some(DUE - 5));
    assert_eq!(claimable(store.as_ref(), e, DUE).await, [a3]);

    // Cancelling the front passes the line on too (here: to nobody).
    let front = store.delivery(a3).await.unwrap().unwrap();
    let mut cancelled = front.clone();
    cancelled.status = DeliveryStatus::Failed;
    cancelled.next_attempt_at = None;
    store
        .apply_transitions(
            &[Transition {
                expected: front,
                delivery: cancelled,
                release: Some("job-7".into()),
            }],
            None,
        )
        .await
        .unwrap();
    let a4 = put_keyed(store.as_ref(), &[e], 1_003, Some("job-7"), DUE).await[0];
    assert_eq!(claimable(store.as_ref(), e, DUE).await, [a4]);
    assert_eq!(store.pending_count().await.unwrap(), 1);
}

pub(super) async fn a_replay_is_not_held_by_its_ordering_key(harness: &Harness) {
    let store = harness.open().await;
    let e = put_endpoint(store.as_ref()).await;
    let [a1, a2, a3] = line_of_three(store.as_ref(), e).await;
    attempt(store.as_ref(), e, a1, DUE, Some("job-7"), None).await;
    // a2 is at the front and being attempted when a1 is replayed.
    let lease = store
        .claim(e, DUE, 1, LEASE, usize::MAX, &[])
        .await
        .unwrap()[0]
        .lease;
    assert_eq!(lease.delivery_id, a2);
    let done = store.delivery(a1).await.unwrap().unwrap();
    let mut replayed = done.clone();
    replayed.status = DeliveryStatus::Pending;
    replayed.cycle = 2;
    replayed.next_attempt_at = Some(DUE);
    store
        .apply_transitions(
            &[Transition {
                expected: done,
                delivery: replayed,
                release: None,
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(claimable(store.as_ref(), e, DUE).await, [a1]);
    // The replay finishes without touching the line: a3 still waits for a2.
    let released = attempt(store.as_ref(), e, a1, DUE, None, None).await;
    assert_eq!(released, None);
    assert!(claimable(store.as_ref(), e, DUE).await.is_empty());
    let before = store.delivery(a2).await.unwrap().unwrap();
    let mut finished = outcome(lease, &before, DUE, true, DeliveryStatus::Succeeded, None);
    finished.release = Some("job-7".into());
    let recorded = store.record_outcomes(&[finished]).await.unwrap();
    assert_eq!(recorded[0].as_ref().unwrap().released_due, Some(DUE));
    assert_eq!(claimable(store.as_ref(), e, DUE).await, [a3]);
}

pub(super) async fn deleting_an_endpoint_closes_deliveries_waiting_in_line(harness: &Harness) {
    let store = harness.open().await;
    let (e, kept) = (
        put_endpoint(store.as_ref()).await,
        put_endpoint(store.as_ref()).await,
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.extend(put_keyed(store.as_ref(), &[e, kept], 1_000 + i, Some("job-7"), DUE).await);
    }
    assert_eq!(store.pending_count().await.unwrap(), 6);
    let closing = Closing {
        status: DeliveryStatus::Failed,
        reason: "endpoint deleted".into(),
        at_ms: DUE,
        url: "https://acme.example/hooks".into(),
    };
    // The front of its line and the two waiting behind it.
    assert_eq!(store.delete_endpoint(e, &closing).await.unwrap(), Some(3));
    for id in ids.iter().step_by(2) {
        let closed = store.delivery(*id).await.unwrap().unwrap();
        assert_eq!(closed.status, DeliveryStatus::Failed, "{id}");
    }
    assert_eq!(store.pending_count().await.unwrap(), 3);
    // The other endpoint's line is untouched: its front, then the next.
    assert_eq!(claimable(store.as_ref(), kept, DUE).await, [ids[1]]);
    let released = attempt(store.as_ref(), kept, ids[1], DUE, Some("job-7"), None).await;
    assert_eq!(released, Some(DUE));
    assert_eq!(claimable(store.as_ref(), kept, DUE).await, [ids[3]]);
}

pub(super) async fn concurrent_sends_of_one_key_keep_their_order_in_line(harness: &Harness) {
    // Four senders send one key at once, each one send after another (a send returns once it
    // is durable, so each is accepted after the one before it). With PostgreSQL they send
    // through two handles: two nodes of one cluster.
    let first = harness.open().await;
    let second = match harness {
        Harness::Postgres(_) => harness.open().await,
        Harness::Sled(_) => first.clone(),
    };
    let e = put_endpoint(first.as_ref()).await;
    let senders = (0..4u64).map(|sender| {
        let store = if sender % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..10 {
                let at = 1_000 + sender * 100 + i;
                sent.push(put_keyed(store.as_ref(), &[e], at, Some("job-7"), DUE).await[0]);
            }
            sent
        })
    });
    let sent: Vec<Vec<DeliveryId>> = futures_util::future::join_all(senders)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(first.pending_count().await.unwrap(), 40);

    // The line lets them through one at a time; each keeps its sender's order.
    let mut order = Vec::new();
    loop {
        match claimable(first.as_ref(), e, DUE).await.as_slice() {
            [] => break,
            [front] => {
                order.push(*front);
                attempt(first.as_ref(), e, *front, DUE, Some("job-7"), None).await;
            }
            fronts => panic!("{} deliveries of one line due at once", fronts.len()),
        }
    }
    assert_eq!(order.len(), 40, "every delivery once");
    for ids in &sent {
        let places: Vec<usize> = ids
            .iter()
            .map(|id| order.iter().position(|o| o == id).expect("delivered"))
            .collect();
        assert!(
            places.is_sorted(),
            "a sender's order was not kept: {places:?}"
        );
    }
    assert_eq!(first.pending_count().await.unwrap(), 0);
}

pub(super) async fn rate_limits_ordering_keys_and_trace_context_are_kept(harness: &Harness) {
    let store = harness.open().await;
    let mut endpoint = endpoint_record();
    endpoint.rate_limit = Some(20.5);
    store.put_endpoint(&endpoint).await.unwrap();
    let mut message = message_record(1_000, None);
    message.ordering_key = Some("job-7".into());
    message.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let id: MessageId = message.id;
    store
        .insert_messages(&[MessageWrite {
            message: message.clone(),
            deliveries: vec![],
        }])
        .await
        .unwrap();
    drop(store);
    let store = harness.open().await;
    let read = store.endpoint(endpoint.id).await.unwrap().unwrap();
    assert_eq!(read.rate_limit, Some(20.5));
    let read = store.message(id).await.unwrap().unwrap();
    assert_eq!(read.ordering_key, message.ordering_key);
    assert_eq!(read.traceparent, message.traceparent);
    endpoint.rate_limit = None;
    store.put_endpoint(&endpoint).await.unwrap();
    let read = store.endpoint(endpoint.id).await.unwrap().unwrap();
    assert_eq!(read.rate_limit, None);
}

/// A shared store spaces the starts it reserves for a rate-limited endpoint by the interval
/// plus the largest tolerance declared meanwhile, shared out over a second's starts, so that
/// a node that begins late is still a second from the start `per_second` after its own; a
/// store of one process reserves nothing (its engine's pacer is exact).
pub(super) async fn reserved_starts_leave_room_for_the_largest_tolerance(harness: &Harness) {
    let store = harness.open().await;
    let endpoint = put_endpoint(&*store).await;
    let request = |tolerance_ms| StartRequest {
        interval: Duration::from_secs(1),
        per_second: 1,
        tolerance: Duration::from_millis(tolerance_ms),
    };
    if !store.shared() {
        assert_eq!(
            store.reserve_start(endpoint, request(0)).await.unwrap(),
            None
        );
        return;
    }
    // Reservations one after another go further and further ahead. Where each lands, on this
    // machine's clock, is between asking + wait and the answer + wait: the gaps are known
    // within the round trips, whatever the load (a round trip is ~1 ms; the tolerance below
    // is 400).
    let mut reserved = Vec::new();
    for tolerance_ms in [0, 0, 400, 0, 100] {
        let asked = Instant::now();
        let wait = store
            .reserve_start(endpoint, request(tolerance_ms))
            .await
            .unwrap()
            .unwrap();
        reserved.push((asked + wait, Instant::now() + wait));
    }
    // The interval; then the interval plus 400 ms, declared and then remembered.
    let slack = Duration::from_millis(5);
    for (pair, expected_ms) in reserved.windows(2).zip([1_000, 1_400, 1_400, 1_400]) {
        let [(earliest_a, latest_a), (earliest_b, latest_b)] = [pair[0], pair[1]];
        let expected = Duration::from_millis(expected_ms);
        let (least, most) = (
            earliest_b.saturating_duration_since(latest_a),
            latest_b - earliest_a,
        );
        assert!(
            least <= expected + slack && expected <= most + slack,
            "expected {expected:?}, measured between {least:?} and {most:?}"
        );
    }
    // Another endpoint's starts are its own.
    let other = put_endpoint(&*store).await;
    let wait = store
        .reserve_start(other, request(0))
        .await
        .unwrap()
        .unwrap();
    assert!(wait < Duration::from_millis(150), "{wait:?}");
}
