//! The delivery decision: every rule about what happens to a delivery and its endpoint, as
//! pure functions from facts to records.
//!
//! Nothing here reads a clock, draws a random number, touches the store or the network: the
//! engine gathers the facts (the delivery as leased, the endpoint, the policy, what the
//! receiver answered, the time, a random sample for jitter), calls these functions, and hands
//! the answer to the store, which persists it atomically. A second store backend or a second
//! front end therefore cannot get a rule wrong: it never sees one.

use std::time::Duration;

use crate::model::{Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, ErrorKind, Message};
use crate::policy::{Policy, Verdict, classify};
use crate::store::{Closing, HealthChange, Lease, Outcome};
use crate::transport::Exchange;

/// What one attempt came back with, judged under its policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judged {
    pub(crate) status_code: Option<u16>,
    /// The failure kind and why, for people; `None` for a success.
    pub(crate) error: Option<(ErrorKind, String)>,
    pub(crate) excerpt: String,
    /// Whether another attempt could succeed.
    pub(crate) retryable: bool,
    pub(crate) retry_after: Option<Duration>,
}

/// A failure that no retry can fix.
pub(crate) fn refused(reason: &str) -> Judged {
    Judged {
        status_code: None,
        error: Some((ErrorKind::Refused, reason.to_string())),
        excerpt: String::new(),
        retryable: false,
        retry_after: None,
    }
}

/// Classifies an exchange: transport failures are retried (except a refused target),
/// responses are judged by the policy's success rule.
pub(crate) fn judge(policy: &Policy, exchange: Exchange, excerpt_bytes: usize) -> Judged {
    match exchange {
        Exchange::Failed { kind, detail } => Judged {
            status_code: None,
            retryable: kind != ErrorKind::Refused,
            error: Some((kind, detail)),
            excerpt: String::new(),
            retry_after: None,
        },
        Exchange::Response(response) => {
            let cut = response.body.len().min(excerpt_bytes);
            let excerpt = String::from_utf8_lossy(&response.body[..cut]).into_owned();
            let (error, retryable) = match classify(policy, response.status, &response.body) {
                Verdict::Success => (None, false),
                Verdict::Failure(reason) => (Some((ErrorKind::Rejected, reason)), true),
                Verdict::Gone => (
                    Some((ErrorKind::Gone, "410 Gone: the receiver is gone".into())),
                    false,
                ),
            };
            Judged {
                status_code: Some(response.status),
                error,
                excerpt,
                retryable,
                retry_after: response.retry_after,
            }
        }
    }
}

/// Everything an attempt's decision depends on.
pub(crate) struct AttemptFacts<'a> {
    /// The endpoint's policy; `None` when it is not loaded (then the attempt was refused).
    pub(crate) policy: Option<&'a Policy>,
    /// The delivery as it was leased.
    pub(crate) delivery: &'a Delivery,
    /// Its endpoint.
    pub(crate) endpoint: &'a Endpoint,
    /// When the lease said the delivery was due.
    pub(crate) due_ms: u64,
    /// What came back.
    pub(crate) judged: Judged,
    /// When the attempt started and how long it took.
    pub(crate) started_at: u64,
    pub(crate) duration_ms: u64,
    /// Delta mode: the message's dedup key and payload digest.
    pub(crate) dedup: Option<(String, [u8; 32])>,
    /// The message's ordering key.
    pub(crate) ordering_key: Option<&'a str>,
    /// A sample from `[-1, 1]` scaling the schedule's jitter.
    pub(crate) random: f64,
}

/// What an attempt leads to: the records the store persists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub(crate) attempt: Attempt,
    pub(crate) delivery: Delivery,
    pub(crate) health: HealthChange,
    pub(crate) dedup: Option<(String, [u8; 32])>,
    /// The ordering key whose line the delivery leaves: the next one in line becomes due.
    pub(crate) release: Option<String>,
}

impl Decision {
    /// The outcome to record under `lease`.
    pub(crate) fn into_outcome(self, lease: Lease) -> Outcome {
        Outcome {
            lease,
            attempt: self.attempt,
            delivery: self.delivery,
            health: self.health,
            dedup: self.dedup,
            release: self.release,
        }
    }
}

/// Decides what an attempt means for its delivery and its endpoint.
pub(crate) fn decide(facts: AttemptFacts<'_>) -> Decision {
    let AttemptFacts {
        policy,
        delivery,
        endpoint,
        due_ms,
        judged,
        started_at,
        duration_ms,
        dedup,
        ordering_key,
        random,
    } = facts;
    let finished_at = started_at + duration_ms;
    let success = judged.error.is_none();
    let mut next = delivery.clone();
    next.total_attempts += 1;
    next.cycle_attempts += 1;
    next.last_status_code = judged.status_code;
    next.last_error = judged.error.as_ref().map(|(_, detail)| detail.clone());
    next.updated_at = finished_at;
    // An attempt that a disabled endpoint held back restarts the pacing: the schedule moves
    // by how late the attempt is, so the attempts after it keep the policy's gaps.
    if endpoint
        .released_at
        .is_some_and(|released| due_ms < released)
    {
        next.anchor_ms += started_at.saturating_sub(due_ms);
    }
    // A cycle is anchored at its first attempt as it happened, not as it was due: however late
    // that attempt starts (a backlog, waiting for its turn in an ordering key's line, a
    // scheduled send), the attempts after it keep the policy's gaps.
    if delivery.cycle_attempts == 0 {
        next.anchor_ms = started_at;
    }
    let retry = match (policy, success, judged.retryable) {
        (Some(policy), false, true) => policy.schedule.next_attempt(
            next.cycle_attempts,
            next.anchor_ms,
            finished_at,
            judged
                .retry_after
                .filter(|_| matches!(judged.status_code, Some(429 | 503))),
            random,
        ),
        _ => None,
    };
    match (success, retry) {
        (true, _) => finish(&mut next, DeliveryStatus::Succeeded),
        (false, Some(retry)) => {
            next.status = DeliveryStatus::Pending;
            next.next_attempt_at = Some(retry.due_ms);
            next.anchor_ms = retry.anchor_ms;
        }
        (false, None) => finish(&mut next, DeliveryStatus::Failed),
    }
    // A message's own callback URL is not the endpoint's: its outcome is that delivery's
    // business only.
    let health = match (delivery.url_override.is_some(), success) {
        (true, _) => HealthChange::Untouched,
        (false, true) => HealthChange::Reset,
        (false, false) => HealthChange::Increment,
    };
    let (error, error_detail) = match judged.error {
        Some((kind, detail)) => (Some(kind), Some(detail)),
        None => (None, None),
    };
    Decision {
        release: leaves_line(ordering_key, delivery, &next),
        attempt: Attempt {
            attempt: next.total_attempts,
            cycle: next.cycle,
            started_at,
            duration_ms,
            status_code: judged.status_code,
            error,
            error_detail,
            response_excerpt: judged.excerpt,
            success,
        },
        delivery: next,
        health,
        dedup: dedup.filter(|_| success),
    }
}

/// Whether a delivery takes its place in its ordering key's line: deliveries of a keyed
/// message in their first cycle do; a replay (a later cycle) is not held by its key.
fn in_line(ordering_key: Option<&str>, delivery: &Delivery) -> bool {
    ordering_key.is_some() && delivery.cycle == 1
}

/// The ordering key whose line a change of a delivery gives up, if any: a delivery in line
/// that finishes (succeeded, failed — by its attempts or an operator's cancel — or skipped)
/// leaves it, and the next delivery in line may be attempted.
pub(crate) fn leaves_line(
    ordering_key: Option<&str>,
    before: &Delivery,
    after: &Delivery,
) -> Option<String> {
    let finishes = before.status == DeliveryStatus::Pending && after.status.is_final();
    (in_line(ordering_key, before) && finishes).then(|| ordering_key.unwrap_or_default().into())
}

/// Longest ordering key, in bytes.
pub(crate) const MAX_ORDERING_KEY_LEN: usize = 256;

/// How far ahead a send may be scheduled.
pub(crate) const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(365 * 24 * 3600);

/// When a new message's first attempt is due: at `deliver_at` (RFC 3339) or `delay` after
/// `now_ms`, never before now, at most [`MAX_SCHEDULE_AHEAD`] ahead; now when neither is given.
pub(crate) fn first_attempt_at(
    now_ms: u64,
    deliver_at: Option<&str>,
    delay: Option<&str>,
) -> Result<u64, String> {
    let due = match (deliver_at, delay) {
        (Some(_), Some(_)) => {
            return Err("give `deliver_at` or `delay`, not both".into());
        }
        (None, None) => return Ok(now_ms),
        (Some(at), None) => {
            let at = chrono::DateTime::parse_from_rfc3339(at.trim()).map_err(|e| {
                format!(
                    "`deliver_at` {at:?} is not an RFC 3339 time such as \
                     2026-11-24T09:00:00Z ({e})"
                )
            })?;
            u64::try_from(at.timestamp_millis())
                .unwrap_or(0)
                .max(now_ms)
        }
        (None, Some(delay)) => {
            let delay = humantime::parse_duration(delay.trim()).map_err(|e| {
                format!("`delay` {delay:?} is not a duration such as 10m or 2h 30m ({e})")
            })?;
            if delay > MAX_SCHEDULE_AHEAD {
                return Err(format!(
                    "`delay` {} is more than 365 days",
                    humantime::format_duration(delay)
                ));
            }
            now_ms.saturating_add(delay.as_millis() as u64)
        }
    };
    if due > now_ms.saturating_add(MAX_SCHEDULE_AHEAD.as_millis() as u64) {
        return Err(format!(
            "`deliver_at` {} is more than 365 days ahead",
            crate::model::rfc3339(due)
        ));
    }
    Ok(due)
}

fn finish(delivery: &mut Delivery, status: DeliveryStatus) {
    delivery.status = status;
    delivery.next_attempt_at = None;
}

/// Whether a recorded attempt disables its endpoint, and why: a 410 under `disable_on_gone`,
/// or the failure count reaching `deactivate_after`. Attempts to a message's own callback URL
/// never do.
pub(crate) fn deactivation(
    policy: &Policy,
    health: HealthChange,
    attempt: &Attempt,
    consecutive_failures: u32,
) -> Option<String> {
    if health == HealthChange::Untouched {
        return None;
    }
    let detail = attempt.error_detail.as_deref().unwrap_or("");
    if attempt.error == Some(ErrorKind::Gone) {
        return Some(format!("the receiver answered 410 Gone ({detail})"));
    }
    let threshold = policy.endpoint.deactivate_after;
    (threshold > 0 && consecutive_failures >= threshold)
        .then(|| format!("{consecutive_failures} consecutive failed attempts; the last: {detail}"))
}

/// A new delivery of `message` to `endpoint`: pending and due at `due_ms`, or skipped when
/// delta mode found the payload unchanged.
pub(crate) fn new_delivery(
    message: &Message,
    endpoint: &Endpoint,
    unchanged: bool,
    due_ms: u64,
) -> Delivery {
    let now = message.created_at;
    Delivery {
        id: crate::model::DeliveryId::new(),
        message_id: message.id,
        endpoint_id: endpoint.id,
        url_override: message.callback_url.clone(),
        status: if unchanged {
            DeliveryStatus::Skipped
        } else {
            DeliveryStatus::Pending
        },
        cycle: 1,
        cycle_attempts: 0,
        total_attempts: 0,
        anchor_ms: due_ms,
        next_attempt_at: (!unchanged).then_some(due_ms),
        last_status_code: None,
        last_error: unchanged.then(|| "skipped: payload unchanged for this dedup key".into()),
        created_at: now,
        updated_at: now,
    }
}

/// Whether a send that reuses an idempotency key is the same message as the first: the same
/// event type and the same payload (compared as JSON, so key order and spacing do not
/// matter). A different one is the producer's bug, refused so that it shows.
pub(crate) fn same_message(first: &Message, again: &Message) -> bool {
    let parse = |m: &Message| serde_json::from_str::<serde_json::Value>(m.payload.get()).ok();
    first.event_type == again.event_type
        && (first.payload.get() == again.payload.get() || parse(first) == parse(again))
}

/// What an operator may do to one delivery, besides attempting it.
pub(crate) enum Command {
    /// A fresh attempt cycle for a finished delivery; its history is kept.
    Replay,
    /// Attempt a pending delivery now instead of at its due time.
    RetryNow,
    /// Stop a pending delivery: it fails, and may be replayed later.
    Cancel,
}

/// What the engine knows around a delivery when a command arrives.
pub(crate) struct CommandFacts {
    /// The message's payload is still stored (retention may have purged it).
    pub(crate) message_kept: bool,
    /// The delivery's endpoint still exists.
    pub(crate) endpoint_exists: bool,
}

/// A command's answer: the delivery after it, and the ordering key whose line it leaves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Commanded {
    pub(crate) delivery: Delivery,
    pub(crate) release: Option<String>,
}

/// The delivery after an operator's command, or why the command does not apply.
pub(crate) fn command(
    command: &Command,
    delivery: &Delivery,
    facts: &CommandFacts,
    ordering_key: Option<&str>,
    now_ms: u64,
) -> Result<Commanded, String> {
    let id = delivery.id;
    let status = delivery.status.as_str();
    let mut next = delivery.clone();
    next.updated_at = now_ms;
    match command {
        Command::Replay => {
            if !delivery.status.is_final() {
                return Err(format!(
                    "delivery {id} is {status}; only finished deliveries can be replayed \
                     (attempt it now with retry, or cancel it first)"
                ));
            }
            if !facts.message_kept {
                return Err(format!(
                    "the payload of message {} has been purged; delivery {id} cannot be replayed",
                    delivery.message_id
                ));
            }
            if !facts.endpoint_exists {
                return Err(format!(
                    "the endpoint of delivery {id} was deleted; it cannot be replayed"
                ));
            }
            next.status = DeliveryStatus::Pending;
            next.cycle += 1;
            next.cycle_attempts = 0;
            next.anchor_ms = now_ms;
            next.next_attempt_at = Some(now_ms);
        }
        Command::RetryNow => {
            if delivery.status != DeliveryStatus::Pending {
                return Err(not_pending(id, delivery.status, "retried now"));
            }
            next.next_attempt_at = Some(now_ms);
        }
        Command::Cancel => {
            if delivery.status != DeliveryStatus::Pending {
                return Err(not_pending(id, delivery.status, "cancelled"));
            }
            finish(&mut next, DeliveryStatus::Failed);
            next.last_error = Some("cancelled by an operator".into());
        }
    }
    Ok(Commanded {
        release: leaves_line(ordering_key, delivery, &next),
        delivery: next,
    })
}

/// What deleting `endpoint` does to its pending deliveries, and the URL their history keeps
/// showing: redacted as the live view shows it.
pub(crate) fn endpoint_deleted(endpoint: &Endpoint, now_ms: u64) -> Closing {
    Closing {
        status: DeliveryStatus::Failed,
        reason: "endpoint deleted".into(),
        at_ms: now_ms,
        url: crate::transport::redact(&endpoint.url),
    }
}

/// Why a pending delivery is not being attempted, when its endpoint holds it back.
pub(crate) fn held_reason(endpoint: &Endpoint) -> Option<String> {
    (!endpoint.enabled).then(|| match &endpoint.disabled_reason {
        Some(reason) => format!("endpoint disabled: {reason}"),
        None => "endpoint disabled".into(),
    })
}

/// Why a command for pending deliveries is refused, in words that fit the status.
fn not_pending(id: DeliveryId, status: DeliveryStatus, can_be: &str) -> String {
    let state = match status {
        DeliveryStatus::Held => "is held (its endpoint is disabled)".to_string(),
        status => format!("has finished ({})", status.as_str()),
    };
    format!("delivery {id} {state}; only pending deliveries can be {can_be}")
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decide_controls_tests.rs"]
mod controls_tests;
