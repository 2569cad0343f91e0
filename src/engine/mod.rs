//! The engine: accepts messages, schedules deliveries, runs attempts and records outcomes.
//!
//! * [`decide`] holds every rule about what happens to a delivery, as pure functions;
//! * [`accept`] turns a message into deliveries and stores them durably (group commit);
//! * [`scheduler`] decides when deliveries are attempted, endpoint by endpoint;
//! * [`attempt`] performs one attempt, asks [`decide`] what it means and records that;
//! * [`endpoints`] validates and changes endpoint configuration;
//! * [`commands`] carries out an operator's commands on one delivery (replay, retry, cancel);
//! * [`finished`] counts the deliveries that reach a final status, whichever way they do.
//!
//! The engine never speaks HTTP to producers or operators; `server` does that on top of it.

mod accept;
mod attempt;
mod cluster;
mod commands;
mod commit;
pub(crate) mod decide;
mod endpoints;
mod finished;
mod health;
mod pacing;
mod probe;
mod record;
mod replay;
mod retention;
mod runner;
mod scheduler;
mod window;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::api::AttemptEvent;
use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::policy::PolicySet;
use crate::store::Store;
use crate::transport::{Client, ClientOptions};

pub use commit::CommitStats;
pub(crate) use commit::GroupCommit;
pub use health::SYSTEM_TENANT;
pub use pacing::LimitSource;
pub use replay::ReplayRequest;
pub use retention::PurgeReport;
pub(crate) use scheduler::Scheduler;

/// What a lease adds to the attempt timeouts it covers.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Engine tuning; the defaults suit a sidecar.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Claimed deliveries (in flight or queued for a runner) over all endpoints, at most.
    pub max_in_flight: usize,
    /// Attempts in flight per endpoint, at most.
    pub endpoint_concurrency: usize,
    /// How long a rotated secret keeps signing.
    pub secret_rotation_grace: Duration,
    /// Bytes of the response body kept with each attempt.
    pub response_excerpt_bytes: usize,
    /// HTTP client settings.
    pub client: ClientOptions,
    /// Where operator notifications (`endpoint.disabled`) are delivered, if anywhere.
    pub notify_url: Option<String>,
    /// Bulk replays queue at most this many deliveries per second.
    pub replay_per_second: u32,
    /// What to do with a message that no endpoint takes.
    pub unrouted: Unrouted,
    /// The runtime that makes the attempts: the scheduler, the runners and their HTTP
    /// connections run there. `None`: the runtime that opens herald. The daemon gives
    /// deliveries threads of their own at a lower CPU priority, so that a saturated machine
    /// keeps accepting messages at full speed and delivers what queued up afterwards (see
    /// [`crate::config::Config::delivery_niceness`]). It must outlive herald: attempts stop
    /// with it.
    pub delivery_runtime: Option<tokio::runtime::Handle>,
}

/// What happens to a message that no endpoint of its tenant takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unrouted {
    /// Store and acknowledge it, saying so in the answer (`unrouted`), a metric and a log line.
    #[default]
    Accept,
    /// Refuse it (422 `unrouted`); nothing is stored.
    Reject,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_in_flight: 1024,
            endpoint_concurrency: 16,
            secret_rotation_grace: Duration::from_secs(24 * 3600),
            response_excerpt_bytes: 1024,
            client: ClientOptions::default(),
            notify_url: None,
            replay_per_second: 1000,
            unrouted: Unrouted::Accept,
            delivery_runtime: None,
        }
    }
}

/// Everything the engine's tasks share.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) policies: Arc<PolicySet>,
    pub(crate) client: Client,
    pub(crate) commit: GroupCommit,
    pub(crate) recorder: record::Recorder,
    pub(crate) scheduler: Scheduler,
    pub(crate) outcomes: broadcast::Sender<AttemptEvent>,
    pub(crate) config: EngineConfig,
    /// Where the scheduler and the runners run ([`EngineConfig::delivery_runtime`]).
    pub(crate) delivery: tokio::runtime::Handle,
    /// How long a claim lasts: long enough for a claim to wait in its endpoint's queue behind
    /// one attempt and then be attempted, with the slowest policy's timeout, plus a margin.
    /// Only a claimer that died (or hung) lets it run out.
    pub(crate) lease_for: Duration,
    /// The claims of one endpoint that may be live at once, over all claimers.
    pub(crate) max_leased: usize,
    /// Turns true at shutdown: background tasks end.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// Tenants whose unrouted messages were already logged.
    pub(crate) unrouted_tenants: std::sync::Mutex<std::collections::HashSet<String>>,
    /// In a cluster: how long reserving a rate-limited start takes ([`pacing::RoundTrip`]).
    pub(crate) round_trip: pacing::RoundTrip,
}

impl Engine {
    /// Builds the engine and starts its commit thread; [`Engine::start`] starts scheduling.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        policies: PolicySet,
        config: EngineConfig,
    ) -> Result<Arc<Engine>> {
        let client = Client::new(&config.client).map_err(Error::Startup)?;
        let commit =
            GroupCommit::start(store.clone()).map_err(|e| Error::Startup(e.to_string()))?;
        let recorder =
            record::Recorder::start(store.clone()).map_err(|e| Error::Startup(e.to_string()))?;
        let (outcomes, _) = broadcast::channel(4096);
        let slowest = policies
            .iter()
            .map(|p| p.request.timeout)
            .max()
            .unwrap_or_default();
        let delivery = config
            .delivery_runtime
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        Ok(Arc::new(Engine {
            delivery,
            lease_for: slowest * 2 + Duration::from_secs(30),
            unrouted_tenants: Default::default(),
            round_trip: Default::default(),
            stop: tokio::sync::watch::Sender::new(false),
            scheduler: Scheduler::new(
                config.max_in_flight,
                config.endpoint_concurrency,
                store.shared(),
            ),
            // In a cluster a claim counts the other nodes' leases, each node's up to this
            // limit (its window bounds its requests on the wire): that bounds an endpoint's
            // attempts over all nodes.
            max_leased: if store.shared() {
                config.endpoint_concurrency
            } else {
                usize::MAX
            },
            store,
            policies: Arc::new(policies),
            client,
            commit,
            recorder,
            outcomes,
            config,
        }))
    }

    /// Loads every endpoint's earliest due entry and starts the scheduler loop.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<()> {
        let endpoints = self.store.endpoints(None).await?;
        let heads = self.store.due_heads(now_ms()).await?;
        for endpoint in &endpoints {
            self.schedule_endpoint(endpoint, None);
            self.apply_rate_limit(endpoint);
        }
        for (endpoint, head) in heads {
            self.scheduler.note_due(endpoint, head);
        }
        if let Some(url) = &self.config.notify_url {
            self.ensure_notify_endpoint(url).await?;
        }
        self.delivery.spawn(scheduler::run(self.clone()));
        self.resume_replays().await?;
        self.follow_cluster();
        Ok(())
    }

    /// Stops scheduling, hands queued claims back (their entries never left the due index,
    /// so a restart picks them up at once), waits up to `grace` for attempts in flight, and
    /// flushes.
    pub(crate) async fn shutdown(&self, grace: Duration) -> Result<()> {
        self.stop.send_replace(true);
        for (_, leases) in self.scheduler.stop() {
            self.store.release(&leases).await?;
        }
        if tokio::time::timeout(grace, self.scheduler.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.scheduler.outstanding(),
                "attempts still in flight at shutdown; they are due again after a restart"
            );
        }
        self.store.sync().await?;
        Ok(())
    }

    /// How long claims on `endpoint`'s deliveries last: its policy's timeout for each attempt
    /// a claim may wait for (one ahead of it in the queue, and its own), plus a margin. A node
    /// that dies mid-attempt leaves leases the others take over after this.
    pub(crate) fn lease_for(&self, endpoint: &crate::model::Endpoint) -> Duration {
        let timeout = self
            .policies
            .get(&endpoint.policy)
            .map_or(self.lease_for, |p| p.request.timeout);
        timeout * scheduler::CLAIMS_PER_ATTEMPT as u32 + LEASE_MARGIN
    }

    /// Schedules an endpoint as its record says (enabled or not, its lease time).
    pub(crate) fn schedule_endpoint(&self, endpoint: &crate::model::Endpoint, head: Option<u64>) {
        let lease = self.lease_for(endpoint);
        self.scheduler
            .set_endpoint(endpoint.id, endpoint.enabled, lease, head);
    }

    /// Checks a callback URL against a policy's URL rules and, for literal IP hosts, the SSRF
    /// guard, so a refused target is a 4xx at once instead of a failed attempt later.
    pub(crate) fn check_target(&self, url: &str, rules: &crate::policy::UrlRules) -> Result<()> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: crate::transport::redact_with_host(url).unwrap_or_default(),
            reason,
        };
        let parsed = crate::transport::check_url(url, rules).map_err(invalid)?;
        crate::transport::check_literal(&self.config.client.targets, &parsed)
            .map_err(|refused| invalid(refused.to_string()))
    }

    /// Hands an endpoint's rate limit (its own, or its policy's default) to the scheduler.
    pub(crate) fn apply_rate_limit(&self, endpoint: &crate::model::Endpoint) {
        let policy = self.policies.get(&endpoint.policy).map(|p| p.as_ref());
        let limit = pacing::limit_for(endpoint, policy).map(|(rate, _)| rate);
        self.scheduler.set_rate_limit(endpoint.id, limit);
    }

    /// An endpoint's rate limit, where it comes from, and how long its next attempt must
    /// wait for it now.
    pub(crate) fn pacing(
        &self,
        endpoint: &crate::model::Endpoint,
    ) -> Option<(f64, LimitSource, Duration)> {
        let policy = self.policies.get(&endpoint.policy).map(|p| p.as_ref());
        let (rate, source) = pacing::limit_for(endpoint, policy)?;
        let wait = self
            .scheduler
            .pacing(endpoint.id)
            .map_or(Duration::ZERO, |(_, wait)| wait);
        Some((rate, source, wait))
    }

    /// Group-commit counters.
    pub(crate) fn commit_stats(&self) -> Arc<CommitStats> {
        self.commit.stats()
    }
}
