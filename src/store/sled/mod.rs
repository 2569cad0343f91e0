//! The embedded backend: herald's state in one sled tree, in one directory.
//!
//! * [`keys`] — the key layout (one tree; the first byte says what a key is);
//! * [`codec`] — how records become values (postcard with a version byte, sealing);
//! * [`endpoints`] — endpoint records, their health, and a cache of decoded records;
//! * [`queue`] — messages in, the due index, leases, decided transitions;
//! * [`outcomes`] — attempt outcomes recorded in groups;
//! * [`purge`] — the retention purge, in pages.
//!
//! Durability: sled's own `flush` ends, on Linux, in `sync_file_range`, which neither flushes
//! the device's write cache nor file metadata. [`SledStore::sync`] therefore follows it with an
//! `fdatasync` of sled's log file, so an acknowledged message survives power loss, not only a
//! killed process. Values larger than a quarter of a segment would go to separate blob files
//! that sled never syncs; the segment size is raised to 8 MiB and payloads are capped well
//! below 2 MiB ([`MAX_PAYLOAD_BYTES`]) so every acknowledged byte lives in the synced log.
//!
//! Concurrency: read-modify-write transitions hold one mutex for the microseconds between
//! their read and their `apply_batch`; the same mutex guards the leases, which live in memory
//! because sled's file lock allows one process per store: if the process dies, its leases die
//! with it and the deliveries are simply due after the restart.

mod codec;
mod endpoints;
mod keys;
mod outcomes;
mod purge;
mod queue;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sled::Batch;

use super::MAX_PAYLOAD_BYTES;
use super::seal::{Sealer, load_or_create_key};
use super::{
    Closing, DailyRollup, DeliveryFilter, Inserted, Lease, MessageWrite, Outcome, PurgeCursor,
    PurgePage, Recorded, ReplayJob, ReplayState, Store, StoreError, StoreResult, Transition,
};
use crate::model::{Attempt, Delivery, DeliveryId, Endpoint, EndpointId, Message, MessageId};
use codec::{decode, encode};

/// Tuning for [`SledStore::open`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache; bounds the store's memory.
    pub cache_bytes: u64,
    /// Background flush interval for writes nobody waits on (attempt outcomes).
    pub lazy_flush_ms: u64,
    /// Key that seals endpoint records; `None`: `secret.key` in the store directory, created
    /// with mode 0600 on first start.
    pub secret_key: Option<[u8; 32]>,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: 64 * 1024 * 1024,
            lazy_flush_ms: 200,
            secret_key: None,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A lease held by this process on one due entry.
#[derive(Debug, Clone, Copy)]
struct Held {
    lease: Lease,
}

/// The leases of this process, by delivery. Guarded by the transition mutex.
type Leases = HashMap<DeliveryId, Held>;

/// sled's files, shared with the blocking threads that sync them.
struct Files {
    db: sled::Db,
    log: File,
}

impl Files {
    fn sync(&self) -> StoreResult<()> {
        self.db.flush()?;
        self.log
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("fdatasync: {e}")))
    }
}

/// herald's state in a sled database directory.
pub struct SledStore {
    sealer: Sealer,
    files: Arc<Files>,
    tree: sled::Tree,
    /// Decoded endpoint records (configuration, not health). Filled on a miss and changed by
    /// every endpoint write, both under `transition`, so a reader can never put back a record
    /// a writer replaced.
    endpoint_cache: RwLock<HashMap<EndpointId, Endpoint>>,
    /// Serialises state transitions; holds the leases of this process.
    transition: Mutex<Leases>,
    /// Pending deliveries (one due entry each). Changed only under `transition`, and stored
    /// (key `P`) in the same atomic batch as the due entries it counts, so it is exact after a
    /// crash too and a restart reads it instead of scanning the due index.
    pending: AtomicU64,
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> StoreResult<SledStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .segment_size(8 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(options.lazy_flush_ms.max(1)))
            .open()?;
        let tree = db.open_tree("herald")?;
        let key = match options.secret_key {
            Some(key) => key,
            None => load_or_create_key(&dir.join("secret.key")).map_err(StoreError::Backend)?,
        };
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", log_path.display())))?;
        let pending =
            match tree.get(keys::PENDING)? {
                Some(stored) => u64::from_be_bytes(stored.as_ref().try_into().map_err(|_| {
                    codec::corrupt(keys::PENDING, "the pending count is not 8 bytes")
                })?),
                // A store written before the count was kept: count once, then keep it.
                None => {
                    let counted = tree.scan_prefix([keys::DUE]).keys().count() as u64;
                    tree.insert(keys::PENDING, &counted.to_be_bytes())?;
                    counted
                }
            };
        tracing::info!(pending, "store opened");
        Ok(SledStore {
            sealer: Sealer::new(&key),
            files: Arc::new(Files { db, log }),
            tree,
            endpoint_cache: RwLock::new(HashMap::new()),
            transition: Mutex::new(HashMap::new()),
            pending: AtomicU64::new(pending),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Leases> {
        // A panic while holding the lock cannot leave sled half-written (batches are atomic),
        // so a poisoned lock is safe to take over.
        self.transition.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StoreResult<Option<T>> {
        match self.tree.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Applies `batch` with the pending count moved by `added - removed`, written in the same
    /// batch. Callers hold `transition`.
    fn apply_counted(&self, mut batch: Batch, added: u64, removed: u64) -> StoreResult<()> {
        let count = (self.pending.load(Ordering::Relaxed) + added).saturating_sub(removed);
        if added != removed {
            batch.insert(keys::PENDING, &count.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.pending.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// Makes every write so far durable, on a blocking thread (an fsync takes milliseconds).
    async fn flush(&self) -> StoreResult<()> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.sync())
            .await
            .map_err(|e| StoreError::Backend(format!("sync thread: {e}")))?
    }

    fn running_jobs_now(&self) -> StoreResult<Vec<ReplayJob>> {
        let mut jobs = Vec::new();
        for entry in self.tree.scan_prefix([keys::JOB]) {
            let (key, value) = entry?;
            let job: ReplayJob = decode(&key, &value)?;
            if job.state == ReplayState::Running {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

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

    async fn delete_endpoint(&self, id: EndpointId, closing: &Closing) -> StoreResult<bool> {
        let deleted = self.delete_endpoint_now(id, closing)?;
        self.flush().await?;
        Ok(deleted)
    }

    async fn insert_messages(&self, writes: &[MessageWrite]) -> StoreResult<Vec<Inserted>> {
        let answers = self.insert_messages_now(writes)?;
        self.flush().await?;
        Ok(answers)
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        let key = keys::message(id);
        match self.tree.get(&key)? {
            Some(bytes) => codec::decode_message(&self.sealer, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn message_deliveries(&self, id: MessageId) -> StoreResult<Vec<Delivery>> {
        self.message_deliveries_now(id)
    }

    async fn delivery(&self, id: DeliveryId) -> StoreResult<Option<Delivery>> {
        self.get(&keys::delivery(id))
    }

    async fn attempts(&self, id: DeliveryId) -> StoreResult<Vec<Attempt>> {
        self.tree
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
        self.tree
            .range(start..end)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((keys::stats_day(&key).unwrap_or(0), decode(&key, &value)?))
            })
            .collect()
    }

    async fn dedup_digest(&self, endpoint: EndpointId, key: &str) -> StoreResult<Option<[u8; 32]>> {
        Ok(self
            .tree
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
    ) -> StoreResult<Vec<Lease>> {
        self.claim_now(endpoint, now_ms, limit, lease_for)
    }

    async fn release(&self, leases: &[Lease]) -> StoreResult<()> {
        let mut held = self.lock();
        for lease in leases {
            if held
                .get(&lease.delivery_id)
                .is_some_and(|h| h.lease.token == lease.token)
            {
                held.remove(&lease.delivery_id);
            }
        }
        Ok(())
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
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
        self.tree.insert(keys::job(&job.id), encode(job)?)?;
        self.flush().await
    }

    async fn job(&self, id: uuid::Uuid) -> StoreResult<Option<ReplayJob>> {
        self.get(&keys::job(&id))
    }

    async fn running_jobs(&self) -> StoreResult<Vec<ReplayJob>> {
        self.running_jobs_now()
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        Ok(self.pending.load(Ordering::Relaxed))
    }

    async fn sync(&self) -> StoreResult<()> {
        self.flush().await
    }

    async fn check(&self) -> StoreResult<()> {
        Ok(())
    }

    fn max_payload_bytes(&self) -> usize {
        MAX_PAYLOAD_BYTES
    }

    async fn size_on_disk(&self) -> StoreResult<Option<u64>> {
        Ok(Some(self.files.db.size_on_disk()?))
    }
}
