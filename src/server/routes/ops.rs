//! Operations routes, open without a token: liveness, metrics and this API's own description.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::Herald;

/// The OPS tag.
pub const OPS: &str = "ops";

/// Ready to take requests (the store is open and the engine running).
#[utoipa::path(get, path = "/healthz", tag = OPS, responses((status = 200, description = "`ok`", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
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
