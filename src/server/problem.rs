//! The one mapping from library errors to `application/problem+json` responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::Error;

/// An HTTP error with a stable `type`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    extra: Value,
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// A 413 `payload_too_large` for a request body over the server's limit.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError {
            extra: json!({ "limit": limit }),
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
            extra: Value::Null,
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
            Error::UnknownPolicy(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_policy", detail)
            }
            Error::PayloadTooLarge { size, limit } => ApiError {
                extra: json!({ "size": size, "limit": limit }),
                ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
            },
            Error::NotFound(_) => ApiError::not_found(detail),
            Error::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            Error::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
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
        let mut body = json!({
            "type": self.kind,
            "title": self.status.canonical_reason().unwrap_or(""),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, self.extra) {
            body.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
