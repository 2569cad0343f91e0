//! Handlers: each parses, calls the library once or twice, and shapes the answer.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::ApiJson;
use super::problem::ApiError;
use super::views::DeliveryView;
use crate::api::{EndpointUpdate, EndpointView, NewEndpoint, NewMessage};
use crate::model::{DeliveryId, DeliveryStatus, EndpointId, MessageId, now_ms, rfc3339};
use crate::store::DeliveryFilter;
use crate::{Herald, Policy};

type ApiResult<T = Response> = Result<T, ApiError>;

fn id<T: std::str::FromStr>(kind: &str, raw: &str) -> ApiResult<T> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("{kind} {raw:?} not found")))
}

pub async fn send(
    State(herald): State<Herald>,
    ApiJson(message): ApiJson<NewMessage>,
) -> ApiResult {
    let receipt = herald.send(message).await?;
    let status = if receipt.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(receipt)).into_response())
}

pub async fn message(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let id: MessageId = id("message", &raw)?;
    let message = herald.message(id)?;
    let deliveries = herald.message_deliveries(id)?;
    let views: Vec<DeliveryView> = deliveries
        .iter()
        .map(|d| DeliveryView::new(d, herald.endpoint(d.endpoint_id).ok().as_ref(), None))
        .collect();
    let payload: Value = serde_json::from_str(message.payload.get()).unwrap_or(Value::Null);
    Ok(Json(json!({
        "id": message.id,
        "tenant": message.tenant,
        "event_type": message.event_type,
        "payload": payload,
        "callback_url": message.callback_url.as_deref().map(crate::transport::redact),
        "idempotency_key": message.idempotency_key,
        "dedup_key": message.dedup_key,
        "created_at": rfc3339(message.created_at),
        "deliveries": views,
    }))
    .into_response())
}

pub async fn create_endpoint(
    State(herald): State<Herald>,
    ApiJson(new): ApiJson<NewEndpoint>,
) -> ApiResult {
    let endpoint = herald.create_endpoint(new).await?;
    Ok((StatusCode::CREATED, Json(EndpointView::from(&endpoint))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointQuery {
    tenant: Option<String>,
}

pub async fn list_endpoints(
    State(herald): State<Herald>,
    Query(query): Query<EndpointQuery>,
) -> ApiResult {
    let endpoints = herald.endpoints(query.tenant.as_deref())?;
    let views: Vec<EndpointView> = endpoints.iter().map(EndpointView::from).collect();
    Ok(Json(json!({ "endpoints": views })).into_response())
}

pub async fn get_endpoint(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let endpoint = herald.endpoint(id("endpoint", &raw)?)?;
    Ok(Json(EndpointView::from(&endpoint)).into_response())
}

pub async fn update_endpoint(
    State(herald): State<Herald>,
    Path(raw): Path<String>,
    ApiJson(update): ApiJson<EndpointUpdate>,
) -> ApiResult {
    let endpoint = herald
        .update_endpoint(id("endpoint", &raw)?, update)
        .await?;
    Ok(Json(EndpointView::from(&endpoint)).into_response())
}

pub async fn delete_endpoint(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    herald.delete_endpoint(id("endpoint", &raw)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn enable_endpoint(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let endpoint = herald
        .set_endpoint_enabled(id("endpoint", &raw)?, true)
        .await?;
    Ok(Json(EndpointView::from(&endpoint)).into_response())
}

pub async fn disable_endpoint(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let endpoint = herald
        .set_endpoint_enabled(id("endpoint", &raw)?, false)
        .await?;
    Ok(Json(EndpointView::from(&endpoint)).into_response())
}

pub async fn test_endpoint(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let result = herald.test_endpoint(id("endpoint", &raw)?).await?;
    Ok(Json(result).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    days: Option<u32>,
}

pub async fn endpoint_stats(
    State(herald): State<Herald>,
    Path(raw): Path<String>,
    Query(query): Query<StatsQuery>,
) -> ApiResult {
    let days = query.days.unwrap_or(14);
    if !(1..=90).contains(&days) {
        return Err(ApiError::invalid("`days` must be 1-90"));
    }
    let endpoint_id: EndpointId = id("endpoint", &raw)?;
    let stats = herald.endpoint_stats(endpoint_id, days)?;
    Ok(Json(json!({ "endpoint_id": endpoint_id, "days": stats })).into_response())
}

/// Deliveries at most per page.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    status: Option<String>,
    endpoint_id: Option<String>,
    tenant: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// RFC 3339, or an age such as `2h` (that long before now).
pub fn parse_time(field: &str, raw: &str) -> ApiResult<u64> {
    if let Ok(at) = humantime::parse_rfc3339_weak(raw) {
        return at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| ApiError::invalid(format!("`{field}` is before 1970")));
    }
    humantime::parse_duration(raw)
        .map(|age| now_ms().saturating_sub(age.as_millis() as u64))
        .map_err(|_| {
            ApiError::invalid(format!(
                "`{field}` must be an RFC 3339 time or an age such as 2h; got {raw:?}"
            ))
        })
}

pub async fn list_deliveries(
    State(herald): State<Herald>,
    Query(query): Query<DeliveryQuery>,
) -> ApiResult {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("`limit` must be 1-{MAX_PAGE}")));
    }
    let status = query
        .status
        .as_deref()
        .map(str::parse::<DeliveryStatus>)
        .transpose()
        .map_err(ApiError::invalid)?;
    let endpoint_id = query
        .endpoint_id
        .as_deref()
        .map(|raw| raw.parse::<EndpointId>())
        .transpose()
        .map_err(|_| ApiError::invalid("`endpoint_id` is not an endpoint id"))?;
    let after = query
        .cursor
        .as_deref()
        .map(|raw| raw.parse::<DeliveryId>())
        .transpose()
        .map_err(|_| ApiError::invalid("`cursor` is not a cursor from a previous page"))?;
    let since_ms = query
        .since
        .as_deref()
        .map(|r| parse_time("since", r))
        .transpose()?;
    let until_ms = query
        .until
        .as_deref()
        .map(|r| parse_time("until", r))
        .transpose()?;
    if let (Some(since), Some(until)) = (since_ms, until_ms)
        && since > until
    {
        return Err(ApiError::invalid("`since` is after `until`"));
    }
    // `held` is `pending` on a disabled endpoint: filter on pending, then keep the held ones.
    let stored_status = status.map(|s| match s {
        DeliveryStatus::Held => DeliveryStatus::Pending,
        other => other,
    });
    let endpoint_ids = match &query.tenant {
        Some(tenant) => {
            let ids: Vec<EndpointId> = herald
                .endpoints(Some(tenant))?
                .iter()
                .map(|e| e.id)
                .collect();
            if ids.is_empty() {
                return Ok(Json(json!({ "deliveries": [], "next_cursor": null })).into_response());
            }
            ids
        }
        None => Vec::new(),
    };
    let deliveries = herald.deliveries(&DeliveryFilter {
        status: stored_status,
        endpoint_id,
        endpoint_ids,
        since_ms,
        until_ms,
        after,
        limit,
    })?;
    let next_cursor = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.id.to_string()))
        .flatten();
    let views: Vec<DeliveryView> = deliveries
        .iter()
        .map(|d| DeliveryView::new(d, herald.endpoint(d.endpoint_id).ok().as_ref(), None))
        .filter(|view| status.is_none_or(|s| view.status == s))
        .collect();
    Ok(Json(json!({ "deliveries": views, "next_cursor": next_cursor })).into_response())
}

pub async fn get_delivery(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let delivery = herald.delivery(id("delivery", &raw)?)?;
    let attempts = herald.attempts(delivery.id)?;
    let endpoint = herald.endpoint(delivery.endpoint_id).ok();
    Ok(Json(DeliveryView::new(
        &delivery,
        endpoint.as_ref(),
        Some(&attempts),
    ))
    .into_response())
}

pub async fn replay_delivery(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let delivery = herald.replay(id("delivery", &raw)?).await?;
    let endpoint = herald.endpoint(delivery.endpoint_id).ok();
    Ok((
        StatusCode::ACCEPTED,
        Json(DeliveryView::new(&delivery, endpoint.as_ref(), None)),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    endpoint_id: Option<String>,
    tenant: Option<String>,
    status: String,
    since: Option<String>,
    until: Option<String>,
}

fn job_json(job: &crate::ReplayJob) -> Value {
    let remaining = match job.state {
        crate::ReplayState::Done => 0,
        crate::ReplayState::Running => job.matched.saturating_sub(job.queued + job.skipped),
    };
    json!({
        "id": job.id,
        "state": job.state,
        "matched": job.matched,
        "queued": job.queued,
        "skipped": job.skipped,
        "remaining": remaining,
        "created_at": rfc3339(job.created_at),
    })
}

pub async fn bulk_replay(
    State(herald): State<Herald>,
    ApiJson(body): ApiJson<BulkReplay>,
) -> ApiResult {
    let status = body
        .status
        .parse::<DeliveryStatus>()
        .map_err(ApiError::invalid)?;
    let endpoint_id = body
        .endpoint_id
        .as_deref()
        .map(|raw| id::<EndpointId>("endpoint", raw))
        .transpose()?;
    let since_ms = body
        .since
        .as_deref()
        .map(|r| parse_time("since", r))
        .transpose()?;
    let until_ms = body
        .until
        .as_deref()
        .map(|r| parse_time("until", r))
        .transpose()?;
    if let (Some(since), Some(until)) = (since_ms, until_ms)
        && since > until
    {
        return Err(ApiError::invalid("`since` is after `until`"));
    }
    let job = herald
        .replay_many(crate::ReplayRequest {
            endpoint_id,
            tenant: body.tenant,
            status,
            since_ms,
            until_ms,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job_json(&job))).into_response())
}

pub async fn replay_job(State(herald): State<Herald>, Path(raw): Path<String>) -> ApiResult {
    let job = herald.replay_job(id("replay", &raw)?)?;
    Ok(Json(job_json(&job)).into_response())
}

/// A policy with its computed schedule.
pub fn policy_json(policy: &Policy) -> Value {
    let offsets: Vec<Value> = policy
        .schedule
        .offsets()
        .iter()
        .enumerate()
        .map(|(i, offset)| {
            json!({
                "attempt": i + 1,
                "offset": humantime::format_duration(*offset).to_string(),
                "offset_seconds": offset.as_secs_f64(),
            })
        })
        .collect();
    json!({
        "name": policy.name,
        "description": policy.description,
        "attempts": policy.schedule.attempts(),
        "policy": policy,
        "schedule": offsets,
    })
}

pub async fn list_policies(State(herald): State<Herald>) -> ApiResult {
    let policies: Vec<Value> = herald
        .policies()
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "description": p.description,
                "attempts": p.schedule.attempts(),
            })
        })
        .collect();
    Ok(Json(json!({ "policies": policies })).into_response())
}

pub async fn get_policy(State(herald): State<Herald>, Path(name): Path<String>) -> ApiResult {
    let policy = herald
        .policies()
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("policy {name:?} not found")))?;
    Ok(Json(policy_json(policy)).into_response())
}
