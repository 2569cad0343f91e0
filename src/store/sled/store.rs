//! The [`Store`] trait over the sled backend's parts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use sled::Batch;

use super::codec::{self, decode, encode};
use super::{SledStore, keys};
use crate::model::{Attempt, Delivery, DeliveryId, Endpoint, EndpointId, Message, MessageId};
use crate::store::{
    BackupReport, Claim, Closing, DailyRollup, DeliveryFilter, Inserted, Lease, MessageWrite,
    Outcome, PurgeCursor, PurgePage, Recorded, ReplayJob, ReplayState, Store, StoreResult,
    Transition,
};

#[async_trait]
impl Store for SledStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()> {
        self.put_endpoint_now(endpoint)?;
        self.flush().await
    }

    async fn endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        self.endpoint_now(id)
    }

    async fn endpoints(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>> {
        self.endpoints_now(tenant)
    }

    async fn disable_endpoint(
        &self,
        id: EndpointId,
        now_ms: u64,
        reason: &str,
    ) -> StoreResult<bool> {
        let disabled = self.disable_endpoint_now(id, now_ms, reason)?;
        self.flush().await?;
        Ok(disabled)
    }

    async fn enable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<Option<Endpoint>> {
        let endpoint = self.enable_endpoint_now(id, now_ms)?;
        self.flush().await?;
        Ok(endpoint)
    }

    async fn delete_endpoint(&self, id: EndpointId, closing: &Closing) -> StoreResult<Option<u64>> {
        let closed = self.delete_endpoint_now(id, closing)?;
        self.flush().await?;
        Ok(closed)
    }

    async fn deleted_endpoint_url(&self, id: EndpointId) -> StoreResult<Option<String>> {
        self.deleted_endpoint_url_now(id)
    }

    async fn insert_messages(&self, writes: &[MessageWrite]) -> StoreResult<Vec<Inserted>> {
        let answers = self.insert_messages_now(writes)?;
        self.flush().await?;
        Ok(answers)
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        let key = keys::message(id);
        match self.tree()?.get(&key)? {
            Some(bytes) => codec::decode_message(&self.sealer, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn message_deliveries(&self, id: MessageId) -> StoreResult<Vec<Delivery>> {
        self.message_deliveries_now(id)
    }

    async fn delivery(&self, id: DeliveryId) -> StoreResult<Option<Delivery>> {
        self.delivery_at(id)
    }

    async fn attempts(&self, id: DeliveryId) -> StoreResult<Vec<Attempt>> {
        self.tree()?
            .scan_prefix(keys::attempts_prefix(id))
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        self.deliveries_now(filter)
    }

    async fn endpoint_days(
        &self,
        endpoint: EndpointId,
        first: u32,
        last: u32,
    ) -> StoreResult<Vec<(u32, DailyRollup)>> {
        let start = keys::stats(endpoint, first);
        let end = keys::stats(endpoint, last.saturating_add(1));
        self.tree()?
            .range(start..end)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((keys::stats_day(&key).unwrap_or(0), decode(&key, &value)?))
            })
            .collect()
    }

    async fn dedup_digest(&self, endpoint: EndpointId, key: &str) -> StoreResult<Option<[u8; 32]>> {
        Ok(self
            .tree()?
            .get(keys::dedup(endpoint, key))?
            .and_then(|v| v.as_ref().try_into().ok()))
    }

    async fn due_heads(&self, now_ms: u64) -> StoreResult<Vec<(EndpointId, u64)>> {
        let mut heads = Vec::new();
        for endpoint in self.endpoints_now(None)? {
            if let Some(head) = self.due_head_now(endpoint.id, now_ms)? {
                heads.push((endpoint.id, head));
            }
        }
        Ok(heads)
    }

    async fn due_head(&self, endpoint: EndpointId, now_ms: u64) -> StoreResult<Option<u64>> {
        self.due_head_now(endpoint, now_ms)
    }

    async fn claim(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
        limit: usize,
        lease_for: Duration,
        max_leased: usize,
        _settling: &[DeliveryId],
    ) -> StoreResult<Vec<Claim>> {
        // One process: the engine passes no cap (its scheduler's count is exact), so the
        // settling leases, which only matter to a cap, are not needed here.
        let leases = self.claim_now(endpoint, now_ms, limit, lease_for, max_leased)?;
        let mut claims = Vec::with_capacity(leases.len());
        for lease in leases {
            let delivery = self.delivery_at(lease.delivery_id)?;
            let Some(delivery) = delivery else {
                // The due entry outlived its record (it cannot, short of damage): drop the
                // lease and leave the entry for `herald store check` to report.
                self.release(&[lease]).await?;
                continue;
            };
            let message = self.message(delivery.message_id).await?;
            claims.push(Claim {
                lease,
                delivery,
                message,
            });
        }
        Ok(claims)
    }

    async fn release(&self, leases: &[Lease]) -> StoreResult<()> {
        let mut state = self.lock();
        for lease in leases {
            if state
                .leases
                .get(&lease.delivery_id)
                .is_some_and(|h| h.lease.token == lease.token)
            {
                state.give_up(lease);
            }
        }
        Ok(())
    }

    async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
    ) -> StoreResult<Vec<StoreResult<Recorded>>> {
        self.record_outcomes_now(outcomes)
    }

    async fn apply_transitions(
        &self,
        transitions: &[Transition],
        job: Option<&ReplayJob>,
    ) -> StoreResult<()> {
        self.apply_transitions_now(transitions, job)?;
        self.flush().await
    }

    async fn purge_page(
        &self,
        cutoff_ms: u64,
        cursor: Option<PurgeCursor>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        self.purge_page_now(cutoff_ms, cursor, budget)
    }

    async fn put_job(&self, job: &ReplayJob) -> StoreResult<()> {
        self.adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id);
        {
            let mut state = self.lock();
            let mut batch = Batch::default();
            batch.insert(keys::job(&job.id), encode(job)?);
            self.apply_durable(&mut state, batch, (0, 0), |_| {})?;
        }
        self.flush().await
    }

    async fn job(&self, id: uuid::Uuid) -> StoreResult<Option<ReplayJob>> {
        self.get(&keys::job(&id))
    }

    async fn adopt_jobs(&self, _now_ms: u64) -> StoreResult<Vec<ReplayJob>> {
        // One process per store: what it has not adopted yet is every unfinished job.
        let mut adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
        let mut jobs = Vec::new();
        for entry in self.tree()?.scan_prefix([keys::JOB]) {
            let (key, value) = entry?;
            let job: ReplayJob = decode(&key, &value)?;
            if job.state == ReplayState::Running && adopted.insert(job.id) {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        Ok(self.pending.load(Ordering::Relaxed))
    }

    async fn sync(&self) -> StoreResult<()> {
        self.flush().await?;
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger
            .sync()
            .map_err(|e| self.write_failed(sled::Error::Io(e)))
    }

    async fn check(&self) -> StoreResult<()> {
        self.writable()
    }

    fn max_payload_bytes(&self) -> usize {
        Self::payload_ceiling()
    }

    async fn size_on_disk(&self) -> StoreResult<Option<u64>> {
        Ok(Some(self.inner()?.db.size_on_disk()?))
    }

    async fn backup(&self, to: &std::path::Path) -> StoreResult<BackupReport> {
        // The copy blocks writers (on purpose) and reads the whole store: a blocking thread.
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => self.backup_to(to),
            _ => tokio::task::block_in_place(|| self.backup_to(to)),
        }
    }
}
