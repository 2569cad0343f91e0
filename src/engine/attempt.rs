//! One attempt, in two halves: [`send`] gathers what it needs, sends, and asks [`decide`] what
//! came of it; [`settle`] records that and publishes. The endpoint's concurrency limit counts
//! the first half only — requests on the wire, which is what it protects the receiver from —
//! while the claim lasts until the second is done, so the next request to a receiver does not
//! wait for the previous one's record.
//!
//! Every rule lives in [`decide`]; this module only gathers inputs and carries out the answer.
//! The outcome is recorded without waiting for an fsync: losing it in a crash only repeats the
//! attempt once its lease is gone, which at-least-once delivery allows.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use super::Engine;
use super::accept::digest;
use super::decide::{self, AttemptFacts, Judged};
use super::window::{self, Pace};
use crate::api::AttemptEvent;
use crate::error::Result;
use crate::model::{DeliveryStatus, Endpoint, now_ms};
use crate::policy::Policy;
use crate::store::{Claim, Outcome, Recorded, StoreResult};
use crate::transport::{Request, SignInput, encode, sign};

/// An attempt that went on the wire and was decided, waiting to be recorded.
pub(crate) struct Exchanged {
    /// The decision, under the attempt's lease.
    outcome: Outcome,
    endpoint: Endpoint,
    policy: Option<Arc<Policy>>,
    span: tracing::Span,
}

impl Exchanged {
    /// What the attempt said about the receiver's capacity.
    pub(crate) fn pace(&self) -> Pace {
        window::pace(&self.outcome.attempt)
    }
}

/// What a recorded attempt came to, for the scheduler.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// When the delivery is due again, if it was rescheduled.
    pub(crate) next_due: Option<u64>,
    /// When the next delivery of its ordering key's line became due, if it left the line.
    pub(crate) released_due: Option<u64>,
}

/// The wire half of an attempt: gathers what it needs, sends, and decides. `None` when there
/// was nothing to attempt (the claim was given back). The endpoint's concurrency counts this
/// half only: recording ([`settle`]) does not keep a receiver's slot. `turn`: a rate-limited
/// endpoint's turn, held until the start this attempt reserves in a shared store has come
/// ([`super::runner::reserved_start`]).
pub(crate) async fn send(
    engine: &Engine,
    claim: Claim,
    turn: Option<tokio::sync::MutexGuard<'_, ()>>,
) -> Option<Exchanged> {
    let lease = claim.lease;
    // DEBUG: one span per attempt is detail the log does not need by default (its own events
    // name their ids); the OTLP exporter takes herald's spans at this level (`otel::layer`).
    let span = tracing::debug_span!(
        "attempt",
        message_id = %claim.delivery.message_id,
        delivery_id = %lease.delivery_id,
        endpoint_id = %lease.endpoint_id,
        attempt = claim.delivery.total_attempts + 1,
    );
    // The span joins the trace of the span that accepted the message.
    let traceparent = claim
        .message
        .as_ref()
        .and_then(|m| m.traceparent.as_deref());
    crate::otel::parent(&span, traceparent);
    match exchange_and_decide(engine, claim, turn, span.clone())
        .instrument(span)
        .await
    {
        Ok(exchanged) => exchanged,
        Err(e) => {
            tracing::error!(delivery = %lease.delivery_id, error = %e, "attempt not made");
            give_back(engine, lease).await;
            None
        }
    }
}

/// The recording half: hands the decided attempt to the recorder. Once it is recorded, this
/// disables the endpoint if the decision says so, publishes, and tells the scheduler the claim
/// is done. That runs on the record thread, in place (see [`super::record::Then`]); only the
/// rare steps that wait on the store — disabling an endpoint, giving a claim back after a
/// failed write — go to a task of their own.
pub(crate) fn settle(engine: &Arc<Engine>, exchanged: Exchanged) {
    let Exchanged {
        outcome,
        endpoint,
        policy,
        span,
    } = exchanged;
    let follow = Follow {
        engine: engine.clone(),
        endpoint,
        policy,
        span,
    };
    let then = move |outcome, answer| follow.up(outcome, answer);
    engine.recorder.record(outcome, Box::new(then));
}

/// What a recorded attempt's follow-up needs besides its outcome.
struct Follow {
    engine: Arc<Engine>,
    endpoint: Endpoint,
    policy: Option<Arc<Policy>>,
    span: tracing::Span,
}

impl Follow {
    /// Runs on the record thread (see [`settle`]).
    fn up(self, outcome: Outcome, answer: StoreResult<Recorded>) {
        let Follow {
            engine,
            endpoint,
            policy,
            span,
        } = self;
        let _entered = span.enter();
        let lease = outcome.lease;
        let recorded = match answer {
            Ok(recorded) => recorded,
            Err(e) => {
                // Given back: the delivery is due again as it was (the attempt is repeated).
                tracing::error!(delivery = %lease.delivery_id, error = %e, "attempt could not be recorded");
                let runtime = engine.delivery.clone();
                let task = async move {
                    give_back(&engine, lease).await;
                    let settled = Settled::default();
                    engine
                        .scheduler
                        .finished(lease.endpoint_id, lease.delivery_id, settled);
                };
                runtime.spawn(task.instrument(span.clone()));
                return;
            }
        };
        let settled = Settled {
            next_due: outcome.delivery.next_attempt_at.filter(|_| !recorded.stale),
            released_due: recorded.released_due,
        };
        let disable = policy
            .as_deref()
            .filter(|_| !recorded.stale)
            .and_then(|policy| {
                let failures = recorded.consecutive_failures;
                decide::deactivation(policy, outcome.health, &outcome.attempt, failures)
            });
        let Some(reason) = disable else {
            publish(&engine, &endpoint, policy.as_deref(), &outcome, recorded);
            engine
                .scheduler
                .finished(lease.endpoint_id, lease.delivery_id, settled);
            return;
        };
        let runtime = engine.delivery.clone();
        let task = async move {
            let last_error = outcome.attempt.error_detail.as_deref().unwrap_or("");
            let failures = recorded.consecutive_failures;
            if let Err(e) = engine
                .deactivate(&endpoint, failures, &reason, last_error)
                .await
            {
                tracing::error!(endpoint = %endpoint.id, error = %e, "endpoint not disabled");
            }
            publish(&engine, &endpoint, policy.as_deref(), &outcome, recorded);
            engine
                .scheduler
                .finished(lease.endpoint_id, lease.delivery_id, settled);
        };
        runtime.spawn(task.instrument(span.clone()));
    }
}

async fn give_back(engine: &Engine, lease: crate::store::Lease) {
    if let Err(e) = engine.store.release(&[lease]).await {
        tracing::warn!(error = %e, "lease not given back; it runs out by itself");
    }
}

async fn exchange_and_decide(
    engine: &Engine,
    claim: Claim,
    turn: Option<tokio::sync::MutexGuard<'_, ()>>,
    span: tracing::Span,
) -> Result<Option<Exchanged>> {
    let store = &engine.store;
    let Claim {
        lease,
        delivery,
        message,
    } = claim;
    let endpoint = store.endpoint(lease.endpoint_id).await?;
    let Some(endpoint) = endpoint.filter(|_| delivery.status == DeliveryStatus::Pending) else {
        // Deleted meanwhile: nothing to attempt.
        store.release(&[lease]).await?;
        return Ok(None);
    };
    let policy = engine.policies.get(&endpoint.policy).cloned();
    if let Some(turn) = turn {
        super::runner::reserved_start(engine, lease.endpoint_id).await;
        drop(turn);
    }
    let started_at = now_ms();
    let clock = Instant::now();
    let judged = match (&message, &policy) {
        (None, _) => decide::refused("the message payload has been purged"),
        (_, None) => decide::refused(&format!("policy {:?} is not loaded", endpoint.policy)),
        (Some(message), Some(policy)) => {
            let outgoing = Outgoing {
                message_id: message.id.to_string(),
                delivery_id: delivery.id.to_string(),
                attempt: delivery.total_attempts + 1,
                event_type: &message.event_type,
                payload: message.payload.get(),
            };
            let url = delivery.url_override.as_deref().unwrap_or(&endpoint.url);
            exchange(engine, &endpoint, policy, url, &outgoing).await
        }
    };
    let decision = decide::decide(AttemptFacts {
        policy: policy.as_deref(),
        delivery: &delivery,
        endpoint: &endpoint,
        due_ms: lease.due_ms,
        judged,
        started_at,
        duration_ms: clock.elapsed().as_millis() as u64,
        dedup: message
            .as_ref()
            .and_then(|m| Some((m.dedup_key.clone()?, digest(m.payload.get())))),
        ordering_key: message.as_ref().and_then(|m| m.ordering_key.as_deref()),
        random: rand::random_range(-1.0..=1.0),
    });
    Ok(Some(Exchanged {
        outcome: decision.into_outcome(lease),
        endpoint,
        policy,
        span,
    }))
}

/// Metrics, a log line and the outcome event of one recorded attempt.
fn publish(
    engine: &Engine,
    endpoint: &Endpoint,
    policy: Option<&Policy>,
    outcome: &Outcome,
    recorded: Recorded,
) {
    let attempt = &outcome.attempt;
    let delivery = &outcome.delivery;
    let policy_label = policy.map_or_else(|| "unknown".to_string(), |p| p.name.clone());
    let outcome_label = attempt.error.map_or("success", |kind| kind.as_str());
    metrics::counter!("herald_attempts_total", "policy" => policy_label.clone(), "outcome" => outcome_label)
        .increment(1);
    metrics::histogram!("herald_attempt_duration_seconds", "policy" => policy_label)
        .record(attempt.duration_ms as f64 / 1000.0);
    if delivery.status.is_final() && !recorded.stale {
        super::finished::count(policy, delivery.status, 1);
    }
    if attempt.success {
        tracing::debug!(attempt = attempt.attempt, status = ?attempt.status_code, duration_ms = attempt.duration_ms, "delivered");
    } else {
        tracing::info!(
            message_id = %delivery.message_id,
            delivery_id = %delivery.id,
            endpoint_id = %endpoint.id,
            attempt = attempt.attempt,
            status = ?attempt.status_code,
            error = outcome_label,
            detail = attempt.error_detail.as_deref().unwrap_or(""),
            next = delivery.next_attempt_at.map(crate::model::rfc3339).unwrap_or_default(),
            "attempt failed"
        );
    }
    let _ = engine.outcomes.send(AttemptEvent {
        message_id: delivery.message_id,
        delivery_id: delivery.id,
        endpoint_id: endpoint.id,
        tenant: endpoint.tenant.clone(),
        attempt: attempt.attempt,
        status_code: attempt.status_code,
        error: attempt.error,
        success: attempt.success,
        delivery_status: delivery.status,
        at_ms: attempt.started_at,
        duration_ms: attempt.duration_ms,
    });
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
        Err(e) => return decide::refused(&e.to_string()),
    };
    let mut headers = Vec::with_capacity(6 + signature.len() + endpoint.headers.len());
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
    // The attempt span's trace context, when spans are exported: the receiver joins the trace.
    headers.extend(crate::otel::context_headers(&tracing::Span::current()));
    let exchange = engine
        .client
        .send(Request {
            url,
            headers: &headers,
            body,
            timeout: policy.request.timeout,
        })
        .await;
    decide::judge(policy, exchange, engine.config.response_excerpt_bytes)
}
