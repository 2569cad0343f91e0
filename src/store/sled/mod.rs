//! The embedded backend: herald's state in one sled tree, in one directory.
//!
//! * `keys` — the key layout (one tree; the first byte says what a key is);
//! * `codec` — how records become values (postcard with a version byte, sealing);
//! * `open` — opening with every check (damaged files, a lost tail of the log, the wrong
//!   key), `herald store recover`, and reopening after a full disk;
//! * `tools` — `herald store check` and `herald store backup`;
//! * `ledger` — herald's own evidence of what was durable;
//! * `endpoints` — endpoint records, their health, and a cache of decoded records;
//! * `queue` — messages in, the due index, leases, decided transitions;
//! * `lines` — ordering-key lines: links between the deliveries of one key, in order;
//! * `outcomes` — attempt outcomes recorded in groups;
//! * `purge` — the retention purge, in pages;
//! * `store` — the [`Store`](super::Store) trait over all of the above.
//!
//! Durability: sled's own `flush` ends, on Linux, in `sync_file_range`, which neither flushes
//! the device's write cache nor file metadata. `SledStore::flush` therefore follows it with
//! an `fdatasync` of sled's log file, so an acknowledged message survives power loss, not only
//! a killed process. Values larger than a quarter of a segment would go to separate blob files
//! that sled never syncs; the segment size is raised to 8 MiB and payloads are capped well
//! below 2 MiB ([`MAX_PAYLOAD_BYTES`]) so every acknowledged byte lives in the synced log.
//!
//! Concurrency: read-modify-write transitions hold one mutex for the microseconds between
//! their read and their `apply_batch`; the same mutex guards the leases, which live in memory
//! because sled's file lock allows one process per store: if the process dies, its leases die
//! with it and the deliveries are simply due after the restart.
//!
//! A failed write (a full disk, an I/O error) leaves sled refusing every later write until it
//! is reopened. The store then answers writes with [`StoreError::Unavailable`] and, at most
//! once a second when asked again, reopens sled once the disk has room.

mod cache;
mod codec;
mod endpoints;
mod keys;
mod ledger;
mod lines;
mod open;
mod outcomes;
mod purge;
mod queue;
mod store;
mod tools;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use sled::Batch;

use super::MAX_PAYLOAD_BYTES;
use super::seal::Sealer;
use super::{Lease, StoreError, StoreResult};
use crate::model::{DeliveryId, EndpointId};
use codec::{decode, encode};
use ledger::{Counters, Ledger};

pub use tools::CheckReport;

/// Tuning for [`SledStore::open`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache; bounds the store's memory.
    pub cache_bytes: u64,
    /// Background flush interval for writes nobody waits on (attempt outcomes).
    pub lazy_flush_ms: u64,
    /// Key that seals endpoint records; `None`: `secret.key` in the store directory, created
    /// with mode 0600 when the store is created.
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
    /// Its outcome is being written: it is not claimed again even once it expires, and it is
    /// given up once the write is in.
    recording: bool,
}

/// What the state mutex guards.
#[derive(Default)]
struct State {
    /// The leases of this process, by delivery.
    leases: HashMap<DeliveryId, Held>,
    /// The store's counters as last written (key `C`).
    counters: Counters,
    /// Where each endpoint's next claim starts reading its due entries ([`queue::Cursor`]).
    cursors: HashMap<EndpointId, queue::Cursor>,
}

impl State {
    /// A due entry of `endpoint` at `key` may be claimable now: it was added, or its lease
    /// was given up while the entry stays. The endpoint's next claim must not start past it.
    fn due_appeared(&mut self, endpoint: EndpointId, key: &[u8]) {
        if let Some(cursor) = self.cursors.get_mut(&endpoint) {
            cursor.fall_back(key);
        }
    }

    /// Gives up `lease` while its due entry stays: the delivery is due again as it was.
    fn give_up(&mut self, lease: &Lease) {
        self.leases.remove(&lease.delivery_id);
        let key = keys::due(lease.endpoint_id, lease.due_ms, lease.delivery_id);
        self.due_appeared(lease.endpoint_id, &key);
    }
}

/// The open sled database.
struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    log: File,
}

impl Inner {
    fn sync(&self) -> sled::Result<()> {
        self.db.flush()?;
        self.log.sync_data()?;
        Ok(())
    }
}

/// Why writes fail, and when reopening was last tried.
#[derive(Default)]
struct Broken {
    reason: Option<String>,
    last_try: Option<Instant>,
}

/// herald's state in a sled database directory.
pub struct SledStore {
    dir: PathBuf,
    options: SledOptions,
    sealer: Sealer,
    /// `None` only while sled is being reopened.
    inner: ArcSwapOption<Inner>,
    /// Decoded endpoint records, their health and each tenant's endpoints ([`cache`]).
    endpoint_cache: RwLock<cache::EndpointCache>,
    /// Serialises the writers (every read-modify-write of records). Taken before `state`.
    writes: Mutex<()>,
    /// The leases of this process and the counters. Writers hold it with `writes` (see
    /// [`SledStore::lock`]); claims take it alone, so that they never wait for the recorder's
    /// write, which holds `writes` and takes `state` only to look at and give up its leases.
    state: Mutex<State>,
    /// Pending deliveries (one due entry each). Changed only by writers (under `writes`), and
    /// stored (key `P`) in the same atomic batch as the due entries it counts, so it is exact
    /// after a crash too and a restart reads it instead of scanning the due index.
    pending: AtomicU64,
    ledger: Mutex<Ledger>,
    broken: Mutex<Broken>,
    /// Bulk replay jobs this process runs (see [`super::Store::adopt_jobs`]).
    adopted: Mutex<std::collections::HashSet<uuid::Uuid>>,
}

/// A writer's hold: `writes`, then `state`.
struct Locked<'a> {
    _writes: MutexGuard<'a, ()>,
    state: MutexGuard<'a, State>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl SledStore {
    // A panic while holding a lock cannot leave sled half-written (batches are atomic), so a
    // poisoned lock is safe to take over.

    /// For writers: excludes every other writer and every claim.
    fn lock(&self) -> Locked<'_> {
        let writes = self.writes();
        Locked {
            _writes: writes,
            state: self.state(),
        }
    }

    /// Excludes every other writer, not claims (for the recorder).
    fn writes(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Self::writes`] if no writer holds it now: a reader that may fill the endpoint cache
    /// ([`cache`]) but need not wait for the recorder's write to read.
    fn try_writes(&self) -> Option<MutexGuard<'_, ()>> {
        match self.writes.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The leases and counters alone (for claims, and inside [`Self::writes`]).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inner(&self) -> StoreResult<Arc<Inner>> {
        self.inner
            .load_full()
            .ok_or_else(|| StoreError::Unavailable("the store is being reopened".into()))
    }

    /// The tree, for reads and for building batches.
    fn tree(&self) -> StoreResult<sled::Tree> {
        Ok(self.inner()?.tree.clone())
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StoreResult<Option<T>> {
        match self.tree()?.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// A delivery record: sealed when it carries a message's own callback URL (which may hold
    /// credentials or a token), plain otherwise (most deliveries, and cheaper).
    fn encode_delivery(&self, delivery: &crate::model::Delivery) -> StoreResult<Vec<u8>> {
        match delivery.url_override {
            Some(_) => codec::seal(&self.sealer, delivery),
            None => encode(delivery),
        }
    }

    fn delivery_at(&self, id: DeliveryId) -> StoreResult<Option<crate::model::Delivery>> {
        Ok(self.linked_delivery_at(id)?.map(|(delivery, _)| delivery))
    }

    /// A delivery with its neighbours in its ordering line (see [`lines`]).
    fn linked_delivery_at(
        &self,
        id: DeliveryId,
    ) -> StoreResult<Option<(crate::model::Delivery, lines::Link)>> {
        let key = keys::delivery(id);
        match self.tree()?.get(&key)? {
            Some(bytes) => {
                let (link, record) = lines::split(&bytes);
                Ok(Some((codec::open(&self.sealer, &key, record)?, link)))
            }
            None => Ok(None),
        }
    }

    /// Refuses writes while the store is broken (a full disk), trying to reopen it first.
    fn writable(&self) -> StoreResult<()> {
        let reason = self.broken().reason.clone();
        match reason {
            None => Ok(()),
            Some(reason) => {
                if self.try_reopen() {
                    Ok(())
                } else {
                    Err(StoreError::Unavailable(reason))
                }
            }
        }
    }

    fn broken(&self) -> MutexGuard<'_, Broken> {
        self.broken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write failed: I/O errors leave sled refusing writes until it is reopened.
    fn write_failed(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io) => {
                let reason = if io.kind() == std::io::ErrorKind::StorageFull
                    || io.to_string().contains("No space left")
                {
                    format!("the disk holding {} is full ({io})", self.dir.display())
                } else {
                    format!("writing to {} failed ({io})", self.dir.display())
                };
                let mut broken = self.broken();
                if broken.reason.is_none() {
                    tracing::error!(
                        reason,
                        "the store takes no writes until it can be reopened; sends are refused with 503 meanwhile"
                    );
                    metrics::counter!("herald_store_failures_total").increment(1);
                }
                broken.reason = Some(reason.clone());
                StoreError::Unavailable(reason)
            }
            other => StoreError::Backend(other.to_string()),
        }
    }

    /// Applies a batch; callers hold `state`.
    fn apply(&self, batch: Batch) -> StoreResult<()> {
        self.writable()?;
        self.tree()?
            .apply_batch(batch)
            .map_err(|e| self.write_failed(e))
    }

    /// Applies a write that is acknowledged once flushed: the counters, changed by `change`
    /// and with the durable-write sequence advanced (see [`ledger`]), go into the same batch,
    /// and the pending count moves by `added - removed`. Callers hold [`Self::lock`].
    fn apply_durable(
        &self,
        state: &mut State,
        mut batch: Batch,
        (added, removed): (u64, u64),
        change: impl FnOnce(&mut Counters),
    ) -> StoreResult<()> {
        let mut counters = state.counters;
        change(&mut counters);
        counters.seq += 1;
        batch.insert(keys::COUNTERS, encode(&counters)?);
        self.apply_counted(batch, added, removed)?;
        state.counters = counters;
        Ok(())
    }

    /// Applies `batch` with the pending count moved by `added - removed`, written in the same
    /// batch. Callers hold `writes`.
    fn apply_counted(&self, mut batch: Batch, added: u64, removed: u64) -> StoreResult<()> {
        let count = (self.pending.load(Ordering::Relaxed) + added).saturating_sub(removed);
        if added != removed {
            batch.insert(keys::PENDING, &count.to_be_bytes());
        }
        self.apply(batch)?;
        self.pending.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// Makes every write so far durable (on a blocking thread: an fsync takes milliseconds;
    /// in place on herald's writer threads, see [`crate::store::mark_blocking_thread`]), then
    /// notes in the ledger the sequence that is now durable.
    async fn flush(&self) -> StoreResult<()> {
        self.writable()?;
        let counters = self.state().counters;
        let inner = self.inner()?;
        let synced = if crate::store::may_block() {
            inner.sync()
        } else {
            tokio::task::spawn_blocking(move || inner.sync())
                .await
                .map_err(|e| StoreError::Backend(format!("sync thread: {e}")))?
        };
        synced.map_err(|e| self.write_failed(e))?;
        let entry = ledger::Entry {
            counters,
            written_at_ms: crate::model::now_ms(),
        };
        let written = self
            .ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(&entry);
        written.map_err(|e| self.write_failed(sled::Error::Io(e)))
    }

    fn payload_ceiling() -> usize {
        MAX_PAYLOAD_BYTES
    }
}
