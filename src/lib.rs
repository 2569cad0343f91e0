//! herald: a reliable outbound callback dispatcher — the sender side of webhooks.
//!
//! A TMS hands herald an event; herald stores it durably, delivers it to the customer's
//! callback URL, retries on the schedule that customer's integration expects, signs it,
//! enforces size limits, records every attempt and lets an operator replay what failed.
//!
//! # Architecture
//!
//! * [`policy`] — pure data and decisions: schedules, success rules, encodings, signing.
//! * [`store`] — durable state behind the async [`store::Store`] trait, in the domain's terms:
//!   the embedded sled backend (default) and PostgreSQL (several nodes, one queue).
//! * `engine` — the pure delivery decision (`engine::decide`), and what acts on it: accepting
//!   messages (group commit), scheduling per endpoint, running attempts.
//! * [`transport`] — HTTP: encodings, signatures, URL rules, the pooled client.
//! * [`server`] — the sidecar daemon's HTTP API over this library.
//! * [`otel`] — OpenTelemetry: span export over OTLP/HTTP, W3C trace context in and out.
//!
//! Every rule about a delivery lives in the engine's pure decision code; a store persists the
//! decided records atomically and keeps its own indexes. A new backend is therefore one module
//! implementing [`store::Store`] plus a line in the builder, and it is done when the shared
//! conformance suite (`tests/store_conformance.rs`, one `suite!(backend)` line and a harness
//! that opens it) passes.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use herald::{Herald, NewEndpoint, NewMessage};
//!
//! let herald = Herald::builder()
//!     .data_dir("./herald-data")
//!     .policies_dir("./policies")
//!     .open()
//!     .await?;
//!
//! herald.create_endpoint(NewEndpoint {
//!     tenant: "acme".into(),
//!     url: "https://tms.example/callbacks".into(),
//!     policy: "tolq".into(),
//!     secret: Some("customer-api-key".into()),
//!     default: true,
//!     ..NewEndpoint::default()
//! }).await?;
//!
//! let mut outcomes = herald.outcomes();
//! // Returns once the message and its deliveries are on disk.
//! let receipt = herald
//!     .send(NewMessage::new("acme", "job.completed", &serde_json::json!({"job_id": 7}))?)
//!     .await?;
//! while let Some(event) = outcomes.next().await {
//!     if event.message_id == receipt.id {
//!         println!("status {:?} after attempt {}", event.status_code, event.attempt);
//!         break;
//!     }
//! }
//! herald.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod config;
mod engine;
pub mod error;
pub mod model;
pub mod otel;
pub mod policy;
pub mod server;
pub mod store;
pub mod transport;

/// The README's Rust examples, compiled by `cargo test` so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

pub use api::{
    AttemptEvent, DayStats, DeliveryReceipt, EndpointUpdate, EndpointView, NewEndpoint, NewMessage,
    Pacing, SendReceipt, TestSendResult,
};
pub use engine::{CommitStats, EngineConfig, LimitSource, PurgeReport, ReplayRequest, Unrouted};
pub use error::{Error, Result};
pub use model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, ErrorKind, Message,
    MessageId,
};
pub use policy::{Policy, PolicySet};
pub use store::{DeliveryFilter, ReplayJob, ReplayState};

use engine::Engine;
use store::{SledOptions, SledStore, Store};

/// Which store a [`Herald`] opens.
#[derive(Clone)]
enum StoreChoice {
    /// The embedded sled store in the data directory.
    Sled,
    /// PostgreSQL at this URL: several nodes given the same URL form one cluster.
    Postgres(String),
    /// A store built by the caller (tests, custom backends).
    Given(Arc<dyn Store>),
}

/// Configures and opens a [`Herald`].
#[derive(Clone)]
pub struct HeraldBuilder {
    data_dir: PathBuf,
    policies_dir: Option<PathBuf>,
    extra_policies: Vec<Policy>,
    engine: EngineConfig,
    /// [`HeraldBuilder::allow_private_targets`] and [`HeraldBuilder::allow_cidrs`], kept apart
    /// from `engine` and applied at `open`, so that a later `engine_config` does not undo them.
    allow_private: Option<bool>,
    allow_cidrs: Vec<ipnet::IpNet>,
    sled: SledOptions,
    store: StoreChoice,
}

impl HeraldBuilder {
    /// Where the store lives (created if missing). Default `./herald-data`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// A directory of policy files, loaded on top of the built-in ones. A directory that does
    /// not exist is skipped (logged), as the daemon does; a file that does not parse fails
    /// [`HeraldBuilder::open`].
    pub fn policies_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policies_dir = Some(dir.into());
        self
    }

    /// Adds a policy directly (tests and embedders that keep policies in their own config).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.extra_policies.push(policy);
        self
    }

    /// Engine tuning: replaces the whole [`EngineConfig`] (what `allow_private_targets` and
    /// `allow_cidrs` set is applied over it, whichever is called first).
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// Tuning of the embedded sled store.
    pub fn store_options(mut self, options: SledOptions) -> Self {
        self.sled = options;
        self
    }

    /// Which store to use: `sled` (the default, embedded in the data directory) or a
    /// `postgres://` / `postgresql://` URL (several herald nodes given the same URL share one
    /// queue; the data directory then holds only `secret.key`, if no key is given).
    pub fn store(mut self, store: impl Into<String>) -> Self {
        let store = store.into();
        self.store = if store.is_empty() || store == "sled" {
            StoreChoice::Sled
        } else {
            StoreChoice::Postgres(store)
        };
        self
    }

    /// The key that seals secrets at rest (32 bytes; every node of a cluster needs the same).
    /// Without it, `secret.key` in the data directory is used, created for a new store.
    pub fn secret_key(mut self, key: [u8; store::KEY_BYTES]) -> Self {
        self.sled.secret_key = Some(key);
        self
    }

    /// Allows deliveries to loopback and private addresses (the SSRF guard is on by default):
    /// local testing and trusted networks.
    pub fn allow_private_targets(mut self, allow: bool) -> Self {
        self.allow_private = Some(allow);
        self
    }

    /// Private networks that may be delivered to all the same, e.g. `10.1.2.0/24`.
    pub fn allow_cidrs(mut self, cidrs: impl IntoIterator<Item = ipnet::IpNet>) -> Self {
        self.allow_cidrs.extend(cidrs);
        self
    }

    /// Uses a store opened by the caller instead of the embedded one.
    pub fn store_backend(mut self, store: Arc<dyn Store>) -> Self {
        self.store = StoreChoice::Given(store);
        self
    }

    /// Opens the store, loads policies and starts delivering what is due.
    pub async fn open(self) -> Result<Herald> {
        let mut policies = match &self.policies_dir {
            // Like the daemon: a policies directory that does not exist (yet) is not an error.
            Some(dir) if !dir.exists() => {
                tracing::info!(dir = %dir.display(), "no policies directory; using the built-in policies");
                PolicySet::built_in()
            }
            Some(dir) => PolicySet::load_dir(dir)?,
            None => PolicySet::built_in(),
        };
        for policy in self.extra_policies {
            policies.insert(policy);
        }
        let store: Arc<dyn Store> = match self.store {
            StoreChoice::Given(store) => store,
            StoreChoice::Postgres(url) => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err(Error::Startup(format!(
                        "store {:?} is neither `sled` nor a postgres:// URL",
                        shown_store(&url)
                    )));
                }
                let key = match self.sled.secret_key {
                    Some(key) => key,
                    None => {
                        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
                            Error::Startup(format!("{}: {e}", self.data_dir.display()))
                        })?;
                        store::load_or_create_key(&self.data_dir.join("secret.key"))
                            .map_err(Error::Startup)?
                    }
                };
                Arc::new(store::PgStore::connect(&url, &key).await?)
            }
            StoreChoice::Sled => {
                let data_dir = self.data_dir.clone();
                let options = self.sled.clone();
                let store =
                    tokio::task::spawn_blocking(move || SledStore::open(&data_dir, &options))
                        .await
                        .map_err(|e| Error::Startup(e.to_string()))??;
                let shown = std::path::absolute(&self.data_dir).unwrap_or(self.data_dir);
                tracing::info!(data_dir = %shown.display(), "embedded store opened");
                Arc::new(store)
            }
        };
        let mut config = self.engine;
        if let Some(allow) = self.allow_private {
            config.client.targets.allow_private = allow;
        }
        config.client.targets.allow.extend(self.allow_cidrs);
        let engine = Engine::new(store, policies, config)?;
        engine.start().await?;
        tracing::info!("herald started");
        Ok(Herald { engine })
    }
}

/// A running herald: the embedding API.
///
/// Cheap to clone; all clones drive the same engine.
#[derive(Clone)]
pub struct Herald {
    engine: Arc<Engine>,
}

impl Herald {
    /// Starts configuring an instance.
    pub fn builder() -> HeraldBuilder {
        HeraldBuilder {
            data_dir: PathBuf::from("./herald-data"),
            policies_dir: None,
            extra_policies: Vec::new(),
            engine: EngineConfig::default(),
            allow_private: None,
            allow_cidrs: Vec::new(),
            sled: SledOptions::default(),
            store: StoreChoice::Sled,
        }
    }

    fn store(&self) -> &dyn Store {
        self.engine.store.as_ref()
    }

    /// Accepts a message. Returns once it and its deliveries are durable (fsynced, shared with
    /// concurrent sends); a repeated idempotency key returns the first receipt.
    pub async fn send(&self, message: NewMessage) -> Result<SendReceipt> {
        self.engine.send(message).await
    }

    /// Creates an endpoint.
    pub async fn create_endpoint(&self, endpoint: NewEndpoint) -> Result<Endpoint> {
        self.engine.create_endpoint(endpoint).await
    }

    /// One endpoint.
    pub async fn endpoint(&self, id: EndpointId) -> Result<Endpoint> {
        self.engine.endpoint(id).await
    }

    /// An endpoint's rate limit as it applies now (its own or its policy's default) and how
    /// long its next attempt must wait for it; `None` when it is not rate-limited.
    pub async fn endpoint_pacing(&self, id: EndpointId) -> Result<Option<Pacing>> {
        Ok(self.pacing_of(&self.endpoint(id).await?))
    }

    /// [`Herald::endpoint_pacing`] of an endpoint already read (the answer to a change).
    pub fn pacing_of(&self, endpoint: &Endpoint) -> Option<Pacing> {
        self.engine
            .pacing(endpoint)
            .map(|(rate_limit, source, wait)| Pacing {
                rate_limit,
                source,
                wait_ms: wait.as_millis() as u64,
            })
    }

    /// All endpoints, or one tenant's.
    pub async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<Endpoint>> {
        Ok(self.store().endpoints(tenant).await?)
    }

    /// Changes an endpoint; a new secret rotates (the old one signs during the grace period).
    pub async fn update_endpoint(
        &self,
        id: EndpointId,
        update: EndpointUpdate,
    ) -> Result<Endpoint> {
        self.engine.update_endpoint(id, update).await
    }

    /// Enables or disables an endpoint; enabling releases its held deliveries.
    pub async fn set_endpoint_enabled(&self, id: EndpointId, enabled: bool) -> Result<Endpoint> {
        self.engine.set_endpoint_enabled(id, enabled).await
    }

    /// Sends a `herald.test` event to an endpoint now and reports the answer. Nothing is stored
    /// and the endpoint's failure count does not move.
    pub async fn test_endpoint(&self, id: EndpointId) -> Result<TestSendResult> {
        self.engine.test_endpoint(id).await
    }

    /// An endpoint's attempts per UTC day for the last `days` days (today included), oldest
    /// first, days without attempts included as zeros. Served from a daily roll-up.
    pub async fn endpoint_stats(&self, id: EndpointId, days: u32) -> Result<Vec<DayStats>> {
        self.endpoint(id).await?;
        let today = store::day_of(model::now_ms());
        let first = today.saturating_sub(days.saturating_sub(1));
        let stored: std::collections::HashMap<u32, store::DailyRollup> = self
            .store()
            .endpoint_days(id, first, today)
            .await?
            .into_iter()
            .collect();
        Ok((first..=today)
            .map(|day| {
                let rollup = stored.get(&day).cloned().unwrap_or_default();
                let date = model::rfc3339(u64::from(day) * 86_400_000);
                DayStats {
                    date: date[..10].to_string(),
                    attempts: rollup.attempts,
                    successes: rollup.successes,
                    failures: rollup.failures(),
                    median_latency_ms: rollup.median_ms(),
                }
            })
            .collect())
    }

    /// Deletes an endpoint; its pending deliveries become `failed`.
    pub async fn delete_endpoint(&self, id: EndpointId) -> Result<()> {
        self.engine.delete_endpoint(id).await
    }

    /// The URL a deleted endpoint had, redacted as views show it: where its deliveries were
    /// sent, once the endpoint record is gone. `None` while it exists, or if it never did.
    pub async fn deleted_endpoint_url(&self, id: EndpointId) -> Result<Option<String>> {
        Ok(self.store().deleted_endpoint_url(id).await?)
    }

    /// One message (with its payload).
    pub async fn message(&self, id: MessageId) -> Result<Message> {
        self.store()
            .message(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("message {id}")))
    }

    /// A message's deliveries.
    pub async fn message_deliveries(&self, id: MessageId) -> Result<Vec<Delivery>> {
        Ok(self.store().message_deliveries(id).await?)
    }

    /// One delivery.
    pub async fn delivery(&self, id: DeliveryId) -> Result<Delivery> {
        self.store()
            .delivery(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("delivery {id}")))
    }

    /// Deliveries matching a filter, oldest first (or newest first, as the filter says).
    pub async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        Ok(self.store().deliveries(filter).await?)
    }

    /// A delivery's attempts over all cycles, oldest first.
    pub async fn attempts(&self, id: DeliveryId) -> Result<Vec<Attempt>> {
        self.delivery(id).await?;
        Ok(self.store().attempts(id).await?)
    }

    /// Starts a fresh attempt cycle for a finished delivery; history is kept. Refused (a
    /// conflict) while it is pending, when its payload was purged or its endpoint deleted.
    pub async fn replay(&self, id: DeliveryId) -> Result<Delivery> {
        self.engine
            .command(id, engine::decide::Command::Replay)
            .await
    }

    /// Attempts a pending delivery now instead of at its due time (it still counts as one of
    /// its cycle's attempts). Refused while an attempt is in flight.
    pub async fn retry_now(&self, id: DeliveryId) -> Result<Delivery> {
        self.engine
            .command(id, engine::decide::Command::RetryNow)
            .await
    }

    /// Cancels a pending delivery: it becomes `failed` ("cancelled by an operator") and may be
    /// replayed later. An attempt in flight finishes, and is kept, but changes nothing.
    pub async fn cancel(&self, id: DeliveryId) -> Result<Delivery> {
        self.engine
            .command(id, engine::decide::Command::Cancel)
            .await
    }

    /// Starts a durable bulk replay of finished deliveries matching `request`; it survives
    /// restarts. Poll it with [`Herald::replay_job`].
    pub async fn replay_many(&self, request: ReplayRequest) -> Result<ReplayJob> {
        self.engine.start_replay(request).await
    }

    /// A bulk replay job.
    pub async fn replay_job(&self, id: uuid::Uuid) -> Result<ReplayJob> {
        self.store()
            .job(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("replay {id}")))
    }

    /// Purges finished messages, attempts and daily roll-ups older than `retention`, in bounded
    /// pages while deliveries continue. Pending deliveries are never purged. The daemon runs
    /// this on a cron schedule; embedders call it when they like.
    pub async fn housekeeping(&self, retention: Duration) -> Result<PurgeReport> {
        self.engine.housekeeping(retention).await
    }

    /// The loaded policies.
    pub fn policies(&self) -> &PolicySet {
        &self.engine.policies
    }

    /// A live feed of attempt outcomes from now on.
    pub fn outcomes(&self) -> Outcomes {
        Outcomes {
            receiver: self.engine.outcomes.subscribe(),
        }
    }

    /// Group-commit counters (flushes and writers served).
    pub fn commit_stats(&self) -> Arc<CommitStats> {
        self.engine.commit_stats()
    }

    /// Deliveries waiting for an attempt, pending or held (kept exact by the store).
    pub async fn pending_deliveries(&self) -> Result<u64> {
        Ok(self.store().pending_count().await?)
    }

    /// Sets the gauges that are cheaper to read on demand than to keep on every change:
    /// `herald_deliveries_pending` and `herald_endpoints_disabled`. The daemon calls it on
    /// every `/metrics` scrape; embedders exporting metrics call it before theirs.
    pub async fn publish_gauges(&self) -> Result<()> {
        let pending = self.pending_deliveries().await?;
        metrics::gauge!("herald_deliveries_pending").set(pending as f64);
        let disabled = self
            .endpoints(None)
            .await?
            .iter()
            .filter(|e| !e.enabled)
            .count();
        metrics::gauge!("herald_endpoints_disabled").set(disabled as f64);
        Ok(())
    }

    /// Whether the store takes writes now; an error says why not (disk full, database
    /// unreachable). The daemon's `/readyz` answers with it.
    pub async fn check_store(&self) -> Result<()> {
        Ok(self.store().check().await?)
    }

    /// A consistent copy of the store into the new directory `to`, taken while running
    /// (writes pause for the copy). Restore by pointing `data_dir` at it.
    pub async fn backup(&self, to: &std::path::Path) -> Result<store::BackupReport> {
        let report = self.store().backup(to).await?;
        tracing::info!(dir = %report.dir, records = report.records, paused_ms = report.paused_ms, "backup written");
        Ok(report)
    }

    /// Bytes the store occupies on disk, where the backend knows.
    pub async fn disk_bytes(&self) -> Result<Option<u64>> {
        Ok(self.store().size_on_disk().await?)
    }

    /// Stops scheduling, lets attempts in flight finish (up to 10 seconds; unfinished ones come
    /// due again after a restart), and flushes the store.
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_within(Duration::from_secs(10)).await
    }

    /// [`Herald::shutdown`] with a chosen grace period.
    pub async fn shutdown_within(&self, grace: Duration) -> Result<()> {
        self.engine.shutdown(grace).await
    }
}

/// A live feed of [`AttemptEvent`]s.
///
/// It is a convenience for keeping a TMS's own records current, not a source of truth: a
/// subscriber that falls more than 4,096 events behind skips the oldest (a warning is logged);
/// the store always has every attempt.
pub struct Outcomes {
    receiver: broadcast::Receiver<AttemptEvent>,
}

impl Outcomes {
    /// The next event; `None` once herald has shut down.
    pub async fn next(&mut self) -> Option<AttemptEvent> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "outcome subscriber fell behind; events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A `store` setting as an error may repeat it: a URL redacted (no credentials, no query);
/// text that is not one (`postgres//user:pw@db/herald`) from its last `@` on.
fn shown_store(url: &str) -> String {
    transport::redact_with_host(url).unwrap_or_else(|| match url.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => url.to_string(),
    })
}
