//! Messages in, the due index, leases and decided transitions.
//!
//! The due index holds one key per pending delivery: `Q endpoint due_ms delivery`, so an
//! endpoint's due deliveries are one range scan in time order. A lease is held in memory (see
//! the module docs of [`super`]); claiming writes nothing.

use std::collections::HashMap;
use std::ops::Bound;
use std::time::Duration;

use sled::{Batch, IVec};
use uuid::Uuid;

use super::codec::{self, encode};
use super::lines::{self, LineWrites};
use super::{Held, SledStore, keys};
use crate::model::{Delivery, DeliveryId, DeliveryStatus, EndpointId, MessageId};
use crate::store::{
    DeliveryFilter, Inserted, Lease, LeaseToken, MessageWrite, ReplayJob, StoreError, StoreResult,
    Transition,
};

/// Where an endpoint's next claim starts reading its due entries: just after the last entry
/// the previous claim read. A claim reads an endpoint's entries in due order, and the first
/// of them are the ones it leased before (leased entries stay until their outcome is written,
/// so that they are due again should the process die): reading from the start again, claims
/// read ~75 entries only to skip them for every ~43 they took.
///
/// Every entry before the cursor is leased by this process. An entry that may be claimable
/// appearing behind it — added (a message accepted in the same millisecond, a delivery due
/// again sooner, a line's next delivery) or left by a lease given up (a release) — moves the
/// cursor back to it. What is rarer clears the cursors (the claim then reads from the start):
/// a transition, an outcome that could not be written, a reopen after a failed write. And
/// time: a cursor is used only until the first lease behind it runs out.
#[derive(Debug)]
pub(super) struct Cursor {
    /// Where the next claim starts: after the last due key read, or at the earliest that
    /// appeared behind it.
    start: Bound<Vec<u8>>,
    /// When the first lease behind it runs out (ms).
    valid_until_ms: u64,
}

impl Cursor {
    /// An entry at `key` may be claimable now: the next claim starts there if it is earlier.
    pub(super) fn fall_back(&mut self, key: &[u8]) {
        let behind = match &self.start {
            Bound::Excluded(start) => key <= start.as_slice(),
            Bound::Included(start) => key < start.as_slice(),
            Bound::Unbounded => false,
        };
        if behind {
            self.start = Bound::Included(key.to_vec());
        }
    }
}

/// The smallest delivery id created at `ms`: UUIDv7 puts the millisecond time first.
pub(super) fn first_id_at(ms: u64) -> DeliveryId {
    DeliveryId(Uuid::from_u128(u128::from(ms) << 80))
}

/// The due key of a pending delivery, from the time the record says it is due.
pub(super) fn due_key(delivery: &Delivery) -> Option<Vec<u8>> {
    match (delivery.status, delivery.next_attempt_at) {
        (DeliveryStatus::Pending, Some(due)) => {
            Some(keys::due(delivery.endpoint_id, due, delivery.id))
        }
        _ => None,
    }
}

/// The most deliveries a message record lists itself; a message with more (a tenant with
/// thousands of endpoints) has an `m` key for each instead, so that a record stays far below
/// the size sled would move out of its synced log (see the module docs of [`super`]).
pub(super) const LISTED_DELIVERIES: usize = 1024;

/// A message's deliveries, and whether each has an `m` key (messages stored before their
/// records listed their deliveries, or with more than [`LISTED_DELIVERIES`]), which a purge
/// removes with them.
pub(super) struct MessageDeliveries {
    pub(super) deliveries: Vec<Delivery>,
    pub(super) indexed: bool,
}

impl SledStore {
    pub(super) fn insert_messages_now(
        &self,
        writes: &[MessageWrite],
    ) -> StoreResult<Vec<Inserted>> {
        let mut batch = Batch::default();
        let mut answers = Vec::with_capacity(writes.len());
        let mut claimed_keys: HashMap<Vec<u8>, MessageId> = HashMap::new();
        let mut lines = LineWrites::default();
        let mut added = 0;
        let mut appeared = Vec::new();
        let mut state = self.lock();
        let mut created = 0;
        for write in writes {
            let message = &write.message;
            if let Some(idempotency_key) = &message.idempotency_key {
                let key = keys::idempotency(&message.tenant, idempotency_key);
                let earlier = match claimed_keys.get(&key) {
                    Some(id) => Some(*id),
                    None => match self.tree()?.get(&key)? {
                        Some(existing) => Some(
                            MessageId::from_slice(&existing)
                                .ok_or_else(|| codec::corrupt(&key, "not a message id"))?,
                        ),
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
            let ids: Vec<DeliveryId> = write.deliveries.iter().map(|d| d.id).collect();
            let listed = (ids.len() <= LISTED_DELIVERIES).then_some(ids.as_slice());
            batch.insert(
                keys::message(message.id),
                codec::encode_message(&self.sealer, message, listed)?,
            );
            for delivery in &write.deliveries {
                if listed.is_none() {
                    batch.insert(keys::message_delivery(message.id, delivery.id), &[]);
                }
                let record = self.encode_delivery(delivery)?;
                let Some(due) = due_key(delivery) else {
                    batch.insert(keys::delivery(delivery.id), record);
                    continue;
                };
                added += 1;
                let front = match &message.ordering_key {
                    Some(key) => {
                        let line = keys::line(delivery.endpoint_id, key);
                        let due_ms = delivery.next_attempt_at.unwrap_or_default();
                        lines.join(self, line, delivery.id, due_ms, record)?
                    }
                    None => {
                        batch.insert(keys::delivery(delivery.id), record);
                        true
                    }
                };
                if front {
                    batch.insert(due.as_slice(), &[]);
                    appeared.push((delivery.endpoint_id, due));
                }
            }
            answers.push(Inserted::Created);
            created += 1;
        }
        lines.write(&mut batch);
        self.apply_durable(&mut state, batch, (added, 0), |c| c.messages += created)?;
        for (endpoint, key) in appeared {
            state.due_appeared(endpoint, &key);
        }
        Ok(answers)
    }

    pub(super) fn message_deliveries_now(&self, id: MessageId) -> StoreResult<Vec<Delivery>> {
        let key = keys::message(id);
        let record = self.tree()?.get(&key)?;
        Ok(self.deliveries_of(&key, record.as_deref(), id)?.deliveries)
    }

    /// A message's deliveries, from its stored record (`None`: there is none): listed in the
    /// record itself, or under `m` keys (records written before records listed them, and
    /// messages with more than [`LISTED_DELIVERIES`]).
    pub(super) fn deliveries_of(
        &self,
        key: &[u8],
        record: Option<&[u8]>,
        id: MessageId,
    ) -> StoreResult<MessageDeliveries> {
        let listed = record.map(|r| codec::message_deliveries(key, r));
        let (ids, indexed) = match listed.transpose()?.flatten() {
            Some(ids) => (ids, false),
            None => {
                let prefix = keys::message_deliveries_prefix(id);
                let mut ids = Vec::new();
                for entry in self.tree()?.scan_prefix(&prefix).keys() {
                    ids.extend(DeliveryId::from_slice(&entry?[prefix.len()..]));
                }
                (ids, true)
            }
        };
        let mut deliveries = Vec::with_capacity(ids.len());
        for id in ids {
            deliveries.extend(self.delivery_at(id)?);
        }
        Ok(MessageDeliveries {
            deliveries,
            indexed,
        })
    }

    pub(super) fn deliveries_now(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
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
        let range = self.tree()?.range(start..end);
        let entries: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = if filter.newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut out = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let delivery: Delivery = codec::open(&self.sealer, &key, lines::split(&value).1)?;
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

    pub(super) fn due_head_now(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
    ) -> StoreResult<Option<u64>> {
        let state = self.state();
        let mut lease_ends: Option<u64> = None;
        // Leased entries come first (they were due first): at most the endpoint's claims.
        for key in self.tree()?.scan_prefix(keys::due_prefix(endpoint)).keys() {
            if let Some((_, due_ms, delivery_id)) = keys::parse_due(&key?) {
                match state.leases.get(&delivery_id) {
                    // Its outcome is being written; the scheduler hears of what follows.
                    Some(held) if held.recording => {}
                    Some(held) if held.lease.expires_at_ms > now_ms => {
                        let ends = held.lease.expires_at_ms;
                        lease_ends = Some(lease_ends.map_or(ends, |e| e.min(ends)));
                    }
                    _ => return Ok(Some(lease_ends.map_or(due_ms, |e| e.min(due_ms)))),
                }
            }
        }
        Ok(lease_ends)
    }

    pub(super) fn claim_now(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
        limit: usize,
        lease_for: Duration,
        max_leased: usize,
    ) -> StoreResult<Vec<Lease>> {
        let nil = DeliveryId(Uuid::nil());
        let end = keys::due(endpoint, now_ms.saturating_add(1), nil);
        let expires_at_ms = now_ms.saturating_add(lease_for.as_millis() as u64);
        // Not `lock`: a claim does not wait for the recorder's write (see `Held::recording`).
        let mut state = self.state();
        let leased = if max_leased == usize::MAX {
            0 // nothing to count against
        } else {
            state
                .leases
                .values()
                .filter(|h| h.lease.endpoint_id == endpoint && h.lease.expires_at_ms > now_ms)
                .count()
        };
        let limit = limit.min(max_leased.saturating_sub(leased));
        let mut claimed = Vec::new();
        let first = keys::due(endpoint, 0, nil);
        let previous = state
            .cursors
            .remove(&endpoint)
            .filter(|c| c.valid_until_ms > now_ms);
        let (start, mut valid_until_ms) = match &previous {
            Some(cursor) => (
                cursor.start.as_ref().map(Vec::as_slice),
                cursor.valid_until_ms,
            ),
            None => (Bound::Included(first.as_slice()), u64::MAX),
        };
        let mut last = None;
        // Skips the endpoint's own live leases after the cursor (bounded by its concurrency).
        let due = self
            .tree()?
            .range::<&[u8], _>((start, Bound::Excluded(end.as_slice())));
        for key in due.keys() {
            if claimed.len() == limit {
                break;
            }
            let key = key?;
            let Some((_, due_ms, delivery_id)) = keys::parse_due(&key) else {
                continue;
            };
            let live = state
                .leases
                .get(&delivery_id)
                .filter(|h| h.recording || h.lease.expires_at_ms > now_ms);
            last = Some(key);
            if let Some(held) = live {
                // A lease being recorded does not run out: it is given up once written.
                if !held.recording {
                    valid_until_ms = valid_until_ms.min(held.lease.expires_at_ms);
                }
                continue;
            }
            valid_until_ms = valid_until_ms.min(expires_at_ms);
            let lease = Lease {
                delivery_id,
                endpoint_id: endpoint,
                due_ms,
                expires_at_ms,
                token: LeaseToken::new(),
            };
            let held = Held {
                lease,
                recording: false,
            };
            state.leases.insert(delivery_id, held);
            claimed.push(lease);
        }
        let cursor = match (last, previous) {
            (Some(key), _) => Some(Cursor {
                start: Bound::Excluded(key.to_vec()),
                valid_until_ms,
            }),
            (None, previous) => previous,
        };
        if let Some(cursor) = cursor {
            state.cursors.insert(endpoint, cursor);
        }
        Ok(claimed)
    }

    /// Applies decided transitions all or nothing, with a bulk replay job's progress.
    pub(super) fn apply_transitions_now(
        &self,
        transitions: &[Transition],
        job: Option<&ReplayJob>,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let mut batch = Batch::default();
        let mut lines = LineWrites::default();
        let (mut added, mut removed) = (0, 0);
        let mut seen: HashMap<DeliveryId, Delivery> = HashMap::new();
        for transition in transitions {
            let id = transition.expected.id;
            let current: Delivery = match seen.remove(&id) {
                Some(delivery) => delivery,
                None => {
                    let (delivery, link) = self
                        .linked_delivery_at(id)?
                        .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))?;
                    lines.note(id, link);
                    delivery
                }
            };
            if current != transition.expected {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} changed meanwhile; try again"
                )));
            }
            let new = &transition.delivery;
            if state.leases.contains_key(&id) && new.status == DeliveryStatus::Pending {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} is being attempted right now"
                )));
            }
            let waiting = due_key(&current).is_some() && lines.is_waiting(self, id)?;
            // Retried in its place: the link before it carries its new due time.
            if waiting
                && new.status == DeliveryStatus::Pending
                && let Some(due) = new.next_attempt_at
                && current.next_attempt_at != Some(due)
            {
                lines.due_changed(self, id, due)?;
            }
            if let Some(old) = due_key(&current) {
                batch.remove(old);
                removed += 1;
            }
            if let Some(due) = due_key(new) {
                added += 1;
                if !waiting {
                    batch.insert(due, &[]);
                }
            }
            seen.insert(id, new.clone());
            if let Some(key) = transition
                .release
                .as_deref()
                .filter(|_| due_key(new).is_none())
            {
                let line = keys::line(new.endpoint_id, key);
                if waiting {
                    lines.leave_waiting(self, &line, id)?;
                    continue;
                }
                let read = |id| match seen.get(&id) {
                    Some(delivery) => Ok(Some(Delivery::clone(delivery))),
                    None => self.delivery_at(id),
                };
                if let Some(front) = self.pass_on(&mut lines, new.endpoint_id, id, &line, read)? {
                    batch.insert(front, &[]);
                }
            }
        }
        lines.write_with(self, &mut batch, seen.values())?;
        if let Some(job) = job {
            batch.insert(keys::job(&job.id), encode(job)?);
        }
        self.apply_durable(&mut state, batch, (added, removed), |_| {})?;
        for id in seen.keys() {
            state.leases.remove(id); // revoked: a late outcome under it is kept as a stale attempt
        }
        state.cursors.clear(); // entries added and leases revoked: rare, so all of them
        Ok(())
    }

    /// The front `left` (finished) leaves `line`, one of `endpoint`'s; the next pending delivery
    /// in line becomes the front. Returns its due key, for the caller's batch.
    pub(super) fn pass_on(
        &self,
        lines: &mut LineWrites,
        endpoint: EndpointId,
        left: DeliveryId,
        line: &[u8],
        read: impl Fn(DeliveryId) -> StoreResult<Option<Delivery>>,
    ) -> StoreResult<Option<Vec<u8>>> {
        let mut leaving = left;
        while let Some((next, due)) = lines.leave_front(self, line, leaving)? {
            // Waiting deliveries are pending (one that finishes leaves the line), and the link
            // knows when the next is due, but for links written before it did.
            if let Some(due) = due {
                return Ok(Some(keys::due(endpoint, due, next)));
            }
            // Should it not be pending, it leaves as well rather than block the line.
            match read(next)?.as_ref().and_then(due_key) {
                Some(due) => return Ok(Some(due)),
                None => leaving = next,
            }
        }
        Ok(None)
    }
}
