//! The one mapping from library errors to `application/problem+json` responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// The body of every error answer (`application/problem+json`, RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable machine-readable kind: `invalid_request`, `invalid_url`, `unknown_policy`,
    /// `payload_too_large`, `unsupported_media_type`, `request_timeout`, `unauthorized`,
    /// `forbidden`, `misdirected_request`, `not_found`, `method_not_allowed`, `conflict`,
    /// `unrouted`, `unavailable`, `shutting_down`, `internal`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The HTTP reason phrase.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong, for people.
    pub detail: String,
    /// `payload_too_large`: the size of what was sent, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// `payload_too_large`: the limit, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The `404 not_found` answer, as the OpenAPI document shows it (routes name it in
/// `responses(...)`; the error itself is an [`ApiError`]).
#[derive(utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "not_found",
    content_type = "application/problem+json"
)]
#[allow(dead_code)] // a description for the document, never built
pub struct NotFound(Problem);

/// An HTTP error with a stable `type`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    size: Option<usize>,
    limit: Option<usize>,
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// A 413 `payload_too_large` for a request body over the server's limit.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError {
            limit: Some(limit),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body exceeds {limit} bytes"),
            )
        }
    }

    /// A 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// A 408 `request_timeout`: the request body did not arrive within `limit`.
    pub fn body_timeout(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(limit)
            ),
        )
    }

    /// A 415 `unsupported_media_type`.
    pub fn unsupported_media_type(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        )
    }

    /// A 405 `method_not_allowed`; the `Allow` header (added by the router) lists the methods
    /// that are served.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not served on {path}; the Allow header lists what is"),
        )
    }

    /// A 421 `misdirected_request`: without tokens, a request addressed to a name other than
    /// a loopback address or `localhost`.
    pub fn misdirected(host: &str) -> ApiError {
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "without tokens herald answers only requests addressed to a loopback address or \
                 localhost; this one was addressed to {host:?}"
            ),
        )
    }

    /// A 401 `unauthorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    /// A 403 `forbidden`.
    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the producer token may only send and read messages",
        )
    }

    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            size: None,
            limit: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let detail = e.to_string();
        match e {
            Error::InvalidRequest(_) => ApiError::invalid(detail),
            Error::InvalidUrl { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_url", detail)
            }
            Error::UnknownPolicy(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_policy",
                format!(
                    "{detail}: GET /admin/policies (`herald policies list`) names the loaded ones"
                ),
            ),
            Error::PayloadTooLarge { size, limit } => ApiError {
                size: Some(size),
                limit: Some(limit),
                ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
            },
            Error::NotFound(_) => ApiError::not_found(detail),
            Error::Unrouted(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unrouted", detail)
            }
            Error::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            Error::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
            }
            Error::Unavailable(_) => {
                tracing::warn!(error = %detail, "request refused: the store takes no writes now");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            }
            Error::Policy(_) | Error::Store(_) | Error::Startup(_) => {
                tracing::error!(error = %detail, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: self.kind,
            title: self.status.canonical_reason().unwrap_or(""),
            status: self.status.as_u16(),
            detail: self.detail,
            size: self.size,
            limit: self.limit,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still arrive; it must not be read as the next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
