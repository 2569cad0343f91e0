//! Attempt outcomes, one transaction per group: the lines the group's finished deliveries
//! leave, the deliveries and the endpoints are locked in that order, each in key order (so
//! groups recorded on different nodes cannot deadlock), the decided deliveries written where
//! their lease still holds, the lines passed on, then the attempts, the roll-ups, the failure
//! counts and the dedup digests, each as one statement over the whole group.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;
use uuid::Uuid;

use super::leases::Ending;
use super::lines::Lines;
use super::rows::{self, AttemptColumns, DeliveryColumns};
use super::{PgStore, lock_order};
use crate::model::{DeliveryId, EndpointId};
use crate::store::rollup::{bucket, day_of};
use crate::store::{HealthChange, Lease, Outcome, Recorded, StoreError, StoreResult};

impl PgStore {
    pub(super) async fn record_outcomes_now(
        &self,
        outcomes: &[Outcome],
    ) -> StoreResult<Vec<StoreResult<Recorded>>> {
        let leases: Vec<Lease> = outcomes.iter().map(|o| o.lease).collect();
        let ending = self.own_leases.ending(&leases, crate::model::now_ms());
        let written = self.write_outcomes(outcomes, &ending).await;
        self.own_leases.settle(&leases, written.is_ok());
        written
    }

    /// Records a group of outcomes in one transaction, which ends the leases `ending` counts.
    async fn write_outcomes(
        &self,
        outcomes: &[Outcome],
        ending: &Ending,
    ) -> StoreResult<Vec<StoreResult<Recorded>>> {
        let mut tx = self.pool.begin().await?;
        let mut lines = Lines::lock(
            &mut tx,
            outcomes.iter().filter_map(|o| {
                let key = o.release.as_deref()?;
                Some((o.lease.endpoint_id, key))
            }),
        )
        .await?;
        let ids = lock_order(outcomes.iter().map(|o| o.lease.delivery_id.0));
        let rows = sqlx::query(
            "SELECT id, lease_token, (line_place IS NOT NULL) AS waits FROM deliveries \
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut tokens: HashMap<DeliveryId, (Option<Uuid>, bool)> = HashMap::new();
        for row in &rows {
            tokens.insert(
                DeliveryId(row.try_get("id")?),
                (row.try_get("lease_token")?, row.try_get("waits")?),
            );
        }
        lines.load_waiting(&mut tx).await?;

        let mut fresh = DeliveryColumns::default();
        let (mut stale_ids, mut stale_numbers) = (Vec::new(), Vec::new());
        let mut attempts = AttemptColumns::default();
        let mut stale_flags = Vec::with_capacity(outcomes.len());
        // Per outcome: the delivery it brought to the front of its line.
        let mut promoted = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let id = outcome.lease.delivery_id;
            promoted.push(None);
            let Some((token, waits)) = tokens.get(&id) else {
                stale_flags.push(None);
                continue;
            };
            let stale = *token != Some(outcome.lease.token.as_uuid());
            if stale {
                stale_ids.push(id.0);
                stale_numbers.push(i32::try_from(outcome.attempt.attempt).unwrap_or(i32::MAX));
            } else {
                fresh.push(&self.sealer, &outcome.delivery)?;
                if let Some(key) = outcome
                    .release
                    .as_deref()
                    .filter(|_| !rows::is_due(&outcome.delivery))
                {
                    // Deliveries waiting in line are never attempted: the next is pending.
                    let endpoint = outcome.lease.endpoint_id;
                    *promoted.last_mut().expect("pushed above") =
                        lines.leave(endpoint, key, id, *waits, |_| true);
                }
            }
            attempts.push(id, &outcome.attempt);
            stale_flags.push(Some(stale));
        }
        Self::write_deliveries(&mut tx, &fresh, &stale_ids, &stale_numbers).await?;
        let released = lines.write(&mut tx).await?;
        Self::insert_attempts(&mut tx, &attempts).await?;
        let kept: Vec<&Outcome> = outcomes
            .iter()
            .zip(&stale_flags)
            .filter(|(_, flag)| flag.is_some())
            .map(|(o, _)| o)
            .collect();
        Self::add_to_rollups(&mut tx, &kept).await?;
        let (counts, moved) = Self::move_failure_counts(&mut tx, &kept).await?;
        let successes: Vec<&Outcome> = outcomes
            .iter()
            .zip(&stale_flags)
            .filter(|(o, flag)| **flag == Some(false) && o.attempt.success && o.dedup.is_some())
            .map(|(o, _)| o)
            .collect();
        Self::remember_digests(&mut tx, &successes).await?;
        self.add_ended(&mut tx, ending).await?;
        tx.commit().await?;
        if moved {
            self.cache.clear(); // a failure count moved
        }

        let mut counts = counts.into_iter();
        Ok(outcomes
            .iter()
            .zip(stale_flags)
            .zip(promoted)
            .map(|((outcome, flag), promoted)| match flag {
                None => Err(StoreError::NotFound(format!(
                    "delivery {}",
                    outcome.lease.delivery_id
                ))),
                Some(stale) => Ok(Recorded {
                    stale,
                    consecutive_failures: counts.next().unwrap_or(0),
                    released_due: promoted.and_then(|next| released.get(&next).copied()),
                }),
            })
            .collect())
    }

    async fn write_deliveries(
        tx: &mut sqlx::PgConnection,
        fresh: &DeliveryColumns,
        stale_ids: &[Uuid],
        stale_numbers: &[i32],
    ) -> StoreResult<()> {
        fresh.update(&mut *tx).await?;
        if !stale_ids.is_empty() {
            // A stale attempt is kept; the numbering stays ahead of it.
            sqlx::query(
                "UPDATE deliveries d SET total_attempts = GREATEST(d.total_attempts, s.n) \
                 FROM UNNEST($1::uuid[], $2::int[]) AS s(id, n) WHERE d.id = s.id",
            )
            .bind(stale_ids)
            .bind(stale_numbers)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    async fn insert_attempts(tx: &mut sqlx::PgConnection, a: &AttemptColumns) -> StoreResult<()> {
        if a.delivery_id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO attempts (delivery_id, attempt, cycle, started_at, duration_ms, \
             status_code, error, error_detail, response_excerpt, success) \
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::bigint[], \
             $5::bigint[], $6::int[], $7::text[], $8::text[], $9::text[], $10::bool[]) \
             ON CONFLICT (delivery_id, attempt) DO NOTHING",
        )
        .bind(&a.delivery_id)
        .bind(&a.attempt)
        .bind(&a.cycle)
        .bind(&a.started_at)
        .bind(&a.duration_ms)
        .bind(&a.status_code)
        .bind(&a.error)
        .bind(&a.error_detail)
        .bind(&a.response_excerpt)
        .bind(&a.success)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Adds the group's attempts to the daily roll-ups: counts per (endpoint, day), latency
    /// per (endpoint, day, bucket), summed here first so each row is written once.
    async fn add_to_rollups(tx: &mut sqlx::PgConnection, kept: &[&Outcome]) -> StoreResult<()> {
        let mut days: BTreeMap<(Uuid, i32), (i64, i64)> = BTreeMap::new();
        let mut buckets: BTreeMap<(Uuid, i32, i16), i64> = BTreeMap::new();
        for outcome in kept {
            let endpoint = outcome.lease.endpoint_id.0;
            let day = i32::try_from(day_of(outcome.attempt.started_at)).unwrap_or(i32::MAX);
            let counts = days.entry((endpoint, day)).or_default();
            counts.0 += 1;
            counts.1 += i64::from(outcome.attempt.success);
            let b = i16::try_from(bucket(outcome.attempt.duration_ms)).unwrap_or(i16::MAX);
            *buckets.entry((endpoint, day, b)).or_default() += 1;
        }
        if days.is_empty() {
            return Ok(());
        }
        let (mut e, mut d, mut a, mut s) = (vec![], vec![], vec![], vec![]);
        for ((endpoint, day), (attempts, successes)) in days {
            e.push(endpoint);
            d.push(day);
            a.push(attempts);
            s.push(successes);
        }
        sqlx::query(
            "INSERT INTO rollups (endpoint_id, day, attempts, successes) \
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (endpoint_id, day) DO UPDATE SET \
             attempts = rollups.attempts + EXCLUDED.attempts, \
             successes = rollups.successes + EXCLUDED.successes",
        )
        .bind(&e)
        .bind(&d)
        .bind(&a)
        .bind(&s)
        .execute(&mut *tx)
        .await?;
        let (mut e, mut d, mut b, mut n) = (vec![], vec![], vec![], vec![]);
        for ((endpoint, day, bucket), count) in buckets {
            e.push(endpoint);
            d.push(day);
            b.push(bucket);
            n.push(count);
        }
        sqlx::query(
            "INSERT INTO rollup_latency (endpoint_id, day, bucket, n) \
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::smallint[], $4::bigint[]) \
             ON CONFLICT (endpoint_id, day, bucket) DO UPDATE SET n = rollup_latency.n + EXCLUDED.n",
        )
        .bind(&e)
        .bind(&d)
        .bind(&b)
        .bind(&n)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Moves the failure counts of the group's endpoints, in the group's order, and returns
    /// each outcome's count after it (0 for an endpoint that is gone), and whether any count
    /// changed.
    async fn move_failure_counts(
        tx: &mut sqlx::PgConnection,
        kept: &[&Outcome],
    ) -> StoreResult<(Vec<u32>, bool)> {
        let ids = lock_order(kept.iter().map(|o| o.lease.endpoint_id.0));
        let rows = sqlx::query(
            "SELECT id, failures FROM endpoints WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut counts: HashMap<EndpointId, (u32, bool)> = HashMap::new();
        for row in &rows {
            let failures: i32 = row.try_get("failures")?;
            counts.insert(
                EndpointId(row.try_get("id")?),
                (u32::try_from(failures).unwrap_or(0), false),
            );
        }
        let mut after = Vec::with_capacity(kept.len());
        for outcome in kept {
            let Some((count, changed)) = counts.get_mut(&outcome.lease.endpoint_id) else {
                after.push(0);
                continue;
            };
            let before = *count;
            match outcome.health {
                HealthChange::Untouched => {}
                HealthChange::Reset => *count = 0,
                HealthChange::Increment => *count = count.saturating_add(1),
            }
            *changed |= *count != before;
            after.push(*count);
        }
        let (ids, values): (Vec<Uuid>, Vec<i32>) = counts
            .iter()
            .filter(|(_, (_, changed))| *changed)
            .map(|(id, (count, _))| (id.0, i32::try_from(*count).unwrap_or(i32::MAX)))
            .unzip();
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE endpoints e SET failures = u.failures \
                 FROM UNNEST($1::uuid[], $2::int[]) AS u(id, failures) WHERE e.id = u.id",
            )
            .bind(&ids)
            .bind(&values)
            .execute(tx)
            .await?;
        }
        Ok((after, !ids.is_empty()))
    }

    async fn remember_digests(
        tx: &mut sqlx::PgConnection,
        successes: &[&Outcome],
    ) -> StoreResult<()> {
        let mut latest: BTreeMap<(Uuid, String), Vec<u8>> = BTreeMap::new();
        for outcome in successes {
            if let Some((key, digest)) = &outcome.dedup {
                latest.insert((outcome.lease.endpoint_id.0, key.clone()), digest.to_vec());
            }
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (mut e, mut k, mut d) = (vec![], vec![], vec![]);
        for ((endpoint, key), digest) in latest {
            e.push(endpoint);
            k.push(key);
            d.push(digest);
        }
        sqlx::query(
            "INSERT INTO dedup (endpoint_id, key, digest) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[]) \
             ON CONFLICT (endpoint_id, key) DO UPDATE SET digest = EXCLUDED.digest",
        )
        .bind(&e)
        .bind(&k)
        .bind(&d)
        .execute(tx)
        .await?;
        Ok(())
    }
}
