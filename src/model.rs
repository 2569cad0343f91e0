//! The domain records: endpoints, messages, deliveries and attempts.
//!
//! These are what the store keeps and what the embedding API and the HTTP API return. Times are
//! milliseconds since the Unix epoch in storage and RFC 3339 strings on the wire
//! ([`rfc3339`]). Ids are UUIDv7, so they sort by creation time.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// The 16 bytes used in store keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            /// The id from store-key bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies an [`Endpoint`].
    EndpointId
);
id_type!(
    /// Identifies a message; sent to receivers on every attempt so they can deduplicate.
    MessageId
);
id_type!(
    /// Identifies a [`Delivery`].
    DeliveryId
);

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A stored time as an RFC 3339 string with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A customer's callback target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable id.
    pub id: EndpointId,
    /// The customer account this endpoint belongs to; messages are routed by tenant.
    pub tenant: String,
    /// Where requests go.
    pub url: String,
    /// Name of the [`crate::policy::Policy`] that governs delivery.
    pub policy: String,
    /// Signing secret (HMAC key); never returned by the APIs.
    #[serde(default)]
    pub secret: Option<String>,
    /// A secret replaced by rotation, still signed with until `until_ms`.
    #[serde(default)]
    pub previous_secret: Option<RotatedSecret>,
    /// Token for token-header policies; never returned by the APIs.
    #[serde(default)]
    pub token: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Event types this endpoint receives; empty means all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// The tenant's default endpoint: its policy, secret and headers apply to messages that
    /// carry their own `callback_url`.
    #[serde(default)]
    pub default: bool,
    /// Disabled endpoints receive nothing; their deliveries are held.
    pub enabled: bool,
    /// Consecutive failed attempts (reset by a success or by enabling). Kept in the store as
    /// its own counter, updated atomically with each attempt; filled in when read.
    #[serde(skip)]
    pub consecutive_failures: u32,
    /// Why the endpoint is disabled (an operator, or its failures); `None` while enabled.
    /// Kept with the failure count, filled in when read.
    #[serde(skip)]
    pub disabled_reason: Option<String>,
    /// When it was disabled (ms); `None` while enabled.
    #[serde(skip)]
    pub disabled_at: Option<u64>,
    /// When it was last enabled after being disabled (ms). Attempts that a disablement held
    /// back restart their schedule's pacing from their first attempt after this time.
    #[serde(skip)]
    pub released_at: Option<u64>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last change (ms).
    pub updated_at: u64,
    /// Attempts per second to this endpoint, at most (the customer's "at most 20 calls a
    /// second"); `None`: the policy's default, if it has one.
    #[serde(default)]
    pub rate_limit: Option<f64>,
}

/// The fastest rate limit that means anything: one attempt a microsecond.
pub const MAX_RATE_LIMIT: f64 = 1_000_000.0;

/// Checks a rate limit (attempts per second): a positive, finite number.
pub fn check_rate_limit(rate: f64) -> Result<(), String> {
    if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_LIMIT {
        Ok(())
    } else {
        Err(format!(
            "rate_limit must be a number of attempts per second above 0 and at most \
             {MAX_RATE_LIMIT}, not {rate}"
        ))
    }
}

/// A signing secret in its grace period after rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotatedSecret {
    /// The old secret.
    pub secret: String,
    /// Signatures with it stop after this time (ms).
    pub until_ms: u64,
}

impl Endpoint {
    /// True when this endpoint takes events of this type.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }

    /// The secrets to sign with at `now_ms`: the current one, then a rotated one in its grace
    /// period.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<&str> {
        let mut secrets: Vec<&str> = self.secret.as_deref().into_iter().collect();
        if let Some(old) = &self.previous_secret
            && old.until_ms > now_ms
        {
            secrets.push(&old.secret);
        }
        secrets
    }

    /// An enabled default endpoint of tenant `acme` under `policy`, for unit tests.
    #[cfg(test)]
    pub(crate) fn sample(policy: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::new(),
            tenant: "acme".into(),
            url: "https://tms.example/cb".into(),
            policy: policy.into(),
            secret: None,
            previous_secret: None,
            token: None,
            headers: Default::default(),
            event_types: vec![],
            default: true,
            enabled: true,
            consecutive_failures: 0,
            disabled_reason: None,
            disabled_at: None,
            released_at: None,
            created_at: 0,
            updated_at: 0,
            rate_limit: None,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or in one).
    Pending,
    /// The receiver accepted it.
    Succeeded,
    /// Every attempt of the cycle failed; an operator may replay it.
    Failed,
    /// Delta mode: the same payload was already delivered for this dedup key.
    Skipped,
    /// Its endpoint is disabled; it waits, not attempted and not lost.
    Held,
}

impl DeliveryStatus {
    /// Every status, in the order people read them (waiting, then finished).
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Held,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
    ];

    /// The lower-case name used in the APIs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Held => "held",
        }
    }

    /// Succeeded, failed and skipped deliveries have no further attempts unless replayed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Succeeded | DeliveryStatus::Failed | DeliveryStatus::Skipped
        )
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}

/// One event from the TMS, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// Stable id; the same on every attempt and replay.
    pub id: MessageId,
    /// Routing key.
    pub tenant: String,
    /// Event name, e.g. `job.completed`.
    pub event_type: String,
    /// The JSON payload exactly as received; stored once however many deliveries.
    #[serde(skip)]
    pub payload: Box<RawValue>,
    /// Per-message URL override (Gengo's per-job callback URL).
    pub callback_url: Option<String>,
    /// Producer's idempotency key.
    pub idempotency_key: Option<String>,
    /// Delta-mode key.
    pub dedup_key: Option<String>,
    /// Per endpoint, messages sharing this key are attempted one at a time, in order.
    pub ordering_key: Option<String>,
    /// The W3C `traceparent` of the span that accepted it, when spans are exported: its
    /// attempts join that trace, after a restart too.
    pub traceparent: Option<String>,
    /// When it was accepted (ms).
    pub created_at: u64,
}

/// One message to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable id.
    pub id: DeliveryId,
    /// The message delivered.
    pub message_id: MessageId,
    /// The endpoint whose policy, secrets and concurrency budget apply.
    pub endpoint_id: EndpointId,
    /// The message's `callback_url`, when it overrides the endpoint's URL.
    pub url_override: Option<String>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Replays start a new cycle; the first cycle is 1.
    pub cycle: u32,
    /// Attempts made in the current cycle.
    pub cycle_attempts: u32,
    /// Attempts made in all cycles; attempt records are numbered by it.
    pub total_attempts: u32,
    /// The current cycle's schedule anchor (ms): see [`crate::policy::Schedule`].
    pub anchor_ms: u64,
    /// When the next attempt is due (ms), while pending.
    pub next_attempt_at: Option<u64>,
    /// The last attempt's status code.
    pub last_status_code: Option<u16>,
    /// The last attempt's error or failure reason.
    pub last_error: Option<String>,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last change (ms).
    pub updated_at: u64,
}

/// Why an attempt failed before a response could be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No complete response within the policy's timeout.
    Timeout,
    /// The connection could not be made (refused, DNS, unreachable).
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// The response status or body did not meet the policy's success rule.
    Rejected,
    /// The receiver answered 410 Gone under a `disable_on_gone` policy.
    Gone,
    /// The target is not allowed (URL rules, private address); never retried.
    Refused,
    /// Any other transport failure.
    Transport,
}

impl ErrorKind {
    /// The snake_case name used in the APIs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Gone => "gone",
            ErrorKind::Refused => "refused",
            ErrorKind::Transport => "transport",
        }
    }
}

/// One HTTP try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based, counted over every cycle of the delivery.
    pub attempt: u32,
    /// The cycle it belongs to (replays start new cycles).
    pub cycle: u32,
    /// Start (ms).
    pub started_at: u64,
    /// Wall time of the request.
    pub duration_ms: u64,
    /// The response status, when there was a response.
    pub status_code: Option<u16>,
    /// The failure kind, when it failed.
    pub error: Option<ErrorKind>,
    /// A human-readable reason for the failure.
    pub error_detail: Option<String>,
    /// The first bytes of the response body (lossy UTF-8).
    pub response_excerpt: String,
    /// Whether the policy counted it a success.
    pub success: bool,
}
