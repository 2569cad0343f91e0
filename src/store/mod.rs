//! Durable state behind one trait.
//!
//! The engine speaks only to [`Store`]; [`SledStore`] is the implementation shipped today. A
//! second backend (PostgreSQL with `FOR UPDATE SKIP LOCKED` leases, for several herald nodes
//! sharing a queue) would implement the same trait.
//!
//! Two rules every implementation keeps:
//! * each method that changes state does so atomically: a crash leaves either all of it or
//!   none of it;
//! * writes become durable at the next [`Store::flush`]. The engine decides when to wait for
//!   one (before acknowledging a message) and when a lazy background flush is enough (attempt
//!   outcomes: losing one only repeats an attempt, which at-least-once allows).

mod keys;
mod rollup;
mod seal;
mod sled_store;

use crate::model::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, Message, MessageId,
};

pub use rollup::{DailyRollup, day_of};
pub use seal::{KEY_BYTES, Sealer, load_or_create_key};
pub use sled_store::{MAX_PAYLOAD_BYTES, SledOptions, SledStore};

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption).
    #[error("storage: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The operation does not apply in the record's current state.
    #[error("{0}")]
    Conflict(String),
    /// No such record.
    #[error("{0} not found")]
    NotFound(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A delivery to create with its message, and when it is first due (`None`: not scheduled,
/// e.g. skipped by delta mode).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The record.
    pub delivery: Delivery,
    /// First due time (ms), for pending deliveries.
    pub due_ms: Option<u64>,
}

/// A message and its deliveries, to be stored together.
#[derive(Debug)]
pub struct MessageWrite {
    /// The message.
    pub message: Message,
    /// Its deliveries.
    pub deliveries: Vec<NewDelivery>,
}

/// What [`Store::insert_messages`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Created,
    /// The tenant already used this idempotency key; nothing was written.
    Existing(MessageId),
}

/// A due delivery reserved by [`Store::claim`] for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The delivery to attempt.
    pub delivery_id: DeliveryId,
    /// Where its due entry sits; the claim's token when recording.
    pub due_ms: u64,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again at `due_ms`.
    Retry {
        /// When.
        due_ms: u64,
        /// The cycle's anchor from now on.
        anchor_ms: u64,
    },
    /// Final state for this cycle.
    Finish(DeliveryStatus),
}

/// One finished attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The delivery attempted.
    pub delivery_id: DeliveryId,
    /// Its endpoint (its due entry lives under it).
    pub endpoint_id: EndpointId,
    /// The claimed entry's due time; when that entry is gone (the endpoint was deleted
    /// meanwhile) only the attempt is kept.
    pub due_ms: u64,
    /// The attempt (its `attempt` and `cycle` numbers are filled in by the store).
    pub attempt: Attempt,
    /// What happens next.
    pub next: NextStep,
    /// Delta mode: on success, remember this payload digest for (endpoint, dedup key).
    pub dedup: Option<(String, [u8; 32])>,
    /// Whether the attempt moves the endpoint's consecutive-failure count.
    pub counts_toward_health: bool,
}

/// What [`Store::record_attempts`] did for one attempt.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The delivery after the change.
    pub delivery: Delivery,
    /// The attempt as stored.
    pub attempt: Attempt,
    /// The claimed entry was gone (the endpoint was deleted meanwhile): the attempt was
    /// kept but the delivery did not move.
    pub stale: bool,
    /// The endpoint's consecutive failures after this attempt.
    pub consecutive_failures: u32,
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
    pub next: Option<Vec<u8>>,
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

/// The durable state of a herald instance.
pub trait Store: Send + Sync + 'static {
    /// Creates or replaces an endpoint.
    fn put_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()>;
    /// One endpoint.
    fn endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>>;
    /// All endpoints, or a tenant's.
    fn endpoints(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>>;
    /// Disables an enabled endpoint; false when it was already disabled (or is gone), so that
    /// concurrent callers agree on who disabled it.
    fn disable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<bool>;
    /// Enables an endpoint and resets its consecutive-failure count.
    fn enable_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<Option<Endpoint>>;
    /// Deletes an endpoint; its pending deliveries become `failed` ("endpoint deleted").
    /// Returns false when there was no such endpoint.
    fn delete_endpoint(&self, id: EndpointId, now_ms: u64) -> StoreResult<bool>;

    /// Stores a group of messages with their deliveries and due entries in one atomic write.
    /// A message whose tenant already used its idempotency key (before, or earlier in the same
    /// group) is not written; its answer is [`Inserted::Existing`]. Answers follow the order of
    /// `writes`.
    fn insert_messages(&self, writes: &[MessageWrite]) -> StoreResult<Vec<Inserted>>;
    /// One message, with its payload.
    fn message(&self, id: MessageId) -> StoreResult<Option<Message>>;
    /// A message's deliveries.
    fn message_deliveries(&self, id: MessageId) -> StoreResult<Vec<Delivery>>;
    /// One delivery.
    fn delivery(&self, id: DeliveryId) -> StoreResult<Option<Delivery>>;
    /// A delivery's attempts, oldest first.
    fn attempts(&self, id: DeliveryId) -> StoreResult<Vec<Attempt>>;
    /// Deliveries matching a filter, oldest first.
    fn deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    /// An endpoint's daily roll-ups for days `first..=last` (days since the epoch, UTC); days
    /// without attempts are absent.
    fn endpoint_days(
        &self,
        endpoint: EndpointId,
        first: u32,
        last: u32,
    ) -> StoreResult<Vec<(u32, DailyRollup)>>;
    /// The payload digest of the last successful delivery for (endpoint, dedup key).
    fn dedup_digest(&self, endpoint: EndpointId, key: &str) -> StoreResult<Option<[u8; 32]>>;

    /// The earliest due entry (ms) of every endpoint that has one; read once at start-up.
    fn due_heads(&self) -> StoreResult<Vec<(EndpointId, u64)>>;
    /// The earliest due entry of one endpoint that is not claimed.
    fn due_head(&self, endpoint: EndpointId) -> StoreResult<Option<u64>>;
    /// Reserves up to `limit` of an endpoint's entries due at or before `now_ms` that are not
    /// reserved already. A claim is a lease held by this process: the entry stays where it is
    /// in the store, so if the process dies mid-attempt it is simply due after the restart.
    fn claim(&self, endpoint: EndpointId, now_ms: u64, limit: usize) -> StoreResult<Vec<Claim>>;
    /// Gives claims back without an attempt; their entries stay due.
    fn release(&self, claims: &[Claim]) -> StoreResult<()>;
    /// Gives claims back and removes their entries: their deliveries need no attempt.
    fn discard(&self, endpoint: EndpointId, claims: &[Claim]) -> StoreResult<()>;
    /// Records attempts and moves their deliveries on, all in one atomic write. One answer per
    /// outcome, in order: an outcome whose delivery is gone is answered with an error and the
    /// others are still recorded. The write is not flushed (see [`Store::flush`]).
    fn record_attempts(
        &self,
        outcomes: Vec<AttemptOutcome>,
    ) -> StoreResult<Vec<StoreResult<Recorded>>>;
    /// Records one attempt (see [`Store::record_attempts`]).
    fn record_attempt(&self, outcome: AttemptOutcome) -> StoreResult<Recorded> {
        self.record_attempts(vec![outcome])?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Backend("no answer for the attempt".into())))
    }
    /// Starts a fresh cycle for a finished delivery, due at `now_ms`; history is kept.
    fn replay(&self, id: DeliveryId, now_ms: u64) -> StoreResult<Delivery>;

    /// One bounded page of the retention purge. Starting from `cursor` (`None` = the
    /// beginning), it removes finished messages created before `cutoff_ms` with their
    /// deliveries and attempts, then attempts older than the cutoff of deliveries that are kept,
    /// then daily roll-ups before the cutoff day. Messages with a pending delivery are never
    /// removed. Returns what it removed and where the next page starts (`None`: done).
    fn purge_page(
        &self,
        cutoff_ms: u64,
        cursor: Option<Vec<u8>>,
        budget: usize,
    ) -> StoreResult<PurgePage>;

    /// Creates or updates a bulk replay job.
    fn put_job(&self, job: &ReplayJob) -> StoreResult<()>;
    /// One bulk replay job.
    fn job(&self, id: uuid::Uuid) -> StoreResult<Option<ReplayJob>>;
    /// Every job not yet done (resumed at start-up).
    fn running_jobs(&self) -> StoreResult<Vec<ReplayJob>>;

    /// Deliveries waiting for an attempt (pending or held), kept in memory: O(1).
    fn pending_deliveries(&self) -> u64;

    /// Makes every write so far durable.
    fn flush(&self) -> StoreResult<()>;
}
