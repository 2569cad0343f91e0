//! Operations routes, open without a token: liveness, metrics and this API's own description.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::Herald;
use crate::server::problem::ApiError;

/// The OPS tag.
pub const OPS: &str = "ops";

/// Liveness, and the store's state.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` while the store takes no writes.
    status: &'static str,
    /// Why the store takes no writes (a full disk, an unreachable database).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<String>,
}

/// Liveness: 200 while the process serves requests, with the store's real state in the body.
/// A full disk is not cured by a restart, so it does not fail liveness; `/readyz` reports it.
#[utoipa::path(get, path = "/healthz", tag = OPS, responses((status = 200, description = "alive; `status` is `ok` or `degraded`", body = Health)))]
pub async fn healthz(State(herald): State<Herald>) -> axum::Json<Health> {
    let store = herald.check_store().await.err().map(|e| e.to_string());
    axum::Json(Health {
        status: if store.is_some() { "degraded" } else { "ok" },
        store,
    })
}

/// Readiness: 200 when the store takes writes; 503 `unavailable` (problem+json) while it
/// does not (a full disk, an unreachable database), so that load balancers and orchestrators
/// route producers elsewhere meanwhile.
#[utoipa::path(get, path = "/readyz", tag = OPS, responses(
    (status = 200, description = "ready", body = Health),
    (status = 503, description = "unavailable: the store takes no writes now", body = crate::server::problem::Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(herald): State<Herald>) -> Result<axum::Json<Health>, ApiError> {
    herald.check_store().await?;
    Ok(axum::Json(Health {
        status: "ok",
        store: None,
    }))
}

/// Counters, gauges and histograms in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = OPS, responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(
    State(herald): State<Herald>,
    Extension(handle): Extension<Option<PrometheusHandle>>,
) -> impl IntoResponse {
    if let Err(e) = herald.publish_gauges().await {
        tracing::warn!(error = %e, "gauges not refreshed for this scrape");
    }
    let rendered = handle.as_ref().map(|m| m.render()).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        rendered,
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = OPS, responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(doc.as_ref().clone())
}

/// Where a backup goes.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A new (or empty) directory on the daemon's host.
    dir: String,
}

/// Writes a consistent copy of the store into a new directory on the daemon's host while it
/// runs (writes pause for the copy). Restore by pointing `data_dir` at the copy.
#[utoipa::path(
    post, path = "/admin/store/backup", tag = crate::server::routes::ADMIN,
    request_body = BackupRequest,
    responses(
        (status = 200, body = crate::store::BackupReport),
        (status = 400, description = "invalid_request: the backend has its own backup tools", body = crate::server::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "conflict: the directory is not empty", body = crate::server::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn backup(
    State(herald): State<Herald>,
    crate::server::extract::ApiJson(request): crate::server::extract::ApiJson<BackupRequest>,
) -> Result<axum::Json<crate::store::BackupReport>, ApiError> {
    let report = herald.backup(std::path::Path::new(&request.dir)).await?;
    Ok(axum::Json(report))
}
