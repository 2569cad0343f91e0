//! Opening the sled store with every check a damaged disk calls for, and the operator's tools:
//! recover (accepting a loss) and reopening after a full disk (check and backup: [`super::tools`]).
//!
//! A store is refused — with what is missing, which file, and what to do — when sled's files do
//! not open, when the store's durable-write sequence is behind its ledger (sled truncated a
//! damaged log: acknowledged data is gone), when the ledger is missing or damaged next to a
//! store that had one, and when the secret key does not open the store's sealed records (or is
//! missing next to them: a new key is only ever created for a new store).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use sled::Batch;

use super::codec::{self, decode, encode};
use super::ledger::{self, Counters, Found, Ledger};
use super::{Broken, Inner, SledOptions, SledStore, State, keys};
use crate::store::seal::{KEY_BYTES, Sealer, load_or_create_key};
use crate::store::{StoreError, StoreResult};

/// sled's segment size here; a reopen needs room for at least one new segment.
const SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// The value sealed under [`keys::KEY_CHECK`].
const KEY_CHECK_VALUE: &[u8] = b"herald secret key check";
/// What every refusal ends with.
const WHAT_TO_DO: &str = "What to do: restore the latest backup (see `herald store backup` and \
    the README's \"Backup and restore\"), look closer with `herald store check --data-dir DIR`, \
    or accept the loss and go on with what is left: `herald store recover --data-dir DIR \
    --accept-loss`.";

/// How `open` treats a store that lost acknowledged data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Refuse,
    Accept,
}

fn damaged(message: String) -> StoreError {
    StoreError::Damaged(message)
}

/// sled's `conf` ends with a CRC-32 (little-endian) of the rest; checked before sled reads it,
/// because sled's own error for a damaged `conf` does not name the file.
pub(super) fn check_conf(dir: &Path) -> StoreResult<()> {
    let path = dir.join("conf");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(()); // absent: a new store
    };
    let intact = bytes.len() > 4 && {
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        sum.try_into().map(u32::from_le_bytes).ok() == Some(crc32fast::hash(body))
    };
    if intact {
        Ok(())
    } else {
        Err(damaged(format!(
            "{} is damaged (sled's configuration file fails its checksum); herald cannot open \
             the store in {}. {}",
            path.display(),
            dir.display(),
            WHAT_TO_DO.replace("DIR", &dir.display().to_string())
        )))
    }
}

/// How long opening waits for a handle of this same process to let go of the directory. sled
/// finishes a dropped handle's last log writes on its own threads, which hold the lock until
/// they are done and give no signal then; without the wait, dropping a store and opening it
/// again (an embedding application, `store check` in a test) fails now and then on a loaded
/// machine. Reopening after a full disk does not wait: it holds the store's lock meanwhile,
/// and tries again a second later anyway.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Opens sled in `dir` with herald's settings, waiting up to `release_wait` for a handle of
/// this process to let go; errors name the directory and say what to do.
pub(super) fn open_inner(
    dir: &Path,
    options: &SledOptions,
    release_wait: Duration,
) -> StoreResult<Inner> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_bytes)
        .segment_size(SEGMENT_BYTES)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(options.lazy_flush_ms.max(1)));
    let deadline = std::time::Instant::now() + release_wait;
    let opened = loop {
        match config.open() {
            Err(sled::Error::Io(io))
                if is_lock(&io)
                    && held_by_this_process(dir)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => break opened,
        }
    };
    let db = opened.map_err(|e| match e {
        sled::Error::Io(io) if is_lock(&io) => StoreError::Backend(format!(
            "another herald is using {} (its lock file is held){}",
            dir.display(),
            lock_holder(dir)
        )),
        sled::Error::Io(io) => StoreError::Unavailable(format!("{}: {io}", dir.display())),
        other => damaged(format!(
            "sled cannot read the store in {} ({other}): its files are damaged. {}",
            dir.display(),
            WHAT_TO_DO.replace("DIR", &dir.display().to_string())
        )),
    })?;
    let tree = db.open_tree("herald")?;
    let log_path = dir.join("db");
    let log = File::open(&log_path)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", log_path.display())))?;
    Ok(Inner { db, tree, log })
}

/// sled's answer when another handle holds the directory's lock file.
fn is_lock(io: &std::io::Error) -> bool {
    io.to_string().contains("lock")
}

/// The process that last opened the directory, from the pid file it wrote.
fn last_opener(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("herald.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
}

fn held_by_this_process(dir: &Path) -> bool {
    last_opener(dir) == Some(std::process::id())
}

/// " (pid N)" when a running herald is known to use the directory.
fn lock_holder(dir: &Path) -> String {
    match last_opener(dir) {
        Some(pid) if pid == std::process::id() => " by a handle this process still has open".into(),
        Some(pid) => format!(" by pid {pid}"),
        None => String::new(),
    }
}

/// The key: configured, or `secret.key`, created only for a store with nothing sealed yet.
pub(super) fn resolve_key(
    dir: &Path,
    options: &SledOptions,
    new_store: bool,
) -> StoreResult<[u8; KEY_BYTES]> {
    if let Some(key) = options.secret_key {
        return Ok(key);
    }
    let path = dir.join("secret.key");
    if !path.exists() && !new_store {
        return Err(damaged(format!(
            "{} is missing, but the store in {} holds records sealed with it. Restore \
             secret.key from your backup, or set HERALD_SECRET_KEY to the key this store was \
             created with; herald never creates a new key for an existing store (it could not \
             open the old records).",
            path.display(),
            dir.display()
        )));
    }
    load_or_create_key(&path).map_err(|reason| {
        damaged(format!(
            "{reason} — the key file is damaged: restore it from your backup, or set \
             HERALD_SECRET_KEY to the key this store was created with"
        ))
    })
}

/// Counts of one kind of record (keys with this prefix).
pub(super) fn count(tree: &sled::Tree, prefix: u8) -> u64 {
    tree.scan_prefix([prefix]).keys().count() as u64
}

pub(super) fn read_counters(tree: &sled::Tree) -> StoreResult<Option<Counters>> {
    match tree.get(keys::COUNTERS)? {
        Some(bytes) => decode(keys::COUNTERS, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Compares the store with its ledger: `Ok` when nothing acknowledged is missing, else what
/// is missing.
pub(super) fn compare(store: Option<Counters>, found: &Found, dir: &Path) -> Result<(), String> {
    let ledger_path = dir.join(ledger::FILE);
    match (store, found) {
        (_, Found::Damaged) => Err(format!(
            "{} is damaged (neither of its entries passes its checksum), so herald cannot tell \
             whether the store is complete",
            ledger_path.display()
        )),
        (Some(_), Found::Missing) => Err(format!(
            "{} is missing, so herald cannot tell whether the store is complete",
            ledger_path.display()
        )),
        (None, Found::Missing) => Ok(()),
        (None, Found::Entry(entry)) => Err(lost(&Counters::default(), entry, dir)),
        (Some(counters), Found::Entry(entry)) => {
            if counters.store_id != entry.counters.store_id {
                Err(format!(
                    "{} belongs to another store (its store id differs)",
                    ledger_path.display()
                ))
            } else if counters.seq < entry.counters.seq {
                Err(lost(&counters, entry, dir))
            } else {
                Ok(())
            }
        }
    }
}

fn lost(store: &Counters, entry: &ledger::Entry, dir: &Path) -> String {
    format!(
        "the store in {} has lost acknowledged data: its last durable write is #{}, but {} \
         records #{} (written {}). At least {} message(s) and {} endpoint(s) that were \
         acknowledged are missing. sled truncated its log at a damaged record: {} is damaged",
        dir.display(),
        store.seq,
        ledger::FILE,
        entry.counters.seq,
        crate::model::rfc3339(entry.written_at_ms),
        entry.counters.messages.saturating_sub(store.messages),
        entry.counters.endpoints.saturating_sub(store.endpoints),
        dir.join("db").display()
    )
}

/// Creates the data directory readable by its owner only.
pub(super) fn prepare_dir(dir: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
    } else if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        // Tighten a directory herald created earlier with the default umask; not fatal.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, refusing one that lost acknowledged
    /// data (see the module docs).
    pub fn open(dir: &Path, options: &SledOptions) -> StoreResult<SledStore> {
        Self::open_with(dir, options, Loss::Refuse)
    }

    /// Opens a store that lost acknowledged data anyway: the ledger is reset to what is left
    /// and the counts are taken again. Returns the store and what was lost, if anything.
    pub fn recover(dir: &Path, options: &SledOptions) -> StoreResult<(SledStore, Option<String>)> {
        let loss = match Self::check_dir(dir, options) {
            Ok(report) if report.problems.is_empty() => None,
            Ok(report) => Some(report.problems.join("; ")),
            Err(e) => Some(e.to_string()),
        };
        let store = Self::open_with(dir, options, Loss::Accept)?;
        Ok((store, loss))
    }

    fn open_with(dir: &Path, options: &SledOptions, loss: Loss) -> StoreResult<SledStore> {
        prepare_dir(dir)?;
        check_conf(dir)?;
        let inner = open_inner(dir, options, RELEASE_WAIT)?;
        let tree = &inner.tree;
        let stored = read_counters(tree)?;
        let new_store = stored.is_none() && tree.is_empty();
        let found = ledger::read(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        let key = resolve_key(dir, options, new_store && found == Found::Missing)?;
        let sealer = Sealer::new(&key);
        check_key(tree, &sealer, dir, false)?;

        let verdict = compare(stored, &found, dir);
        if let (Err(problem), Loss::Refuse) = (&verdict, loss) {
            return Err(damaged(format!(
                "herald refuses to open the store: {problem}. {}",
                WHAT_TO_DO.replace("DIR", &dir.display().to_string())
            )));
        }
        super::lines::upgrade(tree)?;
        // A store written before the ledger, or one whose loss was accepted, is counted once;
        // otherwise the counters are the store's own.
        let counters = match (stored, verdict.is_ok()) {
            (Some(counters), true) => counters,
            _ => Counters {
                store_id: stored.map_or_else(|| uuid::Uuid::new_v4().as_u128(), |c| c.store_id),
                seq: stored.map_or(0, |c| c.seq).max(match &found {
                    Found::Entry(entry) => entry.counters.seq,
                    _ => 0,
                }) + 1,
                messages: count(tree, keys::MESSAGE),
                endpoints: count(tree, keys::ENDPOINT),
            },
        };
        let mut ledger = Ledger::open(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        if stored != Some(counters) || tree.get(keys::PENDING)?.is_none() {
            let mut batch = Batch::default();
            batch.insert(keys::COUNTERS, encode(&counters)?);
            // The pending count is kept in the same batches as the due entries; count them
            // when it is absent (an older store) or the store was recovered.
            if tree.get(keys::PENDING)?.is_none() || verdict.is_err() {
                let pending = count(tree, keys::DUE) + super::lines::waiting(tree)?;
                batch.insert(keys::PENDING, &pending.to_be_bytes());
            }
            tree.apply_batch(batch)?;
            inner.sync()?;
            ledger
                .reset(&ledger::Entry {
                    counters,
                    written_at_ms: crate::model::now_ms(),
                })
                .map_err(|e| StoreError::Backend(format!("{}: {e}", ledger::FILE)))?;
            if let Err(problem) = &verdict {
                tracing::warn!(
                    problem,
                    "loss accepted by the operator; the ledger starts again from what is left"
                );
            }
        }
        let pending = read_pending(tree)?;
        let _ = std::fs::write(dir.join("herald.pid"), std::process::id().to_string());
        tracing::info!(dir = %dir.display(), pending, "store opened");
        Ok(SledStore {
            dir: dir.to_path_buf(),
            options: options.clone(),
            sealer,
            inner: ArcSwapOption::from_pointee(inner),
            endpoint_cache: RwLock::new(Default::default()),
            writes: Mutex::new(()),
            state: Mutex::new(State {
                counters,
                ..State::default()
            }),
            pending: AtomicU64::new(pending),
            ledger: Mutex::new(ledger),
            broken: Mutex::new(Broken::default()),
            adopted: Mutex::new(Default::default()),
        })
    }

    /// Reopens sled after a failed write once the disk has room again (a reopen that fails is
    /// tried again at most once a second).
    /// True when the store takes writes again.
    pub(super) fn try_reopen(&self) -> bool {
        if self.broken().reason.is_none() {
            return true;
        }
        // Reopening needs room for a new segment; while the disk is still full, keep serving
        // reads from the store as it is. (statvfs is cheap: checked on every ask.)
        if free_bytes(&self.dir).is_some_and(|free| free < 2 * SEGMENT_BYTES as u64) {
            return false;
        }
        {
            let mut broken = self.broken();
            if broken
                .last_try
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return false;
            }
            broken.last_try = Some(std::time::Instant::now());
        }
        let mut state = self.lock();
        drop(self.inner.swap(None));
        let reopened = open_inner(&self.dir, &self.options, Duration::ZERO).and_then(|inner| {
            let pending = read_pending(&inner.tree)?;
            let counters = read_counters(&inner.tree)?.unwrap_or(state.counters);
            Ok((inner, pending, counters))
        });
        match reopened {
            Ok((inner, pending, counters)) => {
                self.pending.store(pending, Ordering::Relaxed);
                state.counters = counters;
                // Removals that never reached the disk are undone: entries come back behind
                // the cursors.
                state.cursors.clear();
                self.cache_mut().clear();
                self.inner.store(Some(Arc::new(inner)));
                let reason = self.broken().reason.take();
                tracing::info!(
                    after = reason.unwrap_or_default(),
                    "store reopened: writes are accepted again"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "store not reopened yet");
                false
            }
        }
    }
}

/// Proves the key opens this store's sealed records; seals the check value on first use
/// (unless only `checking`).
pub(super) fn check_key(
    tree: &sled::Tree,
    sealer: &Sealer,
    dir: &Path,
    checking: bool,
) -> StoreResult<()> {
    let wrong_key = || {
        damaged(format!(
            "the secret key does not open the sealed records of the store in {}: secret.key \
             is damaged, or HERALD_SECRET_KEY is not the key this store was created with",
            dir.display()
        ))
    };
    match tree.get(keys::KEY_CHECK)? {
        Some(sealed) => match sealer.open(&sealed) {
            Ok(plain) if plain == KEY_CHECK_VALUE => Ok(()),
            _ => Err(wrong_key()),
        },
        None => {
            // A store from before the check: prove the key on an endpoint record, if any.
            if let Some(entry) = tree.scan_prefix([keys::ENDPOINT]).next() {
                let (key, value) = entry?;
                codec::open_endpoint(sealer, &key, &value).map_err(|_| wrong_key())?;
            }
            if !checking {
                let sealed = sealer.seal(KEY_CHECK_VALUE).map_err(StoreError::Backend)?;
                tree.insert(keys::KEY_CHECK, sealed)?;
            }
            Ok(())
        }
    }
}

pub(super) fn read_pending(tree: &sled::Tree) -> StoreResult<u64> {
    match tree.get(keys::PENDING)? {
        Some(stored) => Ok(u64::from_be_bytes(stored.as_ref().try_into().map_err(
            |_| codec::corrupt(keys::PENDING, "the pending count is not 8 bytes"),
        )?)),
        None => Ok(count(tree, keys::DUE) + super::lines::waiting(tree)?),
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
#[path = "open_tests.rs"]
mod tests;
