//! Ordering-key lines on PostgreSQL, with the semantics of the [`Store`](crate::store::Store)
//! docs (the sled backend is the reference).
//!
//! A line is a row of `ordering_lines` — its front and the place the next delivery to join
//! takes — and the deliveries waiting behind the front carry their place (`line_place`), which
//! keeps them out of the due index. So:
//!
//! * joining is one upsert of the group's lines (each line's row locked until the commit, so
//!   sends of one key on several nodes take places in the order they are acknowledged);
//! * leaving locks the lines first, then reads the first few waiting deliveries of each (an
//!   index seek at the line's first place), works out the new fronts here, and writes them
//!   with one statement. O(1) statements per group, O(log n) index work per delivery, never a
//!   scan of an endpoint's queue.
//!
//! Lock order, which keeps writers on different nodes from deadlocking: lines (by endpoint,
//! then key byte for byte), then deliveries (by id), then endpoints.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sqlx::Row;
use uuid::Uuid;

use super::unms;
use crate::model::{DeliveryId, EndpointId};
use crate::store::StoreResult;

/// A line's identity.
type LineKey = (EndpointId, String);

/// Where the deliveries of a group of sends stand in their lines: `None` at the front (due),
/// `Some(place)` waiting. Deliveries in no line are absent.
pub(super) type Places = HashMap<DeliveryId, Option<i64>>;

/// Puts each line's joining deliveries (in acceptance order) at its end, in one upsert: a new
/// line's first delivery is its front. Lines are locked in key order.
pub(super) async fn join(
    tx: &mut sqlx::PgConnection,
    joining: BTreeMap<LineKey, Vec<DeliveryId>>,
) -> StoreResult<Places> {
    let mut places = Places::new();
    if joining.is_empty() {
        return Ok(places);
    }
    let (mut endpoints, mut keys, mut fronts, mut counts) = (vec![], vec![], vec![], vec![]);
    for ((endpoint, key), deliveries) in &joining {
        endpoints.push(endpoint.0);
        keys.push(key.as_str());
        fronts.push(deliveries[0].0);
        // A new line: the first is the front, the others take places 0..n-1.
        counts.push(deliveries.len() as i64 - 1);
    }
    let found = sqlx::query(
        "INSERT INTO ordering_lines AS l (endpoint_id, ordering_key, front, next_place) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bigint[]) \
         ON CONFLICT (endpoint_id, ordering_key) DO UPDATE \
         SET next_place = l.next_place + EXCLUDED.next_place + 1 \
         RETURNING endpoint_id, ordering_key, front, next_place",
    )
    .bind(&endpoints)
    .bind(&keys)
    .bind(&fronts)
    .bind(&counts)
    .fetch_all(&mut *tx)
    .await?;
    for row in &found {
        let line = (
            EndpointId(row.try_get("endpoint_id")?),
            row.try_get::<String, _>("ordering_key")?,
        );
        let Some(deliveries) = joining.get(&line) else {
            continue;
        };
        let front: Uuid = row.try_get("front")?;
        let next: i64 = row.try_get("next_place")?;
        if front == deliveries[0].0 {
            places.insert(deliveries[0], None);
            for (place, delivery) in (0..).zip(&deliveries[1..]) {
                places.insert(*delivery, Some(place));
            }
        } else {
            let first = next - deliveries.len() as i64;
            for (place, delivery) in (first..).zip(deliveries) {
                places.insert(*delivery, Some(place));
            }
        }
    }
    Ok(places)
}

/// One locked line while deliveries leave it.
#[derive(Debug)]
struct Line {
    /// `None` once the line is empty.
    front: Option<DeliveryId>,
    /// The first waiting deliveries, in place order: as many as may leave in this write.
    waiting: VecDeque<DeliveryId>,
    /// Deliveries expected to leave this line in this write.
    leaving: i64,
    changed: bool,
}

/// The lines one write makes deliveries leave; see [`Lines::leave`].
#[derive(Debug, Default)]
pub(super) struct Lines {
    lines: BTreeMap<LineKey, Line>,
    /// Deliveries whose place is given up: they left while waiting, or are now at a front.
    cleared: Vec<Uuid>,
}

impl Lines {
    /// Locks the lines that `leaving` deliveries (endpoint, key) may leave, in lock order.
    /// Call it before locking any delivery of the write.
    pub(super) async fn lock<'a>(
        tx: &mut sqlx::PgConnection,
        leaving: impl IntoIterator<Item = (EndpointId, &'a str)>,
    ) -> StoreResult<Lines> {
        let mut counts: BTreeMap<LineKey, i64> = BTreeMap::new();
        for (endpoint, key) in leaving {
            *counts.entry((endpoint, key.to_string())).or_default() += 1;
        }
        let mut lines = Lines::default();
        if counts.is_empty() {
            return Ok(lines);
        }
        let (endpoints, keys): (Vec<Uuid>, Vec<&str>) =
            counts.keys().map(|(e, k)| (e.0, k.as_str())).unzip();
        let found = sqlx::query(
            "SELECT l.endpoint_id, l.ordering_key, l.front FROM ordering_lines l \
             JOIN UNNEST($1::uuid[], $2::text[]) AS k(endpoint_id, ordering_key) \
             ON l.endpoint_id = k.endpoint_id AND l.ordering_key = k.ordering_key COLLATE \"C\" \
             ORDER BY l.endpoint_id, l.ordering_key FOR UPDATE OF l",
        )
        .bind(&endpoints)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        for row in &found {
            let key: LineKey = (
                EndpointId(row.try_get("endpoint_id")?),
                row.try_get("ordering_key")?,
            );
            let leaving = counts.get(&key).copied().unwrap_or(1);
            lines.lines.insert(
                key,
                Line {
                    front: Some(DeliveryId(row.try_get("front")?)),
                    waiting: VecDeque::new(),
                    leaving,
                    changed: false,
                },
            );
        }
        Ok(lines)
    }

    /// Reads the first waiting deliveries of each locked line: one per delivery that may
    /// leave it, which is as many as can come to its front. A statement of its own, after
    /// the lines are locked, so that it sees every place taken before the locks were granted.
    pub(super) async fn load_waiting(&mut self, tx: &mut sqlx::PgConnection) -> StoreResult<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let mut endpoints = Vec::with_capacity(self.lines.len());
        let mut keys = Vec::with_capacity(self.lines.len());
        let mut counts = Vec::with_capacity(self.lines.len());
        for ((endpoint, key), line) in &self.lines {
            endpoints.push(endpoint.0);
            keys.push(key.as_str());
            counts.push(line.leaving);
        }
        let found = sqlx::query(
            "SELECT k.endpoint_id, k.ordering_key, w.id, w.line_place \
             FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS k(endpoint_id, ordering_key, n) \
             CROSS JOIN LATERAL (SELECT d.id, d.line_place FROM deliveries d \
                 WHERE d.endpoint_id = k.endpoint_id \
                 AND d.ordering_key = k.ordering_key COLLATE \"C\" \
                 AND d.line_place IS NOT NULL ORDER BY d.line_place LIMIT k.n) AS w",
        )
        .bind(&endpoints)
        .bind(&keys)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?;
        let mut waiting: BTreeMap<LineKey, Vec<(i64, DeliveryId)>> = BTreeMap::new();
        for row in &found {
            let key = (
                EndpointId(row.try_get("endpoint_id")?),
                row.try_get("ordering_key")?,
            );
            waiting
                .entry(key)
                .or_default()
                .push((row.try_get("line_place")?, DeliveryId(row.try_get("id")?)));
        }
        for (key, mut places) in waiting {
            places.sort_unstable();
            if let Some(line) = self.lines.get_mut(&key) {
                line.waiting = places.into_iter().map(|(_, id)| id).collect();
            }
        }
        Ok(())
    }

    /// `delivery` (finished) leaves its line for `key`; `waits` says whether it was stored
    /// with a place. When it was at the front, the first waiting delivery that is still
    /// pending (`pending`) comes to the front and is returned: it enters the due index when
    /// [`Lines::write`] clears its place.
    pub(super) fn leave(
        &mut self,
        endpoint: EndpointId,
        key: &str,
        delivery: DeliveryId,
        waits: bool,
        pending: impl Fn(DeliveryId) -> bool,
    ) -> Option<DeliveryId> {
        let line = self.lines.get_mut(&(endpoint, key.to_string()))?;
        if line.front != Some(delivery) {
            if waits {
                line.waiting.retain(|d| *d != delivery);
                self.cleared.push(delivery.0);
            }
            return None;
        }
        line.changed = true;
        while let Some(next) = line.waiting.pop_front() {
            self.cleared.push(next.0);
            line.front = Some(next);
            // Waiting deliveries are pending (one that finishes gives up its place); should
            // one not be, it leaves as well rather than block the line.
            if pending(next) {
                return Some(next);
            }
        }
        line.front = None;
        None
    }

    /// Writes the new fronts (an emptied line is removed) and clears the places given up, in
    /// one statement. Returns the due time of each delivery that came to a front.
    pub(super) async fn write(
        self,
        tx: &mut sqlx::PgConnection,
    ) -> StoreResult<HashMap<DeliveryId, u64>> {
        let (mut emptied_endpoints, mut emptied_keys) = (vec![], vec![]);
        let (mut moved_endpoints, mut moved_keys, mut fronts) = (vec![], vec![], vec![]);
        for ((endpoint, key), line) in &self.lines {
            match (line.changed, line.front) {
                (false, _) => {}
                (true, None) => {
                    emptied_endpoints.push(endpoint.0);
                    emptied_keys.push(key.as_str());
                }
                (true, Some(front)) => {
                    moved_endpoints.push(endpoint.0);
                    moved_keys.push(key.as_str());
                    fronts.push(front.0);
                }
            }
        }
        if emptied_endpoints.is_empty() && moved_endpoints.is_empty() && self.cleared.is_empty() {
            return Ok(HashMap::new());
        }
        let found = sqlx::query(
            "WITH emptied AS (DELETE FROM ordering_lines l \
                 USING UNNEST($1::uuid[], $2::text[]) AS x(endpoint_id, ordering_key) \
                 WHERE l.endpoint_id = x.endpoint_id \
                 AND l.ordering_key = x.ordering_key COLLATE \"C\"), \
             moved AS (UPDATE ordering_lines l SET front = x.front \
                 FROM UNNEST($3::uuid[], $4::text[], $5::uuid[]) AS x(endpoint_id, ordering_key, front) \
                 WHERE l.endpoint_id = x.endpoint_id \
                 AND l.ordering_key = x.ordering_key COLLATE \"C\") \
             UPDATE deliveries d SET line_place = NULL WHERE d.id = ANY($6) \
             RETURNING d.id, d.next_attempt_at",
        )
        .bind(&emptied_endpoints)
        .bind(&emptied_keys)
        .bind(&moved_endpoints)
        .bind(&moved_keys)
        .bind(&fronts)
        .bind(&self.cleared)
        .fetch_all(&mut *tx)
        .await?;
        let mut due = HashMap::new();
        for row in &found {
            if let Some(at) = row.try_get::<Option<i64>, _>("next_attempt_at")? {
                due.insert(DeliveryId(row.try_get("id")?), unms(at));
            }
        }
        Ok(due)
    }
}
