//! `herald_deliveries_finished_total`: deliveries that reached a final status. A delivery
//! finishes by an attempt, by delta mode's skip when it is accepted, by an operator's cancel,
//! or by its endpoint's deletion. Each of those counts only what the store changed (a
//! transition that lost a race, or an attempt recorded after its lease was revoked, counts
//! nothing), so every delivery is counted once per cycle, under the same labels whichever
//! way it finished.

use super::Engine;
use crate::model::{DeliveryStatus, Endpoint};
use crate::policy::Policy;

impl Engine {
    /// [`count`] under `endpoint`'s policy (`unknown` without an endpoint).
    pub(super) fn count_finished(
        &self,
        endpoint: Option<&Endpoint>,
        status: DeliveryStatus,
        deliveries: u64,
    ) {
        let policy = endpoint.and_then(|e| self.policies.get(&e.policy));
        count(policy.map(|p| p.as_ref()), status, deliveries);
    }
}

/// Counts `deliveries` that reached `status` under `policy` (`unknown` when it is not
/// loaded). The labels are the policy's name and the status only: ids would make a series
/// per delivery.
pub(crate) fn count(policy: Option<&Policy>, status: DeliveryStatus, deliveries: u64) {
    debug_assert!(status.is_final(), "{status:?} is not a final status");
    if deliveries == 0 {
        return;
    }
    let policy = policy.map_or_else(|| "unknown".to_string(), |p| p.name.clone());
    metrics::counter!("herald_deliveries_finished_total", "policy" => policy, "status" => status.as_str())
        .increment(deliveries);
}
