//! Endpoints as this node last read them, so that accepting a message and attempting a delivery
//! do not each cost a round trip to read an endpoint that almost never changes.
//!
//! An entry is dropped when anything could have changed it: every endpoint write of this node
//! clears the cache once it has committed, and every notice from another node (an endpoint
//! created, changed, enabled, disabled or deleted) or a lost LISTEN connection clears it before
//! the engine hears of the notice. One thing changes without a notice: an endpoint's
//! consecutive-failure count, moved by other nodes' outcomes (a notice per failed attempt would
//! cost every node a reload). So entries also expire after [`FRESH_FOR`]: a node may show another
//! node's failure count that much late, never a configuration.
//!
//! A read that began before a clear must not put back what it read: each clear moves a
//! generation on, and a read stores its result only if the generation is still the one it
//! began with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{Endpoint, EndpointId};

/// How long an entry is used without a notice: the most another node's failure count is late.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most (ids looked up and tenants); beyond, the cache starts over.
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub(super) struct EndpointCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    by_id: HashMap<EndpointId, (Instant, Option<Endpoint>)>,
    by_tenant: HashMap<String, (Instant, Vec<Endpoint>)>,
}

impl Inner {
    fn room(&mut self) {
        if self.by_id.len() + self.by_tenant.len() >= CAPACITY {
            self.by_id.clear();
            self.by_tenant.clear();
        }
    }
}

fn fresh(at: Instant) -> bool {
    at.elapsed() < FRESH_FOR
}

impl EndpointCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation a read begins with; pass it back with what the read found.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The endpoint (or that there is none) when known and fresh.
    pub(super) fn endpoint(&self, id: EndpointId) -> Option<Option<Endpoint>> {
        let inner = self.lock();
        let (at, found) = inner.by_id.get(&id)?;
        fresh(*at).then(|| found.clone())
    }

    /// Remembers what a read that began at `generation` found, unless a clear came since.
    pub(super) fn put_endpoint(&self, generation: u64, id: EndpointId, found: &Option<Endpoint>) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.room();
            inner.by_id.insert(id, (Instant::now(), found.clone()));
        }
    }

    /// A tenant's endpoints when known and fresh.
    pub(super) fn tenant(&self, tenant: &str) -> Option<Vec<Endpoint>> {
        let inner = self.lock();
        let (at, found) = inner.by_tenant.get(tenant)?;
        fresh(*at).then(|| found.clone())
    }

    /// Remembers a tenant's endpoints read from `generation` on, unless a clear came since.
    pub(super) fn put_tenant(&self, generation: u64, tenant: &str, found: &[Endpoint]) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.room();
            inner
                .by_tenant
                .insert(tenant.to_owned(), (Instant::now(), found.to_vec()));
        }
    }

    /// Forgets everything: an endpoint may have changed.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.by_id.clear();
        inner.by_tenant.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(tenant: &str) -> Endpoint {
        Endpoint {
            tenant: tenant.into(),
            ..Endpoint::sample("standard-webhooks")
        }
    }

    #[test]
    fn a_read_that_began_before_a_clear_is_not_kept() {
        let cache = EndpointCache::default();
        let e = endpoint("acme");
        let before = cache.generation();
        cache.clear(); // a write committed while the read was under way
        cache.put_endpoint(before, e.id, &Some(e.clone()));
        cache.put_tenant(before, "acme", std::slice::from_ref(&e));
        assert_eq!(cache.endpoint(e.id), None);
        assert_eq!(cache.tenant("acme"), None);

        let now = cache.generation();
        cache.put_endpoint(now, e.id, &Some(e.clone()));
        cache.put_tenant(now, "acme", std::slice::from_ref(&e));
        assert_eq!(cache.endpoint(e.id), Some(Some(e.clone())));
        assert_eq!(cache.tenant("acme"), Some(vec![e.clone()]));
        cache.clear();
        assert_eq!(cache.endpoint(e.id), None);
    }

    #[test]
    fn that_there_is_no_such_endpoint_is_kept_too() {
        let cache = EndpointCache::default();
        let id = EndpointId::new();
        cache.put_endpoint(cache.generation(), id, &None);
        assert_eq!(cache.endpoint(id), Some(None));
    }
}
