//! Endpoint health: disabling an endpoint that keeps failing, and telling the operators.
//!
//! The consecutive-failure count lives in the store and moves atomically with each attempt
//! record. When it reaches the policy's `deactivate_after` (or the receiver answers 410 under
//! `disable_on_gone`), the endpoint is disabled: its pending deliveries are held, not attempted
//! and not lost, until an operator enables it again. The store's check-and-set makes exactly
//! one caller the one that disabled it, and only that one notifies.
//!
//! Notifications are ordinary messages for a system tenant whose one endpoint points at
//! `HERALD_NOTIFY_URL` with the built-in `herald-notify` policy: they are durable and retried
//! like everything else, and never depend on the endpoint that failed.

use serde_json::json;

use super::Engine;
use crate::api::{NewEndpoint, NewMessage};
use crate::error::Result;
use crate::model::{Endpoint, now_ms, rfc3339};
use crate::transport::redact;

/// The tenant that carries herald's own notifications.
pub const SYSTEM_TENANT: &str = "_herald";
/// The policy of the notification endpoint.
const NOTIFY_POLICY: &str = "herald-notify";

impl Engine {
    /// Makes the system tenant's endpoint point at `notify_url` (creating it if needed).
    pub(crate) async fn ensure_notify_endpoint(&self, notify_url: &str) -> Result<()> {
        let existing = self.store.endpoints(Some(SYSTEM_TENANT)).await?;
        match existing.into_iter().next() {
            Some(mut endpoint) if endpoint.url != notify_url => {
                endpoint.url = notify_url.to_string();
                endpoint.updated_at = now_ms();
                self.store.put_endpoint(&endpoint).await?;
            }
            Some(_) => {}
            None => {
                self.create_endpoint_unchecked(NewEndpoint {
                    tenant: SYSTEM_TENANT.into(),
                    url: notify_url.into(),
                    policy: NOTIFY_POLICY.into(),
                    default: true,
                    ..NewEndpoint::default()
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Disables `endpoint` for `reason` (its failures, or a 410), once: of concurrent callers,
    /// on any node, only the one the store says disabled it logs and notifies.
    pub(crate) async fn deactivate(
        &self,
        endpoint: &Endpoint,
        failures: u32,
        reason: &str,
        last_error: &str,
    ) -> Result<()> {
        if !self
            .store
            .disable_endpoint(endpoint.id, now_ms(), reason)
            .await?
        {
            return Ok(()); // already disabled, by an operator or a concurrent attempt
        }
        let disabled = crate::model::Endpoint {
            enabled: false,
            ..endpoint.clone()
        };
        self.schedule_endpoint(&disabled, None);
        metrics::counter!("herald_endpoints_disabled_total").increment(1);
        tracing::warn!(
            endpoint = %endpoint.id,
            tenant = %endpoint.tenant,
            url = %redact(&endpoint.url),
            failures,
            reason,
            "endpoint disabled: its deliveries are held until it is enabled again"
        );
        if endpoint.tenant == SYSTEM_TENANT || self.config.notify_url.is_none() {
            return Ok(());
        }
        let payload = json!({
            "type": "endpoint.disabled",
            "endpoint_id": endpoint.id,
            "tenant": endpoint.tenant,
            "url": redact(&endpoint.url),
            "consecutive_failures": failures,
            "last_error": last_error,
            "disabled_at": rfc3339(now_ms()),
        });
        let message = NewMessage::new(SYSTEM_TENANT, "endpoint.disabled", &payload)
            .map_err(|e| crate::error::Error::InvalidRequest(e.to_string()))?
            .idempotency_key(format!(
                "endpoint.disabled:{}:{}",
                endpoint.id, endpoint.updated_at
            ));
        self.send(message).await?;
        Ok(())
    }
}
