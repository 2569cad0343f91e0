//! The sled implementation of [`Store`].
//!
//! Durability: sled's own `flush` ends, on Linux, in `sync_file_range`, which neither flushes
//! the device's write cache nor file metadata. [`SledStore::flush`] therefore follows it with an
//! `fdatasync` of sled's log file, so an acknowledged message survives power loss, not only a
//! killed process. Values larger than a quarter of a segment would go to separate blob files
//! that sled never syncs; the segment size is raised to 8 MiB and payloads are capped well
//! below 2 MiB ([`MAX_PAYLOAD_BYTES`]) so every acknowledged byte lives in the synced log.
//!
//! Concurrency: read-modify-write transitions (claims, outcomes, replays, idempotent inserts)
//! hold one mutex for the microseconds between their read and their `apply_batch`. sled holds
//! the directory's file lock, so no other process writes the same store.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sled::{Batch, IVec};
use uuid::Uuid;

use super::keys;
use super::rollup::day_of;
use super::seal::{Sealer, load_or_create_key};
use super::{
    AttemptOutcome, Claim, DailyRollup, DeliveryFilter, Inserted, MessageWrite, NextStep,
    PurgePage, Recorded, ReplayJob, ReplayState, Store, StoreError, StoreResult,
};
use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, Message, MessageId,
};

/// The largest payload the sled store accepts, whatever a policy allows (see module docs).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Deliveries updated per batch when an endpoint is deleted.
const DELETE_BATCH: usize = 1_000;

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

/// herald's state in a sled database directory.
pub struct SledStore {
    sealer: Sealer,
    db: sled::Db,
    tree: sled::Tree,
    log_file: File,
    /// Decoded endpoint records. Filled on a miss and changed by every endpoint write, both
    /// under `transition`, so a reader can never put back a record a writer replaced.
    endpoint_cache: RwLock<HashMap<EndpointId, Endpoint>>,
    /// Serialises state transitions; holds the deliveries claimed by this process.
    transition: Mutex<HashSet<DeliveryId>>,
    /// Pending deliveries (one due entry each). Changed only under `transition`, and stored
    /// (key `P`) in the same atomic batch as the due entries it counts, so it is exact after a
    /// crash too and a restart reads it instead of scanning the due index.
    pending: AtomicU64,
}

/// A message as stored: everything but the payload, which follows the header verbatim.
#[derive(Serialize, serde::Deserialize)]
struct MessageHeader {
    id: MessageId,
    tenant: String,
    event_type: String,
    callback_url: Option<String>,
    idempotency_key: Option<String>,
    dedup_key: Option<String>,
    created_at: u64,
}

/// The writes of one group of attempt records, applied as one batch: sled writes its log
/// buffer out for every batch, so one batch per group instead of per attempt is what lets
/// delivery throughput grow with concurrency.
#[derive(Default)]
struct RecordGroup {
    batch: Batch,
    deliveries: HashMap<DeliveryId, Delivery>,
    stats: HashMap<Vec<u8>, DailyRollup>,
    failures: HashMap<EndpointId, u32>,
    added_due: HashSet<Vec<u8>>,
    removed_due: HashSet<Vec<u8>>,
    finished: u64,
}

/// Where a purge phase resumes: just after the last key it read when it stopped at its
/// budget; `None` when the phase is complete.
fn resume_after(last: Option<Vec<u8>>, budget_spent: bool) -> Option<Vec<u8>> {
    let mut key = last.filter(|_| budget_spent)?;
    key.push(0);
    Some(key)
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
        let log_file = File::open(&log_path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", log_path.display())))?;
        // Keys only, before anything else can change them: exact, and about a second per
        // million pending deliveries on a cold start.
        let pending =
            match tree.get(keys::PENDING)? {
                Some(stored) => u64::from_be_bytes(stored.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        key: "P".into(),
                        reason: "the pending count is not 8 bytes".into(),
                    }
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
            db,
            tree,
            log_file,
            transition: Mutex::new(HashSet::new()),
            endpoint_cache: RwLock::new(HashMap::new()),
            pending: AtomicU64::new(pending),
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> StoreResult<u64> {
        Ok(self.db.size_on_disk()?)
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<DeliveryId>> {
        // A panic while holding the lock cannot leave sled half-written (batches are atomic),
        // so a poisoned lock is safe to take over.
        self.transition.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> StoreResult<Option<T>> {
        match self.tree.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Purge phase 1: finished messages created before the cutoff, with everything they own.
    fn purge_messages(
        &self,
        cutoff_ms: u64,
        cursor: Vec<u8>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        let end = keys::message(MessageId(first_id_at(cutoff_ms).0));
        let mut page = PurgePage::default();
        let mut batch = Batch::default();
        let mut scanned = 0;
        let mut last = None;
        for entry in self.tree.range(cursor..end).take(budget) {
            let (key, value) = entry?;
            scanned += 1;
            last = Some(key.to_vec());
            let message = Self::decode_message(&key, &value)?;
            let deliveries = self.message_deliveries(message.id)?;
            if deliveries.iter().any(|d| !d.status.is_final()) {
                continue; // pending deliveries are never purged
            }
            for delivery in &deliveries {
                for attempt in self
                    .tree
                    .scan_prefix(keys::attempts_prefix(delivery.id))
                    .keys()
                {
                    batch.remove(attempt?);
                    page.attempts += 1;
                }
                batch.remove(keys::delivery(delivery.id));
                batch.remove(keys::message_delivery(message.id, delivery.id));
                page.deliveries += 1;
            }
            if let Some(idempotency_key) = &message.idempotency_key {
                batch.remove(keys::idempotency(&message.tenant, idempotency_key));
            }
            batch.remove(key);
            page.messages += 1;
        }
        self.tree.apply_batch(batch)?;
        page.next = resume_after(last, scanned == budget).or(Some(vec![keys::ATTEMPT]));
        Ok(page)
    }

    /// Purge phase 2: attempts older than the cutoff of deliveries that are kept.
    fn purge_attempts(
        &self,
        cutoff_ms: u64,
        cursor: Vec<u8>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        // Attempts are keyed by delivery id, which starts with its creation time: every attempt
        // older than the cutoff belongs to a delivery created before it.
        let end = keys::attempts_prefix(first_id_at(cutoff_ms));
        let mut page = PurgePage::default();
        let mut batch = Batch::default();
        let mut scanned = 0;
        let mut last = None;
        for entry in self.tree.range(cursor..end).take(budget) {
            let (key, value) = entry?;
            scanned += 1;
            let attempt: Attempt = decode(&key, &value)?;
            if attempt.started_at < cutoff_ms {
                batch.remove(key.clone());
                page.attempts += 1;
            }
            last = Some(key.to_vec());
        }
        self.tree.apply_batch(batch)?;
        page.next = resume_after(last, scanned == budget).or(Some(vec![keys::STATS]));
        Ok(page)
    }

    /// Purge phase 3: daily roll-ups of days before the cutoff day.
    fn purge_rollups(
        &self,
        cutoff_ms: u64,
        cursor: Vec<u8>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        let cutoff_day = day_of(cutoff_ms);
        let mut page = PurgePage::default();
        let mut batch = Batch::default();
        let mut scanned = 0;
        let mut last = None;
        for entry in self
            .tree
            .range(cursor..vec![keys::STATS + 1])
            .keys()
            .take(budget)
        {
            let key = entry?;
            scanned += 1;
            let day = key
                .get(17..21)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX);
            if day < cutoff_day {
                batch.remove(key.clone());
                page.rollups += 1;
            }
            last = Some(key.to_vec());
        }
        self.tree.apply_batch(batch)?;
        page.next = resume_after(last, scanned == budget);
        Ok(page)
    }

    /// An endpoint record as stored (without its failure count).
    /// The endpoint record (without its failure count), from the cache when possible.
    fn stored_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        if let Some(endpoint) = self.cached_endpoint(id) {
            return Ok(Some(endpoint));
        }
        let _guard = self.lock();
        self.load_endpoint(id)
    }

    fn cached_endpoint(&self, id: EndpointId) -> Option<Endpoint> {
        let cache = self
            .endpoint_cache
            .read()
            .unwrap_or_else(|p| p.into_inner());
        cache.get(&id).cloned()
    }

    /// Like `stored_endpoint`, for callers already holding `transition`.
    fn load_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        if let Some(endpoint) = self.cached_endpoint(id) {
            return Ok(Some(endpoint));
        }
        let key = keys::endpoint(id);
        let Some(bytes) = self.tree.get(&key)? else {
            return Ok(None);
        };
        let endpoint = self.open_endpoint(&key, &bytes)?;
        self.cache_endpoint(id, Some(&endpoint));
        Ok(Some(endpoint))
    }

    /// Sets (or with `None` forgets) a cached record; callers hold `transition`.
    fn cache_endpoint(&self, id: EndpointId, endpoint: Option<&Endpoint>) {
        let mut cache = self
            .endpoint_cache
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match endpoint {
            Some(endpoint) => cache.insert(id, endpoint.clone()),
            None => cache.remove(&id),
        };
    }

    /// Endpoint records carry secrets, tokens and credentials: they are sealed.
    fn seal_endpoint(&self, endpoint: &Endpoint) -> StoreResult<Vec<u8>> {
        let plain = encode(endpoint)?;
        let sealed = self.sealer.seal(&plain).map_err(StoreError::Backend)?;
        let mut out = Vec::with_capacity(1 + sealed.len());
        out.push(RECORD_SEALED);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_endpoint(&self, key: &[u8], bytes: &[u8]) -> StoreResult<Endpoint> {
        match bytes.split_first() {
            Some((&RECORD_SEALED, sealed)) => {
                let plain = self
                    .sealer
                    .open(sealed)
                    .map_err(|reason| StoreError::Corrupt {
                        key: String::from_utf8_lossy(key).into_owned(),
                        reason,
                    })?;
                decode(key, &plain)
            }
            _ => decode(key, bytes),
        }
    }

    fn failures(&self, endpoint: EndpointId) -> StoreResult<u32> {
        Ok(self
            .tree
            .get(keys::failures(endpoint))?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0))
    }

    fn delivery_required(&self, id: DeliveryId) -> StoreResult<Delivery> {
        self.get(&keys::delivery(id))?
            .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))
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

    /// Adds one attempt to `group`; reads see the group's earlier changes first.
    fn record_one(
        &self,
        group: &mut RecordGroup,
        outcome: AttemptOutcome,
    ) -> StoreResult<Recorded> {
        let mut delivery = match group.deliveries.remove(&outcome.delivery_id) {
            Some(delivery) => delivery,
            None => self.delivery_required(outcome.delivery_id)?,
        };
        let due_key = keys::due(outcome.endpoint_id, outcome.due_ms, outcome.delivery_id);
        let stale = !group.added_due.contains(&due_key)
            && (group.removed_due.contains(&due_key) || !self.tree.contains_key(&due_key)?);
        let mut attempt = outcome.attempt;
        delivery.total_attempts += 1;
        attempt.attempt = delivery.total_attempts;
        attempt.cycle = delivery.cycle;
        delivery.last_status_code = attempt.status_code;
        delivery.last_error = attempt.error_detail.clone();
        delivery.updated_at = attempt.started_at + attempt.duration_ms;
        group.batch.insert(
            keys::attempt(delivery.id, attempt.attempt),
            encode(&attempt)?,
        );
        if !stale {
            delivery.cycle_attempts += 1;
            group.added_due.remove(&due_key);
            group.batch.remove(due_key.as_slice());
            group.removed_due.insert(due_key);
            match outcome.next {
                NextStep::Retry { due_ms, anchor_ms } => {
                    delivery.status = DeliveryStatus::Pending;
                    delivery.next_attempt_at = Some(due_ms);
                    delivery.anchor_ms = anchor_ms;
                    let next_key = keys::due(outcome.endpoint_id, due_ms, delivery.id);
                    group.batch.insert(next_key.as_slice(), &[]);
                    group.removed_due.remove(&next_key);
                    group.added_due.insert(next_key);
                }
                NextStep::Finish(status) => {
                    delivery.status = status;
                    delivery.next_attempt_at = None;
                    group.finished += 1;
                }
            }
            if let (true, Some((key, digest))) = (attempt.success, &outcome.dedup) {
                group
                    .batch
                    .insert(keys::dedup(outcome.endpoint_id, key), digest.as_slice());
            }
        }
        let mut consecutive_failures = match group.failures.get(&outcome.endpoint_id) {
            Some(count) => *count,
            None => self.failures(outcome.endpoint_id)?,
        };
        if outcome.counts_toward_health {
            let stats_key = keys::stats(outcome.endpoint_id, day_of(attempt.started_at));
            let day = match group.stats.entry(stats_key) {
                std::collections::hash_map::Entry::Occupied(day) => day.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let stored = self.get(slot.key())?.unwrap_or_default();
                    slot.insert(stored)
                }
            };
            day.add(attempt.duration_ms, attempt.success);
            let before = consecutive_failures;
            consecutive_failures = if attempt.success {
                0
            } else {
                consecutive_failures.saturating_add(1)
            };
            if consecutive_failures != before || group.failures.contains_key(&outcome.endpoint_id) {
                group
                    .failures
                    .insert(outcome.endpoint_id, consecutive_failures);
            }
        }
        group.deliveries.insert(delivery.id, delivery.clone());
        Ok(Recorded {
            delivery,
            attempt,
            stale,
            consecutive_failures,
        })
    }

    fn decode_message(key: &[u8], bytes: &[u8]) -> StoreResult<Message> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        };
        let len = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt("short record"))? as usize;
        let header: MessageHeader = decode(
            key,
            bytes
                .get(4..4 + len)
                .ok_or_else(|| corrupt("short header"))?,
        )?;
        let payload =
            std::str::from_utf8(&bytes[4 + len..]).map_err(|_| corrupt("payload utf-8"))?;
        let payload =
            RawValue::from_string(payload.to_string()).map_err(|_| corrupt("payload json"))?;
        Ok(Message {
            id: header.id,
            tenant: header.tenant,
            event_type: header.event_type,
            payload,
            callback_url: header.callback_url,
            idempotency_key: header.idempotency_key,
            dedup_key: header.dedup_key,
            created_at: header.created_at,
        })
    }

    fn encode_message(message: &Message) -> StoreResult<Vec<u8>> {
        let header = encode(&MessageHeader {
            id: message.id,
            tenant: message.tenant.clone(),
            event_type: message.event_type.clone(),
            callback_url: message.callback_url.clone(),
            idempotency_key: message.idempotency_key.clone(),
            dedup_key: message.dedup_key.clone(),
            created_at: message.created_at,
        })?;
        let payload = message.payload.get().as_bytes();
        let mut out = Vec::with_capacity(4 + header.len() + payload.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        Ok(out)
    }
}

/// Version byte in front of every stored record, so a later layout can be told apart.
const RECORD_V1: u8 = 1;
/// A sealed record: this byte, then [`Sealer::seal`] of a `RECORD_V1` record.
const RECORD_SEALED: u8 = 2;

/// Records are stored as postcard: a delivery is ~100 bytes instead of ~450 as JSON, and sled's
/// write volume (its log and its page rewrites) grows with record size. Measured: JSON records
/// made sled's log writer the largest CPU cost of delivering.
fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![RECORD_V1];
    postcard::to_io(value, &mut out).map_err(|e| StoreError::Backend(format!("encode: {e}")))?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&RECORD_V1, record)) => {
            postcard::from_bytes(record).map_err(|e| corrupt(e.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("unknown record version {version}"))),
        None => Err(corrupt("empty record".into())),
    }
}

/// The smallest delivery id created at `ms`: UUIDv7 puts the millisecond time first.
fn first_id_at(ms: u64) -> DeliveryId {
    DeliveryId(Uuid::from_u128(u128::from(ms) << 80))
}

impl Store for SledStore {
    fn put_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()> {
        let _guard = self.lock();
        let mut batch = Batch::default();
        if let Some(old) = self.load_endpoint(endpoint.id)?
            && old.tenant != endpoint.tenant
        {
            batch.remove(keys::tenant_endpoint(&old.tenant, old.id));
        }
        batch.insert(keys::endpoint(endpoint.id), self.seal_endpoint(endpoint)?);
        batch.insert(keys::tenant_endpoint(&endpoint.tenant, endpoint.id), &[]);
        self.cache_endpoint(endpoint.id, None);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        match self.stored_endpoint(id)? {
            Some(mut endpoint) => {
                endpoint.consecutive_failures = self.failures(id)?;
                Ok(Some(endpoint))
            }
            None => Ok(None),
        }
    }

    fn disable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<bool> {
        let _guard = self.lock();
        match self.load_endpoint(id)? {
            Some(mut endpoint) if endpoint.enabled => {
                endpoint.enabled = false;
                endpoint.updated_at = now_ms;
                self.cache_endpoint(id, None);
                self.tree
                    .insert(keys::endpoint(id), self.seal_endpoint(&endpoint)?)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn enable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<Option<Endpoint>> {
        let _guard = self.lock();
        let Some(mut endpoint) = self.load_endpoint(id)? else {
            return Ok(None);
        };
        endpoint.enabled = true;
        endpoint.updated_at = now_ms;
        self.cache_endpoint(id, None);
        let mut batch = Batch::default();
        batch.insert(keys::endpoint(id), self.seal_endpoint(&endpoint)?);
        batch.remove(keys::failures(id));
        self.tree.apply_batch(batch)?;
        endpoint.consecutive_failures = 0;
        Ok(Some(endpoint))
    }

    fn endpoints(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>> {
        let mut out = Vec::new();
        match tenant {
            Some(tenant) => {
                let prefix = keys::tenant_prefix(tenant);
                for entry in self.tree.scan_prefix(&prefix) {
                    let (key, _) = entry?;
                    if let Some(id) = EndpointId::from_slice(&key[prefix.len()..])
                        && let Some(endpoint) = self.endpoint(id)?
                    {
                        out.push(endpoint);
                    }
                }
            }
            None => {
                for entry in self.tree.scan_prefix([keys::ENDPOINT]) {
                    let (key, value) = entry?;
                    let mut endpoint = self.open_endpoint(&key, &value)?;
                    endpoint.consecutive_failures = self.failures(endpoint.id)?;
                    out.push(endpoint);
                }
            }
        }
        Ok(out)
    }

    fn delete_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<bool> {
        let _guard = self.lock();
        let Some(endpoint) = self.load_endpoint(id)? else {
            return Ok(false);
        };
        self.cache_endpoint(id, None);
        loop {
            let due: Vec<IVec> = self
                .tree
                .scan_prefix(keys::due_prefix(id))
                .keys()
                .take(DELETE_BATCH)
                .collect::<Result<_, _>>()?;
            if due.is_empty() {
                break;
            }
            let removed = due.len() as u64;
            let mut batch = Batch::default();
            for key in due {
                if let Some((_, _, delivery_id)) = keys::parse_due(&key)
                    && let Some(mut delivery) =
                        self.get::<Delivery>(&keys::delivery(delivery_id))?
                {
                    delivery.status = DeliveryStatus::Failed;
                    delivery.next_attempt_at = None;
                    delivery.last_error = Some("endpoint deleted".into());
                    delivery.updated_at = now_ms;
                    batch.insert(keys::delivery(delivery_id), encode(&delivery)?);
                }
                batch.remove(key);
            }
            self.apply_counted(batch, 0, removed)?;
        }
        let mut batch = Batch::default();
        batch.remove(keys::endpoint(id));
        batch.remove(keys::failures(id));
        batch.remove(keys::tenant_endpoint(&endpoint.tenant, id));
        self.tree.apply_batch(batch)?;
        Ok(true)
    }

    fn insert_messages(&self, writes: &[MessageWrite]) -> StoreResult<Vec<Inserted>> {
        let mut batch = Batch::default();
        let mut answers = Vec::with_capacity(writes.len());
        let mut claimed_keys: HashMap<Vec<u8>, MessageId> = HashMap::new();
        let mut added = 0;
        let _guard = self.lock();
        for write in writes {
            let message = &write.message;
            if let Some(idempotency_key) = &message.idempotency_key {
                let key = keys::idempotency(&message.tenant, idempotency_key);
                let earlier = match claimed_keys.get(&key) {
                    Some(id) => Some(*id),
                    None => match self.tree.get(&key)? {
                        Some(existing) => {
                            Some(MessageId::from_slice(&existing).ok_or_else(|| {
                                StoreError::Corrupt {
                                    key: String::from_utf8_lossy(&key).into_owned(),
                                    reason: "not a message id".into(),
                                }
                            })?)
                        }
                        None => None,
                    },
                };
                if let Some(id) = earlier {
                    answers.push(Inserted::Existing(id));
                    continue;
                }
                batch.insert(key.as_slice(), message.id.as_bytes());
                claimed_keys.insert(key, message.id);
            }
            batch.insert(keys::message(message.id), Self::encode_message(message)?);
            for new in &write.deliveries {
                let d = &new.delivery;
                batch.insert(keys::delivery(d.id), encode(d)?);
                batch.insert(keys::message_delivery(message.id, d.id), &[]);
                if let Some(due_ms) = new.due_ms {
                    batch.insert(keys::due(d.endpoint_id, due_ms, d.id), &[]);
                    added += 1;
                }
            }
            answers.push(Inserted::Created);
        }
        self.apply_counted(batch, added, 0)?;
        Ok(answers)
    }

    fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        let key = keys::message(id);
        match self.tree.get(&key)? {
            Some(bytes) => Self::decode_message(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn message_deliveries(&self, id: MessageId) -> StoreResult<Vec<Delivery>> {
        let prefix = keys::message_deliveries_prefix(id);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, _) = entry?;
            if let Some(delivery_id) = DeliveryId::from_slice(&key[prefix.len()..])
                && let Some(delivery) = self.delivery(delivery_id)?
            {
                out.push(delivery);
            }
        }
        Ok(out)
    }

    fn delivery(&self, id: DeliveryId) -> StoreResult<Option<Delivery>> {
        self.get(&keys::delivery(id))
    }

    fn attempts(&self, id: DeliveryId) -> StoreResult<Vec<Attempt>> {
        self.tree
            .scan_prefix(keys::attempts_prefix(id))
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let mut start = keys::delivery(first_id_at(filter.since_ms.unwrap_or(0)));
        let mut end = keys::delivery(first_id_at(filter.until_ms.unwrap_or(u64::MAX >> 16)));
        if let Some(after) = filter.after {
            let cursor = keys::delivery(after);
            if filter.newest_first {
                end = end.min(cursor); // exclusive of `after` itself
            } else {
                let mut cursor = cursor;
                cursor.push(0); // exclusive of `after` itself
                start = start.max(cursor);
            }
        }
        if start >= end {
            return Ok(Vec::new());
        }
        let range = self.tree.range(start..end);
        let entries: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = if filter.newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut out = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let delivery: Delivery = decode(&key, &value)?;
            let wanted = filter.status.is_none_or(|s| s == delivery.status)
                && filter.endpoint_id.is_none_or(|e| e == delivery.endpoint_id)
                && (filter.endpoint_ids.is_empty()
                    || filter.endpoint_ids.contains(&delivery.endpoint_id));
            if wanted {
                out.push(delivery);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn endpoint_days(
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
                let day = key
                    .get(17..21)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                Ok((day, decode(&key, &value)?))
            })
            .collect()
    }

    fn dedup_digest(&self, endpoint: EndpointId, key: &str) -> StoreResult<Option<[u8; 32]>> {
        Ok(self
            .tree
            .get(keys::dedup(endpoint, key))?
            .and_then(|v| v.as_ref().try_into().ok()))
    }

    fn due_heads(&self) -> StoreResult<Vec<(EndpointId, u64)>> {
        let mut heads = Vec::new();
        for endpoint in self.endpoints(None)? {
            if let Some(head) = self.due_head(endpoint.id)? {
                heads.push((endpoint.id, head));
            }
        }
        Ok(heads)
    }

    fn due_head(&self, endpoint: EndpointId) -> StoreResult<Option<u64>> {
        let claimed = self.lock();
        for key in self.tree.scan_prefix(keys::due_prefix(endpoint)).keys() {
            if let Some((_, due_ms, delivery_id)) = keys::parse_due(&key?)
                && !claimed.contains(&delivery_id)
            {
                return Ok(Some(due_ms));
            }
        }
        Ok(None)
    }

    fn claim(&self, endpoint: EndpointId, now_ms: u64, limit: usize) -> StoreResult<Vec<Claim>> {
        let nil = DeliveryId(Uuid::nil());
        let start = keys::due(endpoint, 0, nil);
        let end = keys::due(endpoint, now_ms.saturating_add(1), nil);
        let mut claimed = self.lock();
        let mut claims = Vec::new();
        // Skips at most the endpoint's own outstanding claims (bounded by its concurrency).
        for key in self.tree.range(start..end).keys() {
            if claims.len() == limit {
                break;
            }
            if let Some((_, due_ms, delivery_id)) = keys::parse_due(&key?)
                && claimed.insert(delivery_id)
            {
                claims.push(Claim {
                    delivery_id,
                    due_ms,
                });
            }
        }
        Ok(claims)
    }

    fn release(&self, claims: &[Claim]) -> StoreResult<()> {
        let mut claimed = self.lock();
        for claim in claims {
            claimed.remove(&claim.delivery_id);
        }
        Ok(())
    }

    fn discard(&self, endpoint: EndpointId, claims: &[Claim]) -> StoreResult<()> {
        let mut claimed = self.lock();
        let mut batch = Batch::default();
        let mut removed = 0;
        for claim in claims {
            claimed.remove(&claim.delivery_id);
            let key = keys::due(endpoint, claim.due_ms, claim.delivery_id);
            if self.tree.contains_key(&key)? {
                batch.remove(key);
                removed += 1;
            }
        }
        self.apply_counted(batch, 0, removed)?;
        Ok(())
    }

    fn record_attempts(
        &self,
        outcomes: Vec<AttemptOutcome>,
    ) -> StoreResult<Vec<StoreResult<Recorded>>> {
        let mut claimed = self.lock();
        let mut group = RecordGroup::default();
        let mut answers = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            claimed.remove(&outcome.delivery_id);
            answers.push(self.record_one(&mut group, outcome));
        }
        for (key, day) in &group.stats {
            group.batch.insert(key.as_slice(), encode(day)?);
        }
        for (endpoint, count) in &group.failures {
            match count {
                0 => group.batch.remove(keys::failures(*endpoint)),
                n => group
                    .batch
                    .insert(keys::failures(*endpoint), &n.to_be_bytes()),
            }
        }
        for delivery in group.deliveries.values() {
            group
                .batch
                .insert(keys::delivery(delivery.id), encode(delivery)?);
        }
        self.apply_counted(group.batch, 0, group.finished)?;
        Ok(answers)
    }

    fn replay(&self, id: DeliveryId, now_ms: u64) -> StoreResult<Delivery> {
        let _guard = self.lock();
        let mut delivery = self.delivery_required(id)?;
        if !delivery.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "delivery {id} is {}; only finished deliveries can be replayed",
                delivery.status.as_str()
            )));
        }
        if !self.tree.contains_key(keys::message(delivery.message_id))? {
            return Err(StoreError::Conflict(format!(
                "the payload of message {} has been purged; delivery {id} cannot be replayed",
                delivery.message_id
            )));
        }
        delivery.status = DeliveryStatus::Pending;
        delivery.cycle += 1;
        delivery.cycle_attempts = 0;
        delivery.anchor_ms = now_ms;
        delivery.next_attempt_at = Some(now_ms);
        delivery.updated_at = now_ms;
        let mut batch = Batch::default();
        batch.insert(keys::delivery(id), encode(&delivery)?);
        batch.insert(keys::due(delivery.endpoint_id, now_ms, id), &[]);
        self.apply_counted(batch, 1, 0)?;
        Ok(delivery)
    }

    fn purge_page(
        &self,
        cutoff_ms: u64,
        cursor: Option<Vec<u8>>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        let cursor = cursor.unwrap_or_else(|| vec![keys::MESSAGE]);
        let _guard = self.lock();
        match cursor.first() {
            Some(&keys::MESSAGE) => self.purge_messages(cutoff_ms, cursor, budget),
            Some(&keys::ATTEMPT) => self.purge_attempts(cutoff_ms, cursor, budget),
            Some(&keys::STATS) => self.purge_rollups(cutoff_ms, cursor, budget),
            _ => Ok(PurgePage::default()),
        }
    }

    fn put_job(&self, job: &ReplayJob) -> StoreResult<()> {
        self.tree.insert(keys::job(&job.id), encode(job)?)?;
        Ok(())
    }

    fn job(&self, id: Uuid) -> StoreResult<Option<ReplayJob>> {
        self.get(&keys::job(&id))
    }

    fn running_jobs(&self) -> StoreResult<Vec<ReplayJob>> {
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

    fn pending_deliveries(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        self.log_file
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("fdatasync: {e}")))
    }
}
