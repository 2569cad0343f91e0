//! The admin endpoint routes: CRUD, enable/disable, test-send, daily stats.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::{ADMIN, ApiResult, id};
use crate::Herald;
use crate::api::{DayStats, EndpointUpdate, EndpointView, NewEndpoint, TestSendResult};
use crate::model::{Endpoint, EndpointId};
use crate::server::extract::{ApiJson, ApiPath, ApiQuery};
use crate::server::problem::{ApiError, NotFound, Problem};

/// Creates an endpoint. Its secret and token are never returned afterwards.
#[utoipa::path(
    post, path = "/admin/endpoints", tag = ADMIN,
    request_body = NewEndpoint,
    responses(
        (status = 201, body = EndpointView),
        (status = 400, description = "invalid_request, invalid_url or unknown_policy; nothing stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_endpoint(
    State(herald): State<Herald>,
    ApiJson(new): ApiJson<NewEndpoint>,
) -> ApiResult {
    let endpoint = herald.create_endpoint(new).await?;
    let view = paced_view(&herald, &endpoint);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /admin/endpoints` filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EndpointQuery {
    /// Only this tenant's endpoints.
    tenant: Option<String>,
}

/// The endpoints, optionally of one tenant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    endpoints: Vec<EndpointView>,
}

/// Lists endpoints.
#[utoipa::path(
    get, path = "/admin/endpoints", tag = ADMIN,
    params(EndpointQuery),
    responses((status = 200, body = EndpointList)),
    security(("bearer" = []))
)]
pub async fn list_endpoints(
    State(herald): State<Herald>,
    ApiQuery(query): ApiQuery<EndpointQuery>,
) -> ApiResult {
    let endpoints = herald.endpoints(query.tenant.as_deref()).await?;
    let endpoints = endpoints.iter().map(EndpointView::from).collect();
    Ok(Json(EndpointList { endpoints }).into_response())
}

/// One endpoint, with its rate limit as it applies now (`pacing`: the limit, where it comes
/// from, and how long the next attempt waits for it).
#[utoipa::path(
    get, path = "/admin/endpoints/{id}", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id")),
    responses(
        (status = 200, body = EndpointView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn get_endpoint(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let endpoint = herald.endpoint(id("endpoint", &raw)?).await?;
    Ok(Json(paced_view(&herald, &endpoint)).into_response())
}

/// One endpoint's view with `pacing` filled in: what `GET` shows, and what a creation or a
/// change answers with, so that the answer to setting a rate limit shows the limit that now
/// applies.
fn paced_view(herald: &Herald, endpoint: &Endpoint) -> EndpointView {
    EndpointView {
        pacing: herald.pacing_of(endpoint),
        ..EndpointView::from(endpoint)
    }
}

/// Changes the fields given; a new secret keeps the old one valid for the rotation grace.
#[utoipa::path(
    patch, path = "/admin/endpoints/{id}", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id")),
    request_body = EndpointUpdate,
    responses(
        (status = 200, body = EndpointView),
        (status = 400, description = "invalid_request, invalid_url or unknown_policy; nothing changed", body = Problem, content_type = "application/problem+json"),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn update_endpoint(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(update): ApiJson<EndpointUpdate>,
) -> ApiResult {
    let endpoint = herald
        .update_endpoint(id("endpoint", &raw)?, update)
        .await?;
    Ok(Json(paced_view(&herald, &endpoint)).into_response())
}

/// Deletes an endpoint; its pending deliveries are cancelled.
#[utoipa::path(
    delete, path = "/admin/endpoints/{id}", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id")),
    responses(
        (status = 204, description = "deleted"),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn delete_endpoint(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    herald.delete_endpoint(id("endpoint", &raw)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Enables an endpoint: resets its failure count and releases its held deliveries.
#[utoipa::path(
    post, path = "/admin/endpoints/{id}/enable", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id")),
    responses(
        (status = 200, body = EndpointView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn enable_endpoint(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    set_enabled(herald, &raw, true).await
}

/// Disables an endpoint: nothing is sent to it; its pending deliveries show as `held`.
#[utoipa::path(
    post, path = "/admin/endpoints/{id}/disable", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id")),
    responses(
        (status = 200, body = EndpointView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn disable_endpoint(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    set_enabled(herald, &raw, false).await
}

async fn set_enabled(herald: Herald, raw: &str, enabled: bool) -> ApiResult {
    let endpoint = herald
        .set_endpoint_enabled(id("endpoint", raw)?, enabled)
        .await?;
    Ok(Json(paced_view(&herald, &endpoint)).into_response())
}

/// Sends a real test request with the endpoint's encoding, signature and headers; stores
/// nothing and never moves the failure count.
#[utoipa::path(
    post, path = "/admin/endpoints/{id}/test", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id")),
    responses(
        (status = 200, body = TestSendResult),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn test_endpoint(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let result = herald.test_endpoint(id("endpoint", &raw)?).await?;
    Ok(Json(result).into_response())
}

/// `GET /admin/endpoints/{id}/stats` options.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Days back from today.
    #[param(minimum = 1, maximum = 90, default = 14)]
    days: Option<u32>,
}

/// Daily attempt counts and median latency of one endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsView {
    endpoint_id: EndpointId,
    days: Vec<DayStats>,
}

/// The endpoint's daily roll-up, oldest day first.
#[utoipa::path(
    get, path = "/admin/endpoints/{id}/stats", tag = ADMIN,
    params(("id" = String, Path, description = "endpoint id"), StatsQuery),
    responses(
        (status = 200, body = StatsView),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn endpoint_stats(
    State(herald): State<Herald>,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult {
    let days = query.days.unwrap_or(14);
    if !(1..=90).contains(&days) {
        return Err(ApiError::invalid("`days` must be 1-90"));
    }
    let endpoint_id: EndpointId = id("endpoint", &raw)?;
    let days = herald.endpoint_stats(endpoint_id, days).await?;
    Ok(Json(StatsView { endpoint_id, days }).into_response())
}
