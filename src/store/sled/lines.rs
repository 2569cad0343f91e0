//! Ordering-key lines: for each (endpoint, ordering key), the pending deliveries of messages
//! with that key, in acceptance order.
//!
//! A line is a doubly linked list whose links live in the delivery records themselves:
//!
//! * `H endpoint key` → the line's last delivery (present while the line has anyone in it);
//! * a delivery in line carries, in front of its `D` record, the delivery before it and the
//!   one after it ([`Link`]). Its front is the one delivery of the line in the due index.
//!
//! A delivery joins at the end (at the front when the line is empty): its predecessor's record
//! gains a successor, and the successor's due time. When the front finishes, its record — read
//! and rewritten by that write anyway — names the next delivery and when it is due, so the
//! next enters the due index without a read: the line itself is not written at all, only read
//! when it ends. (A link written before links carried the due time names the successor only;
//! passing such a line on reads the successor's record.) A finished record carries no link, so the new
//! front's link back to it goes nowhere, which is how a front is told from a waiting delivery
//! (whose predecessor is still in line, with a link). A waiting delivery that finishes early
//! (cancelled) is unlinked from its neighbours. Every step is a few point reads and writes:
//! O(1) per delivery (O(log n) in the tree), never a scan of the endpoint's queue or the line.
//!
//! Stores written before links kept waiting deliveries under `W endpoint key 0 place` and
//! `R delivery`; [`upgrade`] rewrites them into links when the store is opened.
//!
//! The changes of one batch are gathered in [`LineWrites`], whose reads see the batch's earlier
//! changes, and written with the rest of the batch.

use std::collections::HashMap;

use serde::Deserialize;
use sled::{Batch, IVec};

use super::codec::corrupt;
use super::{SledStore, keys};
use crate::model::{Delivery, DeliveryId};
use crate::store::StoreResult;

/// A line record: this byte, then the last delivery's id.
const LINE_V2: u8 = 6;
/// A delivery record in line, as first linked: this byte, the delivery before it and the one
/// after it (16 bytes each, all zero for none), then the record as stored out of line.
const LINKED: u8 = 7;
/// The same, with the due time of the one after it (8 bytes, big-endian, after the two ids;
/// `u64::MAX` when there is none, or it is not known).
const LINKED_DUE: u8 = 8;
const LINK_BYTES: usize = 1 + 16 + 16 + 8;
const UNKNOWN_DUE: u64 = u64::MAX;

/// A delivery's neighbours in its line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Link {
    prev: Option<DeliveryId>,
    next: Option<DeliveryId>,
    /// When `next` is due (its `next_attempt_at`), where known.
    next_due: Option<u64>,
}

impl Link {
    fn is_linked(&self) -> bool {
        self.prev.is_some() || self.next.is_some()
    }
}

/// Splits a stored delivery value into its link and its record.
pub(super) fn split(value: &[u8]) -> (Link, &[u8]) {
    let id = |bytes: &[u8]| DeliveryId::from_slice(bytes).filter(|id| !id.0.is_nil());
    match value.split_first() {
        Some((&LINKED, rest)) if rest.len() > 32 => {
            let link = Link {
                prev: id(&rest[..16]),
                next: id(&rest[16..32]),
                next_due: None,
            };
            (link, &rest[32..])
        }
        Some((&LINKED_DUE, rest)) if rest.len() > 40 => {
            let due = u64::from_be_bytes(rest[32..40].try_into().unwrap_or([0xff; 8]));
            let next = id(&rest[16..32]);
            let link = Link {
                prev: id(&rest[..16]),
                next,
                next_due: next.and((due != UNKNOWN_DUE).then_some(due)),
            };
            (link, &rest[40..])
        }
        _ => (Link::default(), value),
    }
}

/// A delivery value: `record` (encoded as stored out of line) with `link` in front of it.
fn linked(link: Link, record: &[u8]) -> Vec<u8> {
    if !link.is_linked() {
        return record.to_vec();
    }
    let mut value = Vec::with_capacity(LINK_BYTES + record.len());
    value.push(LINKED_DUE);
    for id in [link.prev, link.next] {
        value.extend_from_slice(&id.map_or([0; 16], |id| *id.as_bytes()));
    }
    let due = link.next.and(link.next_due).unwrap_or(UNKNOWN_DUE);
    value.extend_from_slice(&due.to_be_bytes());
    value.extend_from_slice(record);
    value
}

/// The line record as first stored, when waiting deliveries had places (`W`, `R`).
#[derive(Deserialize)]
struct PlacedLine {
    front: DeliveryId,
    first_place: u64,
    next_place: u64,
}

/// A line's last delivery, from its record. A line record of the first layout names its front;
/// once [`upgrade`] has run, no delivery waits behind it outside links, so that is its last.
fn decode_line(key: &[u8], value: &[u8]) -> StoreResult<DeliveryId> {
    match value.split_first() {
        Some((&LINE_V2, id)) => {
            DeliveryId::from_slice(id).ok_or_else(|| corrupt(key, "not a delivery id"))
        }
        _ => super::codec::decode::<PlacedLine>(key, value).map(|line| line.front),
    }
}

fn encode_line(last: DeliveryId) -> Vec<u8> {
    let mut value = Vec::with_capacity(17);
    value.push(LINE_V2);
    value.extend_from_slice(last.as_bytes());
    value
}

/// Decodes a stored line record (for `store check`).
pub(super) fn readable(key: &[u8], value: &[u8]) -> bool {
    decode_line(key, value).is_ok()
}

/// The line changes of one batch.
#[derive(Default)]
pub(super) struct LineWrites {
    /// Each touched line's last delivery; `None`: the line is gone.
    lines: HashMap<Vec<u8>, Option<DeliveryId>>,
    /// The links of the deliveries this batch read or changed.
    links: HashMap<DeliveryId, Link>,
    /// Stored values read for their link, so that a changed link can be written back with the
    /// record as it is (`None`: the delivery is not stored yet).
    stored: HashMap<DeliveryId, Option<IVec>>,
    /// Records of deliveries created in this batch that joined a line.
    created: HashMap<DeliveryId, Vec<u8>>,
    /// Deliveries whose link this batch changed.
    relinked: Vec<DeliveryId>,
}

impl LineWrites {
    fn last(&self, store: &SledStore, line: &[u8]) -> StoreResult<Option<DeliveryId>> {
        match self.lines.get(line) {
            Some(last) => Ok(*last),
            None => match store.tree()?.get(line)? {
                Some(value) => decode_line(line, &value).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Notes the link of a delivery the caller read (and will write with [`Self::record`]).
    pub(super) fn note(&mut self, id: DeliveryId, link: Link) {
        self.links.entry(id).or_insert(link);
    }

    fn link(&mut self, store: &SledStore, id: DeliveryId) -> StoreResult<Link> {
        if let Some(link) = self.links.get(&id) {
            return Ok(*link);
        }
        let value = store.tree()?.get(keys::delivery(id))?;
        let link = value.as_deref().map_or(Link::default(), |v| split(v).0);
        self.stored.insert(id, value);
        self.links.insert(id, link);
        Ok(link)
    }

    fn relink(&mut self, id: DeliveryId, link: Link) {
        self.links.insert(id, link);
        self.relinked.push(id);
    }

    /// True while `delivery` (pending) waits behind the front of its line, out of the due
    /// index: its predecessor is still in line. A front's predecessor finished, and finished
    /// records carry no link.
    pub(super) fn is_waiting(
        &mut self,
        store: &SledStore,
        delivery: DeliveryId,
    ) -> StoreResult<bool> {
        match self.link(store, delivery)?.prev {
            Some(prev) => Ok(self.link(store, prev)?.is_linked()),
            None => Ok(false),
        }
    }

    /// The last delivery of `line`, if it waits behind the front.
    pub(super) fn waiting_last(
        &mut self,
        store: &SledStore,
        line: &[u8],
    ) -> StoreResult<Option<DeliveryId>> {
        match self.last(store, line)? {
            Some(last) if self.is_waiting(store, last)? => Ok(Some(last)),
            _ => Ok(None),
        }
    }

    /// `delivery`, created in this batch as `record` and due at `due_ms`, joins the end of its
    /// line; true when it is at the front (due now), false when it waits behind others. Its
    /// record is written by [`Self::write`].
    pub(super) fn join(
        &mut self,
        store: &SledStore,
        line: Vec<u8>,
        delivery: DeliveryId,
        due_ms: u64,
        record: Vec<u8>,
    ) -> StoreResult<bool> {
        self.created.insert(delivery, record);
        self.stored.insert(delivery, None);
        let last = self.last(store, &line)?;
        self.lines.insert(line, Some(delivery));
        let Some(last) = last else {
            self.links.insert(delivery, Link::default());
            return Ok(true);
        };
        let mut before = self.link(store, last)?;
        before.next = Some(delivery);
        before.next_due = Some(due_ms);
        self.relink(last, before);
        let link = Link {
            prev: Some(last),
            next: None,
            next_due: None,
        };
        self.relink(delivery, link);
        Ok(false)
    }

    /// The front `delivery` (its link noted) leaves its line. Returns the delivery behind it,
    /// which is now at the front, with its due time where the link knows it: the caller puts
    /// it in the due index (or, if it is no longer pending, makes it leave as well).
    pub(super) fn leave_front(
        &mut self,
        store: &SledStore,
        line: &[u8],
        delivery: DeliveryId,
    ) -> StoreResult<Option<(DeliveryId, Option<u64>)>> {
        let Link { next, next_due, .. } = self.link(store, delivery)?;
        self.links.insert(delivery, Link::default());
        if next.is_none() && self.last(store, line)? == Some(delivery) {
            self.lines.insert(line.to_vec(), None);
        }
        Ok(next.map(|next| (next, next_due)))
    }

    /// The waiting `delivery` is now due at `due_ms` (retried in its place): the link before
    /// it says so.
    pub(super) fn due_changed(
        &mut self,
        store: &SledStore,
        delivery: DeliveryId,
        due_ms: u64,
    ) -> StoreResult<()> {
        if let Some(prev) = self.link(store, delivery)?.prev {
            let mut before = self.link(store, prev)?;
            before.next_due = Some(due_ms);
            self.relink(prev, before);
        }
        Ok(())
    }

    /// The waiting `delivery` leaves its line before its turn (cancelled): its neighbours are
    /// linked to each other.
    pub(super) fn leave_waiting(
        &mut self,
        store: &SledStore,
        line: &[u8],
        delivery: DeliveryId,
    ) -> StoreResult<()> {
        let Link {
            prev,
            next,
            next_due,
        } = self.link(store, delivery)?;
        self.links.insert(delivery, Link::default());
        if let Some(prev) = prev {
            let mut before = self.link(store, prev)?;
            before.next = next;
            before.next_due = next_due;
            self.relink(prev, before);
        }
        match next {
            Some(next) => {
                let mut after = self.link(store, next)?;
                after.prev = prev;
                self.relink(next, after);
            }
            None => {
                self.lines.insert(line.to_vec(), prev);
            }
        }
        Ok(())
    }

    /// The stored value of `delivery` as the caller writes it: its record, and its link while
    /// it is pending (a finished delivery is in no line).
    pub(super) fn record(&self, store: &SledStore, delivery: &Delivery) -> StoreResult<Vec<u8>> {
        let record = store.encode_delivery(delivery)?;
        let link = match delivery.status {
            crate::model::DeliveryStatus::Pending => self.links.get(&delivery.id).copied(),
            _ => None,
        };
        Ok(linked(link.unwrap_or_default(), &record))
    }

    /// Adds the gathered changes to `batch`, then the records of `deliveries` as the caller
    /// changed them (linked while in line), which win over the links' own rewrites.
    pub(super) fn write_with<'a>(
        self,
        store: &SledStore,
        batch: &mut Batch,
        deliveries: impl Iterator<Item = &'a Delivery>,
    ) -> StoreResult<()> {
        let records = deliveries
            .map(|delivery| Ok((keys::delivery(delivery.id), self.record(store, delivery)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(batch);
        for (key, record) in records {
            batch.insert(key, record);
        }
        Ok(())
    }

    /// Adds the gathered changes to `batch`: the lines, the records of deliveries that joined,
    /// and those whose link changed. Call it before the caller's own delivery writes, which
    /// take the links from [`Self::record`] and so win.
    pub(super) fn write(self, batch: &mut Batch) {
        for (key, last) in self.lines {
            match last {
                Some(last) => batch.insert(key, encode_line(last)),
                None => batch.remove(key),
            }
        }
        for (id, record) in &self.created {
            let link = self.links.get(id).copied().unwrap_or_default();
            batch.insert(keys::delivery(*id), linked(link, record));
        }
        for id in self.relinked {
            if let (Some(Some(value)), Some(link)) = (self.stored.get(&id), self.links.get(&id)) {
                batch.insert(keys::delivery(id), linked(*link, split(value).1));
            }
        }
    }
}

/// Deliveries waiting in lines: behind each line's front, found by following the links back
/// from its last delivery (and, in a store not yet upgraded, every `W` place). For counting
/// after a recovery and for `store check`: O(lines + waiting deliveries).
pub(super) fn waiting(tree: &sled::Tree) -> StoreResult<u64> {
    let link_at = |id: DeliveryId| -> StoreResult<Link> {
        Ok(tree
            .get(keys::delivery(id))?
            .map_or(Link::default(), |value| split(&value).0))
    };
    let mut waiting = tree.scan_prefix([keys::WAITING]).count() as u64;
    for entry in tree.scan_prefix([keys::LINE]) {
        let (key, value) = entry?;
        let Ok(last) = decode_line(&key, &value) else {
            continue; // reported by `store check` as unreadable
        };
        let mut seen = std::collections::HashSet::from([last]);
        let mut link = link_at(last)?;
        while let Some(prev) = link.prev {
            let before = link_at(prev)?;
            // The front's predecessor finished: its record has no link.
            if !before.is_linked() || !seen.insert(prev) {
                break;
            }
            link = before;
        }
        waiting += seen.len() as u64 - 1;
    }
    Ok(waiting)
}

/// Rewrites lines of the first layout (waiting deliveries at `W` places, indexed by `R`) into
/// links, one line per batch. Nothing to do, and one seek, for a store that has none.
pub(super) fn upgrade(tree: &sled::Tree) -> StoreResult<()> {
    if tree.scan_prefix([keys::WAITING]).next().is_none() {
        return Ok(());
    }
    let lines: Vec<(IVec, IVec)> = tree.scan_prefix([keys::LINE]).collect::<Result<_, _>>()?;
    let mut upgraded = 0;
    for (key, value) in lines {
        let Ok(line) = super::codec::decode::<PlacedLine>(&key, &value) else {
            continue;
        };
        let mut members = vec![line.front];
        let mut batch = Batch::default();
        for place in line.first_place..line.next_place {
            let mut place_key = vec![keys::WAITING];
            place_key.extend_from_slice(&key[1..]);
            place_key.push(0);
            place_key.extend_from_slice(&place.to_be_bytes());
            if let Some(id) = tree.get(&place_key)? {
                let id = DeliveryId::from_slice(&id)
                    .ok_or_else(|| corrupt(&place_key, "not a delivery id"))?;
                batch.remove(keys::waiting_place(id));
                members.push(id);
            }
            batch.remove(place_key);
        }
        for (i, id) in members.iter().enumerate() {
            let link = Link {
                prev: i.checked_sub(1).map(|i| members[i]),
                next: members.get(i + 1).copied(),
                next_due: None, // read when the line is passed on
            };
            if let Some(value) = tree.get(keys::delivery(*id))? {
                batch.insert(keys::delivery(*id), linked(link, split(&value).1));
            }
        }
        batch.insert(key, encode_line(*members.last().unwrap_or(&line.front)));
        tree.apply_batch(batch)?;
        upgraded += 1;
    }
    tracing::info!(
        lines = upgraded,
        "ordering lines rewritten into linked records"
    );
    Ok(())
}

#[cfg(test)]
#[path = "lines_tests.rs"]
mod tests;
