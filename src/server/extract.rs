//! Request parsing whose every rejection is problem+json: the body (JSON only, read within the
//! body timeout), the query string and the path. Handlers take [`ApiJson`], [`ApiQuery`] and
//! [`ApiPath`], never axum's own extractors, whose rejections are plain text.

use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::problem::ApiError;

/// How long a request body may take to arrive, counted from the end of its head. The daemon's
/// connection loop puts it on every request; without it (a router served by someone else),
/// bodies are read without a deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyReadTimeout(pub Duration);

/// A JSON body; malformed JSON or wrong types are a 400 `invalid_request` naming the field,
/// a body over the limit a 413, a body slower than [`BodyReadTimeout`] a 408.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let timeout = request.extensions().get::<BodyReadTimeout>().copied();
        let read = Bytes::from_request(request, state);
        let read = match timeout {
            Some(BodyReadTimeout(limit)) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| ApiError::body_timeout(limit))?,
            None => read.await,
        };
        let bytes = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large(super::MAX_REQUEST_BYTES)
            } else {
                ApiError::invalid(format!("request body could not be read: {e}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("request body: {e}")))
    }
}

/// The trace context a producer sent with the request (`traceparent`, `tracestate`), read
/// where it is: axum's `HeaderMap` extractor would copy every header of every request for it.
pub struct RemoteParent(pub Option<opentelemetry::Context>);

impl<S: Send + Sync> FromRequestParts<S> for RemoteParent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RemoteParent(crate::otel::remote_parent(&parts.headers)))
    }
}

/// Query-string parameters; anything that does not fit `T` is a 400 `invalid_request` naming
/// the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))
    }
}

/// Path parameters. One that cannot be decoded (percent-encoded bytes that are not UTF-8) names
/// nothing herald holds: a 404 `not_found`, as an id that does not parse is.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| {
                ApiError::not_found(format!("{}: {}", parts.uri.path(), rejection.body_text()))
            })
    }
}

/// Middleware: a request that carries a body must say it is JSON (`application/json`, or a
/// `+json` type), or it is refused with 415 before any route sees it. Browsers send
/// `text/plain`, form and multipart bodies across sites without asking first (a "simple"
/// request, no CORS preflight); JSON they do not. Requests without a body (`POST .../enable`)
/// need no content type.
pub async fn require_json_bodies(request: Request, next: Next) -> Response {
    let has_body = request.body().size_hint().exact() != Some(0);
    if !has_body {
        return next.run(request).await;
    }
    match request.headers().get(CONTENT_TYPE) {
        Some(value) if is_json(value) => next.run(request).await,
        Some(value) => ApiError::unsupported_media_type(format!(
            "request bodies must be application/json; this one is {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ))
        .into_response(),
        None => ApiError::unsupported_media_type(
            "request bodies must be application/json; this one has no Content-Type",
        )
        .into_response(),
    }
}

/// `application/json` or `application/<anything>+json`, with any parameters.
fn is_json(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_with_their_parameters() {
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/problem+json",
            " application/json ;charset=UTF-8",
        ] {
            assert!(is_json(&HeaderValue::from_static(json)), "{json}");
        }
        for other in [
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "",
        ] {
            assert!(!is_json(&HeaderValue::from_static(other)), "{other}");
        }
    }
}
