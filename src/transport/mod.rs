//! Speaking HTTP to receivers: encodings, signatures, URL rules and the client.

mod client;
mod encode;
mod guard;
mod sign;
mod url_rules;

pub use client::{Client, ClientOptions, Exchange, Request, ResponseSummary};
pub use encode::{Body, FORM, JSON, encode, encoded_len};
pub use guard::{ForbiddenTarget, GuardedResolver, TargetPolicy, check_literal, forbidden_range};
pub use sign::{SignError, SignInput, sign, standard_webhooks_key};
pub use url_rules::{MAX_URL_LEN, check_url, redact, redact_with_host};
