//! The scheduler: which deliveries are attempted when, and by whom.
//!
//! The due index is kept per endpoint in the store (`endpoint, due time, delivery`). In memory
//! the scheduler keeps one [`Slot`] per endpoint — its earliest due time, its claimed-but-not-
//! finished deliveries and its runners — and an ordered set of the slots that may claim now.
//! Memory therefore grows with the number of endpoints, never with the number of pending
//! deliveries.
//!
//! * The loop sleeps until the earliest slot head or until it is notified (a new earlier entry,
//!   freed capacity). It never polls.
//! * A slot claims in batches: when it has at most `limit` outstanding claims it takes up to
//!   `2 × limit - outstanding` more, so its runners always find the next delivery queued in
//!   memory and a claim is one store batch per endpoint, not one per delivery.
//! * Claims are leases ([`Lease`]) with an expiry: the store hands each due delivery to one
//!   claimer at a time. If the process dies mid-attempt, the lease expires (or, in the embedded
//!   store, dies with the process) and the delivery is simply due again; nothing needs
//!   repairing at start-up.
//! * Isolation: an endpoint never has more attempts in flight than its adaptive window
//!   ([`Window`]: one for a receiver that hangs, up to `endpoint_concurrency` for one that
//!   answers) nor more than twice that in claims. The global `max_in_flight` bounds the claims
//!   of all endpoints together, and it is shared fairly: of the endpoints due now, those with
//!   the fewest claims outstanding claim first, and while the budget is short no endpoint takes
//!   more than an equal share of what is left. So a hundred hung endpoints hold about two
//!   hundred claims, not the whole budget, and a healthy endpoint's next delivery is claimed at
//!   once.
//! * Rate limits: a limited endpoint's attempts start at least `1 / rate` apart ([`Pacer`]).
//!   Its slot is ready no sooner than its next start, it claims no more than a second's worth
//!   of starts at a time (so claims never wait long enough for their leases to run out), and
//!   its runners take turns, one sleeping until the next start is due while the others'
//!   attempts run. Waiting deliveries stay claimed or due: never failed, never counted as
//!   attempts; other endpoints' slots are not affected. In a cluster each start is also
//!   reserved in the shared store, so that the nodes together keep the limit.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::Engine;
use super::attempt::Settled;
use super::pacing::{Pacer, now_us};
use super::window::{Pace, Window};
use crate::model::{DeliveryId, EndpointId, now_ms};
use crate::store::{Claim, Lease};

/// One endpoint's scheduling state.
#[derive(Debug)]
pub(super) struct Slot {
    /// Earliest due entry in the store (a lower bound: it may already have been claimed).
    head: Option<u64>,
    /// Claimed deliveries waiting for a runner.
    pub(super) queue: VecDeque<Claim>,
    /// Claims not yet finished: queued plus being attempted.
    pub(super) outstanding: usize,
    /// Claims being attempted now.
    pub(super) in_flight: usize,
    /// Claims whose attempt is done and whose outcome is being recorded. They hold the global
    /// budget and their leases, not the endpoint's: its next requests need not wait for them
    /// (a shared store is told which they are, so that it does not count them either).
    pub(super) settling: HashSet<DeliveryId>,
    /// Runner tasks alive (each attempts one delivery at a time).
    pub(super) runners: usize,
    /// How many attempts may be in flight now.
    pub(super) window: Window,
    /// How long its claims last: its policy's timeout for each attempt a claim may wait for,
    /// plus a margin (`None`: not known yet, the engine's longest).
    lease: Option<Duration>,
    /// Disabled endpoints are not scheduled; their deliveries wait (held).
    pub(super) enabled: bool,
    /// A claim for this slot is under way outside the lock.
    claiming: bool,
    /// The key under which the slot sits in `ready`, if it does.
    ready_key: Option<u64>,
    /// The endpoint's rate limit, if it has one.
    pub(super) pacer: Option<Pacer>,
    /// Runners of a rate-limited endpoint take turns here to wait for the next start.
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    /// When the slot may claim: its head, and for a rate-limited endpoint not before its next
    /// start is due.
    fn ready_at(&self) -> Option<u64> {
        let head = self.head?;
        Some(match &self.pacer {
            Some(pacer) => head.max(pacer.next_start_us().div_ceil(1000)),
            None => head,
        })
    }
}

/// Claims a slot may hold per attempt its window allows: one attempting, one queued, so that
/// runners find the next delivery in memory instead of waiting for a claim's round trip. In a
/// cluster too: the endpoint's concurrency counts requests on the wire, which each node's
/// window bounds, and a claim counts the other nodes' leases only up to the endpoint's limit
/// (see [`crate::store::Store::claim`]).
pub(crate) const CLAIMS_PER_ATTEMPT: usize = 2;

impl Slot {
    /// Claims the slot could take now: for a rate-limited endpoint, at most a second's worth
    /// of starts; in a cluster, where the nodes' starts interleave, a quarter second's worth,
    /// so that a claim waits for its start far less than its lease.
    fn wants(&self, shared: bool) -> usize {
        let want = (CLAIMS_PER_ATTEMPT * self.window.limit())
            .saturating_sub(self.outstanding - self.settling.len());
        let seconds = if shared { 0.25 } else { 1.0 };
        match &self.pacer {
            Some(pacer) => want.min(((pacer.rate() * seconds).ceil() as usize).max(1)),
            None => want,
        }
    }
}

/// All slots and the ordered set of those that may claim.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The store is shared with other nodes: claims name the slot's settling leases (which
    /// the store leaves out of the endpoint's count), and rate-limited slots claim less ahead.
    shared: bool,
    slots: HashMap<EndpointId, Slot>,
    ready: BTreeSet<(u64, EndpointId)>,
    pub(super) outstanding: usize,
    /// When the loop will next wake on its own; an earlier entry must notify it.
    wake_at: u64,
    stopping: bool,
}

/// Shared scheduler state; the loop and runners live in [`run`] and [`runner`].
pub(crate) struct Scheduler {
    state: Mutex<State>,
    wake: Notify,
    pub(super) idle: Notify,
    max_in_flight: usize,
    endpoint_limit: usize,
}

impl State {
    /// Puts the slot in `ready` (keyed by its head) iff it may claim; says whether the loop
    /// must be woken to see it.
    pub(super) fn refresh(&mut self, endpoint: EndpointId) -> bool {
        let Some(slot) = self.slots.get_mut(&endpoint) else {
            return false;
        };
        if let Some(old) = slot.ready_key.take() {
            self.ready.remove(&(old, endpoint));
        }
        // The rate limit caps how many claims the slot takes, not whether it may take them.
        // Settling claims are off the wire: they wait for the recorder, not for the endpoint.
        let room = (CLAIMS_PER_ATTEMPT * slot.window.limit())
            .saturating_sub(slot.outstanding - slot.settling.len());
        let eligible = slot.enabled
            && !slot.claiming
            && room >= (slot.window.limit() * (CLAIMS_PER_ATTEMPT - 1)).max(1);
        match slot.ready_at().filter(|_| eligible) {
            Some(head) => {
                slot.ready_key = Some(head);
                self.ready.insert((head, endpoint));
                head < self.wake_at
            }
            None => false,
        }
    }
}

impl Scheduler {
    /// `shared`: the store is shared with other nodes (see [`State::shared`]).
    pub(crate) fn new(max_in_flight: usize, endpoint_limit: usize, shared: bool) -> Scheduler {
        Scheduler {
            state: Mutex::new(State {
                wake_at: 0,
                shared,
                ..State::default()
            }),
            wake: Notify::new(),
            idle: Notify::new(),
            max_in_flight: max_in_flight.max(1),
            endpoint_limit: endpoint_limit.max(1),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn slot<'a>(&self, state: &'a mut State, endpoint: EndpointId) -> &'a mut Slot {
        state.slots.entry(endpoint).or_insert_with(|| Slot {
            head: None,
            queue: VecDeque::new(),
            outstanding: 0,
            in_flight: 0,
            settling: HashSet::new(),
            runners: 0,
            window: Window::new(self.endpoint_limit),
            lease: None,
            enabled: true,
            claiming: false,
            ready_key: None,
            pacer: None,
            turn: Arc::default(),
        })
    }

    /// Sets or removes an endpoint's rate limit (attempts per second).
    pub(crate) fn set_rate_limit(&self, endpoint: EndpointId, rate: Option<f64>) {
        let mut state = self.lock();
        let slot = self.slot(&mut state, endpoint);
        match (rate, &mut slot.pacer) {
            (None, _) => slot.pacer = None,
            (Some(rate), Some(pacer)) => pacer.set_rate(rate),
            (Some(rate), None) => slot.pacer = Some(Pacer::new(rate)),
        }
        if state.refresh(endpoint) {
            self.wake.notify_one();
        }
    }

    /// An endpoint's rate limit and how long its next attempt must wait for it, if limited.
    pub(crate) fn pacing(&self, endpoint: EndpointId) -> Option<(f64, Duration)> {
        let state = self.lock();
        let pacer = state.slots.get(&endpoint)?.pacer?;
        let wait = pacer.next_start_us().saturating_sub(now_us());
        Some((pacer.rate(), Duration::from_micros(wait)))
    }

    /// A delivery of `endpoint` is due at `due_ms` (new message, retry, replay, restart).
    pub(crate) fn note_due(&self, endpoint: EndpointId, due_ms: u64) {
        let mut state = self.lock();
        let slot = self.slot(&mut state, endpoint);
        slot.head = Some(slot.head.map_or(due_ms, |h| h.min(due_ms)));
        if state.refresh(endpoint) {
            self.wake.notify_one();
        }
    }

    /// Enables or disables an endpoint's scheduling, with how long its claims last.
    pub(crate) fn set_endpoint(
        &self,
        endpoint: EndpointId,
        enabled: bool,
        lease: Duration,
        head: Option<u64>,
    ) {
        let mut state = self.lock();
        let slot = self.slot(&mut state, endpoint);
        slot.enabled = enabled;
        slot.lease = Some(lease);
        if let Some(head) = head {
            slot.head = Some(slot.head.map_or(head, |h| h.min(head)));
        }
        if state.refresh(endpoint) {
            self.wake.notify_one();
        }
    }

    /// Forgets a deleted endpoint (its runners finish their current attempt); returns its
    /// queued claims, for the caller to hand back to the store.
    pub(crate) fn remove(&self, endpoint: EndpointId) -> Vec<Lease> {
        let mut state = self.lock();
        let mut dropped = Vec::new();
        if let Some(slot) = state.slots.get_mut(&endpoint) {
            slot.enabled = false;
            slot.outstanding -= slot.queue.len();
            dropped.extend(slot.queue.drain(..).map(|claim| claim.lease));
        }
        state.outstanding -= dropped.len();
        state.refresh(endpoint);
        dropped
    }

    /// An attempt of `endpoint` left the wire (its answer came, or it failed); `pace` says
    /// what it showed of the receiver's capacity. Returns how many more runners the endpoint
    /// may have now that its window moved.
    pub(super) fn off_wire(
        &self,
        endpoint: EndpointId,
        delivery: DeliveryId,
        pace: Option<Pace>,
    ) -> usize {
        let mut state = self.lock();
        let slot = self.slot(&mut state, endpoint);
        slot.in_flight -= 1;
        slot.settling.insert(delivery);
        if let Some(pace) = pace {
            slot.window.record(pace);
        }
        let more = slot
            .window
            .limit()
            .saturating_sub(slot.runners)
            .min(slot.queue.len());
        slot.runners += more;
        if state.refresh(endpoint) {
            self.wake.notify_one();
        }
        more
    }

    /// One claimed delivery of `endpoint` is done (recorded, or given back): rescheduled, or
    /// making the next of its ordering line due.
    pub(super) fn finished(&self, endpoint: EndpointId, delivery: DeliveryId, settled: Settled) {
        let mut state = self.lock();
        let was_full = state.outstanding >= self.max_in_flight;
        state.outstanding -= 1;
        metrics::gauge!("herald_in_flight").set(state.outstanding as f64);
        let slot = self.slot(&mut state, endpoint);
        slot.outstanding -= 1;
        slot.settling.remove(&delivery);
        for due in [settled.next_due, settled.released_due]
            .into_iter()
            .flatten()
        {
            slot.head = Some(slot.head.map_or(due, |h| h.min(due)));
        }
        if state.refresh(endpoint) || was_full {
            self.wake.notify_one();
        }
        if state.outstanding == 0 {
            self.idle.notify_waiters();
        }
    }

    /// True once shutdown has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Attempts in flight or queued, over all endpoints.
    pub(crate) fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    /// Stops claiming; runners finish their current attempt and hand back queued claims.
    pub(crate) fn stop(&self) -> Vec<(EndpointId, Vec<Lease>)> {
        let mut state = self.lock();
        state.stopping = true;
        let mut released = Vec::new();
        let mut dropped = 0;
        for (endpoint, slot) in state.slots.iter_mut() {
            if !slot.queue.is_empty() {
                dropped += slot.queue.len();
                slot.outstanding -= slot.queue.len();
                released.push((*endpoint, slot.queue.drain(..).map(|c| c.lease).collect()));
            }
        }
        state.outstanding -= dropped;
        self.wake.notify_one();
        if state.outstanding == 0 {
            self.idle.notify_waiters();
        }
        released
    }

    /// Waits until no attempt is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.outstanding() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What one pass of the loop decided to claim.
struct ClaimPlan {
    endpoint: EndpointId,
    count: usize,
    lease: Option<Duration>,
    /// The slot's settling claims as the plan was made, for a shared store (which does not
    /// count them against the endpoint's cap); empty for a store of this process's own.
    settling: Vec<DeliveryId>,
}

/// What one pass of the loop does next.
enum Pass {
    Stop,
    Claim(Vec<ClaimPlan>),
    /// Nothing to claim now: sleep until this time (or until notified).
    Sleep(Option<u64>),
}

/// Takes every slot that is due now out of `ready`, reserving its claim count within the
/// global budget: the slots with the fewest claims outstanding first, and while the budget
/// cannot satisfy every slot, none more than an equal share of it. With nothing due, says when
/// to wake.
fn plan_pass(scheduler: &Scheduler, now: u64) -> Pass {
    let mut state = scheduler.lock();
    if state.stopping {
        return Pass::Stop;
    }
    state.wake_at = 0; // awake: anyone adding work must notify
    let mut due: Vec<(usize, u64, EndpointId)> = Vec::new();
    let mut wanted = 0;
    for &(head, endpoint) in state
        .ready
        .range(..(now.saturating_add(1), EndpointId(uuid::Uuid::nil())))
    {
        let slot = &state.slots[&endpoint];
        wanted += slot.wants(state.shared);
        due.push((slot.outstanding, head, endpoint));
    }
    let room = scheduler.max_in_flight.saturating_sub(state.outstanding);
    let shared = state.shared;
    let mut plans = Vec::new();
    if room > 0 && !due.is_empty() {
        due.sort_unstable();
        let share = if wanted > room {
            (room / due.len()).max(1)
        } else {
            usize::MAX
        };
        let mut left = room;
        for (_, head, endpoint) in due {
            if left == 0 {
                break;
            }
            state.ready.remove(&(head, endpoint));
            let slot = scheduler.slot(&mut state, endpoint);
            slot.ready_key = None;
            slot.claiming = true;
            slot.head = None;
            let count = slot.wants(shared).min(share).min(left);
            slot.outstanding += count;
            left -= count;
            plans.push(ClaimPlan {
                endpoint,
                count,
                lease: slot.lease,
                // Only a shared store counts leases against a cap.
                settling: if shared {
                    slot.settling.iter().copied().collect()
                } else {
                    Vec::new()
                },
            });
        }
        state.outstanding += room - left;
    }
    if !plans.is_empty() {
        return Pass::Claim(plans);
    }
    let full = state.outstanding >= scheduler.max_in_flight;
    let next = state.ready.first().map(|(head, _)| *head).filter(|_| !full);
    state.wake_at = next.unwrap_or(u64::MAX);
    Pass::Sleep(next)
}

/// The scheduler loop: claim what is due, start runners, sleep until the next due time.
pub(crate) async fn run(engine: Arc<Engine>) {
    let scheduler = &engine.scheduler;
    loop {
        let now = now_ms();
        let pass = plan_pass(scheduler, now);
        let plans = match pass {
            Pass::Stop => return,
            Pass::Claim(plans) => plans,
            Pass::Sleep(Some(at)) => {
                let delay = Duration::from_millis(at.saturating_sub(now_ms()));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = scheduler.wake.notified() => {}
                }
                continue;
            }
            Pass::Sleep(None) => {
                scheduler.wake.notified().await;
                continue;
            }
        };
        claim(&engine, plans, now).await;
    }
}

/// Claims every planned slot's batch, then queues the leases and starts runners.
async fn claim(engine: &Arc<Engine>, plans: Vec<ClaimPlan>, now: u64) {
    let store = &engine.store;
    for plan in plans {
        let claimed = async {
            let claims = store
                .claim(
                    plan.endpoint,
                    now,
                    plan.count,
                    plan.lease.unwrap_or(engine.lease_for),
                    engine.max_leased,
                    &plan.settling,
                )
                .await?;
            // A full claim leaves more due behind it, as far as anyone knows: the next claim
            // finds out, and asks for the head only if it comes back short.
            let head = if claims.len() == plan.count {
                Some(now)
            } else {
                store.due_head(plan.endpoint, now).await?
            };
            Ok::<_, crate::store::StoreError>((claims, head))
        }
        .await;
        let (claims, head) = claimed.unwrap_or_else(|e| {
            tracing::error!(endpoint = %plan.endpoint, error = %e, "claim failed; retrying in 1s");
            (Vec::new(), Some(now + 1_000))
        });
        queue_claims(engine, plan, claims, head);
    }
}

/// Queues one slot's claims and starts the runners it may have.
fn queue_claims(engine: &Arc<Engine>, plan: ClaimPlan, claims: Vec<Claim>, head: Option<u64>) {
    let (endpoint, count) = (plan.endpoint, plan.count);
    let scheduler = &engine.scheduler;
    let mut state = scheduler.lock();
    let unused = count - claims.len();
    state.outstanding -= unused;
    metrics::gauge!("herald_in_flight").set(state.outstanding as f64);
    let slot = scheduler.slot(&mut state, endpoint);
    slot.claiming = false;
    slot.outstanding -= unused;
    slot.head = match (slot.head, head) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    slot.queue.extend(claims);
    let start = slot
        .window
        .limit()
        .saturating_sub(slot.runners)
        .min(slot.queue.len());
    slot.runners += start;
    state.refresh(endpoint);
    drop(state);
    for _ in 0..start {
        super::runner::spawn(engine.clone(), endpoint);
    }
}
