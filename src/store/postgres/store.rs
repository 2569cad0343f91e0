//! The [`Store`] trait over the PostgreSQL backend: the writes live in the sibling modules;
//! the reads, the retention purge and the bulk replay jobs live here.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::rows::{self, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, MESSAGE_COLUMNS};
use super::{PgStore, ms, unms};
use crate::model::{Attempt, Delivery, DeliveryId, Endpoint, EndpointId, Message, MessageId};
use crate::store::{
    BackupReport, Claim, Closing, DailyRollup, DeliveryFilter, Inserted, Lease, MAX_PAYLOAD_BYTES,
    MessageWrite, Notice, Outcome, PurgeCursor, PurgePage, Recorded, ReplayJob, ReplayState,
    StartRequest, Store, StoreError, StoreResult, Transition,
};

/// A job whose node made no progress for this long is taken over by another node.
const JOB_STALE_MS: u64 = 30_000;

/// The purge's phases, in order; the cursor is the phase byte.
const PURGE_MESSAGES: u8 = b'M';
const PURGE_ATTEMPTS: u8 = b'A';
const PURGE_ROLLUPS: u8 = b'S';

impl PgStore {
    /// Stores a job's progress in `tx`, owned by this node from now on.
    pub(super) async fn put_job_in(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &ReplayJob,
    ) -> StoreResult<()> {
        let record =
            serde_json::to_value(job).map_err(|e| StoreError::Backend(format!("job: {e}")))?;
        sqlx::query(
            "INSERT INTO replay_jobs (id, record, running, owner, heartbeat) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             record = EXCLUDED.record, running = EXCLUDED.running, owner = EXCLUDED.owner, \
             heartbeat = EXCLUDED.heartbeat",
        )
        .bind(job.id)
        .bind(record)
        .bind(job.state == ReplayState::Running)
        .bind(self.node)
        .bind(ms(crate::model::now_ms()))
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Phase 1: finished messages created before the cutoff, with their deliveries and
    /// attempts; a message with a pending delivery is never removed.
    async fn purge_messages(
        &self,
        cutoff: i64,
        after: Uuid,
        budget: i64,
    ) -> StoreResult<(PurgePage, Option<Vec<u8>>)> {
        let mut tx = self.pool.begin().await?;
        let candidates: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE id > $1 AND created_at < $2 ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(cutoff)
        .bind(budget)
        .fetch_all(&mut *tx)
        .await?;
        let removed: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM messages m WHERE m.id = ANY($1) AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status = 0) \
             RETURNING m.id",
        )
        .bind(&candidates)
        .fetch_all(&mut *tx)
        .await?;
        let deliveries: Vec<Uuid> =
            sqlx::query_scalar("DELETE FROM deliveries WHERE message_id = ANY($1) RETURNING id")
                .bind(&removed)
                .fetch_all(&mut *tx)
                .await?;
        let attempts = sqlx::query("DELETE FROM attempts WHERE delivery_id = ANY($1)")
            .bind(&deliveries)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        let page = PurgePage {
            messages: removed.len() as u64,
            deliveries: deliveries.len() as u64,
            attempts,
            ..PurgePage::default()
        };
        let next = match candidates.last() {
            Some(last) if candidates.len() as i64 == budget => {
                let mut cursor = vec![PURGE_MESSAGES];
                cursor.extend_from_slice(last.as_bytes());
                cursor
            }
            _ => vec![PURGE_ATTEMPTS],
        };
        Ok((page, Some(next)))
    }

    /// Deletes at most `budget` rows of `table` whose `column` is below `before`: a bounded
    /// delete that does not hold the hot path's rows for long.
    async fn delete_before(
        &self,
        table: &str,
        column: &str,
        before: i64,
        budget: i64,
    ) -> StoreResult<u64> {
        Ok(sqlx::query(&format!(
            "DELETE FROM {table} WHERE ctid IN \
             (SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2)"
        ))
        .bind(before)
        .bind(budget)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Drops the lease totals of nodes that claimed nothing for an hour (gone, mostly: every
    /// node restart is a new node). A live node's next claim publishes its totals afresh.
    async fn forget_gone_nodes(&self) -> StoreResult<()> {
        let hour_ago = crate::model::now_ms().saturating_sub(3_600_000);
        sqlx::query(
            "WITH gone AS (DELETE FROM lease_counts WHERE expires < $1 \
                 RETURNING endpoint_id, node) \
             DELETE FROM lease_ends e USING gone \
             WHERE e.endpoint_id = gone.endpoint_id AND e.node = gone.node",
        )
        .bind(ms(hour_ago))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Phases 2 and 3: old attempts of kept deliveries, old roll-ups; in bounded deletes.
    async fn purge_old(
        &self,
        phase: u8,
        cutoff: i64,
        budget: i64,
    ) -> StoreResult<(PurgePage, Option<Vec<u8>>)> {
        let mut page = PurgePage::default();
        let (removed, next) = if phase == PURGE_ATTEMPTS {
            let removed = self
                .delete_before("attempts", "started_at", cutoff, budget)
                .await?;
            page.attempts = removed;
            (removed, PURGE_ROLLUPS)
        } else {
            let day = i64::from(crate::store::day_of(unms(cutoff)));
            self.delete_before("rollup_latency", "day", day, budget)
                .await?;
            let removed = self.delete_before("rollups", "day", day, budget).await?;
            page.rollups = removed;
            self.forget_gone_nodes().await?;
            (removed, 0)
        };
        let next = if removed as i64 == budget {
            Some(vec![phase]) // more of the same phase
        } else if next == 0 {
            None
        } else {
            Some(vec![next])
        };
        Ok((page, next))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()> {
        self.put_endpoint_now(endpoint).await
    }

    async fn endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        self.endpoint_now(id).await
    }

    async fn endpoints(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>> {
        self.endpoints_now(tenant).await
    }

    async fn disable_endpoint(
        &self,
        id: EndpointId,
        now_ms: u64,
        reason: &str,
    ) -> StoreResult<bool> {
        self.disable_endpoint_now(id, now_ms, reason).await
    }

    async fn enable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<Option<Endpoint>> {
        self.enable_endpoint_now(id, now_ms).await
    }

    async fn delete_endpoint(&self, id: EndpointId, closing: &Closing) -> StoreResult<Option<u64>> {
        self.delete_endpoint_now(id, closing).await
    }

    async fn deleted_endpoint_url(&self, id: EndpointId) -> StoreResult<Option<String>> {
        self.deleted_endpoint_url_now(id).await
    }

    async fn insert_messages(&self, writes: &[MessageWrite]) -> StoreResult<Vec<Inserted>> {
        self.insert_messages_now(writes).await
    }

    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rows::message(&self.sealer, &row)).transpose()
    }

    async fn message_deliveries(&self, id: MessageId) -> StoreResult<Vec<Delivery>> {
        let found = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.message_id = $1 ORDER BY d.id"
        ))
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|row| rows::delivery(&self.sealer, row))
            .collect()
    }

    async fn delivery(&self, id: DeliveryId) -> StoreResult<Option<Delivery>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rows::delivery(&self.sealer, &row))
            .transpose()
    }

    async fn attempts(&self, id: DeliveryId) -> StoreResult<Vec<Attempt>> {
        let found = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY attempt"
        ))
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::attempt).collect()
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        // UUIDv7 ids sort by creation time: the time bounds and the cursor are id bounds.
        let since = filter.since_ms.map(first_id_at);
        let until = filter.until_ms.map(first_id_at);
        let (cursor_op, order) = if filter.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let endpoints: Vec<Uuid> = filter
            .endpoint_ids
            .iter()
            .map(|e| e.0)
            .chain(filter.endpoint_id.map(|e| e.0))
            .collect();
        let found = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d \
             WHERE ($1::smallint IS NULL OR d.status = $1) \
             AND ($2::uuid IS NULL OR d.endpoint_id = $2) \
             AND (cardinality($3::uuid[]) = 0 OR d.endpoint_id = ANY($3)) \
             AND ($4::uuid IS NULL OR d.id >= $4) AND ($5::uuid IS NULL OR d.id < $5) \
             AND ($6::uuid IS NULL OR d.id {cursor_op} $6) \
             ORDER BY d.id {order} LIMIT $7"
        ))
        .bind(filter.status.map(rows::status_code))
        .bind(filter.endpoint_id.map(|e| e.0))
        .bind(if filter.endpoint_ids.is_empty() {
            Vec::new()
        } else {
            endpoints
        })
        .bind(since)
        .bind(until)
        .bind(filter.after.map(|a| a.0))
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|row| rows::delivery(&self.sealer, row))
            .collect()
    }

    async fn endpoint_days(
        &self,
        endpoint: EndpointId,
        first: u32,
        last: u32,
    ) -> StoreResult<Vec<(u32, DailyRollup)>> {
        let day = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
        let counts = sqlx::query(
            "SELECT day, attempts, successes FROM rollups \
             WHERE endpoint_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
        )
        .bind(endpoint.0)
        .bind(day(first))
        .bind(day(last))
        .fetch_all(&self.pool)
        .await?;
        let buckets = sqlx::query(
            "SELECT day, bucket, n FROM rollup_latency \
             WHERE endpoint_id = $1 AND day BETWEEN $2 AND $3",
        )
        .bind(endpoint.0)
        .bind(day(first))
        .bind(day(last))
        .fetch_all(&self.pool)
        .await?;
        let mut histograms: std::collections::HashMap<i32, Vec<(usize, u64)>> = Default::default();
        for row in &buckets {
            let bucket: i16 = row.try_get("bucket")?;
            let n: i64 = row.try_get("n")?;
            histograms
                .entry(row.try_get("day")?)
                .or_default()
                .push((usize::try_from(bucket).unwrap_or(0), unms(n)));
        }
        counts
            .iter()
            .map(|row| {
                let d: i32 = row.try_get("day")?;
                let rollup = DailyRollup::from_parts(
                    unms(row.try_get("attempts")?),
                    unms(row.try_get("successes")?),
                    histograms.remove(&d).unwrap_or_default(),
                );
                Ok((u32::try_from(d).unwrap_or(0), rollup))
            })
            .collect()
    }

    async fn dedup_digest(&self, endpoint: EndpointId, key: &str) -> StoreResult<Option<[u8; 32]>> {
        let digest: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT digest FROM dedup WHERE endpoint_id = $1 AND key = $2")
                .bind(endpoint.0)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(digest.and_then(|d| d.try_into().ok()))
    }

    async fn due_heads(&self, now_ms: u64) -> StoreResult<Vec<(EndpointId, u64)>> {
        self.due_head_now(None, now_ms).await
    }

    async fn due_head(&self, endpoint: EndpointId, now_ms: u64) -> StoreResult<Option<u64>> {
        Ok(self
            .due_head_now(Some(endpoint), now_ms)
            .await?
            .first()
            .map(|(_, head)| *head))
    }

    async fn claim(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
        limit: usize,
        lease_for: Duration,
        max_leased: usize,
        settling: &[DeliveryId],
    ) -> StoreResult<Vec<Claim>> {
        self.claim_now(endpoint, now_ms, limit, lease_for, max_leased, settling)
            .await
    }

    async fn release(&self, leases: &[Lease]) -> StoreResult<()> {
        self.release_now(leases).await
    }

    async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
    ) -> StoreResult<Vec<StoreResult<Recorded>>> {
        self.record_outcomes_now(outcomes).await
    }

    async fn apply_transitions(
        &self,
        transitions: &[Transition],
        job: Option<&ReplayJob>,
    ) -> StoreResult<()> {
        self.apply_transitions_now(transitions, job).await
    }

    async fn purge_page(
        &self,
        cutoff_ms: u64,
        cursor: Option<PurgeCursor>,
        budget: usize,
    ) -> StoreResult<PurgePage> {
        let cursor = cursor.map_or_else(|| vec![PURGE_MESSAGES], |c| c.0);
        let budget = i64::try_from(budget.max(1)).unwrap_or(i64::MAX);
        let cutoff = ms(cutoff_ms);
        let (mut page, next) = match cursor.split_first() {
            Some((&PURGE_MESSAGES, after)) => {
                let after = Uuid::from_slice(after).unwrap_or(Uuid::nil());
                self.purge_messages(cutoff, after, budget).await?
            }
            Some((&phase, _)) if phase == PURGE_ATTEMPTS || phase == PURGE_ROLLUPS => {
                self.purge_old(phase, cutoff, budget).await?
            }
            _ => (PurgePage::default(), None),
        };
        page.next = next.map(PurgeCursor);
        Ok(page)
    }

    async fn put_job(&self, job: &ReplayJob) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        self.put_job_in(&mut conn, job).await
    }

    async fn job(&self, id: Uuid) -> StoreResult<Option<ReplayJob>> {
        let record: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT record FROM replay_jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        record
            .map(|r| serde_json::from_value(r).map_err(|e| StoreError::Backend(e.to_string())))
            .transpose()
    }

    async fn adopt_jobs(&self, now_ms: u64) -> StoreResult<Vec<ReplayJob>> {
        let records: Vec<serde_json::Value> = sqlx::query_scalar(
            "UPDATE replay_jobs SET owner = $1, heartbeat = $2 \
             WHERE running AND owner IS DISTINCT FROM $1 AND heartbeat < $3 RETURNING record",
        )
        .bind(self.node)
        .bind(ms(now_ms))
        .bind(ms(now_ms.saturating_sub(JOB_STALE_MS)))
        .fetch_all(&self.pool)
        .await?;
        records
            .into_iter()
            .map(|r| serde_json::from_value(r).map_err(|e| StoreError::Backend(e.to_string())))
            .collect()
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        // Due or leased, and waiting in a line: each partial index counts its own.
        let count: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM deliveries WHERE status = 0 AND line_place IS NULL) \
             + (SELECT count(*) FROM deliveries WHERE line_place IS NOT NULL AND status = 0)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(unms(count))
    }

    async fn sync(&self) -> StoreResult<()> {
        Ok(()) // every write is a committed transaction
    }

    fn shared(&self) -> bool {
        true
    }

    async fn reserve_start(
        &self,
        endpoint: EndpointId,
        request: StartRequest,
    ) -> StoreResult<Option<Duration>> {
        self.reserve_start_now(endpoint, request).await.map(Some)
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }

    async fn check(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn max_payload_bytes(&self) -> usize {
        MAX_PAYLOAD_BYTES
    }

    async fn size_on_disk(&self) -> StoreResult<Option<u64>> {
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(unms(size)))
    }

    async fn backup(&self, _to: &std::path::Path) -> StoreResult<BackupReport> {
        Err(StoreError::Unsupported(
            "the PostgreSQL store is backed up with the database's own tools (pg_dump, \
             continuous archiving), not by herald"
                .into(),
        ))
    }
}

/// The smallest UUIDv7 minted at `ms`: the time bound of an id range.
fn first_id_at(ms: u64) -> Uuid {
    Uuid::from_u128(u128::from(ms) << 80)
}
