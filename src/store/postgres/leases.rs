//! This node's live leases, by endpoint: what it counts of its own against an endpoint's
//! concurrency cap beside other nodes' leases, and what it tells the other nodes, which count them from two totals per
//! node and endpoint: `lease_ends.ended`, added to by every outcome group and hand-back that
//! ends leases held here, and `lease_counts.claimed`, set by every claim to that total (as
//! the claim reads it) plus the leases live here — so the others' `claimed - ended` is this
//! node's live leases.
//!
//! A claim used to count the cluster's live leases in `deliveries`, reading every index entry
//! of the last lease period, dead row versions included. Now each node knows its own leases
//! exactly and reads the others' from two small rows per node; claims and the recorder write
//! different rows, so neither waits for the other's row lock.
//!
//! Every error errs high, the safe side of a cap: a lease is counted as live from its claim
//! until the write that ends it commits (even if it expires meanwhile), and one that expired
//! unrecorded stays in the other nodes' count until this node claims again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::{DeliveryId, EndpointId};
use crate::store::Lease;

/// Live leases: expiry (ms), and whether a write that ends them is under way.
type Leases = HashMap<DeliveryId, (u64, bool)>;

/// Live leases of this node, per endpoint.
#[derive(Default)]
pub(super) struct OwnLeases(Mutex<HashMap<EndpointId, Leases>>);

/// Leases a write is about to end, per endpoint: what it adds to `lease_ends`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Ending {
    pub(super) endpoints: Vec<uuid::Uuid>,
    pub(super) counts: Vec<i64>,
}

impl OwnLeases {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Leases>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For a claim of `endpoint` at `now_ms`: its leases here that count against its cap here
    /// (live and not `settling`, i.e. queued or on the wire, not answered and waiting for the
    /// recorder), and all its live ones, which the other nodes count. Forgets leases that
    /// expired with no write ending them.
    pub(super) fn before_claim(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
        settling: &[DeliveryId],
    ) -> (usize, usize) {
        let mut map = self.map();
        let Some(leases) = map.get_mut(&endpoint) else {
            return (0, 0);
        };
        leases.retain(|_, (expires, ending)| *ending || *expires > now_ms);
        let live = leases.len();
        let settled = settling.iter().filter(|id| leases.contains_key(id)).count();
        if live == 0 {
            map.remove(&endpoint);
        }
        (live - settled, live)
    }

    /// Notes the leases of a claim.
    pub(super) fn add(
        &self,
        endpoint: EndpointId,
        ids: impl IntoIterator<Item = DeliveryId>,
        expires_ms: u64,
    ) {
        let mut map = self.map();
        let leases = map.entry(endpoint).or_default();
        leases.extend(ids.into_iter().map(|id| (id, (expires_ms, false))));
    }

    /// Marks the live ones of `leases` as being ended by a write, and counts them per
    /// endpoint; [`Self::settle`] follows once the write committed or failed.
    pub(super) fn ending(&self, leases: &[Lease], now_ms: u64) -> Ending {
        let mut map = self.map();
        let mut counts: HashMap<EndpointId, i64> = HashMap::new();
        for lease in leases {
            let held = map
                .get_mut(&lease.endpoint_id)
                .and_then(|l| l.get_mut(&lease.delivery_id));
            if let Some((expires, ending)) = held
                && !*ending
                && *expires > now_ms
            {
                *ending = true;
                *counts.entry(lease.endpoint_id).or_default() += 1;
            }
        }
        let (endpoints, counts) = counts.into_iter().map(|(e, n)| (e.0, n)).unzip();
        Ending { endpoints, counts }
    }

    /// After the write that was to end `leases`: committed, the marked ones are gone;
    /// failed, they are live as before.
    pub(super) fn settle(&self, leases: &[Lease], committed: bool) {
        let mut map = self.map();
        for lease in leases {
            if let Some(l) = map.get_mut(&lease.endpoint_id)
                && let Some((_, marked)) = l.get_mut(&lease.delivery_id)
                && *marked
            {
                if committed {
                    l.remove(&lease.delivery_id);
                } else {
                    *marked = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseToken;

    fn lease(endpoint: EndpointId, id: DeliveryId) -> Lease {
        Lease {
            delivery_id: id,
            endpoint_id: endpoint,
            due_ms: 0,
            expires_at_ms: 0,
            token: LeaseToken::new(),
        }
    }

    #[test]
    fn counts_live_leases_until_a_write_that_ends_them_commits() {
        let own = OwnLeases::default();
        let (a, b) = (EndpointId::new(), EndpointId::new());
        let ids: Vec<DeliveryId> = (0..4).map(|_| DeliveryId::new()).collect();
        own.add(a, ids[..3].iter().copied(), 1_000);
        own.add(a, [ids[3]], 2_000);
        own.add(b, [DeliveryId::new()], 1_000);
        assert_eq!(own.before_claim(a, 500, &[]), (4, 4));
        // A settling lease does not count against the cap here, but is live; a settling id
        // that is not this endpoint's lease changes nothing.
        assert_eq!(
            own.before_claim(a, 500, &[ids[0], DeliveryId::new()]),
            (3, 4)
        );

        // Ended by a committed write: counted once, even when named twice; another
        // endpoint's lease not held here is not counted.
        let ended = [
            lease(a, ids[1]),
            lease(a, ids[1]),
            lease(b, DeliveryId::new()),
        ];
        let ending = own.ending(&ended, 500);
        assert_eq!(
            (ending.endpoints.clone(), ending.counts.clone()),
            (vec![a.0], vec![1])
        );
        own.settle(&ended, true);
        assert_eq!(own.before_claim(a, 500, &[]), (3, 3));

        // A failed write leaves its leases live, and ends nothing.
        let failed = [lease(a, ids[2])];
        assert_eq!(own.ending(&failed, 500).counts, vec![1]);
        own.settle(&failed, false);
        assert_eq!(own.before_claim(a, 500, &[]), (3, 3));

        // A lease being ended counts as live until the write commits, even once it expired;
        // an expired one that no write ends is forgotten, and a write ending it later counts
        // nothing.
        let slow = [lease(a, ids[0])];
        assert_eq!(own.ending(&slow, 900).counts, vec![1]);
        assert_eq!(
            own.before_claim(a, 1_000, &[]),
            (2, 2),
            "ids[0] ending, ids[3] live"
        );
        own.settle(&slow, true);
        assert_eq!(own.before_claim(a, 1_000, &[]), (1, 1));
        let late = [lease(a, ids[2])];
        assert_eq!(own.ending(&late, 1_000), Ending::default());
        assert_eq!(own.before_claim(b, 999, &[]), (1, 1));
        own.settle(&[lease(a, ids[3])], true); // not marked: still live
        assert_eq!(own.before_claim(a, 1_999, &[]), (1, 1));
        assert_eq!(own.before_claim(a, 2_000, &[]), (0, 0));
        assert!(
            !own.map().contains_key(&a),
            "an endpoint without leases is forgotten"
        );
    }
}
