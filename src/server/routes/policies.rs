//! The admin policy routes: what each policy does, with its computed schedule.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;

use super::{ADMIN, ApiResult};
use crate::server::extract::ApiPath;
use crate::server::problem::{ApiError, NotFound};
use crate::{Herald, Policy};

/// A policy in the list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicySummary {
    name: String,
    description: String,
    /// Attempts in one cycle when nothing succeeds.
    attempts: u32,
}

/// Every loaded policy.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    policies: Vec<PolicySummary>,
}

/// One attempt of a schedule.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduledAttempt {
    /// 1-based.
    attempt: usize,
    /// From the first attempt, e.g. `1h 15m`.
    offset: String,
    offset_seconds: f64,
}

/// A policy with its computed schedule (without jitter).
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyView<'a> {
    name: &'a str,
    description: &'a str,
    attempts: u32,
    /// The policy as loaded (the TOML format, as JSON).
    #[schema(value_type = Object)]
    policy: &'a Policy,
    schedule: Vec<ScheduledAttempt>,
}

/// A policy with its computed schedule, as the API and `herald policies show --json` print it.
pub fn policy_json(policy: &Policy) -> PolicyView<'_> {
    let schedule = policy
        .schedule
        .offsets()
        .iter()
        .enumerate()
        .map(|(i, offset)| ScheduledAttempt {
            attempt: i + 1,
            offset: humantime::format_duration(*offset).to_string(),
            offset_seconds: offset.as_secs_f64(),
        })
        .collect();
    PolicyView {
        name: &policy.name,
        description: &policy.description,
        attempts: policy.schedule.attempts(),
        policy,
        schedule,
    }
}

/// Lists the loaded policies.
#[utoipa::path(
    get, path = "/admin/policies", tag = ADMIN,
    responses((status = 200, body = PolicyList)),
    security(("bearer" = []))
)]
pub async fn list_policies(State(herald): State<Herald>) -> ApiResult {
    let policies = herald
        .policies()
        .iter()
        .map(|p| PolicySummary {
            name: p.name.clone(),
            description: p.description.clone(),
            attempts: p.schedule.attempts(),
        })
        .collect();
    Ok(Json(PolicyList { policies }).into_response())
}

/// One policy with every attempt's offset.
#[utoipa::path(
    get, path = "/admin/policies/{name}", tag = ADMIN,
    params(("name" = String, Path, description = "policy name")),
    responses(
        (status = 200, body = PolicyView),
        NotFound,
    ),
    security(("bearer" = []))
)]
pub async fn get_policy(State(herald): State<Herald>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let policy = herald
        .policies()
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("policy {name:?} not found")))?;
    Ok(Json(policy_json(policy)).into_response())
}
