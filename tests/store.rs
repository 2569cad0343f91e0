//! The sled store's claims: leases held in memory by the process, the due entries untouched.

mod common;

use common::fixtures::{outcome, put_endpoint, put_message};
use herald::DeliveryStatus;
use herald::store::{NextStep, SledOptions, SledStore, Store};

/// `put_message` makes pending deliveries due at this time.
const DUE: u64 = u64::MAX / 2;
const NOW: u64 = DUE + 1;

#[test]
fn claims_are_exclusive_write_nothing_and_end_with_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, deliveries) = {
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
        let endpoint = put_endpoint(&store);
        let deliveries: Vec<_> = (0..4)
            .map(|i| put_message(&store, endpoint, 1_000 + i, DeliveryStatus::Pending).1)
            .collect();
        assert_eq!(store.pending_deliveries(), 4);

        // Exclusive: a second claim never returns what the first holds.
        let first = store.claim(endpoint, NOW, 3).unwrap();
        assert_eq!(first.len(), 3);
        let second = store.claim(endpoint, NOW, 10).unwrap();
        assert_eq!(second.len(), 1);
        assert!(!first.iter().any(|c| c.delivery_id == second[0].delivery_id));
        assert!(store.claim(endpoint, NOW, 10).unwrap().is_empty());
        assert_eq!(store.due_head(endpoint).unwrap(), None, "all claimed");
        // Nothing was written: every entry is still due where it was.
        assert_eq!(store.pending_deliveries(), 4);
        assert!(first.iter().all(|c| c.due_ms == DUE));

        // Released: claimable again.
        store.release(&first[..1]).unwrap();
        assert_eq!(store.due_head(endpoint).unwrap(), Some(DUE));
        let again = store.claim(endpoint, NOW, 10).unwrap();
        assert_eq!(again, first[..1].to_vec());

        // Recorded as finished: the entry goes, the count follows.
        let done = outcome(
            endpoint,
            first[0].delivery_id,
            first[0].due_ms,
            NOW,
            true,
            NextStep::Finish(DeliveryStatus::Succeeded),
        );
        let recorded = store.record_attempt(done).unwrap();
        assert!(!recorded.stale);
        assert_eq!(recorded.delivery.status, DeliveryStatus::Succeeded);
        assert_eq!(store.pending_deliveries(), 3);

        // Recorded as a retry: the entry moves, the count stays.
        let retry = outcome(
            endpoint,
            first[1].delivery_id,
            first[1].due_ms,
            NOW,
            false,
            NextStep::Retry {
                due_ms: NOW + 60_000,
                anchor_ms: NOW,
            },
        );
        assert!(!store.record_attempt(retry).unwrap().stale);
        assert_eq!(store.pending_deliveries(), 3);
        assert_eq!(store.due_head(endpoint).unwrap(), Some(NOW + 60_000));

        // Discarded: the entry goes without an attempt.
        store.discard(endpoint, &first[2..3]).unwrap();
        assert_eq!(store.pending_deliveries(), 2);
        store.flush().unwrap();
        (endpoint, deliveries)
    };

    // A new process: the claim still held on `second` ended with the old one.
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    assert_eq!(
        store.pending_deliveries(),
        2,
        "the count is stored, not rescanned"
    );
    let reclaimed = store.claim(endpoint, NOW, 10).unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert!(deliveries.contains(&reclaimed[0].delivery_id));
    let later = store.claim(endpoint, NOW + 60_000, 10).unwrap();
    assert_eq!(later.len(), 1, "the retried one, at its new time");
}

#[test]
fn outcomes_recorded_together_compose_per_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let endpoint = put_endpoint(&store);
    for i in 0..3 {
        put_message(&store, endpoint, 1_000 + i, DeliveryStatus::Pending);
    }
    let claims = store.claim(endpoint, NOW, 10).unwrap();
    let failed = |c: &herald::store::Claim| {
        let next = NextStep::Finish(DeliveryStatus::Failed);
        outcome(endpoint, c.delivery_id, c.due_ms, NOW, false, next)
    };
    // Three failures in one group: the consecutive-failure count goes 1, 2, 3.
    let answers = store
        .record_attempts(claims.iter().map(failed).collect())
        .unwrap();
    let counts: Vec<u32> = answers
        .into_iter()
        .map(|a| a.unwrap().consecutive_failures)
        .collect();
    assert_eq!(counts, vec![1, 2, 3]);
    assert_eq!(store.pending_deliveries(), 0);
    let endpoint = store.endpoint(endpoint).unwrap().unwrap();
    assert_eq!(endpoint.consecutive_failures, 3);
}

#[test]
fn deliveries_page_oldest_or_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let endpoint = put_endpoint(&store);
    let ids: Vec<_> = (0..5)
        .map(|i| put_message(&store, endpoint, 1_000 + i, DeliveryStatus::Failed).1)
        .collect();
    let page = |after, newest_first| -> Vec<_> {
        store
            .deliveries(&herald::DeliveryFilter {
                after,
                newest_first,
                limit: 2,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect()
    };
    assert_eq!(page(None, false), ids[..2]);
    assert_eq!(page(Some(ids[1]), false), ids[2..4]);
    assert_eq!(page(None, true), [ids[4], ids[3]]);
    assert_eq!(page(Some(ids[3]), true), [ids[2], ids[1]]);
    assert_eq!(page(Some(ids[0]), true), []);
}
