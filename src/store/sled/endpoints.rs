//! Endpoint records (sealed: they carry secrets and tokens), their health (the failure count
//! and why an endpoint is disabled), and the cache of decoded records.

use sled::{Batch, IVec};

use super::cache::EndpointCache;
use super::codec::{self, Health, encode};
use super::lines::LineWrites;
use super::{SledStore, keys};
use crate::model::{Delivery, DeliveryStatus, Endpoint, EndpointId};
use crate::store::{Closing, StoreResult};

/// Deliveries updated per batch when an endpoint is deleted.
const DELETE_BATCH: usize = 1_000;

impl SledStore {
    fn cache(&self) -> std::sync::RwLockReadGuard<'_, EndpointCache> {
        self.endpoint_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The cache, to fill or to forget in; callers hold `writes` ([`super::cache`]).
    pub(super) fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, EndpointCache> {
        self.endpoint_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint record (configuration, no health), from the cache when possible.
    fn stored_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        if let Some(endpoint) = self.cache().config(id) {
            return Ok(Some(endpoint));
        }
        match self.try_writes() {
            Some(_writes) => self.load_endpoint(id),
            None => self.read_endpoint(id),
        }
    }

    /// Like `stored_endpoint`, for callers already holding `writes`.
    pub(super) fn load_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        if let Some(endpoint) = self.cache().config(id) {
            return Ok(Some(endpoint));
        }
        let endpoint = self.read_endpoint(id)?;
        if let Some(endpoint) = &endpoint {
            self.cache_mut().keep_config(endpoint);
        }
        Ok(endpoint)
    }

    /// Whether the endpoint exists, without decoding (or copying) its record; for callers
    /// holding `writes`, or whose answer may be a moment old.
    pub(super) fn endpoint_exists(&self, id: EndpointId) -> StoreResult<bool> {
        if self.cache().has_config(id) {
            return Ok(true);
        }
        Ok(self.tree()?.contains_key(keys::endpoint(id))?)
    }

    /// The endpoint record as stored, decoded.
    fn read_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        let key = keys::endpoint(id);
        match self.tree()?.get(&key)? {
            Some(bytes) => codec::open_endpoint(&self.sealer, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The endpoint's health as stored, for callers holding `writes`.
    pub(super) fn health(&self, endpoint: EndpointId) -> StoreResult<Health> {
        let key = keys::failures(endpoint);
        match self.tree()?.get(&key)? {
            Some(bytes) => Health::decode(&key, &bytes),
            None => Ok(Health::default()),
        }
    }

    /// The endpoint's health, from the cache when possible.
    fn current_health(&self, endpoint: EndpointId) -> StoreResult<Health> {
        if let Some(health) = self.cache().health(endpoint) {
            return Ok(health);
        }
        let writes = self.try_writes();
        let health = self.health(endpoint)?;
        // Kept only for an endpoint that still exists (it may have been deleted since the
        // caller read its record): the cache holds live endpoints only.
        if writes.is_some() && self.endpoint_exists(endpoint)? {
            self.cache_mut().keep_health(endpoint, &health);
        }
        Ok(health)
    }

    /// The endpoint's health, written into the batch (absent when all default).
    pub(super) fn put_health(
        batch: &mut Batch,
        endpoint: EndpointId,
        health: &Health,
    ) -> StoreResult<()> {
        if *health == Health::default() {
            batch.remove(keys::failures(endpoint));
        } else {
            batch.insert(keys::failures(endpoint), encode(health)?);
        }
        Ok(())
    }

    fn with_health(&self, mut endpoint: Endpoint) -> StoreResult<Endpoint> {
        let health = self.current_health(endpoint.id)?;
        endpoint.consecutive_failures = health.failures;
        endpoint.disabled_reason = health.disabled_reason;
        endpoint.disabled_at = health.disabled_at;
        endpoint.released_at = health.released_at;
        Ok(endpoint)
    }

    pub(super) fn endpoint_now(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        match self.stored_endpoint(id)? {
            Some(endpoint) => self.with_health(endpoint).map(Some),
            None => Ok(None),
        }
    }

    /// A tenant's endpoints, in the order of their index keys, from the cache when possible.
    fn tenant_endpoints(&self, tenant: &str) -> StoreResult<Vec<EndpointId>> {
        if let Some(ids) = self.cache().tenant(tenant) {
            return Ok(ids);
        }
        let writes = self.try_writes();
        let prefix = keys::tenant_prefix(tenant);
        let mut ids = Vec::new();
        for entry in self.tree()?.scan_prefix(&prefix).keys() {
            if let Some(id) = EndpointId::from_slice(&entry?[prefix.len()..]) {
                ids.push(id);
            }
        }
        // A tenant without endpoints is not kept: producers name tenants, and the cache must
        // not grow with every name one sends.
        if writes.is_some() && !ids.is_empty() {
            self.cache_mut().keep_tenant(tenant, ids.clone());
        }
        Ok(ids)
    }

    pub(super) fn endpoints_now(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>> {
        let mut out = Vec::new();
        match tenant {
            Some(tenant) => {
                for id in self.tenant_endpoints(tenant)? {
                    if let Some(endpoint) = self.endpoint_now(id)? {
                        out.push(endpoint);
                    }
                }
            }
            None => {
                for entry in self.tree()?.scan_prefix([keys::ENDPOINT]) {
                    let (key, value) = entry?;
                    let endpoint: Endpoint = codec::open_endpoint(&self.sealer, &key, &value)?;
                    out.push(self.with_health(endpoint)?);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn put_endpoint_now(&self, endpoint: &Endpoint) -> StoreResult<()> {
        let mut state = self.lock();
        let mut batch = Batch::default();
        let old = self.load_endpoint(endpoint.id)?;
        if let Some(old) = &old
            && old.tenant != endpoint.tenant
        {
            batch.remove(keys::tenant_endpoint(&old.tenant, old.id));
        }
        batch.insert(
            keys::endpoint(endpoint.id),
            codec::seal_endpoint(&self.sealer, endpoint)?,
        );
        batch.insert(keys::tenant_endpoint(&endpoint.tenant, endpoint.id), &[]);
        let mut tenants = vec![endpoint.tenant.as_str()];
        tenants.extend(old.as_ref().map(|old| old.tenant.as_str()));
        self.cache_mut().forget(endpoint.id, &tenants);
        let added = u64::from(old.is_none());
        self.apply_durable(&mut state, batch, (0, 0), |c| c.endpoints += added)
    }

    pub(super) fn disable_endpoint_now(
        &self,
        id: EndpointId,
        now_ms: u64,
        reason: &str,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let Some(mut endpoint) = self.load_endpoint(id)? else {
            return Ok(false);
        };
        if !endpoint.enabled {
            return Ok(false);
        }
        endpoint.enabled = false;
        endpoint.updated_at = now_ms;
        let mut health = self.health(id)?;
        health.disabled_reason = Some(reason.to_string());
        health.disabled_at = Some(now_ms);
        let mut batch = Batch::default();
        batch.insert(
            keys::endpoint(id),
            codec::seal_endpoint(&self.sealer, &endpoint)?,
        );
        Self::put_health(&mut batch, id, &health)?;
        self.cache_mut().forget(id, &[]);
        self.apply_durable(&mut state, batch, (0, 0), |_| {})?;
        Ok(true)
    }

    pub(super) fn enable_endpoint_now(
        &self,
        id: EndpointId,
        now_ms: u64,
    ) -> StoreResult<Option<Endpoint>> {
        let mut state = self.lock();
        let Some(mut endpoint) = self.load_endpoint(id)? else {
            return Ok(None);
        };
        let was_disabled = !endpoint.enabled;
        endpoint.enabled = true;
        endpoint.updated_at = now_ms;
        let health = Health {
            released_at: if was_disabled {
                Some(now_ms)
            } else {
                self.health(id)?.released_at
            },
            ..Health::default()
        };
        let mut batch = Batch::default();
        batch.insert(
            keys::endpoint(id),
            codec::seal_endpoint(&self.sealer, &endpoint)?,
        );
        Self::put_health(&mut batch, id, &health)?;
        self.cache_mut().forget(id, &[]);
        self.apply_durable(&mut state, batch, (0, 0), |_| {})?;
        drop(state);
        self.endpoint_now(id)
    }

    pub(super) fn delete_endpoint_now(
        &self,
        id: EndpointId,
        closing: &Closing,
    ) -> StoreResult<Option<u64>> {
        let mut state = self.lock();
        let Some(endpoint) = self.load_endpoint(id)? else {
            return Ok(None);
        };
        state.cursors.remove(&id);
        self.cache_mut().forget(id, &[&endpoint.tenant]);
        // The deliveries waiting in its ordering lines (from the end of each line, so that
        // every batch leaves whole lines behind), then the due index, then the lines.
        let mut finished = self.close_waiting(&mut state, id, closing)?;
        for prefix in [keys::DUE, keys::LINE] {
            let prefix = keys::endpoint_prefix(prefix, id);
            loop {
                let entries: Vec<IVec> = self
                    .tree()?
                    .scan_prefix(&prefix)
                    .keys()
                    .take(DELETE_BATCH)
                    .collect::<Result<_, _>>()?;
                if entries.is_empty() {
                    break;
                }
                let mut batch = Batch::default();
                let mut removed = 0;
                for key in entries {
                    if let Some((_, _, delivery_id)) = keys::parse_due(&key) {
                        state.leases.remove(&delivery_id);
                        if let Some(delivery) = self.delivery_at(delivery_id)?
                            && delivery.status == DeliveryStatus::Pending
                        {
                            let closed = closed(delivery, closing);
                            batch.insert(
                                keys::delivery(delivery_id),
                                self.encode_delivery(&closed)?,
                            );
                            removed += 1;
                        }
                    }
                    batch.remove(key);
                }
                self.apply_counted(batch, 0, removed)?;
                finished += removed;
            }
        }
        debug_assert!(closing.status != DeliveryStatus::Pending);
        let mut batch = Batch::default();
        batch.remove(keys::endpoint(id));
        batch.remove(keys::failures(id));
        batch.remove(keys::tenant_endpoint(&endpoint.tenant, id));
        batch.insert(keys::deleted_endpoint(id), encode(&closing.url)?);
        self.apply_durable(&mut state, batch, (0, 0), |c| {
            c.endpoints = c.endpoints.saturating_sub(1)
        })?;
        Ok(Some(finished))
    }

    pub(super) fn deleted_endpoint_url_now(&self, id: EndpointId) -> StoreResult<Option<String>> {
        let key = keys::deleted_endpoint(id);
        match self.tree()?.get(&key)? {
            Some(bytes) => codec::decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Closes the deliveries waiting in `endpoint`'s lines, in batches: each takes deliveries
    /// from the end of lines, so that what is left after any batch is a shorter line. Returns
    /// how many it closed.
    fn close_waiting(
        &self,
        state: &mut super::State,
        endpoint: EndpointId,
        closing: &Closing,
    ) -> StoreResult<u64> {
        let prefix = keys::endpoint_prefix(keys::LINE, endpoint);
        let mut from = prefix.clone();
        let mut finished = 0;
        loop {
            let mut lines = LineWrites::default();
            let mut closed_ones = Vec::new();
            let mut done = true;
            for line in self.tree()?.range(from.clone()..).keys() {
                let line = line?;
                if !line.starts_with(&prefix) {
                    break;
                }
                while let Some(last) = lines.waiting_last(self, &line)? {
                    if closed_ones.len() == DELETE_BATCH {
                        break;
                    }
                    lines.leave_waiting(self, &line, last)?;
                    if let Some(delivery) = self.delivery_at(last)?
                        && delivery.status == DeliveryStatus::Pending
                    {
                        closed_ones.push(closed(delivery, closing));
                    }
                }
                if closed_ones.len() == DELETE_BATCH {
                    from = line.to_vec();
                    done = false;
                    break;
                }
            }
            let mut batch = Batch::default();
            lines.write(&mut batch);
            for delivery in &closed_ones {
                state.leases.remove(&delivery.id);
                batch.insert(keys::delivery(delivery.id), self.encode_delivery(delivery)?);
            }
            self.apply_counted(batch, 0, closed_ones.len() as u64)?;
            finished += closed_ones.len() as u64;
            if done {
                return Ok(finished);
            }
        }
    }
}

/// A pending delivery as an endpoint's deletion leaves it.
fn closed(mut delivery: Delivery, closing: &Closing) -> Delivery {
    delivery.status = closing.status;
    delivery.next_attempt_at = None;
    delivery.last_error = Some(closing.reason.clone());
    delivery.updated_at = closing.at_ms;
    delivery
}
