//! Accepting a message: validate, route, check sizes, store atomically, wait for the group
//! commit, then schedule. Nothing is stored when any check fails, and nothing is acknowledged
//! before it is durable.

use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::{Engine, Unrouted};
use crate::api::{DeliveryReceipt, NewMessage, SendReceipt};
use crate::error::{Error, Result};
use crate::model::{Delivery, DeliveryStatus, Endpoint, Message, MessageId, now_ms};
use crate::store::{Inserted, MessageWrite};
use crate::transport::{encoded_len, redact};

/// Longest tenant or event type.
pub const MAX_NAME_LEN: usize = 128;
/// Longest idempotency or dedup key.
pub const MAX_KEY_LEN: usize = 512;
/// Deepest nesting of arrays and objects in a payload.
///
/// A payload is refused at accept rather than taken and delivered whole, because what herald
/// accepts it promises to deliver, and a receiver must be able to parse it: JSON readers
/// limit nesting by default (.NET's System.Text.Json and Json.NET at 64, serde_json at 128,
/// Ruby at 100), and some recurse without a limit until their stack runs out. 64 is the lowest
/// of those defaults, far beyond any real event. Refusing it makes the producer's mistake
/// visible at once, instead of as an attempt that fails at the receiver a day later.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Refuses a payload nested deeper than [`MAX_PAYLOAD_DEPTH`]. `payload` is valid JSON (it
/// parsed as a raw value), so brackets outside strings are all there is to count.
pub(crate) fn check_depth(payload: &str) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in payload.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_PAYLOAD_DEPTH {
                    return Err(Error::InvalidRequest(format!(
                        "`payload` is nested deeper than {MAX_PAYLOAD_DEPTH} levels of arrays and objects"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a short identifier-like field.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.len() > max {
        return Err(Error::InvalidRequest(format!(
            "`{field}` is {} bytes; at most {max} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

/// SHA-256 of a payload, for delta mode.
pub(crate) fn digest(payload: &str) -> [u8; 32] {
    Sha256::digest(payload.as_bytes()).into()
}

impl Engine {
    /// Accepts a message: returns once it and its deliveries are durable. Its `accept` span
    /// carries the message, delivery and endpoint ids; when spans are exported, the message
    /// keeps the span's trace context so that its attempts join the same trace.
    pub(crate) async fn send(&self, new: NewMessage) -> Result<SendReceipt> {
        // DEBUG, like the attempt span: per-message detail; exported spans include it.
        let span = tracing::debug_span!(
            "accept",
            tenant = %new.tenant,
            event_type = %new.event_type,
            message_id = tracing::field::Empty,
            delivery_id = tracing::field::Empty,
            endpoint_id = tracing::field::Empty,
        );
        let receipt = self.accept(new, &span).instrument(span.clone()).await?;
        // Known only now that the message is accepted: attributes for the exported span (no
        // event is logged in the span after this, so the log does not need them).
        if !crate::otel::is_exported(&span) {
            return Ok(receipt);
        }
        let ids = |id: &dyn Fn(&DeliveryReceipt) -> String| {
            receipt
                .deliveries
                .iter()
                .map(id)
                .collect::<Vec<_>>()
                .join(",")
        };
        span.record("message_id", tracing::field::display(receipt.id));
        span.record("delivery_id", ids(&|d| d.id.to_string()));
        span.record("endpoint_id", ids(&|d| d.endpoint_id.to_string()));
        Ok(receipt)
    }

    async fn accept(&self, new: NewMessage, span: &tracing::Span) -> Result<SendReceipt> {
        check_name("tenant", &new.tenant, MAX_NAME_LEN)?;
        let system = new.tenant == super::SYSTEM_TENANT && new.event_type.starts_with("endpoint.");
        if new.tenant.starts_with(super::SYSTEM_TENANT) && !system {
            return Err(Error::InvalidRequest(format!(
                "tenant names starting with {:?} are reserved for herald",
                super::SYSTEM_TENANT
            )));
        }
        check_name("event_type", &new.event_type, MAX_NAME_LEN)?;
        for (field, key) in [
            ("idempotency_key", &new.idempotency_key),
            ("dedup_key", &new.dedup_key),
        ] {
            if let Some(key) = key {
                check_name(field, key, MAX_KEY_LEN)?;
            }
        }
        if let Some(key) = &new.ordering_key {
            check_name("ordering_key", key, super::decide::MAX_ORDERING_KEY_LEN)?;
        }
        let now = now_ms();
        let due =
            super::decide::first_attempt_at(now, new.deliver_at.as_deref(), new.delay.as_deref())
                .map_err(Error::InvalidRequest)?;
        let payload_len = new.payload.get().len();
        let ceiling = self.store.max_payload_bytes();
        if payload_len > ceiling {
            return Err(Error::PayloadTooLarge {
                size: payload_len,
                limit: ceiling,
            });
        }
        check_depth(new.payload.get())?;

        let targets = self.targets(&new).await?;
        let message = Message {
            id: MessageId::new(),
            tenant: new.tenant,
            event_type: new.event_type,
            payload: new.payload,
            callback_url: new.callback_url,
            idempotency_key: new.idempotency_key,
            dedup_key: new.dedup_key,
            ordering_key: new.ordering_key,
            traceparent: crate::otel::traceparent(span),
            created_at: now,
        };
        let payload = message.payload.get();
        let payload_digest = message.dedup_key.as_ref().map(|_| digest(payload));
        let mut deliveries = Vec::with_capacity(targets.len());
        for endpoint in &targets {
            let policy = self
                .policies
                .get(&endpoint.policy)
                .ok_or_else(|| Error::UnknownPolicy(endpoint.policy.clone()))?;
            // An endpoint's own URL was checked when it was created or changed (and the SSRF
            // guard checks every connection); a message's own URL is checked here.
            if let Some(url) = message.callback_url.as_deref() {
                self.check_target(url, &policy.url)?;
            }
            let size = encoded_len(&policy.request, &message.event_type, payload);
            if size > policy.request.max_body_bytes {
                return Err(Error::PayloadTooLarge {
                    size,
                    limit: policy.request.max_body_bytes,
                });
            }
            let unchanged = match (&message.dedup_key, payload_digest) {
                (Some(key), Some(digest)) => {
                    self.store.dedup_digest(endpoint.id, key).await? == Some(digest)
                }
                _ => false,
            };
            deliveries.push(super::decide::new_delivery(
                &message, endpoint, unchanged, due,
            ));
        }

        let unrouted = targets.is_empty().then(|| {
            format!(
                "no endpoint of tenant {:?} takes {:?} events; nothing will be delivered",
                message.tenant, message.event_type
            )
        });
        if let Some(reason) = &unrouted {
            self.note_unrouted(&message.tenant, reason)?;
        }

        let (inserted, write) = self
            .commit
            .insert(MessageWrite {
                message,
                deliveries,
            })
            .await?;
        let (message, deliveries) = (write.message, write.deliveries);
        if let Inserted::Existing(id) = inserted {
            // The first answer, not a second send — if it is the same message.
            let first = self
                .store
                .message(id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("message {id}")))?;
            if !super::decide::same_message(&first, &message) {
                return Err(Error::Conflict(format!(
                    "idempotency key {:?} was used for a different message ({id}); a repeated \
                     send must carry the same event type and payload",
                    message.idempotency_key.unwrap_or_default()
                )));
            }
            let deliveries = self.store.message_deliveries(id).await?;
            let mut receipts = Vec::with_capacity(deliveries.len());
            for delivery in &deliveries {
                receipts.push(self.receipt(delivery, None).await?);
            }
            return Ok(SendReceipt {
                id,
                created: false,
                unrouted: deliveries.is_empty().then(|| unrouted.unwrap_or_default()),
                deliveries: receipts,
            });
        }
        metrics::counter!("herald_messages_accepted_total").increment(1);

        let mut receipts = Vec::with_capacity(deliveries.len());
        for (delivery, endpoint) in deliveries.iter().zip(&targets) {
            if let Some(due) = delivery.next_attempt_at {
                self.scheduler.note_due(endpoint.id, due);
            }
            if delivery.status.is_final() {
                // Skipped by delta mode: finished as it was stored.
                self.count_finished(Some(endpoint), delivery.status, 1);
            }
            receipts.push(self.receipt(delivery, Some(endpoint)).await?);
        }
        Ok(SendReceipt {
            id: message.id,
            created: true,
            unrouted,
            deliveries: receipts,
        })
    }

    /// A message no endpoint takes: refused in strict mode; otherwise counted, and logged
    /// once per tenant (a typo in a tenant would otherwise lose events without a trace).
    fn note_unrouted(&self, tenant: &str, reason: &str) -> Result<()> {
        if self.config.unrouted == Unrouted::Reject {
            return Err(Error::Unrouted(reason.to_string()));
        }
        metrics::counter!("herald_messages_unrouted_total").increment(1);
        let mut warned = self
            .unrouted_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Bounded: past this many distinct tenants, later ones are counted but not logged.
        if warned.len() < 10_000 && warned.insert(tenant.to_string()) {
            tracing::warn!(
                tenant,
                reason,
                "message accepted but routed nowhere (logged once per tenant)"
            );
        }
        Ok(())
    }

    /// The endpoints a message goes to: with a `callback_url`, the tenant's default endpoint
    /// only (its policy and secrets, the message's URL); otherwise every endpoint of the tenant
    /// that subscribes to the event type. Disabled endpoints are included: their deliveries
    /// are held until the endpoint is enabled again.
    async fn targets(&self, message: &NewMessage) -> Result<Vec<Endpoint>> {
        let endpoints = self.store.endpoints(Some(&message.tenant)).await?;
        if message.callback_url.is_some() {
            let default = endpoints.into_iter().find(|e| e.default).ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "`callback_url` needs a default endpoint for tenant {:?} (its policy and \
                     secrets apply); none is configured",
                    message.tenant
                ))
            })?;
            return Ok(vec![default]);
        }
        Ok(endpoints
            .into_iter()
            .filter(|e| e.subscribes_to(&message.event_type))
            .collect())
    }

    /// The receipt line for a delivery; `held` when its endpoint is disabled.
    pub(crate) async fn receipt(
        &self,
        delivery: &Delivery,
        endpoint: Option<&Endpoint>,
    ) -> Result<DeliveryReceipt> {
        let loaded;
        let endpoint = match endpoint {
            Some(e) => Some(e),
            None => {
                loaded = self.store.endpoint(delivery.endpoint_id).await?;
                loaded.as_ref()
            }
        };
        // A deleted endpoint's deliveries keep the URL its deletion kept.
        let kept = match (endpoint, &delivery.url_override) {
            (None, None) => {
                self.store
                    .deleted_endpoint_url(delivery.endpoint_id)
                    .await?
            }
            _ => None,
        };
        let url = delivery
            .url_override
            .as_deref()
            .or(endpoint.map(|e| e.url.as_str()))
            .or(kept.as_deref())
            .map(redact)
            .unwrap_or_default();
        let held =
            delivery.status == DeliveryStatus::Pending && endpoint.is_some_and(|e| !e.enabled);
        Ok(DeliveryReceipt {
            id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            url,
            status: if held {
                DeliveryStatus::Held
            } else {
                delivery.status
            },
            next_attempt_at: delivery
                .next_attempt_at
                .filter(|_| !held)
                .map(crate::model::rfc3339),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(check_depth(&nested(MAX_PAYLOAD_DEPTH)).is_ok());
        let err = check_depth(&nested(MAX_PAYLOAD_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("64 levels"), "{err}");
        let brackets_in_strings = format!(
            r#"{{"a": "{}", "b": "\"[[[", "c": [{{}}]}}"#,
            "[{".repeat(100)
        );
        assert!(check_depth(&brackets_in_strings).is_ok());
        let siblings = format!("[{}]", vec![nested(60); 10].join(","));
        assert!(check_depth(&siblings).is_ok());
    }
}
