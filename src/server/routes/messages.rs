//! The producer routes: send a message, read it back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{ApiResult, PRODUCER, id};
use crate::Herald;
use crate::api::{NewMessage, SendReceipt};
use crate::model::{MessageId, rfc3339};
use crate::server::extract::{ApiJson, ApiPath, RemoteParent};
use crate::server::problem::{NotFound, Problem};
use crate::server::views::{DeliveryView, delivery_views};

/// Accepts a message: stored and fsynced before the answer, then delivered to every endpoint of
/// the tenant that subscribes to its event type (or to its `callback_url`).
#[utoipa::path(
    post, path = "/v1/messages", tag = PRODUCER,
    request_body = NewMessage,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context: the message's spans (accept and every attempt) join this trace when spans are exported")),
    responses(
        (status = 202, description = "stored durably; deliveries scheduled", body = SendReceipt),
        (status = 200, description = "an earlier message with this idempotency key", body = SendReceipt),
        (status = 400, description = "invalid_request, invalid_url or unknown_policy; nothing stored", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large (with size and limit); nothing stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn send(
    State(herald): State<Herald>,
    RemoteParent(parent): RemoteParent,
    ApiJson(message): ApiJson<NewMessage>,
) -> ApiResult {
    // A producer's `traceparent` parents a span of the request, and so the message's spans.
    // Without one the message's `accept` span is the root: a span per request more costs ~1 %
    // of the daemon's throughput, and its only field would have been the route.
    let receipt = match parent {
        Some(parent) => {
            let span = tracing::debug_span!("POST /v1/messages");
            let _ = span.set_parent(parent);
            herald.send(message).instrument(span).await?
        }
        None => herald.send(message).await?,
    };
    let status = if receipt.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(receipt)).into_response())
}

/// A stored message with its deliveries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageView {
    id: MessageId,
    tenant: String,
    event_type: String,
    /// As accepted, byte for byte.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    /// Credentials and query removed.
    callback_url: Option<String>,
    idempotency_key: Option<String>,
    dedup_key: Option<String>,
    ordering_key: Option<String>,
    created_at: String,
    deliveries: Vec<DeliveryView>,
}

/// One message, its payload and where it is going.
#[utoipa::path(
    get, path = "/v1/messages/{id}", tag = PRODUCER,
    params(("id" = String, Path, description = "message id")),
    responses(
        (status = 200, body = MessageView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn message(State(herald): State<Herald>, ApiPath(raw): ApiPath<String>) -> ApiResult {
    let id: MessageId = id("message", &raw)?;
    let message = herald.message(id).await?;
    let deliveries = herald.message_deliveries(id).await?;
    let deliveries = delivery_views(&herald, &deliveries).await;
    // Served as stored, never parsed again: a reader with a nesting limit (serde_json stops
    // at 128 levels) would turn a payload it cannot parse into something else.
    Ok(Json(MessageView {
        id: message.id,
        tenant: message.tenant,
        event_type: message.event_type,
        payload: message.payload,
        callback_url: message
            .callback_url
            .as_deref()
            .map(crate::transport::redact),
        idempotency_key: message.idempotency_key,
        dedup_key: message.dedup_key,
        ordering_key: message.ordering_key,
        created_at: rfc3339(message.created_at),
        deliveries,
    })
    .into_response())
}
