//! herald's own evidence of what the sled store made durable.
//!
//! sled recovers from a damaged log by truncating it at the first bad record, silently: a
//! flipped byte turns a store of 2,000 acknowledged messages into an empty or partial one that
//! opens without complaint. So every durable write also advances a sequence number kept in the
//! store (key `C`, in the same atomic batch), and after each sync herald writes that number,
//! with a few counts, to `herald.ledger` beside the store. At open, a store whose sequence is
//! behind its ledger has lost acknowledged data, and herald refuses to serve it.
//!
//! The ledger is two 64-byte slots, written alternately, each with its own checksum: a write
//! torn by a crash damages one slot, and the other still holds the previous entry. It is
//! written after the store's sync (so it never claims more than is durable) and fsynced only
//! at a clean stop or an explicit sync: after a power loss it may be older than the store,
//! which only makes it claim less.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The ledger's file name, in the data directory.
pub(crate) const FILE: &str = "herald.ledger";
const MAGIC: &[u8; 8] = b"HERALDL1";
const SLOT: usize = 64;

/// What the store says of itself (key `C`) and what the ledger remembers of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    /// Identifies the store, so a ledger is never compared with another store's data.
    pub(crate) store_id: u128,
    /// Durable writes so far.
    pub(crate) seq: u64,
    /// Messages stored now.
    pub(crate) messages: u64,
    /// Endpoints stored now.
    pub(crate) endpoints: u64,
}

/// One ledger entry: the counters and when they were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) counters: Counters,
    pub(crate) written_at_ms: u64,
}

impl Entry {
    fn encode(&self) -> [u8; SLOT] {
        let mut slot = [0u8; SLOT];
        slot[..8].copy_from_slice(MAGIC);
        slot[8..24].copy_from_slice(&self.counters.store_id.to_be_bytes());
        slot[24..32].copy_from_slice(&self.counters.seq.to_be_bytes());
        slot[32..40].copy_from_slice(&self.counters.messages.to_be_bytes());
        slot[40..48].copy_from_slice(&self.counters.endpoints.to_be_bytes());
        slot[48..56].copy_from_slice(&self.written_at_ms.to_be_bytes());
        let sum = Sha256::digest(&slot[..56]);
        slot[56..].copy_from_slice(&sum[..8]);
        slot
    }

    fn decode(slot: &[u8]) -> Option<Entry> {
        let u64_at = |at: usize| {
            slot.get(at..at + 8)?
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
        };
        if slot.len() != SLOT
            || &slot[..8] != MAGIC
            || Sha256::digest(&slot[..56])[..8] != slot[56..]
        {
            return None;
        }
        Some(Entry {
            counters: Counters {
                store_id: u128::from_be_bytes(slot[8..24].try_into().ok()?),
                seq: u64_at(24)?,
                messages: u64_at(32)?,
                endpoints: u64_at(40)?,
            },
            written_at_ms: u64_at(48)?,
        })
    }
}

/// What reading the ledger found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// No ledger file.
    Missing,
    /// The newest intact entry.
    Entry(Entry),
    /// The file exists but neither slot is intact.
    Damaged,
}

/// Reads the newest intact entry.
pub(crate) fn read(dir: &Path) -> std::io::Result<Found> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let newest = bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(Entry::decode)
        .max_by_key(|e| e.counters.seq);
    Ok(newest.map_or(Found::Damaged, Found::Entry))
}

/// The open ledger file of a running store.
pub(crate) struct Ledger {
    file: File,
    /// The sequence of the last entry written; entries never go back.
    last_seq: Option<u64>,
}

impl Ledger {
    /// Opens (creating if needed, mode 0600) the ledger in `dir`.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Ledger> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(Ledger {
            file: options.open(dir.join(FILE))?,
            last_seq: None,
        })
    }

    /// Writes an entry into the slot its sequence selects, unless a later one was written.
    pub(crate) fn write(&mut self, entry: &Entry) -> std::io::Result<()> {
        if self.last_seq.is_some_and(|last| last >= entry.counters.seq) {
            return Ok(());
        }
        let offset = (entry.counters.seq % 2) * SLOT as u64;
        self.file.write_all_at(&entry.encode(), offset)?;
        self.last_seq = Some(entry.counters.seq);
        Ok(())
    }

    /// Writes an entry over both slots and syncs: a fresh start (new store, accepted loss).
    pub(crate) fn reset(&mut self, entry: &Entry) -> std::io::Result<()> {
        let slot = entry.encode();
        self.file.write_all_at(&slot, 0)?;
        self.file.write_all_at(&slot, SLOT as u64)?;
        self.last_seq = Some(entry.counters.seq);
        self.file.sync_all()
    }

    /// Makes the ledger durable (a clean stop, an explicit sync).
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            counters: Counters {
                store_id: 42,
                seq,
                messages: seq * 10,
                endpoints: 1,
            },
            written_at_ms: 7,
        }
    }

    #[test]
    fn the_newest_intact_slot_wins_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Missing);
        let mut ledger = Ledger::open(dir.path()).unwrap();
        ledger.reset(&entry(1)).unwrap();
        ledger.write(&entry(2)).unwrap();
        ledger.write(&entry(3)).unwrap();
        ledger.write(&entry(2)).unwrap(); // never goes back
        assert_eq!(read(dir.path()).unwrap(), Found::Entry(entry(3)));

        // Tear the newest slot (seq 3 lives in slot 1): the previous entry is found.
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Entry(entry(2)));

        bytes[30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Damaged);
    }
}
