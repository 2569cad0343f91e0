//! Messages in, leases, decided transitions.
//!
//! A group of sends is one transaction: the messages in one `INSERT ... SELECT FROM UNNEST`
//! (the unique index on tenant and idempotency key settles concurrent sends of the same key,
//! on any node), the deliveries in another, one notice per endpoint, one commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::rows::{self, DELIVERY_COLUMNS, DeliveryColumns};
use super::{PgStore, ms, unms};
use crate::model::{DeliveryStatus, EndpointId, MessageId};
use crate::store::{
    Claim, Inserted, Lease, LeaseToken, MessageWrite, Notice, ReplayJob, StoreError, StoreResult,
    Transition,
};

/// The earliest due time per endpoint among `deliveries`, as notices for the other nodes.
fn due_notices<'a>(deliveries: impl Iterator<Item = &'a crate::model::Delivery>) -> Vec<Notice> {
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
        // Refused rather than delivered out of order: this backend keeps no ordering lines yet.
        if writes.iter().any(|w| w.message.ordering_key.is_some()) {
            return Err(StoreError::Unsupported(
                "ordering keys are not supported by the PostgreSQL store yet; send without \
                 `ordering_key`, or use the embedded store"
                    .into(),
            ));
        }
        let mut ids = Vec::with_capacity(writes.len());
        let (mut tenants, mut events, mut payloads, mut urls) = (vec![], vec![], vec![], vec![]);
        let (mut idem, mut dedup, mut ordering, mut created) = (vec![], vec![], vec![], vec![]);
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
            created.push(ms(m.created_at));
        }
        let mut tx = self.pool.begin().await?;
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO messages (id, tenant, event_type, payload, callback_url, \
             idempotency_key, dedup_key, ordering_key, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
             $6::text[], $7::text[], $8::text[], $9::bigint[]) \
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
        let mut columns = DeliveryColumns::default();
        let mut answers = Vec::with_capacity(writes.len());
        for write in writes {
            if inserted.contains(&write.message.id.0) {
                for delivery in &write.deliveries {
                    columns.push(&self.sealer, delivery)?;
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
        Self::insert_deliveries(&mut tx, &columns).await?;
        let created = writes
            .iter()
            .filter(|w| inserted.contains(&w.message.id.0))
            .flat_map(|w| w.deliveries.iter());
        Self::notify(&mut tx, due_notices(created)).await?;
        tx.commit().await?;
        Ok(answers)
    }

    async fn insert_deliveries(
        tx: &mut sqlx::PgConnection,
        c: &DeliveryColumns,
    ) -> StoreResult<()> {
        if c.id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO deliveries (id, message_id, endpoint_id, url_override, status, cycle, \
             cycle_attempts, total_attempts, anchor_ms, next_attempt_at, last_status_code, \
             last_error, created_at, updated_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::bytea[], \
             $5::smallint[], $6::int[], $7::int[], $8::int[], $9::bigint[], $10::bigint[], \
             $11::int[], $12::text[], $13::bigint[], $14::bigint[])",
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
        .execute(tx)
        .await?;
        Ok(())
    }

    /// The earliest claimable time of the given endpoint's (or every endpoint's) pending
    /// deliveries: two index lookups per endpoint — the first unleased due time, and the
    /// first lease to expire — never a scan of the queue.
    pub(super) async fn due_head_now(
        &self,
        endpoint: Option<EndpointId>,
        now_ms: u64,
    ) -> StoreResult<Vec<(EndpointId, u64)>> {
        let found = sqlx::query(
            "SELECT e.id, LEAST( \
                 (SELECT d.next_attempt_at FROM deliveries d \
                  WHERE d.endpoint_id = e.id AND d.status = 0 \
                  AND (d.lease_expires IS NULL OR d.lease_expires <= $2) \
                  ORDER BY d.next_attempt_at LIMIT 1), \
                 (SELECT min(d.lease_expires) FROM deliveries d \
                  WHERE d.endpoint_id = e.id AND d.status = 0 AND d.lease_expires > $2) \
             ) AS head FROM endpoints e WHERE ($1::uuid IS NULL OR e.id = $1)",
        )
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
    ) -> StoreResult<Vec<Claim>> {
        let expires = now_ms.saturating_add(lease_for.as_millis() as u64);
        let mut tx = self.pool.begin().await?;
        // Claims of one endpoint are serialised across the cluster, so that its live leases
        // can be counted against `max_leased`; claims of other endpoints do not wait.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
            .bind(endpoint.0.to_string())
            .execute(&mut *tx)
            .await?;
        let leased: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deliveries \
             WHERE endpoint_id = $1 AND status = 0 AND lease_expires > $2",
        )
        .bind(endpoint.0)
        .bind(ms(now_ms))
        .fetch_one(&mut *tx)
        .await?;
        let room = i64::try_from(max_leased.min(limit))
            .unwrap_or(i64::MAX)
            .min(
                i64::try_from(max_leased)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(leased),
            )
            .max(0);
        // Due rows nobody holds, earliest first; rows another claimer is taking right now are
        // skipped, not waited for.
        let found = sqlx::query(&format!(
            "WITH picked AS ( \
                 SELECT id FROM deliveries \
                 WHERE endpoint_id = $1 AND status = 0 AND next_attempt_at <= $2 \
                 AND (lease_expires IS NULL OR lease_expires <= $2) \
                 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE deliveries d SET lease_token = gen_random_uuid(), lease_expires = $4 \
             FROM picked, messages m WHERE d.id = picked.id AND m.id = d.message_id \
             RETURNING d.lease_token, {DELIVERY_COLUMNS}, {CLAIM_MESSAGE_COLUMNS}"
        ))
        .bind(endpoint.0)
        .bind(ms(now_ms))
        .bind(room)
        .bind(ms(expires))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claims = Vec::with_capacity(found.len());
        for row in &found {
            let delivery = rows::delivery(&self.sealer, row)?;
            let token: Uuid = row.try_get("lease_token")?;
            let message = message_of(&self.sealer, row)?;
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
        Ok(claims)
    }

    pub(super) async fn release_now(&self, leases: &[Lease]) -> StoreResult<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| l.delivery_id.0).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token.as_uuid()).collect();
        sqlx::query(
            "UPDATE deliveries d SET lease_token = NULL, lease_expires = NULL \
             FROM UNNEST($1::uuid[], $2::uuid[]) AS l(id, token) \
             WHERE d.id = l.id AND d.lease_token = l.token",
        )
        .bind(&ids)
        .bind(&tokens)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn apply_transitions_now(
        &self,
        transitions: &[Transition],
        job: Option<&ReplayJob>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = transitions.iter().map(|t| t.expected.id.0).collect();
        let now = ms(crate::model::now_ms());
        let current = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS}, (d.lease_expires > $2) AS leased FROM deliveries d \
             WHERE d.id = ANY($1) FOR UPDATE"
        ))
        .bind(&ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut stored = HashMap::new();
        for row in &current {
            let leased: Option<bool> = row.try_get("leased")?;
            let delivery = rows::delivery(&self.sealer, row)?;
            stored.insert(delivery.id, (delivery, leased.unwrap_or(false)));
        }
        let mut columns = DeliveryColumns::default();
        for transition in transitions {
            let id = transition.expected.id;
            let (current, leased) = stored
                .get(&id)
                .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))?;
            if *current != transition.expected {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} changed meanwhile; try again"
                )));
            }
            if *leased && transition.delivery.status == DeliveryStatus::Pending {
                return Err(StoreError::Conflict(format!(
                    "delivery {id} is being attempted right now"
                )));
            }
            columns.push(&self.sealer, &transition.delivery)?;
        }
        // Every changed delivery loses its lease: a late outcome under it is stale.
        sqlx::query(
            "UPDATE deliveries d SET status = n.status, cycle = n.cycle, \
             cycle_attempts = n.cycle_attempts, total_attempts = n.total_attempts, \
             anchor_ms = n.anchor_ms, next_attempt_at = n.next_attempt_at, \
             last_status_code = n.last_status_code, last_error = n.last_error, \
             updated_at = n.updated_at, lease_token = NULL, lease_expires = NULL \
             FROM UNNEST($1::uuid[], $2::smallint[], $3::int[], $4::int[], $5::int[], \
             $6::bigint[], $7::bigint[], $8::int[], $9::text[], $10::bigint[]) \
             AS n(id, status, cycle, cycle_attempts, total_attempts, anchor_ms, \
             next_attempt_at, last_status_code, last_error, updated_at) WHERE d.id = n.id",
        )
        .bind(&columns.id)
        .bind(&columns.status)
        .bind(&columns.cycle)
        .bind(&columns.cycle_attempts)
        .bind(&columns.total_attempts)
        .bind(&columns.anchor_ms)
        .bind(&columns.next_attempt_at)
        .bind(&columns.last_status_code)
        .bind(&columns.last_error)
        .bind(&columns.updated_at)
        .execute(&mut *tx)
        .await?;
        if let Some(job) = job {
            self.put_job_in(&mut tx, job).await?;
        }
        let changed = transitions.iter().map(|t| &t.delivery);
        Self::notify(&mut tx, due_notices(changed)).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The message columns of a claim row, beside the delivery's (whose `message_id` is the
/// message's id, and whose `created_at` would collide).
const CLAIM_MESSAGE_COLUMNS: &str = "m.tenant, m.event_type, m.payload, m.callback_url, \
    m.idempotency_key, m.dedup_key, m.ordering_key, m.created_at AS message_created_at";

/// The message of a claim row.
fn message_of(
    sealer: &crate::store::seal::Sealer,
    row: &sqlx::postgres::PgRow,
) -> StoreResult<crate::model::Message> {
    use serde_json::value::RawValue;
    let id: Uuid = row.try_get("message_id")?;
    let payload: String = row.try_get("payload")?;
    let payload = RawValue::from_string(payload).map_err(|e| StoreError::Corrupt {
        key: format!("messages.payload {id}"),
        reason: e.to_string(),
    })?;
    let callback_url: Option<Vec<u8>> = row.try_get("callback_url")?;
    let callback_url = match callback_url {
        Some(sealed) => Some(
            String::from_utf8(sealer.open(&sealed).map_err(StoreError::Backend)?)
                .map_err(|_| StoreError::Backend("callback url is not UTF-8".into()))?,
        ),
        None => None,
    };
    Ok(crate::model::Message {
        id: MessageId(id),
        tenant: row.try_get("tenant")?,
        event_type: row.try_get("event_type")?,
        payload,
        callback_url,
        idempotency_key: row.try_get("idempotency_key")?,
        dedup_key: row.try_get("dedup_key")?,
        ordering_key: row.try_get("ordering_key")?,
        // Not kept by this store yet: attempts start traces of their own.
        traceparent: None,
        created_at: unms(row.try_get::<i64, _>("message_created_at")?),
    })
}
