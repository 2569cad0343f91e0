//! What every send and every attempt read of endpoints, kept decoded in memory.
//!
//! Routing a message reads its tenant's endpoints, and each attempt reads its endpoint with
//! its health (an endpoint released from being disabled moves the schedule of what it held).
//! From sled that was a prefix scan and a health read per send and a health read per attempt,
//! on pages the writers keep changing: measured end to end (`bench/e2e.sh`, alternating), the
//! daemon delivered ~18 % more a second once they came from memory.
//!
//! The rule that keeps the cache exact: it is filled only by a caller holding the store's
//! `writes` lock (after a miss; a reader that finds the lock taken reads sled and fills
//! nothing, rather than wait for the recorder's write), and every writer of an endpoint
//! record, its health or its tenant's list forgets what it changes, holding that same lock,
//! before its batch is applied. A fill can therefore never put back a state a writer
//! replaced; a reader that finds an entry sees the state before or after a write in progress,
//! as it would reading sled a moment earlier or later.

use std::collections::HashMap;

use super::codec::Health;
use crate::model::{Endpoint, EndpointId};

/// Decoded endpoint records, their health and each tenant's endpoints.
#[derive(Default)]
pub(super) struct EndpointCache {
    /// Endpoint records (configuration, no health).
    configs: HashMap<EndpointId, Endpoint>,
    health: HashMap<EndpointId, Health>,
    /// Each tenant's endpoints, in the order of their index keys; only tenants that have some
    /// (bounded by the endpoints, whatever tenant names producers send).
    tenants: HashMap<String, Vec<EndpointId>>,
}

impl EndpointCache {
    pub(super) fn config(&self, id: EndpointId) -> Option<Endpoint> {
        self.configs.get(&id).cloned()
    }

    pub(super) fn has_config(&self, id: EndpointId) -> bool {
        self.configs.contains_key(&id)
    }

    pub(super) fn health(&self, id: EndpointId) -> Option<Health> {
        self.health.get(&id).cloned()
    }

    pub(super) fn tenant(&self, tenant: &str) -> Option<Vec<EndpointId>> {
        self.tenants.get(tenant).cloned()
    }

    pub(super) fn keep_config(&mut self, endpoint: &Endpoint) {
        self.configs.insert(endpoint.id, endpoint.clone());
    }

    pub(super) fn keep_health(&mut self, id: EndpointId, health: &Health) {
        self.health.insert(id, health.clone());
    }

    pub(super) fn keep_tenant(&mut self, tenant: &str, ids: Vec<EndpointId>) {
        self.tenants.insert(tenant.to_string(), ids);
    }

    /// An endpoint's record and health are about to change, and with them the lists of
    /// `tenants` (the one it is in, and the one it leaves).
    pub(super) fn forget(&mut self, id: EndpointId, tenants: &[&str]) {
        self.configs.remove(&id);
        self.health.remove(&id);
        for tenant in tenants {
            self.tenants.remove(*tenant);
        }
    }

    /// An endpoint's health is about to change.
    pub(super) fn forget_health(&mut self, id: EndpointId) {
        self.health.remove(&id);
    }

    /// Everything (sled was reopened).
    pub(super) fn clear(&mut self) {
        *self = EndpointCache::default();
    }
}
