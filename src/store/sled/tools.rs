//! The operator's tools on a sled store: `herald store check` examines a stopped store without
//! changing it; `herald store backup` copies a running one, pausing its writes for the copy.

use std::path::Path;
use std::time::Duration;

use sled::Batch;

use super::codec;
use super::ledger::{self, Found, Ledger};
use super::open::{
    RELEASE_WAIT, check_conf, check_key, compare, count, open_inner, prepare_dir, read_counters,
    read_pending, resolve_key,
};
use super::{SledOptions, SledStore, keys};
use crate::store::seal::Sealer;
use crate::store::{BackupReport, StoreError, StoreResult};

/// What `herald store check` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// Problems that make herald refuse the store; empty when it is sound.
    pub problems: Vec<String>,
    /// Records by kind.
    pub endpoints: u64,
    /// Messages stored.
    pub messages: u64,
    /// Deliveries stored.
    pub deliveries: u64,
    /// Pending deliveries: due entries and deliveries waiting in ordering lines.
    pub pending: u64,
    /// Records that do not decode.
    pub unreadable: u64,
    /// The store's durable-write sequence, and the ledger's.
    pub store_seq: u64,
    /// The ledger's sequence, if it has an intact entry.
    pub ledger_seq: Option<u64>,
}

impl SledStore {
    /// Examines a stopped store without changing it: the ledger, the key, every record.
    pub fn check_dir(dir: &Path, options: &SledOptions) -> StoreResult<CheckReport> {
        check_conf(dir)?;
        let inner = open_inner(dir, options, RELEASE_WAIT)?;
        let tree = &inner.tree;
        let stored = read_counters(tree)?;
        let found = ledger::read(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut report = CheckReport {
            problems: Vec::new(),
            endpoints: 0,
            messages: 0,
            deliveries: 0,
            pending: 0,
            unreadable: 0,
            store_seq: stored.map_or(0, |c| c.seq),
            ledger_seq: match &found {
                Found::Entry(entry) => Some(entry.counters.seq),
                _ => None,
            },
        };
        if let Err(problem) = compare(stored, &found, dir) {
            report.problems.push(problem);
        }
        let new_store = stored.is_none() && tree.is_empty();
        let sealer = match resolve_key(dir, options, false) {
            Ok(key) => Some(Sealer::new(&key)),
            Err(e) if !new_store => {
                report.problems.push(e.to_string());
                None
            }
            Err(_) => None,
        };
        if let Some(sealer) = &sealer
            && let Err(e) = check_key(tree, sealer, dir, true)
        {
            report.problems.push(e.to_string());
        }
        for entry in tree.iter() {
            let (key, value) = entry?;
            let readable = match key.first() {
                Some(&keys::ENDPOINT) => {
                    report.endpoints += 1;
                    sealer
                        .as_ref()
                        .is_none_or(|s| codec::open_endpoint(s, &key, &value).is_ok())
                }
                Some(&keys::MESSAGE) => {
                    report.messages += 1;
                    sealer
                        .as_ref()
                        .is_none_or(|s| codec::decode_message(s, &key, &value).is_ok())
                }
                Some(&keys::DELIVERY) => {
                    report.deliveries += 1;
                    sealer.as_ref().is_none_or(|s| {
                        let record = super::lines::split(&value).1;
                        codec::open::<crate::model::Delivery>(s, &key, record).is_ok()
                    })
                }
                Some(&keys::DUE | &keys::WAITING) => {
                    report.pending += 1;
                    true
                }
                Some(&keys::LINE) => super::lines::readable(&key, &value),
                _ => true,
            };
            report.unreadable += u64::from(!readable);
        }
        if report.unreadable > 0 {
            report
                .problems
                .push(format!("{} record(s) do not decode", report.unreadable));
        }
        report.pending += super::lines::waiting(tree)? - count(tree, keys::WAITING);
        let counted = read_pending(tree)?;
        if counted != report.pending {
            report.problems.push(format!(
                "the pending count says {counted} but {} deliveries are due or waiting in line",
                report.pending
            ));
        }
        Ok(report)
    }

    /// Copies the whole store into `to` (a new directory) while it runs: writes pause for the
    /// copy (about a second per 100 MB on the reference machine), so the copy is consistent.
    /// `to` is a store of its own: point `data_dir` at it to restore.
    pub fn backup_to(&self, to: &Path) -> StoreResult<BackupReport> {
        if to.exists()
            && std::fs::read_dir(to)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(StoreError::Conflict(format!(
                "{} exists and is not empty; a backup goes into a new directory",
                to.display()
            )));
        }
        let started = std::time::Instant::now();
        let state = self.lock();
        let source = self.inner()?;
        source.sync().map_err(|e| self.write_failed(e))?;
        prepare_dir(to)?;
        let copy = open_inner(to, &self.options, Duration::ZERO)?;
        let (mut records, mut bytes) = (0, 0);
        let mut batch = Batch::default();
        for entry in source.tree.iter() {
            let (key, value) = entry?;
            records += 1;
            bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
            if records % 10_000 == 0 {
                copy.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        copy.tree.apply_batch(batch)?;
        copy.sync()?;
        Ledger::open(to)
            .and_then(|mut ledger| {
                ledger.reset(&ledger::Entry {
                    counters: state.counters,
                    written_at_ms: crate::model::now_ms(),
                })
            })
            .map_err(|e| StoreError::Backend(format!("{}: {e}", to.display())))?;
        drop(state);
        if self.options.secret_key.is_none() {
            copy_key(&self.dir, to)?;
        }
        Ok(BackupReport {
            dir: to.display().to_string(),
            records,
            bytes,
            paused_ms: started.elapsed().as_millis() as u64,
        })
    }
}

fn copy_key(from: &Path, to: &Path) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = std::fs::read(from.join("secret.key"))
        .map_err(|e| StoreError::Backend(format!("secret.key: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to.join("secret.key"))
        .map_err(|e| StoreError::Backend(format!("{}: {e}", to.display())))?;
    std::io::Write::write_all(&mut file, &key)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::Backend(format!("{}: {e}", to.display())))
}
