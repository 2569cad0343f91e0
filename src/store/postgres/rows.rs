//! Rows to domain records and back. What carries secrets (an endpoint's configuration, a
//! message's own callback URL) is sealed before it reaches the database.

use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{ms, unms};
use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, ErrorKind, Message,
    MessageId,
};
use crate::store::codec;
use crate::store::seal::Sealer;
use crate::store::{StoreError, StoreResult};

pub(super) const ENDPOINT_COLUMNS: &str = "id, tenant, record, enabled, failures, \
    disabled_reason, disabled_at, released_at";

pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.tenant, m.event_type, m.payload, \
    m.callback_url, m.idempotency_key, m.dedup_key, m.ordering_key, m.traceparent, m.created_at";

pub(super) const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.endpoint_id, d.url_override, \
    d.status, d.cycle, d.cycle_attempts, d.total_attempts, d.anchor_ms, d.next_attempt_at, \
    d.last_status_code, d.last_error, d.created_at, d.updated_at";

pub(super) const ATTEMPT_COLUMNS: &str = "attempt, cycle, started_at, duration_ms, status_code, \
    error, error_detail, response_excerpt, success";

/// How a status is stored; `held` is never stored (it is `pending` on a disabled endpoint).
pub(super) fn status_code(status: DeliveryStatus) -> i16 {
    match status {
        DeliveryStatus::Pending | DeliveryStatus::Held => 0,
        DeliveryStatus::Succeeded => 1,
        DeliveryStatus::Failed => 2,
        DeliveryStatus::Skipped => 3,
    }
}

fn status_of(code: i16) -> StoreResult<DeliveryStatus> {
    Ok(match code {
        0 => DeliveryStatus::Pending,
        1 => DeliveryStatus::Succeeded,
        2 => DeliveryStatus::Failed,
        3 => DeliveryStatus::Skipped,
        other => {
            return Err(StoreError::Corrupt {
                key: "deliveries.status".into(),
                reason: format!("unknown status {other}"),
            });
        }
    })
}

fn error_kind(name: &str) -> Option<ErrorKind> {
    [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Rejected,
        ErrorKind::Gone,
        ErrorKind::Refused,
        ErrorKind::Transport,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == name)
}

/// Seals an optional URL (a message's own callback URL).
pub(super) fn seal_url(sealer: &Sealer, url: Option<&str>) -> StoreResult<Option<Vec<u8>>> {
    url.map(|url| sealer.seal(url.as_bytes()).map_err(StoreError::Backend))
        .transpose()
}

fn open_url(sealer: &Sealer, sealed: Option<Vec<u8>>, what: &str) -> StoreResult<Option<String>> {
    sealed
        .map(|sealed| {
            let plain = sealer.open(&sealed).map_err(|reason| StoreError::Corrupt {
                key: what.into(),
                reason,
            })?;
            String::from_utf8(plain).map_err(|_| StoreError::Corrupt {
                key: what.into(),
                reason: "not UTF-8".into(),
            })
        })
        .transpose()
}

pub(super) fn endpoint(sealer: &Sealer, row: &PgRow) -> StoreResult<Endpoint> {
    let id: Uuid = row.try_get("id")?;
    let record: Vec<u8> = row.try_get("record")?;
    let mut endpoint: Endpoint =
        codec::open_endpoint(sealer, format!("E:{id}").as_bytes(), &record)?;
    endpoint.tenant = row.try_get("tenant")?;
    endpoint.enabled = row.try_get("enabled")?;
    endpoint.consecutive_failures = u32::try_from(row.try_get::<i32, _>("failures")?).unwrap_or(0);
    endpoint.disabled_reason = row.try_get("disabled_reason")?;
    endpoint.disabled_at = row.try_get::<Option<i64>, _>("disabled_at")?.map(unms);
    endpoint.released_at = row.try_get::<Option<i64>, _>("released_at")?.map(unms);
    Ok(endpoint)
}

pub(super) fn message(sealer: &Sealer, row: &PgRow) -> StoreResult<Message> {
    message_named(sealer, row, "id", "created_at")
}

/// A message from a row whose id and creation time have other names (a claim's row, where
/// the delivery's own take `id` and `created_at`).
pub(super) fn message_named(
    sealer: &Sealer,
    row: &PgRow,
    id_column: &str,
    created_column: &str,
) -> StoreResult<Message> {
    let id: Uuid = row.try_get(id_column)?;
    let payload: String = row.try_get("payload")?;
    let payload = RawValue::from_string(payload).map_err(|e| StoreError::Corrupt {
        key: format!("messages.payload {id}"),
        reason: e.to_string(),
    })?;
    Ok(Message {
        id: MessageId(id),
        tenant: row.try_get("tenant")?,
        event_type: row.try_get("event_type")?,
        payload,
        callback_url: open_url(
            sealer,
            row.try_get("callback_url")?,
            "messages.callback_url",
        )?,
        idempotency_key: row.try_get("idempotency_key")?,
        dedup_key: row.try_get("dedup_key")?,
        ordering_key: row.try_get("ordering_key")?,
        traceparent: row.try_get("traceparent")?,
        created_at: unms(row.try_get(created_column)?),
    })
}

/// Whether a delivery belongs in the due index (or, keyed, in its line): pending with a time.
pub(super) fn is_due(delivery: &Delivery) -> bool {
    delivery.status == DeliveryStatus::Pending && delivery.next_attempt_at.is_some()
}

pub(super) fn delivery(sealer: &Sealer, row: &PgRow) -> StoreResult<Delivery> {
    let count = |name: &str| -> StoreResult<u32> {
        Ok(u32::try_from(row.try_get::<i32, _>(name)?).unwrap_or(0))
    };
    Ok(Delivery {
        id: DeliveryId(row.try_get("id")?),
        message_id: MessageId(row.try_get("message_id")?),
        endpoint_id: EndpointId(row.try_get("endpoint_id")?),
        url_override: open_url(
            sealer,
            row.try_get("url_override")?,
            "deliveries.url_override",
        )?,
        status: status_of(row.try_get("status")?)?,
        cycle: count("cycle")?,
        cycle_attempts: count("cycle_attempts")?,
        total_attempts: count("total_attempts")?,
        anchor_ms: unms(row.try_get("anchor_ms")?),
        next_attempt_at: row.try_get::<Option<i64>, _>("next_attempt_at")?.map(unms),
        last_status_code: row
            .try_get::<Option<i32>, _>("last_status_code")?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: row.try_get("last_error")?,
        created_at: unms(row.try_get("created_at")?),
        updated_at: unms(row.try_get("updated_at")?),
    })
}

pub(super) fn attempt(row: &PgRow) -> StoreResult<Attempt> {
    Ok(Attempt {
        attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or(0),
        cycle: u32::try_from(row.try_get::<i32, _>("cycle")?).unwrap_or(0),
        started_at: unms(row.try_get("started_at")?),
        duration_ms: unms(row.try_get("duration_ms")?),
        status_code: row
            .try_get::<Option<i32>, _>("status_code")?
            .and_then(|c| u16::try_from(c).ok()),
        error: row
            .try_get::<Option<String>, _>("error")?
            .and_then(|name| error_kind(&name)),
        error_detail: row.try_get("error_detail")?,
        response_excerpt: row.try_get("response_excerpt")?,
        success: row.try_get("success")?,
    })
}

/// Deliveries as columns, for one `UNNEST` statement over many rows.
#[derive(Default)]
pub(super) struct DeliveryColumns {
    pub(super) id: Vec<Uuid>,
    pub(super) message_id: Vec<Uuid>,
    pub(super) endpoint_id: Vec<Uuid>,
    pub(super) url_override: Vec<Option<Vec<u8>>>,
    pub(super) status: Vec<i16>,
    pub(super) cycle: Vec<i32>,
    pub(super) cycle_attempts: Vec<i32>,
    pub(super) total_attempts: Vec<i32>,
    pub(super) anchor_ms: Vec<i64>,
    pub(super) next_attempt_at: Vec<Option<i64>>,
    pub(super) last_status_code: Vec<Option<i32>>,
    pub(super) last_error: Vec<Option<String>>,
    pub(super) created_at: Vec<i64>,
    pub(super) updated_at: Vec<i64>,
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl DeliveryColumns {
    pub(super) fn push(&mut self, sealer: &Sealer, d: &Delivery) -> StoreResult<()> {
        self.id.push(d.id.0);
        self.message_id.push(d.message_id.0);
        self.endpoint_id.push(d.endpoint_id.0);
        self.url_override
            .push(seal_url(sealer, d.url_override.as_deref())?);
        self.status.push(status_code(d.status));
        self.cycle.push(int(d.cycle));
        self.cycle_attempts.push(int(d.cycle_attempts));
        self.total_attempts.push(int(d.total_attempts));
        self.anchor_ms.push(ms(d.anchor_ms));
        self.next_attempt_at.push(
            d.next_attempt_at
                .filter(|_| d.status == DeliveryStatus::Pending)
                .map(ms),
        );
        self.last_status_code
            .push(d.last_status_code.map(i32::from));
        self.last_error.push(d.last_error.clone());
        self.created_at.push(ms(d.created_at));
        self.updated_at.push(ms(d.updated_at));
        Ok(())
    }

    /// Writes the decided state of these deliveries, in one statement. Each loses its lease:
    /// a late outcome under it is stale. (A delivery's line and place are not touched.)
    pub(super) async fn update(&self, tx: &mut sqlx::PgConnection) -> StoreResult<()> {
        if self.id.is_empty() {
            return Ok(());
        }
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
        .bind(&self.id)
        .bind(&self.status)
        .bind(&self.cycle)
        .bind(&self.cycle_attempts)
        .bind(&self.total_attempts)
        .bind(&self.anchor_ms)
        .bind(&self.next_attempt_at)
        .bind(&self.last_status_code)
        .bind(&self.last_error)
        .bind(&self.updated_at)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// The line columns of new deliveries, beside their [`DeliveryColumns`].
#[derive(Default)]
pub(super) struct LineColumns {
    /// The message's ordering key, for deliveries that joined a line.
    pub(super) ordering_key: Vec<Option<String>>,
    /// The place of a delivery waiting in its line; `None` at the front or in no line.
    pub(super) line_place: Vec<Option<i64>>,
}

/// Attempts as columns, for one `UNNEST` insert.
#[derive(Default)]
pub(super) struct AttemptColumns {
    pub(super) delivery_id: Vec<Uuid>,
    pub(super) attempt: Vec<i32>,
    pub(super) cycle: Vec<i32>,
    pub(super) started_at: Vec<i64>,
    pub(super) duration_ms: Vec<i64>,
    pub(super) status_code: Vec<Option<i32>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) error_detail: Vec<Option<String>>,
    pub(super) response_excerpt: Vec<String>,
    pub(super) success: Vec<bool>,
}

impl AttemptColumns {
    pub(super) fn push(&mut self, delivery: DeliveryId, a: &Attempt) {
        self.delivery_id.push(delivery.0);
        self.attempt.push(int(a.attempt));
        self.cycle.push(int(a.cycle));
        self.started_at.push(ms(a.started_at));
        self.duration_ms.push(ms(a.duration_ms));
        self.status_code.push(a.status_code.map(i32::from));
        self.error
            .push(a.error.map(|kind| kind.as_str().to_string()));
        self.error_detail.push(a.error_detail.clone());
        self.response_excerpt.push(a.response_excerpt.clone());
        self.success.push(a.success);
    }
}
