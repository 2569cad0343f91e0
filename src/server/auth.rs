//! Bearer tokens: the admin token may do everything, the producer token only `/v1/messages`.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::problem::ApiError;

/// The tokens a daemon accepts. Without any, every request is allowed (loopback only; the
/// configuration refuses a public address without tokens).
#[derive(Clone, Default)]
pub struct Tokens {
    /// Everything.
    pub admin: Option<String>,
    /// Producer routes only.
    pub producer: Option<String>,
}

/// Who a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Producer,
}

fn equal(given: &str, expected: &Option<String>) -> bool {
    expected
        .as_ref()
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())))
}

impl Tokens {
    fn role(&self, request: &Request) -> Result<Option<Role>, ApiError> {
        if self.admin.is_none() && self.producer.is_none() {
            return Ok(Some(Role::Admin));
        }
        let Some(given) = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return Err(ApiError::unauthorized());
        };
        if equal(given, &self.admin) {
            Ok(Some(Role::Admin))
        } else if equal(given, &self.producer) {
            Ok(Some(Role::Producer))
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// Admin routes: the admin token.
pub async fn admin(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    match tokens.role(&request) {
        Ok(Some(Role::Admin)) => next.run(request).await,
        Ok(_) => ApiError::forbidden().into_response(),
        Err(e) => e.into_response(),
    }
}

/// Producer routes: either token.
pub async fn producer(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    match tokens.role(&request) {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) => ApiError::forbidden().into_response(),
        Err(e) => e.into_response(),
    }
}
