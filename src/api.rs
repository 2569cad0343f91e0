//! What the embedding API takes and returns, beyond the stored records of [`crate::model`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::{
    DeliveryId, DeliveryStatus, Endpoint, EndpointId, ErrorKind, MessageId, rfc3339,
};

/// One event to deliver.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The customer account; selects the endpoints.
    pub tenant: String,
    /// Event name; endpoints may subscribe to a subset.
    pub event_type: String,
    /// The JSON payload, kept byte for byte.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// Send to this URL only, with the tenant's default endpoint's policy and secrets.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The same key from the same tenant returns the first answer and sends nothing twice.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Delta mode: skip the send when this key's last delivered payload was the same.
    #[serde(default)]
    pub dedup_key: Option<String>,
    /// Per endpoint, messages with the same ordering key (at most 256 bytes) are attempted one
    /// at a time, in the order they were accepted: e.g. a job id, so that its status changes
    /// arrive in the order they happened.
    #[serde(default)]
    pub ordering_key: Option<String>,
    /// The first attempt is not made before this time (RFC 3339, e.g.
    /// `2026-11-24T09:00:00+01:00`; a past time means now); at most 365 days ahead. Not
    /// together with `delay`.
    #[serde(default)]
    pub deliver_at: Option<String>,
    /// The first attempt waits this long (a duration such as `10m` or `1h 30m`); at most 365
    /// days. Not together with `deliver_at`.
    #[serde(default)]
    pub delay: Option<String>,
}

impl NewMessage {
    /// A message with a payload serialized from any `Serialize` value.
    pub fn new(
        tenant: impl Into<String>,
        event_type: impl Into<String>,
        payload: &impl Serialize,
    ) -> serde_json::Result<NewMessage> {
        Ok(NewMessage {
            tenant: tenant.into(),
            event_type: event_type.into(),
            payload: serde_json::value::to_raw_value(payload)?,
            callback_url: None,
            idempotency_key: None,
            dedup_key: None,
            ordering_key: None,
            deliver_at: None,
            delay: None,
        })
    }

    /// Sets the per-message callback URL.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the delta-mode key.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Sets the ordering key: per endpoint, messages sharing it are attempted one at a time,
    /// in acceptance order.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Makes the first attempt wait until `at` (a past time means now).
    pub fn deliver_at(mut self, at: std::time::SystemTime) -> Self {
        self.deliver_at = Some(humantime::format_rfc3339_millis(at).to_string());
        self
    }

    /// Makes the first attempt wait for `delay` after acceptance.
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = Some(humantime::format_duration(delay).to_string());
        self
    }
}

/// The answer to a send: the message id and where it is going.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SendReceipt {
    /// The message id receivers will see.
    pub id: MessageId,
    /// False when an earlier message with the same idempotency key was returned instead.
    #[serde(skip)]
    pub created: bool,
    /// Set when no endpoint takes the message: why nothing will be delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrouted: Option<String>,
    /// One per target.
    pub deliveries: Vec<DeliveryReceipt>,
}

/// One delivery in a [`SendReceipt`].
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryReceipt {
    /// Delivery id.
    pub id: DeliveryId,
    /// The endpoint whose policy applies.
    pub endpoint_id: EndpointId,
    /// Target URL, credentials and query removed.
    pub url: String,
    /// Status at acceptance: `pending`, `skipped` or `held`.
    pub status: DeliveryStatus,
    /// When the first attempt is due (RFC 3339), while pending: later than now for a
    /// scheduled send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// A new endpoint.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// The customer account.
    pub tenant: String,
    /// Callback URL.
    pub url: String,
    /// Policy name.
    pub policy: String,
    /// Signing secret (write-only).
    #[serde(default)]
    pub secret: Option<String>,
    /// Token (write-only).
    #[serde(default)]
    pub token: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Subscribed event types; empty = all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// The tenant's default endpoint (only one per tenant; setting it moves the flag).
    #[serde(default)]
    pub default: bool,
    /// Attempts per second, at most (attempts start at least `1 / rate_limit` s apart);
    /// absent: the policy's default, if any, else unlimited.
    #[serde(default)]
    pub rate_limit: Option<f64>,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    /// New URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New policy.
    #[serde(default)]
    pub policy: Option<String>,
    /// New secret; the old one keeps signing for the rotation grace period.
    #[serde(default)]
    pub secret: Option<String>,
    /// New token.
    #[serde(default)]
    pub token: Option<String>,
    /// New headers (replace all).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// New subscriptions (replace all).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Default flag.
    #[serde(default)]
    pub default: Option<bool>,
    /// New rate limit (attempts per second); `null` removes the endpoint's own limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, nullable)]
    pub rate_limit: Option<Option<f64>>,
}

/// A field that may be absent (`None`: leave it), `null` (`Some(None)`: remove it) or a value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An endpoint as shown to operators: secrets and tokens are never included.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    /// Id.
    pub id: EndpointId,
    /// Tenant.
    pub tenant: String,
    /// URL, with credentials and query removed.
    pub url: String,
    /// Policy name.
    pub policy: String,
    /// Subscriptions.
    pub event_types: Vec<String>,
    /// Default flag.
    pub default: bool,
    /// Whether it receives deliveries.
    pub enabled: bool,
    /// Consecutive failed attempts (reset by a success or by enabling).
    pub consecutive_failures: u32,
    /// Why it is disabled (`by an operator`, or its failures), while disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When it was disabled (RFC 3339), while disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// Whether a secret is set (its value is write-only).
    pub has_secret: bool,
    /// Whether a token is set.
    pub has_token: bool,
    /// Header names (values may be credentials).
    pub header_names: Vec<String>,
    /// The endpoint's own rate limit (attempts per second); `null`: the policy's default
    /// applies, if it has one.
    pub rate_limit: Option<f64>,
    /// The rate limit that applies now and the current wait for it (in one endpoint's view —
    /// `GET`, and the answers to creating, changing, enabling and disabling it —, not in
    /// lists; absent when the endpoint is not rate-limited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing: Option<Pacing>,
    /// RFC 3339.
    pub created_at: String,
}

/// An endpoint's rate limit as it applies now.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Pacing {
    /// Attempts per second, at most: attempts start at least `1 / rate_limit` s apart.
    pub rate_limit: f64,
    /// Whether the limit is the endpoint's own or its policy's default.
    pub source: crate::engine::LimitSource,
    /// How long the next attempt must wait for the limit, now (ms).
    pub wait_ms: u64,
}

impl From<&Endpoint> for EndpointView {
    fn from(e: &Endpoint) -> Self {
        EndpointView {
            id: e.id,
            tenant: e.tenant.clone(),
            url: crate::transport::redact(&e.url),
            policy: e.policy.clone(),
            event_types: e.event_types.clone(),
            default: e.default,
            enabled: e.enabled,
            consecutive_failures: e.consecutive_failures,
            disabled_reason: e.disabled_reason.clone(),
            disabled_at: e.disabled_at.map(rfc3339),
            has_secret: e.secret.is_some(),
            has_token: e.token.is_some(),
            header_names: e.headers.keys().cloned().collect(),
            rate_limit: e.rate_limit,
            pacing: None,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// One finished attempt, as published on [`crate::Outcomes`]: enough for a TMS to keep its
/// own `callback_response_code` and `last_callback_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptEvent {
    /// The message.
    pub message_id: MessageId,
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Tenant of the message.
    pub tenant: String,
    /// Attempt number over all cycles.
    pub attempt: u32,
    /// Response status, if any.
    pub status_code: Option<u16>,
    /// Failure kind, if it failed.
    pub error: Option<ErrorKind>,
    /// Whether the policy counted it a success.
    pub success: bool,
    /// The delivery's status after this attempt.
    pub delivery_status: DeliveryStatus,
    /// When the attempt started (ms since the epoch).
    pub at_ms: u64,
    /// Request duration.
    pub duration_ms: u64,
}

/// What a test-send to an endpoint came back with.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TestSendResult {
    /// Whether the endpoint's policy counts the answer a success.
    pub success: bool,
    /// The response status, if there was a response.
    pub status_code: Option<u16>,
    /// The failure kind, if it failed.
    pub error: Option<ErrorKind>,
    /// Why it failed, for people.
    pub error_detail: Option<String>,
    /// Request duration.
    pub duration_ms: u64,
    /// The first bytes of the response body.
    pub response_excerpt: String,
}

/// One day of an endpoint's attempts (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DayStats {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Attempts made.
    pub attempts: u64,
    /// Attempts the policy counted a success.
    pub successes: u64,
    /// The others.
    pub failures: u64,
    /// Median attempt duration, to within ±10% (from a log-scale histogram); `None` without
    /// attempts.
    pub median_latency_ms: Option<u64>,
}
