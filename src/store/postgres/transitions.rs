//! Decided changes of deliveries outside an attempt (replay, retry now, cancel, a bulk
//! replay's batch), all or nothing in one transaction: the lines the changes leave are locked
//! first, then the deliveries (in id order), each checked against the record the decision was
//! based on, then written with one statement; a delivery that leaves the front of its line
//! passes it on in the same transaction.

use std::collections::HashMap;

use sqlx::Row;

use super::lines::Lines;
use super::queue::due_notices;
use super::rows::{self, DELIVERY_COLUMNS, DeliveryColumns};
use super::{PgStore, lock_order, ms};
use crate::model::{Delivery, DeliveryId, DeliveryStatus};
use crate::store::{Notice, ReplayJob, StoreError, StoreResult, Transition};

/// A delivery as stored when a transition is checked against it.
struct Stored {
    delivery: Delivery,
    /// An attempt is in flight under a live lease.
    leased: bool,
    /// It waits in its line (out of the due index).
    waits: bool,
}

impl PgStore {
    pub(super) async fn apply_transitions_now(
        &self,
        transitions: &[Transition],
        job: Option<&ReplayJob>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let mut lines = Lines::lock(
            &mut tx,
            transitions.iter().filter_map(|t| {
                let key = t.release.as_deref()?;
                Some((t.delivery.endpoint_id, key))
            }),
        )
        .await?;
        let ids = lock_order(transitions.iter().map(|t| t.expected.id.0));
        let current = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS}, (d.lease_expires > $2) AS leased, \
             (d.line_place IS NOT NULL) AS waits FROM deliveries d \
             WHERE d.id = ANY($1) ORDER BY d.id FOR UPDATE"
        ))
        .bind(&ids)
        .bind(ms(crate::model::now_ms()))
        .fetch_all(&mut *tx)
        .await?;
        let mut stored = HashMap::new();
        for row in &current {
            let delivery = rows::delivery(&self.sealer, row)?;
            let found = Stored {
                leased: row.try_get::<Option<bool>, _>("leased")?.unwrap_or(false),
                waits: row.try_get("waits")?,
                delivery,
            };
            stored.insert(found.delivery.id, found);
        }
        lines.load_waiting(&mut tx).await?;

        let mut columns = DeliveryColumns::default();
        // Each delivery as this batch leaves it so far: later transitions see earlier ones.
        let mut seen: HashMap<_, &Delivery> = HashMap::new();
        let mut promoted = Vec::new();
        for transition in transitions {
            let id = transition.expected.id;
            let found = stored
                .get(&id)
                .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))?;
            let current = seen.get(&id).copied().unwrap_or(&found.delivery);
            if *current != transition.expected {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} changed meanwhile; try again"
                )));
            }
            let new = &transition.delivery;
            if found.leased && new.status == DeliveryStatus::Pending {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} is being attempted right now"
                )));
            }
            columns.push(&self.sealer, new)?;
            seen.insert(id, new);
            if let Some(key) = transition.release.as_deref().filter(|_| !rows::is_due(new)) {
                let pending = |next: DeliveryId| match seen.get(&next) {
                    Some(delivery) => delivery.status == DeliveryStatus::Pending,
                    None => stored
                        .get(&next)
                        .is_none_or(|s| s.delivery.status == DeliveryStatus::Pending),
                };
                if let Some(next) = lines.leave(new.endpoint_id, key, id, found.waits, pending) {
                    promoted.push((new.endpoint_id, next));
                }
            }
        }
        columns.update(&mut tx).await?;
        let due = lines.write(&mut tx).await?;
        if let Some(job) = job {
            self.put_job_in(&mut tx, job).await?;
        }
        let mut notices = due_notices(transitions.iter().map(|t| &t.delivery));
        notices.extend(
            promoted
                .iter()
                .filter_map(|(endpoint, id)| Some(Notice::Due(*endpoint, *due.get(id)?))),
        );
        Self::notify(&mut tx, notices).await?;
        tx.commit().await?;
        Ok(())
    }
}
