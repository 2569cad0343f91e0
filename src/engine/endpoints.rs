//! Endpoint configuration: validation and changes, kept in step with the scheduler.

use std::collections::BTreeMap;

use super::Engine;
use super::accept::{MAX_NAME_LEN, check_name};
use crate::api::{EndpointUpdate, NewEndpoint};
use crate::error::{Error, Result};
use crate::model::{Endpoint, EndpointId, RotatedSecret, now_ms};
use crate::policy::{Policy, Signing};
use crate::transport::standard_webhooks_key;

/// Headers herald sets itself or that would break the request; endpoints may not set them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "expect",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "herald-message-id",
    "herald-delivery-id",
    "herald-attempt",
    "herald-event-type",
    "traceparent",
    "tracestate",
];
/// Extra headers per endpoint, at most.
const MAX_HEADERS: usize = 32;
/// Longest header value or secret.
const MAX_VALUE_LEN: usize = 4096;

fn check_headers(headers: &BTreeMap<String, String>, signing: &Signing) -> Result<()> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::InvalidRequest(format!(
            "at most {MAX_HEADERS} headers per endpoint"
        )));
    }
    let signature_header = match signing {
        Signing::Hmac { header, .. } | Signing::Token { header } => Some(header.as_str()),
        Signing::None {} | Signing::StandardWebhooks {} => None,
    };
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() || name.len() > 256 {
            return Err(Error::InvalidRequest(format!(
                "header name {name:?} is not a valid HTTP header name"
            )));
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || signature_header.is_some_and(|h| h.eq_ignore_ascii_case(name))
        {
            return Err(Error::InvalidRequest(format!(
                "header {name:?} is set by herald and cannot be overridden"
            )));
        }
        if value.len() > MAX_VALUE_LEN
            || reqwest::header::HeaderValue::from_str(value).is_err()
            || value.contains(['\r', '\n'])
        {
            return Err(Error::InvalidRequest(format!(
                "the value of header {name:?} is not a valid HTTP header value"
            )));
        }
    }
    Ok(())
}

/// Checks that the endpoint carries what its policy's signing scheme needs.
fn check_signing_material(endpoint: &Endpoint, policy: &Policy) -> Result<()> {
    for value in [&endpoint.secret, &endpoint.token].into_iter().flatten() {
        if value.is_empty() || value.len() > MAX_VALUE_LEN || value.chars().any(char::is_control) {
            return Err(Error::InvalidRequest(
                "secret and token must be 1-4096 printable characters".into(),
            ));
        }
    }
    match &policy.signing {
        Signing::None {} => Ok(()),
        Signing::Hmac { .. } if endpoint.secret.is_none() => Err(Error::InvalidRequest(format!(
            "policy {:?} signs requests: the endpoint needs a `secret`",
            policy.name
        ))),
        Signing::Token { .. } if endpoint.token.is_none() => Err(Error::InvalidRequest(format!(
            "policy {:?} sends a token: the endpoint needs a `token`",
            policy.name
        ))),
        Signing::StandardWebhooks {} => match &endpoint.secret {
            Some(secret) if standard_webhooks_key(secret).is_ok() => Ok(()),
            _ => Err(Error::InvalidRequest(format!(
                "policy {:?} needs a `secret` of the form whsec_<base64>",
                policy.name
            ))),
        },
        Signing::Hmac { .. } | Signing::Token { .. } => Ok(()),
    }
}

impl Engine {
    fn policy(&self, name: &str) -> Result<&Policy> {
        self.policies
            .get(name)
            .map(|p| p.as_ref())
            .ok_or_else(|| Error::UnknownPolicy(name.to_string()))
    }

    fn validate_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        check_name("tenant", &endpoint.tenant, MAX_NAME_LEN)?;
        let policy = self.policy(&endpoint.policy)?;
        self.check_target(&endpoint.url, &policy.url)?;
        check_headers(&endpoint.headers, &policy.signing)?;
        for event_type in &endpoint.event_types {
            check_name("event_types[]", event_type, MAX_NAME_LEN)?;
        }
        if let Some(rate) = endpoint.rate_limit {
            crate::model::check_rate_limit(rate).map_err(Error::InvalidRequest)?;
        }
        check_signing_material(endpoint, policy)
    }

    /// Only one default endpoint per tenant: setting the flag clears it elsewhere.
    async fn take_default_flag(&self, endpoint: &Endpoint) -> Result<()> {
        if !endpoint.default {
            return Ok(());
        }
        for mut other in self.store.endpoints(Some(&endpoint.tenant)).await? {
            if other.id != endpoint.id && other.default {
                other.default = false;
                other.updated_at = now_ms();
                self.store.put_endpoint(&other).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint> {
        if new.tenant.starts_with(super::SYSTEM_TENANT) {
            return Err(Error::InvalidRequest(format!(
                "tenant names starting with {:?} are reserved for herald",
                super::SYSTEM_TENANT
            )));
        }
        self.create_endpoint_unchecked(new).await
    }

    /// Creates an endpoint without the reserved-tenant check (herald's own endpoints).
    pub(crate) async fn create_endpoint_unchecked(&self, new: NewEndpoint) -> Result<Endpoint> {
        let now = now_ms();
        let endpoint = Endpoint {
            id: EndpointId::new(),
            tenant: new.tenant,
            url: new.url,
            policy: new.policy,
            secret: new.secret,
            previous_secret: None,
            token: new.token,
            headers: new.headers,
            event_types: new.event_types,
            default: new.default,
            enabled: true,
            consecutive_failures: 0,
            disabled_reason: None,
            disabled_at: None,
            released_at: None,
            created_at: now,
            updated_at: now,
            rate_limit: new.rate_limit,
        };
        self.validate_endpoint(&endpoint)?;
        self.take_default_flag(&endpoint).await?;
        self.store.put_endpoint(&endpoint).await?;
        self.schedule_endpoint(&endpoint, None);
        self.apply_rate_limit(&endpoint);
        Ok(endpoint)
    }

    pub(crate) async fn endpoint(&self, id: EndpointId) -> Result<Endpoint> {
        self.store
            .endpoint(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("endpoint {id}")))
    }

    pub(crate) async fn update_endpoint(
        &self,
        id: EndpointId,
        update: EndpointUpdate,
    ) -> Result<Endpoint> {
        let mut endpoint = self.endpoint(id).await?;
        let now = now_ms();
        if let Some(url) = update.url {
            endpoint.url = url;
        }
        if let Some(policy) = update.policy {
            endpoint.policy = policy;
        }
        if let Some(secret) = update.secret
            && endpoint.secret.as_ref() != Some(&secret)
        {
            endpoint.previous_secret = endpoint.secret.take().map(|old| RotatedSecret {
                secret: old,
                until_ms: now + self.config.secret_rotation_grace.as_millis() as u64,
            });
            endpoint.secret = Some(secret);
        }
        if let Some(token) = update.token {
            endpoint.token = Some(token);
        }
        if let Some(headers) = update.headers {
            endpoint.headers = headers;
        }
        if let Some(event_types) = update.event_types {
            endpoint.event_types = event_types;
        }
        if let Some(default) = update.default {
            endpoint.default = default;
        }
        if let Some(rate_limit) = update.rate_limit {
            endpoint.rate_limit = rate_limit;
        }
        endpoint.updated_at = now;
        self.validate_endpoint(&endpoint)?;
        self.take_default_flag(&endpoint).await?;
        self.store.put_endpoint(&endpoint).await?;
        self.schedule_endpoint(&endpoint, None);
        self.apply_rate_limit(&endpoint);
        Ok(endpoint)
    }

    /// Enables or disables an endpoint. Enabling resets its consecutive-failure count and
    /// makes its held deliveries due again.
    pub(crate) async fn set_endpoint_enabled(
        &self,
        id: EndpointId,
        enabled: bool,
    ) -> Result<Endpoint> {
        let now = now_ms();
        if enabled {
            self.store
                .enable_endpoint(id, now)
                .await?
                .ok_or_else(|| Error::NotFound(format!("endpoint {id}")))?;
        } else if !self
            .store
            .disable_endpoint(id, now, "by an operator")
            .await?
        {
            self.endpoint(id).await?; // not found → 404; already disabled is fine
        }
        let head = self.store.due_head(id, now).await?;
        let endpoint = self.endpoint(id).await?;
        self.schedule_endpoint(&endpoint, head);
        Ok(endpoint)
    }

    /// Deletes an endpoint; its pending deliveries fail, and count as finished under its
    /// policy, as they would had their attempts failed.
    pub(crate) async fn delete_endpoint(&self, id: EndpointId) -> Result<()> {
        let endpoint = self.endpoint(id).await?;
        let queued = self.scheduler.remove(id);
        self.store.release(&queued).await?;
        let closing = super::decide::endpoint_deleted(&endpoint, now_ms());
        let Some(closed) = self.store.delete_endpoint(id, &closing).await? else {
            return Err(Error::NotFound(format!("endpoint {id}")));
        };
        self.count_finished(Some(&endpoint), closing.status, closed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_validation_table() {
        let tolq = Signing::Hmac {
            algorithm: crate::policy::HmacAlgorithm::Sha1,
            header: "X-Tolq-Signature".into(),
            encoding: crate::policy::SignatureEncoding::Hex,
        };
        let long = "v".repeat(MAX_VALUE_LEN + 1);
        let table: &[(&str, &str, &Signing, bool)] = &[
            ("X-Env", "prod", &Signing::None {}, true),
            ("Authorization", "Bearer abc", &Signing::None {}, true),
            ("X-Env", "a\r\nInjected: 1", &Signing::None {}, false),
            ("X-Env", "a\nb", &Signing::None {}, false),
            ("X-Env\r\n", "v", &Signing::None {}, false),
            ("Bad Header", "v", &Signing::None {}, false),
            ("", "v", &Signing::None {}, false),
            ("Content-Length", "5", &Signing::None {}, false),
            ("host", "evil.example", &Signing::None {}, false),
            ("Transfer-Encoding", "chunked", &Signing::None {}, false),
            ("Connection", "close", &Signing::None {}, false),
            ("webhook-signature", "v1,x", &Signing::None {}, false),
            ("Herald-Message-Id", "x", &Signing::None {}, false),
            ("x-tolq-signature", "forged", &tolq, false),
            (
                "x-tolq-signature",
                "fine elsewhere",
                &Signing::None {},
                true,
            ),
            ("X-Long", long.as_str(), &Signing::None {}, false),
        ];
        for (name, value, signing, ok) in table {
            let headers = BTreeMap::from([(name.to_string(), value.to_string())]);
            let result = check_headers(&headers, signing);
            assert_eq!(result.is_ok(), *ok, "{name:?}: {value:?} → {result:?}");
        }
    }
}
