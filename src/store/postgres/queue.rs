//! Messages in, due heads, leases.
//!
//! A group of sends is one transaction: the messages in one `INSERT ... SELECT FROM UNNEST`
//! (the unique index on tenant and idempotency key settles concurrent sends of the same key,
//! on any node), the group's ordering-key lines in one upsert (when it has keyed messages),
//! the deliveries in another, one notice per endpoint, one commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::leases::Ending;
use super::lines;
use super::rows::{self, DELIVERY_COLUMNS, DeliveryColumns, LineColumns, is_due};
use super::{PgStore, ms, unms};
use crate::model::{DeliveryId, DeliveryStatus, EndpointId, MessageId};
use crate::store::{
    Claim, Inserted, Lease, LeaseToken, MessageWrite, Notice, StoreError, StoreResult,
};

/// The earliest due time per endpoint among `deliveries`, as notices for the other nodes.
pub(super) fn due_notices<'a>(
    deliveries: impl Iterator<Item = &'a crate::model::Delivery>,
) -> Vec<Notice> {
    let mut earliest: BTreeMap<EndpointId, u64> = BTreeMap::new();
    for d in deliveries.filter(|d| d.status == DeliveryStatus::Pending) {
        if let Some(due) = d.next_attempt_at {
            let entry = earliest.entry(d.endpoint_id).or_insert(due);
            *entry = (*entry).min(due);
        }
    }
    earliest
        .into_iter()
        .map(|(endpoint, due)| Notice::Due(endpoint, due))
        .collect()
}

impl PgStore {
    pub(super) async fn insert_messages_now(
        &self,
        writes: &[MessageWrite],
    ) -> StoreResult<Vec<Inserted>> {
        let mut ids = Vec::with_capacity(writes.len());
        let (mut tenants, mut events, mut payloads, mut urls) = (vec![], vec![], vec![], vec![]);
        let (mut idem, mut dedup, mut ordering, mut created) = (vec![], vec![], vec![], vec![]);
        let mut traceparents = Vec::with_capacity(writes.len());
        for write in writes {
            let m = &write.message;
            ids.push(m.id.0);
            tenants.push(m.tenant.clone());
            events.push(m.event_type.clone());
            payloads.push(m.payload.get().to_string());
            urls.push(rows::seal_url(&self.sealer, m.callback_url.as_deref())?);
            idem.push(m.idempotency_key.clone());
            dedup.push(m.dedup_key.clone());
            ordering.push(m.ordering_key.clone());
            traceparents.push(m.traceparent.clone());
            created.push(ms(m.created_at));
        }
        let mut tx = self.pool.begin().await?;
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO messages (id, tenant, event_type, payload, callback_url, \
             idempotency_key, dedup_key, ordering_key, created_at, traceparent) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
             $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[]) \
             ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING id",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&events)
        .bind(&payloads)
        .bind(&urls)
        .bind(&idem)
        .bind(&dedup)
        .bind(&ordering)
        .bind(&created)
        .bind(&traceparents)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // The messages that were not inserted carry a key already used: find whose.
        let mut existing: HashMap<(String, String), MessageId> = HashMap::new();
        let repeated: Vec<&MessageWrite> = writes
            .iter()
            .filter(|w| !inserted.contains(&w.message.id.0))
            .collect();
        if !repeated.is_empty() {
            let tenants: Vec<&str> = repeated.iter().map(|w| w.message.tenant.as_str()).collect();
            let keys: Vec<&str> = repeated
                .iter()
                .map(|w| w.message.idempotency_key.as_deref().unwrap_or(""))
                .collect();
            let found = sqlx::query(
                "SELECT m.id, m.tenant, m.idempotency_key FROM messages m \
                 JOIN UNNEST($1::text[], $2::text[]) AS k(tenant, key) \
                 ON m.tenant = k.tenant AND m.idempotency_key = k.key",
            )
            .bind(&tenants)
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            for row in found {
                let key = (row.try_get("tenant")?, row.try_get("idempotency_key")?);
                existing.insert(key, MessageId(row.try_get("id")?));
            }
        }
        let mut answers = Vec::with_capacity(writes.len());
        let mut joining: BTreeMap<(EndpointId, String), Vec<DeliveryId>> = BTreeMap::new();
        for write in writes {
            if inserted.contains(&write.message.id.0) {
                if let Some(key) = &write.message.ordering_key {
                    for delivery in write.deliveries.iter().filter(|d| is_due(d)) {
                        joining
                            .entry((delivery.endpoint_id, key.clone()))
                            .or_default()
                            .push(delivery.id);
                    }
                }
                answers.push(Inserted::Created);
            } else {
                let key = (
                    write.message.tenant.clone(),
                    write.message.idempotency_key.clone().unwrap_or_default(),
                );
                let id = existing.get(&key).copied().ok_or_else(|| {
                    StoreError::Backend(format!(
                        "message {} was neither stored nor found by its idempotency key",
                        write.message.id
                    ))
                })?;
                answers.push(Inserted::Existing(id));
            }
        }
        let places = lines::join(&mut tx, joining).await?;
        let mut columns = DeliveryColumns::default();
        let mut lined = LineColumns::default();
        let created: Vec<&MessageWrite> = writes
            .iter()
            .filter(|w| inserted.contains(&w.message.id.0))
            .collect();
        for write in &created {
            for delivery in &write.deliveries {
                columns.push(&self.sealer, delivery)?;
                let place = places.get(&delivery.id);
                lined.ordering_key.push(
                    place
                        .is_some()
                        .then(|| write.message.ordering_key.clone())
                        .flatten(),
                );
                lined.line_place.push(place.copied().flatten());
            }
        }
        Self::insert_deliveries(&mut tx, &columns, &lined).await?;
        // Deliveries waiting in a line are not due: nobody needs waking for them.
        let due = created
            .iter()
            .flat_map(|w| w.deliveries.iter())
            .filter(|d| !matches!(places.get(&d.id), Some(Some(_))));
        Self::notify(&mut tx, due_notices(due)).await?;
        tx.commit().await?;
        Ok(answers)
    }

    async fn insert_deliveries(
        tx: &mut sqlx::PgConnection,
        c: &DeliveryColumns,
        lined: &LineColumns,
    ) -> StoreResult<()> {
        if c.id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO deliveries (id, message_id, endpoint_id, url_override, status, cycle, \
             cycle_attempts, total_attempts, anchor_ms, next_attempt_at, last_status_code, \
             last_error, created_at, updated_at, ordering_key, line_place) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::bytea[], \
             $5::smallint[], $6::int[], $7::int[], $8::int[], $9::bigint[], $10::bigint[], \
             $11::int[], $12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::bigint[])",
        )
        .bind(&c.id)
        .bind(&c.message_id)
        .bind(&c.endpoint_id)
        .bind(&c.url_override)
        .bind(&c.status)
        .bind(&c.cycle)
        .bind(&c.cycle_attempts)
        .bind(&c.total_attempts)
        .bind(&c.anchor_ms)
        .bind(&c.next_attempt_at)
        .bind(&c.last_status_code)
        .bind(&c.last_error)
        .bind(&c.created_at)
        .bind(&c.updated_at)
        .bind(&lined.ordering_key)
        .bind(&lined.line_place)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// The earliest claimable time of the given endpoint's (or every endpoint's) pending
    /// deliveries: the first unleased due time (an index lookup), or the first time a node's
    /// live leases of it expire — as that node published it: the expiry of its latest claim,
    /// so a dead node's deliveries are taken over when its last lease ends, at most one
    /// attempt timeout after its first. Never a scan of the queue.
    pub(super) async fn due_head_now(
        &self,
        endpoint: Option<EndpointId>,
        now_ms: u64,
    ) -> StoreResult<Vec<(EndpointId, u64)>> {
        let found = sqlx::query(&format!(
            "SELECT e.id, LEAST( \
                 (SELECT d.next_attempt_at FROM deliveries d \
                  WHERE d.endpoint_id = e.id AND d.status = 0 AND d.line_place IS NULL \
                  AND (d.lease_expires IS NULL OR d.lease_expires <= $2) \
                  ORDER BY d.next_attempt_at LIMIT 1), \
                 (SELECT min(n.expires) FROM ({NODE_LEASES}) n \
                  WHERE n.endpoint_id = e.id AND n.expires > $2 AND n.live > 0) \
             ) AS head FROM endpoints e WHERE ($1::uuid IS NULL OR e.id = $1)"
        ))
        .bind(endpoint.map(|e| e.0))
        .bind(ms(now_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut heads = Vec::with_capacity(found.len());
        for row in &found {
            if let Some(head) = row.try_get::<Option<i64>, _>("head")? {
                heads.push((EndpointId(row.try_get("id")?), unms(head)));
            }
        }
        Ok(heads)
    }

    pub(super) async fn claim_now(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
        limit: usize,
        lease_for: Duration,
        max_leased: usize,
        settling: &[DeliveryId],
    ) -> StoreResult<Vec<Claim>> {
        let expires = now_ms.saturating_add(lease_for.as_millis() as u64);
        let (counted, live) = self.own_leases.before_claim(endpoint, now_ms, settling);
        let cap = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        // Claims of one endpoint are serialised across the cluster, so that its live leases
        // can be counted against `max_leased`; claims of other endpoints do not wait.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
            .bind(endpoint.0.to_string())
            .execute(&mut *tx)
            .await?;
        // Due rows nobody holds, earliest first: alone, as many as asked (the scheduler's
        // window bounds this node's requests); beside other nodes' live leases (their
        // published totals, see `leases`, each counted up to the cap), as many as leave room
        // under the cap with this node's own. Rows another claimer is taking right now are
        // skipped, not waited for. This node's total is published in the same statement.
        let found = sqlx::query(&format!(
            "WITH picked AS ( \
                 SELECT id FROM deliveries \
                 WHERE endpoint_id = $1 AND status = 0 AND line_place IS NULL \
                 AND next_attempt_at <= $2 AND (lease_expires IS NULL OR lease_expires <= $2) \
                 ORDER BY next_attempt_at \
                 LIMIT (SELECT CASE WHEN others = 0 THEN $3 \
                     ELSE GREATEST(0, LEAST($3, $5 - $6 - others)) END FROM ( \
                     SELECT coalesce(sum(LEAST(n.live, $5)), 0) AS others FROM ({NODE_LEASES}) n \
                     WHERE n.endpoint_id = $1 AND n.node <> $7 AND n.expires > $2) o) \
                 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
                 UPDATE deliveries d SET lease_token = gen_random_uuid(), lease_expires = $4 \
                 FROM picked, messages m WHERE d.id = picked.id AND m.id = d.message_id \
                 RETURNING d.lease_token, {DELIVERY_COLUMNS}, {CLAIM_MESSAGE_COLUMNS}), \
             published AS ( \
                 INSERT INTO lease_counts (endpoint_id, node, claimed, expires) \
                 SELECT $1, $7, $8 + count(*) + coalesce((SELECT ended FROM lease_ends \
                     WHERE endpoint_id = $1 AND node = $7), 0), $4 FROM claimed \
                 ON CONFLICT (endpoint_id, node) DO UPDATE SET claimed = EXCLUDED.claimed, \
                 expires = GREATEST(lease_counts.expires, EXCLUDED.expires)) \
             SELECT * FROM claimed"
        ))
        .bind(endpoint.0)
        .bind(ms(now_ms))
        .bind(cap(limit))
        .bind(ms(expires))
        .bind(cap(max_leased))
        .bind(cap(counted))
        .bind(self.node)
        .bind(cap(live))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claims = Vec::with_capacity(found.len());
        for row in &found {
            let delivery = rows::delivery(&self.sealer, row)?;
            let token: Uuid = row.try_get("lease_token")?;
            let message =
                rows::message_named(&self.sealer, row, "message_id", "message_created_at")?;
            claims.push(Claim {
                lease: Lease {
                    delivery_id: delivery.id,
                    endpoint_id: endpoint,
                    due_ms: delivery.next_attempt_at.unwrap_or(now_ms),
                    expires_at_ms: expires,
                    token: LeaseToken::from_uuid(token),
                },
                message: Some(message),
                delivery,
            });
        }
        claims.sort_by_key(|c| c.lease.due_ms);
        self.own_leases.add(
            endpoint,
            claims.iter().map(|c| c.lease.delivery_id),
            expires,
        );
        Ok(claims)
    }

    pub(super) async fn release_now(&self, leases: &[Lease]) -> StoreResult<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let ending = self.own_leases.ending(leases, crate::model::now_ms());
        let written = self.release_rows(leases, &ending).await;
        self.own_leases.settle(leases, written.is_ok());
        written
    }

    async fn release_rows(&self, leases: &[Lease], ending: &Ending) -> StoreResult<()> {
        let ids: Vec<Uuid> = leases.iter().map(|l| l.delivery_id.0).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token.as_uuid()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE deliveries d SET lease_token = NULL, lease_expires = NULL \
             FROM UNNEST($1::uuid[], $2::uuid[]) AS l(id, token) \
             WHERE d.id = l.id AND d.lease_token = l.token",
        )
        .bind(&ids)
        .bind(&tokens)
        .execute(&mut *tx)
        .await?;
        self.add_ended(&mut tx, ending).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds the leases `tx` ends to this node's published total of ended leases, so that the
    /// other nodes may claim in their place at once, not once this node claims again.
    pub(super) async fn add_ended(
        &self,
        tx: &mut sqlx::PgConnection,
        ending: &Ending,
    ) -> StoreResult<()> {
        if ending.endpoints.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO lease_ends (endpoint_id, node, ended) \
             SELECT e, $3, n FROM UNNEST($1::uuid[], $2::bigint[]) AS v(e, n) \
             ON CONFLICT (endpoint_id, node) DO UPDATE \
             SET ended = lease_ends.ended + EXCLUDED.ended",
        )
        .bind(&ending.endpoints)
        .bind(&ending.counts)
        .bind(self.node)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// Each node's live leases of each endpoint, from its published totals (see `leases`), with
/// when the latest of them expires.
const NODE_LEASES: &str = "SELECT c.endpoint_id, c.node, c.expires, \
    c.claimed - coalesce(e.ended, 0) AS live \
    FROM lease_counts c LEFT JOIN lease_ends e USING (endpoint_id, node)";

/// The message columns of a claim row, beside the delivery's (whose `message_id` is the
/// message's id, and whose `created_at` would collide).
const CLAIM_MESSAGE_COLUMNS: &str = "m.tenant, m.event_type, m.payload, m.callback_url, \
    m.idempotency_key, m.dedup_key, m.ordering_key, m.traceparent, \
    m.created_at AS message_created_at";
