//! The admin delivery routes: list, show with attempts, replay one, bulk replay.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::{ADMIN, ApiResult, id, time_range};
use crate::model::{DeliveryId, DeliveryStatus, EndpointId, rfc3339};
use crate::server::extract::{ApiJson, ApiPath, ApiQuery};
use crate::server::problem::{ApiError, NotFound, Problem};
use crate::server::views::{DeliveryView, delivery_view, delivery_views};
use crate::store::{DeliveryFilter, ReplayState};
use crate::{Herald, ReplayJob, ReplayRequest};

/// Deliveries at most per page.
const MAX_PAGE: usize = 1000;

/// `GET /admin/deliveries` filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in this status.
    #[param(inline)]
    status: Option<DeliveryStatus>,
    /// Only this endpoint's deliveries.
    endpoint_id: Option<String>,
    /// Only this tenant's deliveries.
    tenant: Option<String>,
    /// Created at or after: RFC 3339 or an age such as `2h`.
    since: Option<String>,
    /// Created before: RFC 3339 or an age.
    until: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Oldest first (the default) or newest first.
    #[param(inline)]
    order: Option<Order>,
}

/// The order of a page of deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// One page of deliveries, oldest first unless `order=desc`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// Lists deliveries.
#[utoipa::path(
    get, path = "/admin/deliveries", tag = ADMIN,
    params(DeliveryQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, description = "invalid_request (bad status, id, time, limit or cursor)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    State(herald): State<Herald>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> ApiResult {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("`limit` must be 1-{MAX_PAGE}")));
    }
    let status = query.status;
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
    let (since_ms, until_ms) = time_range(query.since.as_deref(), query.until.as_deref())?;
    let newest_first = query.order.unwrap_or_default() == Order::Desc;
    // `held` is `pending` on a disabled endpoint: filter on pending, then keep the held ones.
    let stored_status = status.map(|s| match s {
        DeliveryStatus::Held => DeliveryStatus::Pending,
        other => other,
    });
    let endpoint_ids = match &query.tenant {
        Some(tenant) => {
            let ids: Vec<EndpointId> = herald
                .endpoints(Some(tenant))
                .await?
                .iter()
                .map(|e| e.id)
                .collect();
            if ids.is_empty() {
                let empty = DeliveryPage {
                    deliveries: Vec::new(),
                    next_cursor: None,
                };
                return Ok(Json(empty).into_response());
            }
            ids
        }
        None => Vec::new(),
    };
    let deliveries = herald
        .deliveries(&DeliveryFilter {
            status: stored_status,
            endpoint_id,
            endpoint_ids,
            since_ms,
            until_ms,
            after,
            newest_first,
            limit,
        })
        .await?;
    let next_cursor = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.id.to_string()))
        .flatten();
    let deliveries = delivery_views(&herald, &deliveries)
        .await
        .into_iter()
        .filter(|view| status.is_none_or(|s| view.status == s))
        .collect();
    Ok(Json(DeliveryPage {
        deliveries,
        next_cursor,
    })
    .into_response())
}

/// One delivery with every attempt.
#[utoipa::path(
    get, path = "/admin/deliveries/{id}", tag = ADMIN,
    params(("id" = String, Path, description = "delivery id")),
    responses(
        (status = 200, body = DeliveryView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn get_delivery(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let delivery = herald.delivery(id("delivery", &raw)?).await?;
    let attempts = herald.attempts(delivery.id).await?;
    let view = delivery_view(&herald, &delivery, Some(&attempts)).await;
    Ok(Json(view).into_response())
}

/// Starts a fresh cycle of the policy's schedule for one delivery; its history is kept.
#[utoipa::path(
    post, path = "/admin/deliveries/{id}/replay", tag = ADMIN,
    params(("id" = String, Path, description = "delivery id")),
    responses(
        (status = 202, body = DeliveryView),
        NotFound,
        (status = 409, description = "conflict: still pending, or its payload was purged", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn replay_delivery(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let delivery = herald.replay(id("delivery", &raw)?).await?;
    let view = delivery_view(&herald, &delivery, None).await;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Attempts a pending delivery now instead of at its due time (one of its cycle's attempts).
#[utoipa::path(
    post, path = "/admin/deliveries/{id}/retry", tag = ADMIN,
    params(("id" = String, Path, description = "delivery id")),
    responses(
        (status = 202, body = DeliveryView),
        NotFound,
        (status = 409, description = "conflict: not pending, or an attempt is in flight", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn retry_delivery(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let delivery = herald.retry_now(id("delivery", &raw)?).await?;
    let view = delivery_view(&herald, &delivery, None).await;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Cancels a pending delivery: it becomes `failed` ("cancelled by an operator") and can be
/// replayed later.
#[utoipa::path(
    post, path = "/admin/deliveries/{id}/cancel", tag = ADMIN,
    params(("id" = String, Path, description = "delivery id")),
    responses(
        (status = 200, body = DeliveryView),
        NotFound,
        (status = 409, description = "conflict: not pending", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_delivery(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let delivery = herald.cancel(id("delivery", &raw)?).await?;
    let view = delivery_view(&herald, &delivery, None).await;
    Ok(Json(view).into_response())
}

/// Which deliveries a bulk replay takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    /// Only this endpoint.
    endpoint_id: Option<String>,
    /// Only this tenant.
    tenant: Option<String>,
    /// Deliveries in this status, usually `failed`.
    status: String,
    /// Created at or after: RFC 3339 or an age such as `2h`.
    since: Option<String>,
    /// Created before: RFC 3339 or an age.
    until: Option<String>,
}

/// A bulk replay's progress.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayJobView {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    state: ReplayState,
    /// Deliveries that matched when the job was created.
    matched: u64,
    /// Replayed so far.
    queued: u64,
    /// Could not be replayed (payload purged); the reason is logged.
    skipped: u64,
    remaining: u64,
    created_at: String,
}

impl From<&ReplayJob> for ReplayJobView {
    fn from(job: &ReplayJob) -> Self {
        let remaining = match job.state {
            ReplayState::Done => 0,
            ReplayState::Running => job.matched.saturating_sub(job.queued + job.skipped),
        };
        ReplayJobView {
            id: job.id,
            state: job.state,
            matched: job.matched,
            queued: job.queued,
            skipped: job.skipped,
            remaining,
            created_at: rfc3339(job.created_at),
        }
    }
}

/// Starts a durable, paced bulk replay; it resumes after a restart.
#[utoipa::path(
    post, path = "/admin/replay", tag = ADMIN,
    request_body = BulkReplay,
    responses(
        (status = 202, body = ReplayJobView),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (endpoint)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
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
    let (since_ms, until_ms) = time_range(body.since.as_deref(), body.until.as_deref())?;
    let job = herald
        .replay_many(ReplayRequest {
            endpoint_id,
            tenant: body.tenant,
            status,
            since_ms,
            until_ms,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayJobView::from(&job))).into_response())
}

/// A bulk replay's progress.
#[utoipa::path(
    get, path = "/admin/replays/{id}", tag = ADMIN,
    params(("id" = String, Path, description = "replay job id")),
    responses(
        (status = 200, body = ReplayJobView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn replay_job(State(herald): State<Herald>, ApiPath(raw): ApiPath<String>) -> ApiResult {
    let job = herald.replay_job(id("replay", &raw)?).await?;
    Ok(Json(ReplayJobView::from(&job)).into_response())
}
