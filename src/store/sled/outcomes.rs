//! Attempt outcomes, recorded in groups.
//!
//! sled writes its log buffer out for every atomic batch, so one batch per group of outcomes
//! instead of one per attempt is what lets delivery throughput grow with concurrency. Within a
//! group, later outcomes see the changes of earlier ones (the same delivery, the same
//! endpoint's failure count and roll-up) before anything is written.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use sled::Batch;

use super::codec::{Health, encode};
use super::lines::LineWrites;
use super::queue::due_key;
use super::{SledStore, keys};
use crate::model::{Delivery, DeliveryId, DeliveryStatus, EndpointId};
use crate::store::rollup::day_of;
use crate::store::{
    DailyRollup, HealthChange, LeaseToken, Outcome, Recorded, StoreError, StoreResult,
};

/// The writes of one group, applied as one batch.
#[derive(Default)]
struct Group {
    batch: Batch,
    deliveries: HashMap<DeliveryId, Delivery>,
    stats: HashMap<Vec<u8>, DailyRollup>,
    /// Each touched endpoint's health, and whether this group changed it.
    health: HashMap<EndpointId, (Health, bool)>,
    added_due: HashSet<Vec<u8>>,
    removed_due: HashSet<Vec<u8>>,
    finished: u64,
    lines: LineWrites,
}

/// What a written group answers, and the due entries it added.
struct Written {
    answers: Vec<StoreResult<Recorded>>,
    added_due: HashSet<Vec<u8>>,
}

impl SledStore {
    pub(super) fn record_outcomes_now(
        &self,
        outcomes: &[Outcome],
    ) -> StoreResult<Vec<StoreResult<Recorded>>> {
        let _writes = self.writes();
        // The group's leases this process still holds are marked, so that no claim takes their
        // deliveries while the group is written (claims do not wait for it), and given up once
        // it is, whether or not the write succeeded (the deliveries are then attempted again).
        let mut held = HashMap::new();
        {
            let mut state = self.state();
            for lease in outcomes.iter().map(|outcome| outcome.lease) {
                if let Some(h) = state.leases.get_mut(&lease.delivery_id)
                    && h.lease.token == lease.token
                {
                    h.recording = true;
                    held.insert(lease.delivery_id, lease.token);
                }
            }
        }
        let written = self.write_outcomes(outcomes, &held);
        let mut state = self.state();
        for (id, token) in held {
            if state
                .leases
                .get(&id)
                .is_some_and(|h| h.lease.token == token)
            {
                state.leases.remove(&id);
            }
        }
        // Entries due again are new to claims; after a failed write, so are the entries of
        // the leases just given up (rare: every endpoint's claims start over).
        match written {
            Ok(Written { answers, added_due }) => {
                for key in added_due {
                    if let Some((endpoint, _, _)) = keys::parse_due(&key) {
                        state.due_appeared(endpoint, &key);
                    }
                }
                Ok(answers)
            }
            Err(e) => {
                state.cursors.clear();
                Err(e)
            }
        }
    }

    /// Writes a group of outcomes as one batch; `held`: the leases among them this process
    /// still holds (the others are stale). Returns the answers and the due entries added.
    fn write_outcomes(
        &self,
        outcomes: &[Outcome],
        held: &HashMap<DeliveryId, LeaseToken>,
    ) -> StoreResult<Written> {
        let mut group = Group::default();
        let mut answers = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let current = held.get(&outcome.lease.delivery_id) == Some(&outcome.lease.token);
            answers.push(self.record_one(&mut group, current, outcome));
        }
        for (key, day) in &group.stats {
            group.batch.insert(key.as_slice(), encode(day)?);
        }
        for (endpoint, (health, changed)) in &group.health {
            if *changed {
                self.cache_mut().forget_health(*endpoint);
                Self::put_health(&mut group.batch, *endpoint, health)?;
            }
        }
        let Group {
            mut batch,
            deliveries,
            lines,
            finished,
            added_due,
            ..
        } = group;
        lines.write_with(self, &mut batch, deliveries.values())?;
        self.apply_counted(batch, 0, finished)?;
        Ok(Written { answers, added_due })
    }

    /// Adds one outcome to `group`; reads see the group's earlier changes first.
    fn record_one(
        &self,
        group: &mut Group,
        held: bool,
        outcome: &Outcome,
    ) -> StoreResult<Recorded> {
        let lease = outcome.lease;
        let id = lease.delivery_id;
        let mut stored = match group.deliveries.remove(&id) {
            Some(delivery) => delivery,
            None => {
                let (delivery, link) = self
                    .linked_delivery_at(id)?
                    .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))?;
                group.lines.note(id, link);
                delivery
            }
        };
        let lease_key = keys::due(lease.endpoint_id, lease.due_ms, id);
        let stale = !held
            || (!group.added_due.contains(&lease_key)
                && (group.removed_due.contains(&lease_key)
                    || !self.tree()?.contains_key(&lease_key)?));
        let attempt = &outcome.attempt;
        group
            .batch
            .insert(keys::attempt(id, attempt.attempt), encode(attempt)?);
        let mut released_due = None;
        if stale {
            // Keep the numbering ahead of every stored attempt.
            stored.total_attempts = stored.total_attempts.max(attempt.attempt);
            group.deliveries.insert(id, stored);
        } else {
            group.added_due.remove(&lease_key);
            group.batch.remove(lease_key.as_slice());
            group.removed_due.insert(lease_key);
            let delivery = outcome.delivery.clone();
            match (delivery.status, delivery.next_attempt_at) {
                (DeliveryStatus::Pending, Some(due)) => {
                    let next_key = keys::due(lease.endpoint_id, due, id);
                    group.batch.insert(next_key.as_slice(), &[]);
                    group.removed_due.remove(&next_key);
                    group.added_due.insert(next_key);
                }
                _ => group.finished += 1,
            }
            if let (true, Some((key, digest))) = (attempt.success, &outcome.dedup) {
                group
                    .batch
                    .insert(keys::dedup(lease.endpoint_id, key), digest.as_slice());
            }
            if let Some(key) = outcome
                .release
                .as_deref()
                .filter(|_| due_key(&delivery).is_none())
            {
                let known = &group.deliveries;
                let read = |id| match known.get(&id) {
                    Some(delivery) => Ok(Some(Delivery::clone(delivery))),
                    None => self.delivery_at(id),
                };
                let line = keys::line(lease.endpoint_id, key);
                let endpoint = lease.endpoint_id;
                if let Some(front) = self.pass_on(&mut group.lines, endpoint, id, &line, read)? {
                    released_due = keys::parse_due(&front).map(|(_, due, _)| due);
                    group.batch.insert(front.as_slice(), &[]);
                    group.removed_due.remove(&front);
                    group.added_due.insert(front);
                }
            }
            group.deliveries.insert(id, delivery);
        }

        let stats_key = keys::stats(lease.endpoint_id, day_of(attempt.started_at));
        let day = match group.stats.entry(stats_key) {
            Entry::Occupied(day) => day.into_mut(),
            Entry::Vacant(slot) => {
                let stored = self.get(slot.key())?.unwrap_or_default();
                slot.insert(stored)
            }
        };
        day.add(attempt.duration_ms, attempt.success);

        if !self.endpoint_exists(lease.endpoint_id)? {
            // Deleted meanwhile: nothing left whose health could change.
            return Ok(Recorded {
                stale,
                consecutive_failures: 0,
                released_due,
            });
        }
        let (health, changed) = match group.health.entry(lease.endpoint_id) {
            Entry::Occupied(health) => health.into_mut(),
            Entry::Vacant(slot) => slot.insert((self.health(lease.endpoint_id)?, false)),
        };
        let before = health.failures;
        match outcome.health {
            HealthChange::Untouched => {}
            HealthChange::Reset => health.failures = 0,
            HealthChange::Increment => health.failures = health.failures.saturating_add(1),
        }
        *changed |= health.failures != before;
        Ok(Recorded {
            stale,
            consecutive_failures: health.failures,
            released_due,
        })
    }
}
