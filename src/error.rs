//! The library's error type. The HTTP server maps each variant to one problem+json `type`.

use crate::policy::PolicyError;
use crate::store::StoreError;

/// Everything the embedding API can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a rule; nothing was stored.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A callback URL is unacceptable under the policy; nothing was stored.
    #[error("invalid URL{}: {reason}", named(url))]
    InvalidUrl {
        /// The URL with credentials and query removed; empty when it does not parse (what
        /// was given might be credentials).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The named policy is not loaded.
    #[error("unknown policy {0:?}")]
    UnknownPolicy(String),
    /// The encoded request body exceeds the policy's limit; nothing was stored.
    #[error("payload too large: the encoded body is {size} bytes, the limit is {limit}")]
    PayloadTooLarge {
        /// Encoded body size in bytes.
        size: usize,
        /// The policy's `max_body_bytes`.
        limit: usize,
    },
    /// No endpoint takes the message and herald is told to refuse such messages; nothing was
    /// stored.
    #[error("unrouted: {0}")]
    Unrouted(String),
    /// No such record.
    #[error("{0} not found")]
    NotFound(String),
    /// The operation does not apply in the current state (e.g. replaying a pending delivery).
    #[error("{0}")]
    Conflict(String),
    /// Policies could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed; the operation may not have happened.
    #[error(transparent)]
    Store(StoreError),
    /// The store cannot take writes now (disk full, database unreachable); nothing was
    /// stored. Worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// herald is shutting down and takes no new work.
    #[error("herald is shutting down")]
    ShuttingDown,
    /// Start-up failed (data directory, HTTP client, threads).
    #[error("start-up: {0}")]
    Startup(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Error::NotFound(what),
            StoreError::Conflict(why) => Error::Conflict(why),
            StoreError::Unavailable(why) => Error::Unavailable(why),
            StoreError::Unsupported(why) => Error::InvalidRequest(why),
            other => Error::Store(other),
        }
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ` URL` for an error message, or nothing when there is no URL to show.
fn named(url: &str) -> String {
    match url {
        "" => String::new(),
        url => format!(" {url}"),
    }
}
