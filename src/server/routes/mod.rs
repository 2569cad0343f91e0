//! Handlers: each parses, calls the library once or twice, and shapes the answer.
//!
//! Every handler carries its OpenAPI description (`#[utoipa::path]`), and [`super::router`]
//! registers handler and description in one step (`utoipa_axum::routes!`), so
//! `GET /openapi.json` cannot list a route that is not served or miss one that is.

pub mod deliveries;
pub mod endpoints;
pub mod messages;
pub mod ops;
pub mod policies;

pub use policies::policy_json;

use super::problem::ApiError;
use crate::model::now_ms;

pub(crate) type ApiResult<T = axum::response::Response> = Result<T, ApiError>;

/// OpenAPI tag of the producer routes.
pub const PRODUCER: &str = "producer";
/// OpenAPI tag of the admin routes.
pub const ADMIN: &str = "admin";

/// Parses a path id; anything unparsable is simply not found.
fn id<T: std::str::FromStr>(kind: &str, raw: &str) -> ApiResult<T> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("{kind} {raw:?} not found")))
}

/// RFC 3339, or an age such as `2h` (that long before now).
pub fn parse_time(field: &str, raw: &str) -> ApiResult<u64> {
    if let Ok(at) = humantime::parse_rfc3339_weak(raw) {
        return at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| ApiError::invalid(format!("`{field}` is before 1970")));
    }
    humantime::parse_duration(raw)
        .map(|age| now_ms().saturating_sub(age.as_millis() as u64))
        .map_err(|_| {
            ApiError::invalid(format!(
                "`{field}` must be an RFC 3339 time or an age such as 2h; got {raw:?}"
            ))
        })
}

/// Parses an optional `since`/`until` pair and checks their order.
fn time_range(since: Option<&str>, until: Option<&str>) -> ApiResult<(Option<u64>, Option<u64>)> {
    let since_ms = since.map(|r| parse_time("since", r)).transpose()?;
    let until_ms = until.map(|r| parse_time("until", r)).transpose()?;
    if let (Some(since), Some(until)) = (since_ms, until_ms)
        && since > until
    {
        return Err(ApiError::invalid("`since` is after `until`"));
    }
    Ok((since_ms, until_ms))
}
