//! The retention purge, in three phases of bounded pages. The cursor is the next key to read;
//! its prefix byte says which phase it belongs to.

use sled::Batch;

use super::codec::{self, decode};
use super::queue::first_id_at;
use super::{SledStore, keys};
use crate::model::{Attempt, MessageId};
use crate::store::rollup::day_of;
use crate::store::{PurgeCursor, PurgePage, StoreResult};

/// Where a purge phase resumes: just after the last key it read when it stopped at its
/// budget; `None` when the phase is complete.
fn resume_after(last: Option<Vec<u8>>, budget_spent: bool) -> Option<Vec<u8>> {
    let mut key = last.filter(|_| budget_spent)?;
    key.push(0);
    Some(key)
}

impl SledStore {
    pub(super) fn purge_page_now(
        &self,
        cutoff_ms: u64,
        cursor: Option<PurgeCursor>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        let cursor = cursor.map_or_else(|| vec![keys::MESSAGE], |c| c.0);
        let mut state = self.lock();
        let (mut page, batch, next) = match cursor.first() {
            Some(&keys::MESSAGE) => self.purge_messages(cutoff_ms, cursor, budget)?,
            Some(&keys::ATTEMPT) => self.purge_attempts(cutoff_ms, cursor, budget)?,
            Some(&keys::STATS) => self.purge_rollups(cutoff_ms, cursor, budget)?,
            _ => (PurgePage::default(), Batch::default(), None),
        };
        let purged = page.messages;
        self.apply_durable(&mut state, batch, (0, 0), |c| {
            c.messages = c.messages.saturating_sub(purged)
        })?;
        page.next = next.map(PurgeCursor);
        Ok(page)
    }

    /// Phase 1: finished messages created before the cutoff, with everything they own.
    fn purge_messages(
        &self,
        cutoff_ms: u64,
        cursor: Vec<u8>,
        budget: usize,
    ) -> StoreResult<(PurgePage, Batch, Option<Vec<u8>>)> {
        let end = keys::message(MessageId(first_id_at(cutoff_ms).0));
        let mut page = PurgePage::default();
        let mut batch = Batch::default();
        let mut scanned = 0;
        let mut last = None;
        for entry in self.tree()?.range(cursor..end).take(budget) {
            let (key, value) = entry?;
            scanned += 1;
            last = Some(key.to_vec());
            let message = codec::decode_message(&self.sealer, &key, &value)?;
            let listed = self.deliveries_of(&key, Some(&value), message.id)?;
            if listed.deliveries.iter().any(|d| !d.status.is_final()) {
                continue; // pending deliveries are never purged
            }
            for delivery in &listed.deliveries {
                for attempt in self
                    .tree()?
                    .scan_prefix(keys::attempts_prefix(delivery.id))
                    .keys()
                {
                    batch.remove(attempt?);
                    page.attempts += 1;
                }
                batch.remove(keys::delivery(delivery.id));
                if listed.indexed {
                    batch.remove(keys::message_delivery(message.id, delivery.id));
                }
                page.deliveries += 1;
            }
            if let Some(idempotency_key) = &message.idempotency_key {
                batch.remove(keys::idempotency(&message.tenant, idempotency_key));
            }
            batch.remove(key);
            page.messages += 1;
        }
        let next = resume_after(last, scanned == budget).or(Some(vec![keys::ATTEMPT]));
        Ok((page, batch, next))
    }

    /// Phase 2: attempts older than the cutoff of deliveries that are kept.
    fn purge_attempts(
        &self,
        cutoff_ms: u64,
        cursor: Vec<u8>,
        budget: usize,
    ) -> StoreResult<(PurgePage, Batch, Option<Vec<u8>>)> {
        // Attempts are keyed by delivery id, which starts with its creation time: every attempt
        // older than the cutoff belongs to a delivery created before it.
        let end = keys::attempts_prefix(first_id_at(cutoff_ms));
        let mut page = PurgePage::default();
        let mut batch = Batch::default();
        let mut scanned = 0;
        let mut last = None;
        for entry in self.tree()?.range(cursor..end).take(budget) {
            let (key, value) = entry?;
            scanned += 1;
            let attempt: Attempt = decode(&key, &value)?;
            if attempt.started_at < cutoff_ms {
                batch.remove(key.clone());
                page.attempts += 1;
            }
            last = Some(key.to_vec());
        }
        let next = resume_after(last, scanned == budget).or(Some(vec![keys::STATS]));
        Ok((page, batch, next))
    }

    /// Phase 3: daily roll-ups of days before the cutoff day.
    fn purge_rollups(
        &self,
        cutoff_ms: u64,
        cursor: Vec<u8>,
        budget: usize,
    ) -> StoreResult<(PurgePage, Batch, Option<Vec<u8>>)> {
        let cutoff_day = day_of(cutoff_ms);
        let mut page = PurgePage::default();
        let mut batch = Batch::default();
        let mut scanned = 0;
        let mut last = None;
        for entry in self
            .tree()?
            .range(cursor..vec![keys::STATS + 1])
            .keys()
            .take(budget)
        {
            let key = entry?;
            scanned += 1;
            if keys::stats_day(&key).unwrap_or(u32::MAX) < cutoff_day {
                batch.remove(key.clone());
                page.rollups += 1;
            }
            last = Some(key.to_vec());
        }
        Ok((page, batch, resume_after(last, scanned == budget)))
    }
}
