//! Ordering-key lines: for each (endpoint, ordering key), the pending deliveries of messages
//! with that key, in acceptance order.
//!
//! * `H endpoint key` is the line: the delivery at its front (the only one in the due index),
//!   the first place that may be taken behind it and the next free one;
//! * `W endpoint key 0 place` → the delivery waiting at that place, so the next delivery is a
//!   point read (a place given up early is a gap, passed over once);
//! * `R delivery` → its `W` key, so that a waiting delivery that finishes early (cancelled)
//!   gives up its place directly, and a write can tell that a delivery is waiting.
//!
//! A delivery joins at the end (at the front when the line is empty). When the front leaves,
//! the first waiting delivery becomes the front, and the caller puts it in the due index in the
//! same batch. Every step is a few point reads and writes: O(1) per delivery (O(log n) in the
//! tree), never a scan — not of the endpoint's queue, nor of the line (sled's iterators copy
//! whole leaf nodes, which made a seek per delivery cost a third of the throughput).
//!
//! The changes of one batch are gathered in [`LineWrites`], whose reads see the batch's earlier
//! changes, and written with the rest of the batch.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sled::Batch;

use super::codec::{decode, encode};
use super::{SledStore, keys};
use crate::model::{DeliveryId, EndpointId};
use crate::store::StoreResult;

/// One line, as stored under its `H` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    /// The delivery at the front: in the due index, attempted before any other of the line.
    front: DeliveryId,
    /// Every waiting delivery has a place in `first_place..next_place`.
    first_place: u64,
    /// The place the next delivery to join takes.
    next_place: u64,
}

/// The line changes of one batch; `None` values are removals.
#[derive(Default)]
pub(super) struct LineWrites {
    lines: HashMap<Vec<u8>, Option<Line>>,
    waiting: HashMap<Vec<u8>, Option<DeliveryId>>,
    places: HashMap<DeliveryId, Option<Vec<u8>>>,
}

impl LineWrites {
    fn line(&self, store: &SledStore, key: &[u8]) -> StoreResult<Option<Line>> {
        match self.lines.get(key) {
            Some(line) => Ok(*line),
            None => store.get(key),
        }
    }

    /// The `W` key of a waiting delivery, if it waits.
    fn place(&self, store: &SledStore, delivery: DeliveryId) -> StoreResult<Option<Vec<u8>>> {
        match self.places.get(&delivery) {
            Some(place) => Ok(place.clone()),
            None => Ok(store
                .tree()?
                .get(keys::waiting_place(delivery))?
                .map(|v| v.to_vec())),
        }
    }

    /// True while `delivery` waits behind the front of its line (out of the due index).
    pub(super) fn is_waiting(&self, store: &SledStore, delivery: DeliveryId) -> StoreResult<bool> {
        Ok(self.place(store, delivery)?.is_some())
    }

    /// The delivery waiting at a place, if any.
    fn waiting_at(&self, store: &SledStore, place: &[u8]) -> StoreResult<Option<DeliveryId>> {
        match self.waiting.get(place) {
            Some(delivery) => Ok(*delivery),
            None => match store.tree()?.get(place)? {
                Some(value) => DeliveryId::from_slice(&value)
                    .map(Some)
                    .ok_or_else(|| super::codec::corrupt(place, "not a delivery id")),
                None => Ok(None),
            },
        }
    }

    /// `delivery` joins the end of its line; true when it is at the front (due now), false
    /// when it waits behind others.
    pub(super) fn join(
        &mut self,
        store: &SledStore,
        endpoint: EndpointId,
        ordering_key: &str,
        delivery: DeliveryId,
    ) -> StoreResult<bool> {
        let line_key = keys::line(endpoint, ordering_key);
        match self.line(store, &line_key)? {
            None => {
                let line = Line {
                    front: delivery,
                    first_place: 0,
                    next_place: 0,
                };
                self.lines.insert(line_key, Some(line));
                Ok(true)
            }
            Some(mut line) => {
                let place = keys::waiting(endpoint, ordering_key, line.next_place);
                line.next_place += 1;
                self.lines.insert(line_key, Some(line));
                self.waiting.insert(place.clone(), Some(delivery));
                self.places.insert(delivery, Some(place));
                Ok(false)
            }
        }
    }

    /// `delivery` leaves its line. Returns the delivery that is now at the front, when
    /// `delivery` was at the front and another was waiting: the caller puts it in the due
    /// index (or, if it is no longer pending, makes it leave as well).
    pub(super) fn leave(
        &mut self,
        store: &SledStore,
        endpoint: EndpointId,
        ordering_key: &str,
        delivery: DeliveryId,
    ) -> StoreResult<Option<DeliveryId>> {
        let line_key = keys::line(endpoint, ordering_key);
        let Some(mut line) = self.line(store, &line_key)? else {
            return Ok(None);
        };
        if line.front != delivery {
            if let Some(place) = self.place(store, delivery)? {
                self.waiting.insert(place, None);
                self.places.insert(delivery, None);
            }
            return Ok(None);
        }
        while line.first_place < line.next_place {
            let place = keys::waiting(endpoint, ordering_key, line.first_place);
            line.first_place += 1;
            if let Some(next) = self.waiting_at(store, &place)? {
                self.waiting.insert(place, None);
                self.places.insert(next, None);
                line.front = next;
                self.lines.insert(line_key, Some(line));
                return Ok(Some(next));
            }
        }
        self.lines.insert(line_key, None);
        Ok(None)
    }

    /// Adds the gathered changes to `batch`.
    pub(super) fn write(self, batch: &mut Batch) -> StoreResult<()> {
        for (key, line) in self.lines {
            match line {
                Some(line) => batch.insert(key, encode(&line)?),
                None => batch.remove(key),
            }
        }
        for (key, delivery) in self.waiting {
            match delivery {
                Some(id) => batch.insert(key, id.as_bytes()),
                None => batch.remove(key),
            }
        }
        for (delivery, place) in self.places {
            match place {
                Some(place) => batch.insert(keys::waiting_place(delivery), place),
                None => batch.remove(keys::waiting_place(delivery)),
            }
        }
        Ok(())
    }
}

/// Decodes a stored line record (for `store check`).
pub(super) fn readable(key: &[u8], value: &[u8]) -> bool {
    decode::<Line>(key, value).is_ok()
}
