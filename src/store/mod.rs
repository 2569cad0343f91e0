//! Durable state behind one async trait, in the domain's terms.
//!
//! The engine speaks only to [`Store`]. Two backends implement it: the embedded sled store
//! ([`sled::SledStore`], the default: nothing to install) and PostgreSQL (several herald nodes
//! sharing one queue). The trait names no backend type: claims are opaque [`Lease`]s with an
//! expiry, the purge resumes from an opaque [`PurgeCursor`], and every write is described by
//! the domain record it leaves behind.
//!
//! **The store persists decisions; it does not make them.** What an attempt means for its
//! delivery and its endpoint, what a replay or a cancellation does, is worked out by the
//! engine's pure decision code (`engine::decide`) and handed over as records ([`Outcome`],
//! [`Transition`], [`Closing`]). A backend applies them atomically, checks that what it
//! replaces is still what the decision was based on, and keeps its indexes (the due index, the
//! pending count, the daily roll-ups) in step.
//!
//! Rules every backend keeps (the conformance suite in `tests/store_conformance.rs` checks
//! them):
//! * each method that changes state does so atomically: a crash leaves all of it or none;
//! * a method that changes state returns once the change is durable, except
//!   [`Store::record_outcomes`], which may return before (see there);
//! * a due delivery is leased to one claimer at a time until the lease expires or is given
//!   back; a lease that expired may be taken over, and the late holder's outcome is then kept
//!   as an attempt without moving the delivery;
//! * ordering keys: for each (endpoint, ordering key) the store keeps a **line** of the pending
//!   deliveries of messages with that key, in acceptance order. Only the delivery at the front
//!   is in the due index; the others wait outside it (counted as pending) until the one before
//!   them leaves the line — which happens when a write carries a `release` of that key for
//!   it (the engine decides when: see `engine::decide::leaves_line`). Then the next delivery in
//!   line enters the due index at its own `next_attempt_at`, in the same atomic write. Finding
//!   the next one costs O(1) (or O(log n)) per delivery, never a scan of the endpoint's queue.

pub(crate) mod codec;
pub mod postgres;
pub(crate) mod rollup;
mod seal;
pub mod sled;

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, Message, MessageId,
};

pub use postgres::PgStore;
pub use rollup::{DailyRollup, day_of};
pub use seal::{KEY_BYTES, Sealer, load_or_create_key};
pub use sled::{SledOptions, SledStore};

thread_local! {
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one of herald's own writer threads (not a runtime worker), on
/// which a backend may block on the disk in place: a sled fsync there runs on the thread
/// itself instead of hopping to the runtime's blocking pool and back, two context switches
/// for every group commit.
pub(crate) fn mark_blocking_thread() {
    MAY_BLOCK.set(true);
}

/// Whether the calling thread may block on the disk ([`mark_blocking_thread`]).
pub(crate) fn may_block() -> bool {
    MAY_BLOCK.get()
}

/// The largest payload any backend accepts (a backend may accept less:
/// [`Store::max_payload_bytes`]). Callbacks are small documents; this bounds what one message
/// may cost in memory and on disk.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Errors from the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, a lost connection); the operation may not have happened.
    #[error("storage: {0}")]
    Backend(String),
    /// The backend cannot take writes now (disk full, database unreachable); nothing was
    /// written. It may recover by itself.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store cannot be trusted as it is (it lost acknowledged data, a file is damaged, the
    /// key does not open it); the message says what is wrong and what to do.
    #[error("{0}")]
    Damaged(String),
    /// The backend cannot do this (e.g. a file backup of a database server).
    #[error("{0}")]
    Unsupported(String),
    /// A stored record could not be decoded.
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The operation does not apply in the record's current state (it changed meanwhile, or
    /// an attempt is in flight).
    #[error("{0}")]
    Conflict(String),
    /// No such record.
    #[error("{0} not found")]
    NotFound(String),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A delivery to create with its message; pending deliveries enter the due index at their
/// `next_attempt_at`. When the message has an `ordering_key`, each pending delivery joins the
/// end of its endpoint's line for that key instead: it enters the due index only if the line
/// was empty (it is then at the front), and otherwise waits for its turn.
#[derive(Debug)]
pub struct MessageWrite {
    /// The message.
    pub message: Message,
    /// Its deliveries.
    pub deliveries: Vec<Delivery>,
}

/// What [`Store::insert_messages`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Created,
    /// The tenant already used this idempotency key; nothing was written.
    Existing(MessageId),
}

/// Identifies one lease among all leases a store ever handed out. Opaque to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(u128);

impl LeaseToken {
    /// A fresh, unique token. (A token made outside a store matches no lease: an outcome
    /// recorded under it is stale.)
    #[allow(clippy::new_without_default)]
    pub fn new() -> LeaseToken {
        LeaseToken(uuid::Uuid::now_v7().as_u128())
    }

    /// The token from its stored form (backends only).
    pub(crate) fn from_uuid(token: uuid::Uuid) -> LeaseToken {
        LeaseToken(token.as_u128())
    }

    /// The stored form (backends only).
    pub(crate) fn as_uuid(self) -> uuid::Uuid {
        uuid::Uuid::from_u128(self.0)
    }
}

/// A due delivery reserved by [`Store::claim`] for one attempt, until `expires_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The delivery to attempt.
    pub delivery_id: DeliveryId,
    /// Its endpoint.
    pub endpoint_id: EndpointId,
    /// When the delivery was due (ms): how late the attempt is, e.g. after a hold.
    pub due_ms: u64,
    /// After this time (ms) another claimer may take the delivery over.
    pub expires_at_ms: u64,
    /// Which lease this is.
    pub token: LeaseToken,
}

/// A claimed delivery: the lease, and what the attempt needs, read with the claim (a network
/// store saves a round trip per attempt). The records stay valid while the lease does: every
/// change to a leased delivery revokes the lease.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The lease.
    pub lease: Lease,
    /// The delivery as leased.
    pub delivery: Delivery,
    /// Its message; `None` when retention purged the payload.
    pub message: Option<Message>,
}

/// A change another process made that this process's scheduler must know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A delivery of this endpoint is due at this time.
    Due(EndpointId, u64),
    /// The endpoint was created, changed, enabled, disabled or deleted.
    Endpoint(EndpointId),
    /// Notices may have been lost (the connection was re-established): look again.
    Resync,
}

/// How an attempt moves the endpoint's consecutive-failure count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// Leave it (attempts to a message's own `callback_url`).
    Untouched,
    /// Back to zero (a success).
    Reset,
    /// One more failure.
    Increment,
}

/// One finished attempt and the decision taken on it, to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The lease the attempt was made under.
    pub lease: Lease,
    /// The attempt, numbered.
    pub attempt: Attempt,
    /// The delivery after the attempt; pending ones enter the due index at `next_attempt_at`.
    pub delivery: Delivery,
    /// What the attempt does to the endpoint's failure count.
    pub health: HealthChange,
    /// Delta mode: remember this payload digest for (endpoint, dedup key).
    pub dedup: Option<(String, [u8; 32])>,
    /// The delivery finished and leaves its line for this ordering key; if it was at the
    /// front, the next delivery in line enters the due index (see the module docs).
    pub release: Option<String>,
}

/// What [`Store::record_outcomes`] did for one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The lease was no longer valid (expired and taken over, or revoked by a change such as
    /// deleting the endpoint or cancelling the delivery): the attempt was kept, and counted in
    /// the roll-up and the failure count (it did happen), but the delivery did not move.
    pub stale: bool,
    /// The endpoint's consecutive failures after this outcome.
    pub consecutive_failures: u32,
    /// When the outcome's `release` made the next delivery in line due: its due time.
    pub released_due: Option<u64>,
}

/// A decided change of one delivery outside an attempt (replay, retry now, cancel).
#[derive(Debug, Clone)]
pub struct Transition {
    /// The delivery as read when the change was decided. If the stored one differs, nothing
    /// is written and the answer is [`StoreError::Conflict`].
    pub expected: Delivery,
    /// The delivery after the change; pending ones enter the due index at `next_attempt_at`,
    /// except one that waits in an ordering key's line (not at its front): it stays out of
    /// the due index until its turn comes, and is then due at its (new) `next_attempt_at`.
    pub delivery: Delivery,
    /// The delivery finished and leaves its line for this ordering key (see [`Outcome`]).
    pub release: Option<String>,
}

/// What deleting an endpoint does to its deliveries that are still pending, and what it keeps
/// of the endpoint for the history of all its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// Their final status.
    pub status: DeliveryStatus,
    /// Their `last_error`.
    pub reason: String,
    /// Their `updated_at`.
    pub at_ms: u64,
    /// The endpoint's URL as its deliveries' views show it once the endpoint is gone (see
    /// [`Store::deleted_endpoint_url`]). Redacted (no credentials, no query): it outlives the
    /// sealed endpoint record, and a view only shows it redacted anyway.
    pub url: String,
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BackupReport {
    /// Where.
    pub dir: String,
    /// Records copied.
    pub records: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// How long writes were paused for the copy.
    pub paused_ms: u64,
}

/// Filters for listing deliveries (admin API).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this endpoint.
    pub endpoint_id: Option<EndpointId>,
    /// Only these endpoints (a tenant's); empty = no restriction.
    pub endpoint_ids: Vec<EndpointId>,
    /// Created at or after (ms).
    pub since_ms: Option<u64>,
    /// Created before (ms).
    pub until_ms: Option<u64>,
    /// Start after this id (exclusive, in the listing's order), for paging.
    pub after: Option<DeliveryId>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// At most this many.
    pub limit: usize,
}

/// Where a retention purge resumes; opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeCursor(pub(crate) Vec<u8>);

/// What one [`Store::purge_page`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgePage {
    /// Messages removed.
    pub messages: u64,
    /// Deliveries removed.
    pub deliveries: u64,
    /// Attempts removed.
    pub attempts: u64,
    /// Daily roll-ups removed.
    pub rollups: u64,
    /// Where the next page starts; `None` when the purge is complete.
    pub next: Option<PurgeCursor>,
}

/// A bulk replay, as stored: it survives restarts and resumes from `cursor`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayJob {
    /// Job id.
    pub id: uuid::Uuid,
    /// `running` or `done`.
    pub state: ReplayState,
    /// Which deliveries it replays.
    pub status: DeliveryStatus,
    /// Only these endpoints (from `endpoint_id` or `tenant`); empty = all.
    pub endpoint_ids: Vec<EndpointId>,
    /// Created at or after (ms).
    pub since_ms: Option<u64>,
    /// Created before (ms).
    pub until_ms: Option<u64>,
    /// Deliveries that matched when the job was created.
    pub matched: u64,
    /// Deliveries replayed so far.
    pub queued: u64,
    /// Matching deliveries that could not be replayed (e.g. their payload was purged).
    pub skipped: u64,
    /// The last delivery handled; the job resumes after it.
    pub cursor: Option<DeliveryId>,
    /// Creation time (ms).
    pub created_at: u64,
}

/// Where a bulk replay stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Still replaying.
    Running,
    /// Finished.
    Done,
}

/// A start to reserve for an attempt to a rate-limited endpoint in a cluster
/// ([`Store::reserve_start`]).
///
/// Why a tolerance travels with each request: the process learns its start as "in `wait`"
/// when the answer arrives, and the answer's way back is time it cannot see. It may begin its
/// attempt only until `tolerance` after the reserved time, measured from when it asked (so the
/// whole round trip counts), and declares that tolerance so the reservations after it leave
/// room for it. A process far from the store declares more; the store keeps the largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRequest {
    /// The least time between two starts: a second divided by the limit, rounded up.
    pub interval: Duration,
    /// The starts one second may hold: the limit, rounded up.
    pub per_second: u32,
    /// How late after its reserved time the caller may begin the attempt.
    pub tolerance: Duration,
}

/// The durable state of a herald instance (or of a cluster of them).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- endpoints ---

    /// Creates or replaces an endpoint's configuration (not its health: failure count and
    /// disablement change only through the methods below).
    async fn put_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()>;
    /// One endpoint, with its health.
    async fn endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>>;
    /// All endpoints, or a tenant's.
    async fn endpoints(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>>;
    /// Disables an enabled endpoint, keeping why and when. False when it was already
    /// disabled or is gone, so that of concurrent callers (on any node) exactly one is told
    /// it disabled the endpoint.
    async fn disable_endpoint(
        &self,
        id: EndpointId,
        now_ms: u64,
        reason: &str,
    ) -> StoreResult<bool>;
    /// Enables an endpoint: resets its failure count and, if it was disabled, notes
    /// `released_at = now_ms`. `None` when there is no such endpoint.
    async fn enable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<Option<Endpoint>>;
    /// Deletes an endpoint; its pending deliveries (those waiting in ordering-key lines too)
    /// are finished as `closing` says, its lines are dropped, outstanding leases on its
    /// deliveries are revoked, and `closing.url` is kept for [`Store::deleted_endpoint_url`].
    /// `None` when there was no such endpoint; otherwise how many pending deliveries it
    /// finished (the engine counts them as finished: each delivery once, however many
    /// callers delete the endpoint at once).
    async fn delete_endpoint(&self, id: EndpointId, closing: &Closing) -> StoreResult<Option<u64>>;
    /// The URL a deleted endpoint had, as its deletion kept it ([`Closing::url`]), so that
    /// the history of its deliveries still says where they were sent. `None` while the
    /// endpoint exists, for one that never did, and for one deleted before herald kept these.
    async fn deleted_endpoint_url(&self, id: EndpointId) -> StoreResult<Option<String>>;

    // --- messages and their records ---

    /// Stores a group of messages with their deliveries and due entries in one atomic,
    /// durable write. A message whose tenant already used its idempotency key (before, or
    /// earlier in the same group) is not written; its answer is [`Inserted::Existing`].
    /// Answers follow the order of `writes`.
    async fn insert_messages(&self, writes: &[MessageWrite]) -> StoreResult<Vec<Inserted>>;
    /// One message, with its payload.
    async fn message(&self, id: MessageId) -> StoreResult<Option<Message>>;
    /// A message's deliveries.
    async fn message_deliveries(&self, id: MessageId) -> StoreResult<Vec<Delivery>>;
    /// One delivery.
    async fn delivery(&self, id: DeliveryId) -> StoreResult<Option<Delivery>>;
    /// A delivery's attempts, oldest first.
    async fn attempts(&self, id: DeliveryId) -> StoreResult<Vec<Attempt>>;
    /// Deliveries matching a filter, in id (creation) order.
    async fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    /// An endpoint's daily roll-ups for days `first..=last` (days since the epoch, UTC); days
    /// without attempts are absent.
    async fn endpoint_days(
        &self,
        endpoint: EndpointId,
        first: u32,
        last: u32,
    ) -> StoreResult<Vec<(u32, DailyRollup)>>;
    /// The payload digest of the last successful delivery for (endpoint, dedup key).
    async fn dedup_digest(&self, endpoint: EndpointId, key: &str) -> StoreResult<Option<[u8; 32]>>;

    // --- the queue ---

    /// [`Store::due_head`] of every endpoint that has pending deliveries (start-up, resync).
    async fn due_heads(&self, now_ms: u64) -> StoreResult<Vec<(EndpointId, u64)>>;
    /// The earliest time one of the endpoint's pending deliveries may be claimed, as seen at
    /// `now_ms`: its due time, or, while it is leased, when the lease expires (so that a
    /// claimer that died is taken over when its lease runs out, not at the next resync).
    async fn due_head(&self, endpoint: EndpointId, now_ms: u64) -> StoreResult<Option<u64>>;
    /// Leases up to `limit` of an endpoint's deliveries due at or before `now_ms` that are
    /// not leased (or whose lease expired), each until `now_ms + lease_for`, and returns them
    /// with their records. Earliest due first.
    ///
    /// `max_leased` is the endpoint's concurrency over every claimer (a cluster's nodes):
    /// each claimer's scheduler keeps its own requests on the wire within it, so a claimer
    /// alone may lease ahead (its queue); with others holding leases, it leases no more than
    /// leaves its own live leases plus every other claimer's — each counted up to
    /// `max_leased`, more than its window could have on the wire — within `max_leased`. The
    /// caller's `settling` leases (attempts off the wire that only wait for their outcome to
    /// be recorded) are left out of its own; other claimers' settling and queued leases
    /// count: an overestimate of what is on the wire, never an underestimate.
    async fn claim(
        &self,
        endpoint: EndpointId,
        now_ms: u64,
        limit: usize,
        lease_for: Duration,
        max_leased: usize,
        settling: &[DeliveryId],
    ) -> StoreResult<Vec<Claim>>;
    /// Gives leases back without an attempt; their deliveries stay due as they were.
    async fn release(&self, leases: &[Lease]) -> StoreResult<()>;
    /// Records attempts and the decisions on them, in one atomic write: the attempt, the
    /// delivery's new state and due entry, the endpoint's failure count and daily roll-up,
    /// the dedup digest. One answer per outcome, in order; an outcome whose delivery is gone
    /// is answered with an error and the others are still recorded.
    ///
    /// The write may become durable only later (the sled backend flushes it lazily): losing it
    /// in a crash repeats the attempt once the lease expires, which at-least-once delivery
    /// allows. [`Store::sync`] waits for it.
    ///
    /// Borrowed: a caller that must try again (an unavailable database) keeps its outcomes
    /// without copying every group in advance.
    async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
    ) -> StoreResult<Vec<StoreResult<Recorded>>>;
    /// Applies decided changes to deliveries, and stores `job` (a bulk replay's progress) with
    /// them, all or nothing: if any delivery differs from its `expected` record, nothing is
    /// written and the answer is [`StoreError::Conflict`]. A change revokes a lease on its
    /// delivery, except that a delivery that stays pending while leased is refused with
    /// [`StoreError::Conflict`] (an attempt is in flight).
    async fn apply_transitions(
        &self,
        transitions: &[Transition],
        job: Option<&ReplayJob>,
    ) -> StoreResult<()>;

    // --- retention ---

    /// One bounded page of the retention purge. Starting from `cursor` (`None` = the
    /// beginning), it removes finished messages created before `cutoff_ms` with their
    /// deliveries and attempts, then attempts older than the cutoff of deliveries that are
    /// kept, then daily roll-ups before the cutoff day. Messages with a pending delivery are
    /// never removed. Returns what it removed and where the next page starts.
    async fn purge_page(
        &self,
        cutoff_ms: u64,
        cursor: Option<PurgeCursor>,
        budget: usize,
    ) -> StoreResult<PurgePage>;

    // --- bulk replay jobs ---

    /// Creates or updates a bulk replay job.
    async fn put_job(&self, job: &ReplayJob) -> StoreResult<()>;
    /// One bulk replay job.
    async fn job(&self, id: uuid::Uuid) -> StoreResult<Option<ReplayJob>>;
    /// Takes over the jobs not yet done that nobody is running: at start-up every unfinished
    /// job of a single-process store; in a shared store, those whose last progress is older
    /// than a staleness window (their node stopped). Progress written with
    /// [`Store::apply_transitions`] or [`Store::put_job`] keeps a job owned.
    async fn adopt_jobs(&self, now_ms: u64) -> StoreResult<Vec<ReplayJob>>;

    // --- the store itself ---

    /// Deliveries waiting for an attempt (pending or held, in the due index or waiting in an
    /// ordering key's line), exact.
    async fn pending_count(&self) -> StoreResult<u64>;
    /// Makes every write so far durable (recorded outcomes included).
    async fn sync(&self) -> StoreResult<()>;
    /// Whether other processes share this store (a cluster): the scheduler then claims only
    /// what it attempts at once, so that `max_leased` bounds the attempts in flight.
    fn shared(&self) -> bool {
        false
    }
    /// Changes made by other processes sharing this store, for the scheduler: `None` for a
    /// store that only this process writes.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }
    /// Rate limits held by a cluster: reserves the start of one attempt to `endpoint`, in one
    /// atomic step, and returns how long from now (on the store's clock) that start is. The
    /// start is not before now, and at least `request.interval` plus a margin after the start
    /// last reserved for the endpoint by any process sharing the store. The margin is the
    /// largest `tolerance` declared for the endpoint over the last minute, shared out over
    /// `per_second` starts: then any `per_second` starts in a row, each begun no later than
    /// its tolerance after its reserved time, still span a second ([`StartRequest`]).
    ///
    /// The engine calls it just before an attempt to a rate-limited endpoint and begins the
    /// attempt within its tolerance, or gives the start up and reserves another. A store that
    /// only this process uses answers `None` (the default): the engine's own pacer is exact.
    async fn reserve_start(
        &self,
        _endpoint: EndpointId,
        _request: StartRequest,
    ) -> StoreResult<Option<Duration>> {
        Ok(None)
    }
    /// Whether the store takes writes now; an error says why not.
    async fn check(&self) -> StoreResult<()>;
    /// The largest payload this backend accepts, whatever a policy allows.
    fn max_payload_bytes(&self) -> usize;
    /// Bytes the store occupies on disk, where the backend knows.
    async fn size_on_disk(&self) -> StoreResult<Option<u64>>;
    /// A consistent copy of the whole store into the directory `to`, taken while running, or
    /// [`StoreError::Unsupported`] where the backend has its own tools (a database server).
    async fn backup(&self, to: &std::path::Path) -> StoreResult<BackupReport>;
}
