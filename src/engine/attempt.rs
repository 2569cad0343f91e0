//! One attempt: load what it needs, send, classify, record, publish.
//!
//! Deciding is left to the pure policy code ([`crate::policy::classify`],
//! [`crate::policy::Schedule::next_attempt`]); this module only gathers inputs and acts on the
//! answers. The outcome is written without waiting for an fsync: losing it in a crash only
//! repeats the attempt (its entry is still in the due index), which at-least-once delivery allows.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use super::Engine;
use super::accept::digest;
use crate::api::AttemptEvent;
use crate::model::{Attempt, DeliveryStatus, Endpoint, EndpointId, ErrorKind, now_ms};
use crate::policy::{Policy, Verdict, classify};
use crate::store::{AttemptOutcome, Claim, NextStep};
use crate::transport::{Exchange, Request, SignInput, encode, sign};

/// The verdict on one attempt, before it is recorded.
pub(crate) struct Judged {
    pub(crate) status_code: Option<u16>,
    pub(crate) error: Option<(ErrorKind, String)>,
    pub(crate) excerpt: String,
    pub(crate) retryable: bool,
    pub(crate) retry_after: Option<std::time::Duration>,
}

/// Attempts a claimed delivery. Returns the next due time if the delivery was rescheduled.
pub(crate) async fn run(engine: &Engine, endpoint_id: EndpointId, claim: Claim) -> Option<u64> {
    let span = tracing::info_span!(
        "attempt",
        delivery = %claim.delivery_id,
        endpoint = %endpoint_id,
        message_id = tracing::field::Empty,
    );
    match attempt(engine, endpoint_id, claim).instrument(span).await {
        Ok(next) => next,
        Err(e) => {
            // The entry stays in the due index: the delivery is attempted again after a restart.
            tracing::error!(delivery = %claim.delivery_id, error = %e, "attempt could not be recorded");
            None
        }
    }
}

async fn attempt(
    engine: &Engine,
    endpoint_id: EndpointId,
    claim: Claim,
) -> crate::error::Result<Option<u64>> {
    let store = &engine.store;
    let drop_claim = || store.discard(endpoint_id, &[claim]);
    let Some(delivery) = store.delivery(claim.delivery_id)? else {
        drop_claim()?;
        return Ok(None);
    };
    let endpoint = match store.endpoint(endpoint_id)? {
        Some(endpoint) if delivery.status == DeliveryStatus::Pending => endpoint,
        _ => {
            drop_claim()?;
            return Ok(None);
        }
    };
    tracing::Span::current().record("message_id", tracing::field::display(delivery.message_id));
    let message = store.message(delivery.message_id)?;
    let policy = engine.policies.get(&endpoint.policy).cloned();
    let started_at = now_ms();
    let clock = Instant::now();

    let judged = match (&message, &policy) {
        (None, _) => refused("the message payload has been purged"),
        (_, None) => refused(&format!("policy {:?} is not loaded", endpoint.policy)),
        (Some(message), Some(policy)) => {
            let url = delivery.url_override.as_deref().unwrap_or(&endpoint.url);
            let outgoing = Outgoing {
                message_id: message.id.to_string(),
                delivery_id: delivery.id.to_string(),
                attempt: delivery.total_attempts + 1,
                event_type: &message.event_type,
                payload: message.payload.get(),
            };
            exchange(engine, &endpoint, policy, url, &outgoing).await
        }
    };

    let finished = now_ms();
    let duration_ms = clock.elapsed().as_millis() as u64;
    let success = judged.error.is_none();
    let next = match (&policy, success, judged.retryable) {
        (_, true, _) => NextStep::Finish(DeliveryStatus::Succeeded),
        (Some(policy), false, true) => {
            let retry_after = judged
                .retry_after
                .filter(|_| matches!(judged.status_code, Some(429 | 503)));
            match policy.schedule.next_attempt(
                delivery.cycle_attempts + 1,
                delivery.anchor_ms,
                finished,
                retry_after,
                rand::random_range(-1.0..=1.0),
            ) {
                Some(next) => NextStep::Retry {
                    due_ms: next.due_ms,
                    anchor_ms: next.anchor_ms,
                },
                None => NextStep::Finish(DeliveryStatus::Failed),
            }
        }
        _ => NextStep::Finish(DeliveryStatus::Failed),
    };
    let dedup = match (
        &message,
        &message.as_ref().and_then(|m| m.dedup_key.clone()),
    ) {
        (Some(message), Some(key)) => Some((key.clone(), digest(message.payload.get()))),
        _ => None,
    };
    let (error, error_detail) = match judged.error {
        Some((kind, detail)) => (Some(kind), Some(detail)),
        None => (None, None),
    };
    let recorded = engine
        .recorder
        .record(AttemptOutcome {
            delivery_id: delivery.id,
            endpoint_id,
            due_ms: claim.due_ms,
            attempt: Attempt {
                attempt: 0,
                cycle: 0,
                started_at,
                duration_ms,
                status_code: judged.status_code,
                error,
                error_detail,
                response_excerpt: judged.excerpt,
                success,
            },
            next,
            dedup,
            counts_toward_health: true,
        })
        .await?;
    if let Some(policy) = &policy {
        let threshold = policy.endpoint.deactivate_after;
        let gone = error == Some(ErrorKind::Gone);
        if gone || (threshold > 0 && recorded.consecutive_failures >= threshold) {
            let reason = recorded.attempt.error_detail.as_deref().unwrap_or("");
            engine
                .deactivate(&endpoint, recorded.consecutive_failures, reason)
                .await?;
        }
    }

    let policy_label = policy
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "unknown".into());
    let outcome_label = match error {
        None => "success",
        Some(kind) => kind.as_str(),
    };
    metrics::counter!("herald_attempts_total", "policy" => policy_label.clone(), "outcome" => outcome_label)
        .increment(1);
    metrics::histogram!("herald_attempt_duration_seconds", "policy" => policy_label.clone())
        .record(duration_ms as f64 / 1000.0);
    let delivery_after = &recorded.delivery;
    if delivery_after.status.is_final() && !recorded.stale {
        metrics::counter!("herald_deliveries_finished_total", "policy" => policy_label, "status" => delivery_after.status.as_str())
            .increment(1);
    }
    if success {
        tracing::debug!(attempt = recorded.attempt.attempt, status = ?judged.status_code, duration_ms, "delivered");
    } else {
        tracing::info!(
            attempt = recorded.attempt.attempt,
            status = ?judged.status_code,
            error = outcome_label,
            detail = recorded.attempt.error_detail.as_deref().unwrap_or(""),
            next = delivery_after.next_attempt_at.map(crate::model::rfc3339).unwrap_or_default(),
            "attempt failed"
        );
    }
    let _ = engine.outcomes.send(AttemptEvent {
        message_id: delivery.message_id,
        delivery_id: delivery.id,
        endpoint_id,
        tenant: endpoint.tenant.clone(),
        attempt: recorded.attempt.attempt,
        status_code: judged.status_code,
        error,
        success,
        delivery_status: delivery_after.status,
        at_ms: started_at,
        duration_ms,
    });
    Ok(match next {
        NextStep::Retry { due_ms, .. } if !recorded.stale => Some(due_ms),
        _ => None,
    })
}

/// What identifies one outgoing request to its receiver.
pub(crate) struct Outgoing<'a> {
    pub(crate) message_id: String,
    pub(crate) delivery_id: String,
    pub(crate) attempt: u32,
    pub(crate) event_type: &'a str,
    pub(crate) payload: &'a str,
}

/// Encodes, signs and sends one request to `url` under `policy`, and judges the answer.
pub(crate) async fn exchange(
    engine: &Engine,
    endpoint: &Endpoint,
    policy: &Policy,
    url: &str,
    outgoing: &Outgoing<'_>,
) -> Judged {
    let body = encode(&policy.request, outgoing.event_type, outgoing.payload);
    let secrets = endpoint.signing_secrets(now_ms());
    let signed = sign(
        &policy.signing,
        &SignInput {
            message_id: &outgoing.message_id,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            body: &body.bytes,
            secrets: &secrets,
            token: endpoint.token.as_deref(),
        },
    );
    let signature = match signed {
        Ok(signature) => signature,
        Err(e) => return refused(&e.to_string()),
    };
    let mut headers = Vec::with_capacity(4 + signature.len() + endpoint.headers.len());
    headers.push(("herald-message-id".to_string(), outgoing.message_id.clone()));
    headers.push((
        "herald-delivery-id".to_string(),
        outgoing.delivery_id.clone(),
    ));
    headers.push(("herald-attempt".to_string(), outgoing.attempt.to_string()));
    headers.push((
        "herald-event-type".to_string(),
        outgoing.event_type.to_string(),
    ));
    headers.extend(endpoint.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    headers.extend(signature);
    let exchange = engine
        .client
        .send(Request {
            url,
            headers: &headers,
            body,
            timeout: policy.request.timeout,
        })
        .await;
    judge(policy, exchange, engine.config.response_excerpt_bytes)
}

/// A failure that no retry can fix.
fn refused(reason: &str) -> Judged {
    Judged {
        status_code: None,
        error: Some((ErrorKind::Refused, reason.to_string())),
        excerpt: String::new(),
        retryable: false,
        retry_after: None,
    }
}

fn judge(policy: &Policy, exchange: Exchange, excerpt_bytes: usize) -> Judged {
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
                    Some((
                        ErrorKind::Gone,
                        "410 Gone: the receiver is gone".to_string(),
                    )),
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
