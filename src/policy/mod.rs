//! Policies: *how* a delivery is made, as data.
//!
//! A policy is a TOML file (see `policies/` and the README) that says when to retry
//! ([`Schedule`]), what counts as success ([`SuccessRule`]), how the request body is encoded
//! ([`RequestSpec`]), how it is signed ([`Signing`]), which callback URLs are acceptable
//! ([`UrlRules`]) and when an endpoint should be switched off ([`EndpointRules`]).
//!
//! Everything in this module is pure: no I/O except [`PolicySet::load_dir`], which only reads
//! files. The engine asks the questions ("is this a success?", "when is the next attempt?") and
//! acts on the answers.

mod load;
mod schedule;
mod success;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{PolicyError, PolicySet};
pub use schedule::{Backoff, Schedule};
pub use success::{Verdict, classify, json_contains};

/// Default limit on the encoded request body: 60 KiB, Gengo's documented callback limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 61_440;

/// One delivery policy, parsed and validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The name endpoints refer to; unique within a [`PolicySet`].
    pub name: String,
    /// One line for people reading `herald policies list`.
    #[serde(default)]
    pub description: String,
    /// When attempts happen and when the delivery gives up.
    pub schedule: Schedule,
    /// What a successful response looks like.
    #[serde(default)]
    pub success: SuccessRule,
    /// Encoding, timeout and size limit of the request.
    #[serde(default)]
    pub request: RequestSpec,
    /// How requests are authenticated towards the receiver.
    #[serde(default)]
    pub signing: Signing,
    /// Which callback URLs this policy accepts.
    #[serde(default)]
    pub url: UrlRules,
    /// When an endpoint using this policy is switched off.
    #[serde(default)]
    pub endpoint: EndpointRules,
}

/// What counts as a successful delivery.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    /// Accepted status codes; empty means any 2xx.
    #[serde(default)]
    pub status: Vec<u16>,
    /// When set, the response body must be JSON containing these keys with these values
    /// (Ovesio's `{"success": true}`).
    #[serde(default)]
    pub body_json: Option<serde_json::Value>,
}

/// How the request body is produced from the message payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/json`; the body is the payload, byte for byte as stored.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`; the payload's JSON sits in one form field.
    Form,
}

/// The request side of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Body encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// Form encoding: the field that carries the JSON unless a prefix rule matches.
    #[serde(default = "default_form_field")]
    pub form_field: String,
    /// Form encoding: event-type prefix (ASCII case-insensitive) → field name. The longest
    /// matching prefix wins (Gengo: `comment…` events go in `comment`, the rest in `job`).
    #[serde(default)]
    pub form_field_by_event_prefix: BTreeMap<String, String>,
    /// Limit for one attempt, connect to last response byte.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Limit on the encoded request body. Checked when a message is accepted, never truncated.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            encoding: Encoding::Json,
            form_field: default_form_field(),
            form_field_by_event_prefix: BTreeMap::new(),
            timeout: default_timeout(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl RequestSpec {
    /// The form field that carries an event of this type.
    pub fn form_field_for(&self, event_type: &str) -> &str {
        self.form_field_by_event_prefix
            .iter()
            .filter(|(prefix, _)| {
                event_type.len() >= prefix.len()
                    && event_type.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, field)| field.as_str())
            .unwrap_or(&self.form_field)
    }
}

fn default_form_field() -> String {
    "payload".to_string()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

/// The hash behind an HMAC signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA1 (Tolq).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
}

/// How a signature is written into its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lower-case hexadecimal.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Request authentication, computed at send time over the exact bytes sent.
// The unit-like variants are empty structs: serde ignores unknown keys on unit variants of an
// internally tagged enum, and a stray key in a policy must be an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Signing {
    /// No authentication headers.
    None {},
    /// `header: encode(HMAC(secret, body))`, keyed by the endpoint's secret.
    Hmac {
        /// Hash function.
        algorithm: HmacAlgorithm,
        /// Header that carries the signature, e.g. `X-Tolq-Signature`.
        header: String,
        /// Hex or base64.
        #[serde(default)]
        encoding: SignatureEncoding,
    },
    /// `header: <endpoint token>` (Phrase's `x-memsource-token`).
    Token {
        /// Header that carries the token.
        header: String,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    StandardWebhooks {},
}

impl Default for Signing {
    fn default() -> Self {
        Signing::None {}
    }
}

/// Which callback URLs a policy accepts (http and https only, always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRules {
    /// Refuse `https://user:pass@host/` (Gengo forbids credentials in callback URLs).
    #[serde(default)]
    pub forbid_userinfo: bool,
    /// Refuse plain `http://`.
    #[serde(default)]
    pub require_https: bool,
}

/// Endpoint health rules.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRules {
    /// Consecutive failed attempts before the endpoint is disabled; 0 = never (Phrase: 3000).
    #[serde(default)]
    pub deactivate_after: u32,
    /// An HTTP 410 disables the endpoint at once.
    #[serde(default)]
    pub disable_on_gone: bool,
    /// Attempts per second to one endpoint, at most, for endpoints that set no `rate_limit` of
    /// their own: a receiver that documents "at most 50 calls a second". Absent = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

impl Policy {
    /// Parses one policy document. `origin` names the file in error messages.
    pub fn from_toml(origin: &str, text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            file: origin.to_string(),
            reason: e.to_string(),
        })?;
        policy.validate().map_err(|reason| PolicyError::Parse {
            file: origin.to_string(),
            reason,
        })?;
        Ok(policy)
    }

    /// Checks the rules that span several tables (single-table rules are checked while parsing).
    fn validate(&self) -> Result<(), String> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid_name {
            return Err(format!(
                "name {:?}: use 1-64 characters from [A-Za-z0-9._-]",
                self.name
            ));
        }
        if self.request.timeout.is_zero() {
            return Err("request.timeout must be greater than zero".into());
        }
        if let Some(rate) = self.endpoint.rate_limit {
            crate::model::check_rate_limit(rate).map_err(|e| format!("endpoint.{e}"))?;
        }
        if self.request.max_body_bytes == 0 {
            return Err("request.max_body_bytes must be greater than zero".into());
        }
        if self.request.encoding == Encoding::Form && self.request.form_field.is_empty() {
            return Err("request.form_field must not be empty".into());
        }
        for status in &self.success.status {
            if !(100..=599).contains(status) {
                return Err(format!("success.status: {status} is not an HTTP status"));
            }
        }
        match &self.signing {
            Signing::Hmac { header, .. } | Signing::Token { header } => {
                reqwest::header::HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("signing.header {header:?} is not a valid header name"))?;
            }
            Signing::None {} | Signing::StandardWebhooks {} => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_field_follows_the_longest_event_prefix() {
        let mut spec = RequestSpec {
            form_field: "job".into(),
            ..RequestSpec::default()
        };
        spec.form_field_by_event_prefix
            .insert("comment".into(), "comment".into());
        spec.form_field_by_event_prefix
            .insert("comment.system".into(), "system".into());
        let table = [
            ("job.completed", "job"),
            ("comment.added", "comment"),
            ("COMMENT", "comment"),
            ("comment.system.x", "system"),
            ("comm", "job"),
            ("", "job"),
        ];
        for (event, field) in table {
            assert_eq!(spec.form_field_for(event), field, "event {event:?}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let text = "name = \"x\"\n[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\n[request]\ntimeotu = \"3s\"\n";
        let err = Policy::from_toml("x.toml", text).unwrap_err().to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("line 7"), "{err}");
        assert!(err.contains("timeotu"), "{err}");
    }

    #[test]
    fn signing_schemes_parse() {
        let base =
            "name = \"x\"\n[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\n";
        let cases = [
            ("[signing]\nscheme = \"none\"\n", Signing::None {}),
            (
                "[signing]\nscheme = \"hmac\"\nalgorithm = \"sha1\"\nheader = \"X-Sig\"\n",
                Signing::Hmac {
                    algorithm: HmacAlgorithm::Sha1,
                    header: "X-Sig".into(),
                    encoding: SignatureEncoding::Hex,
                },
            ),
            (
                "[signing]\nscheme = \"token\"\nheader = \"x-memsource-token\"\n",
                Signing::Token {
                    header: "x-memsource-token".into(),
                },
            ),
            (
                "[signing]\nscheme = \"standard-webhooks\"\n",
                Signing::StandardWebhooks {},
            ),
        ];
        for (table, expected) in cases {
            let policy = Policy::from_toml("x.toml", &format!("{base}{table}")).unwrap();
            assert_eq!(policy.signing, expected);
        }
        for bad in [
            "[signing]\nscheme = \"rot13\"\n",
            "[signing]\nscheme = \"token\"\n",
            "[signing]\nscheme = \"token\"\nheader = \"bad header\"\n",
            "[signing]\nscheme = \"none\"\nheader = \"x\"\n",
        ] {
            assert!(
                Policy::from_toml("x.toml", &format!("{base}{bad}")).is_err(),
                "accepted {bad:?}"
            );
        }
    }
}
