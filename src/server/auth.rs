//! Bearer tokens: the admin token may do everything, the producer token only `/v1/messages`.
//! Without tokens, only requests addressed to a loopback name are answered.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
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
        if self.open() {
            return Ok(Some(Role::Admin));
        }
        let Some(given) = bearer(request) else {
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

impl Tokens {
    /// No token at all: the daemon serves loopback only and anyone there may do everything.
    pub(crate) fn open(&self) -> bool {
        self.admin.is_none() && self.producer.is_none()
    }
}

/// The token of `Authorization: Bearer <token>`. The scheme is case-insensitive and may be
/// followed by more than one space (RFC 9110, section 11.4).
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware for the tokenless mode: a request must be addressed (its `Host`, and its target
/// if in absolute form) to a loopback address or `localhost`, or it gets 421
/// `misdirected_request`. A web page whose own name an attacker has pointed at 127.0.0.1
/// (DNS rebinding) is same-origin for the browser and can read the answers; its requests
/// still carry the attacker's name in `Host`, and that is what gives them away.
pub async fn loopback_hosts_only(request: Request, next: Next) -> Response {
    let host = request.headers().get(HOST);
    let target = request.uri().authority().map(|a| a.as_str());
    let host_is_loopback = host
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_loopback_name);
    if host_is_loopback && target.is_none_or(is_loopback_name) {
        return next.run(request).await;
    }
    let host = host.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let named = target.or(host.as_deref()).unwrap_or_default();
    ApiError::misdirected(named).into_response()
}

/// `localhost` or a loopback IP address, with or without a port (`[::1]:8088`).
fn is_loopback_name(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, rest)) if rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port) => {
                ip
            }
            _ => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => authority,
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A port number's digits.
fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Admin routes: the admin token.
pub async fn admin(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    match tokens.role(&request) {
        Ok(Some(Role::Admin)) => next.run(request).await,
        Ok(_) => ApiError::forbidden().into_response(),
        Err(e) => e.into_response(),
    }
}

/// Producer routes: either token.
pub async fn producer(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    match tokens.role(&request) {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) => ApiError::forbidden().into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_or_without_a_port() {
        for name in [
            "localhost",
            "LOCALHOST:8088",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8088",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:8088",
            "[::ffff:127.0.0.1]:8088",
        ] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in [
            "",
            "evil.example",
            "evil.example:8088",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:8088",
            "0.0.0.0",
            "[::1",
            "[::1]x",
            "::1",
            "localhost:",
            "localhost:80a",
            "[::2]:8088",
        ] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }
}
