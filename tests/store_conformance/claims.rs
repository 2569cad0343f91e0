//! The conformance suite's part on claims that read on from where the one before stopped.

use herald::DeliveryStatus::Pending;
use herald::model::DeliveryId;
use herald::store::Lease;

use super::{Harness, leases};
use crate::common::fixtures::{DUE, LEASE, outcome, put_endpoint, put_message_due};

/// A store may start a claim where the last one stopped (the sled store does: its leased
/// entries stay first in the due index). Every entry that becomes claimable behind that point
/// is still found, in due order: one given back, one accepted with an earlier due time, one due
/// again sooner than those claimed, and all of them once their leases run out.
pub async fn claims_find_what_becomes_claimable_behind_earlier_claims(harness: &Harness) {
    let store = harness.open().await;
    let s = store.as_ref();
    let e = put_endpoint(s).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            put_message_due(s, e, 1_000 + i, Pending, DUE + 10 * i)
                .await
                .1,
        );
    }
    let now = DUE + 100;
    let claim = async |at: u64, limit: usize| {
        leases(s.claim(e, at, limit, LEASE, usize::MAX, &[]).await.unwrap())
    };
    let of = |leases: &[Lease]| {
        leases
            .iter()
            .map(|l| l.delivery_id)
            .collect::<Vec<DeliveryId>>()
    };

    let first = claim(now, 2).await;
    assert_eq!(of(&first), ids[..2]);
    s.release(&first[..1]).await.unwrap();
    assert_eq!(of(&claim(now, 1).await), [ids[0]], "given back");

    let (_, early) = put_message_due(s, e, 2_000, Pending, DUE - 5).await;
    assert_eq!(
        of(&claim(now, 10).await),
        [early, ids[2], ids[3]],
        "accepted with an earlier due time"
    );

    let before = s.delivery(ids[1]).await.unwrap().unwrap();
    let failed = outcome(first[1], &before, now, false, Pending, Some(DUE + 1));
    let recorded = s.record_outcomes(&[failed]).await.unwrap().remove(0);
    assert!(!recorded.unwrap().stale);
    assert_eq!(of(&claim(now, 10).await), [ids[1]], "due again sooner");
    assert!(claim(now, 10).await.is_empty(), "everything is leased");

    let later = now + LEASE.as_millis() as u64 + 1;
    assert_eq!(claim(later, 10).await.len(), 5, "leases ran out");
}
