//! The PostgreSQL backend: several herald nodes share one queue.
//!
//! * `rows` — rows to domain records and back (sealing what carries secrets);
//! * `cache` — endpoints as this node last read them, dropped on every change notice;
//! * `endpoints` — endpoint records, their health, and the reserved starts of rate-limited
//!   endpoints (a rate limit held by the whole cluster);
//! * `queue` — messages in (one transaction per group of sends), leases
//!   (`FOR UPDATE SKIP LOCKED`);
//! * `leases` — this node's live leases, which its claims count against an endpoint's cap
//!   beside the other nodes' published counts;
//! * `lines` — ordering-key lines: who is at the front, who waits behind it;
//! * `transitions` — decided changes outside an attempt (replay, retry, cancel);
//! * `outcomes` — attempt outcomes, one transaction per group;
//! * `store` — the [`Store`](super::Store) trait over all of the above: reads, retention,
//!   jobs.
//!
//! The schema lives in versioned migrations (`migrations/` in the repository), applied at
//! connect under PostgreSQL's advisory lock, so nodes starting together do not race. Every
//! write is a committed transaction: durable when the call returns. Nodes learn of each
//! other's changes through `LISTEN/NOTIFY` on the channel `herald` (new due work, endpoint
//! changes); the engine keeps a bounded fallback timer for notifications lost in a reconnect.
//!
//! Leases are rows: `lease_token` and `lease_expires` on the delivery, in no index, so that a
//! claim's update stays within the row's page (HOT). A claim takes due rows that are not leased
//! (or whose lease expired) with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any node
//! never take the same delivery; a node that dies leaves leases that expire, and the next claim
//! takes the deliveries over. An outcome moves its delivery only while its lease token is still
//! the row's. Live leases are counted per node (`leases`).

mod cache;
mod endpoints;
mod leases;
mod lines;
mod outcomes;
mod queue;
mod rows;
mod store;
mod transitions;

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;

use super::seal::Sealer;
use super::{Notice, StoreError, StoreResult};
use crate::model::EndpointId;

/// The channel nodes notify each other on.
const CHANNEL: &str = "herald";
/// A known value sealed with the cluster's key, stored once.
const KEY_CHECK_VALUE: &[u8] = b"herald secret key check";

/// herald's state in a PostgreSQL database, shared by every node given the same URL.
pub struct PgStore {
    pool: PgPool,
    sealer: Sealer,
    /// This node, as the owner of the bulk replay jobs it runs.
    node: uuid::Uuid,
    notices: broadcast::Sender<Notice>,
    listener: tokio::task::JoinHandle<()>,
    /// Endpoints as last read; cleared by every endpoint write and notice.
    cache: std::sync::Arc<cache::EndpointCache>,
    /// This node's live leases, counted by its claims.
    own_leases: leases::OwnLeases,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Whether an error means the database cannot be reached now (it may come back), as opposed
/// to a failed statement.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // connection_exception, admin/crash shutdown, cannot_connect_now, read-only
            // (a standby during failover).
            code.starts_with("08") || code.starts_with("57P") || code == "25006"
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(format!("the database is unreachable ({e})"))
        } else {
            StoreError::Backend(format!("database: {e}"))
        }
    }
}

/// What a node says to the others: `d <endpoint> <due ms>` or `e <endpoint>`.
fn encode_notice(notice: &Notice) -> Option<String> {
    match notice {
        Notice::Due(endpoint, due) => Some(format!("d {endpoint} {due}")),
        Notice::Endpoint(endpoint) => Some(format!("e {endpoint}")),
        Notice::Resync => None,
    }
}

fn decode_notice(payload: &str) -> Option<Notice> {
    let mut parts = payload.split(' ');
    let kind = parts.next()?;
    let endpoint: EndpointId = parts.next()?.parse().ok()?;
    match kind {
        "d" => Some(Notice::Due(endpoint, parts.next()?.parse().ok()?)),
        "e" => Some(Notice::Endpoint(endpoint)),
        _ => None,
    }
}

/// Why the first connection failed, naming the database (without its password). The pool
/// reports a refused or unresolvable server as a timeout after retrying; one direct
/// connection then says what the pool saw (`Connection refused`, no such host).
async fn connect_failed(url: &str, e: sqlx::Error) -> StoreError {
    use sqlx::Connection as _;
    let cause = match e {
        sqlx::Error::PoolTimedOut => match sqlx::PgConnection::connect(url).await {
            Err(direct) => direct,
            Ok(_) => sqlx::Error::PoolTimedOut,
        },
        e => e,
    };
    let at = crate::transport::redact(url);
    match StoreError::from(cause) {
        StoreError::Backend(reason) => {
            StoreError::Backend(format!("{reason} (connecting to {at})"))
        }
        StoreError::Unavailable(reason) => {
            StoreError::Unavailable(format!("{reason} (connecting to {at})"))
        }
        other => other,
    }
}

impl PgStore {
    /// Connects, applies the schema's migrations, and checks that `key` opens the cluster's
    /// sealed records (the first node to connect to an empty database sets it).
    pub async fn connect(url: &str, key: &[u8; super::KEY_BYTES]) -> StoreResult<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Fail fast while the database is away: sends get 503 instead of hanging.
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            Err(e) => return Err(connect_failed(url, e).await),
        };
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("schema migration: {e}")))?;
        let sealer = Sealer::new(key);
        check_key(&pool, &sealer).await?;
        let (notices, _) = broadcast::channel(4096);
        let cache = std::sync::Arc::new(cache::EndpointCache::default());
        let listener = tokio::spawn(listen(pool.clone(), notices.clone(), cache.clone()));
        tracing::info!(database = %crate::transport::redact(url), "PostgreSQL store connected");
        Ok(PgStore {
            pool,
            sealer,
            node: uuid::Uuid::now_v7(),
            notices,
            listener,
            cache,
            own_leases: leases::OwnLeases::default(),
        })
    }

    /// Tells the other nodes (and this one's listener) about changes, inside `tx`, so they are
    /// delivered when — and only if — it commits.
    async fn notify(
        tx: &mut sqlx::PgConnection,
        notices: impl IntoIterator<Item = Notice>,
    ) -> StoreResult<()> {
        let payloads: Vec<String> = notices
            .into_iter()
            .filter_map(|n| encode_notice(&n))
            .collect();
        if payloads.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Seals the check value into an empty database, or proves the key opens the one there.
async fn check_key(pool: &PgPool, sealer: &Sealer) -> StoreResult<()> {
    let sealed = sealer.seal(KEY_CHECK_VALUE).map_err(StoreError::Backend)?;
    sqlx::query(
        "INSERT INTO herald_meta (store_id, key_check) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(&sealed)
    .execute(pool)
    .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_check FROM herald_meta")
        .fetch_one(pool)
        .await?;
    match sealer.open(&stored) {
        Ok(plain) if plain == KEY_CHECK_VALUE => Ok(()),
        _ => Err(StoreError::Damaged(
            "the secret key does not open this cluster's sealed records: every node of a \
             cluster needs the same HERALD_SECRET_KEY"
                .into(),
        )),
    }
}

/// Listens for the other nodes' notices until the store is dropped. A lost connection is
/// re-established by the listener; notices sent meanwhile are lost, so the engine is told to
/// look again (`Resync`). The endpoint cache is cleared before the engine hears of a notice
/// that could concern an endpoint, so that what the engine then reads is current.
async fn listen(
    pool: PgPool,
    notices: broadcast::Sender<Notice>,
    cache: std::sync::Arc<cache::EndpointCache>,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; trying again in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        cache.clear();
        let _ = notices.send(Notice::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(notice) = decode_notice(notification.payload()) {
                        if matches!(notice, Notice::Endpoint(_)) {
                            cache.clear();
                        }
                        let _ = notices.send(notice);
                    }
                }
                // The connection was lost and re-established: notices may have been missed.
                Ok(None) => {
                    cache.clear();
                    let _ = notices.send(Notice::Resync);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Milliseconds as stored (PostgreSQL has no unsigned integers; times fit in i64 for
/// 290 million years).
fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unms(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Row ids in the order every writer locks them (ascending, once each), so that writers on
/// different nodes cannot deadlock.
fn lock_order(ids: impl Iterator<Item = uuid::Uuid>) -> Vec<uuid::Uuid> {
    let mut ids: Vec<uuid::Uuid> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
