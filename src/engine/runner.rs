//! A runner: one task attempting an endpoint's claimed deliveries one after another. An
//! endpoint has as many runners as its window allows attempts in flight (see [`super::scheduler`]).
//! A rate-limited endpoint's runners take turns to wait for its next start: one sleeps until the
//! start is due while the others' attempts run. In a cluster the one whose turn it is also
//! reserves its start in the shared store and waits for that (see [`super::pacing`]).

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::pacing::now_us;
use super::scheduler::Scheduler;
use crate::model::EndpointId;
use crate::store::{Claim, Lease};

/// Starts a runner. (A named future type: runners start runners when a window grows.)
pub(super) fn spawn(engine: Arc<Engine>, endpoint: EndpointId) {
    let task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(runner(engine.clone(), endpoint));
    engine.delivery.spawn(task);
}

/// What a runner does next.
enum Step {
    /// Attempt this claim; `true` for a rate-limited endpoint.
    Attempt(Box<Claim>, bool),
    /// The endpoint's next start is due at this time (µs): sleep until then.
    Wait(u64),
    /// Nothing for this runner: it stops, handing back these claims (a disabled endpoint's).
    Stop(Vec<Lease>),
}

/// Attempts one endpoint's queued claims, one at a time, until the queue is empty. When the
/// endpoint is disabled meanwhile, the rest of its queue goes back to the store, due now: held
/// there until the endpoint is enabled.
async fn runner(engine: Arc<Engine>, endpoint: EndpointId) {
    let scheduler = &engine.scheduler;
    loop {
        let turn = {
            let mut state = scheduler.lock();
            let slot = scheduler.slot(&mut state, endpoint);
            slot.pacer.is_some().then(|| slot.turn.clone())
        };
        let my_turn = match &turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        let step = loop {
            match next_step(scheduler, endpoint) {
                Step::Wait(at_us) => {
                    let wait = Duration::from_micros(at_us.saturating_sub(now_us()));
                    tokio::time::sleep(wait).await;
                }
                step => break step,
            }
        };
        // In a cluster a rate-limited attempt also waits for the start it reserves in the
        // shared store, still in its turn, once everything but the request is ready (so that
        // it starts when reserved): the turn goes along with it.
        let (claim, turn) = match step {
            Step::Attempt(claim, true) => (*claim, my_turn),
            Step::Attempt(claim, false) => {
                drop(my_turn);
                (*claim, None)
            }
            Step::Wait(_) => unreachable!("waited for above"),
            Step::Stop(returned) => {
                drop(my_turn);
                if !returned.is_empty()
                    && let Err(e) = engine.store.release(&returned).await
                {
                    // They are due again at the latest after a restart.
                    tracing::error!(%endpoint, error = %e, "could not hand back queued claims");
                }
                let mut state = scheduler.lock();
                scheduler.slot(&mut state, endpoint).runners -= 1;
                if state.outstanding == 0 {
                    scheduler.idle.notify_waiters();
                }
                return;
            }
        };
        let delivery = claim.lease.delivery_id;
        let exchanged = super::attempt::send(&engine, claim, turn).await;
        let pace = exchanged.as_ref().map(|e| e.pace());
        for _ in 0..scheduler.off_wire(endpoint, delivery, pace) {
            spawn(engine.clone(), endpoint);
        }
        match exchanged {
            // Recorded beside the next request: the claim lasts until then, the slot does not.
            Some(exchanged) => super::attempt::settle(&engine, exchanged),
            None => scheduler.finished(endpoint, delivery, Default::default()),
        }
    }
}

/// Takes the runner's next claim, if the endpoint's window and rate limit allow an attempt
/// to start now.
fn next_step(scheduler: &Scheduler, endpoint: EndpointId) -> Step {
    let mut state = scheduler.lock();
    let slot = scheduler.slot(&mut state, endpoint);
    if !slot.enabled {
        let returned: Vec<Lease> = slot.queue.drain(..).map(|c| c.lease).collect();
        slot.outstanding -= returned.len();
        state.outstanding -= returned.len();
        return Step::Stop(returned);
    }
    // The window may have shrunk: a runner beyond it stops.
    if slot.in_flight >= slot.window.limit() || slot.queue.is_empty() {
        return Step::Stop(Vec::new());
    }
    if let Some(pacer) = &mut slot.pacer
        && let Err(at_us) = pacer.start(now_us())
    {
        return Step::Wait(at_us);
    }
    let claim = slot.queue.pop_front().expect("checked above");
    slot.in_flight += 1;
    let paced = slot.pacer.is_some();
    if paced {
        state.refresh(endpoint); // its next start moved
    }
    Step::Attempt(Box::new(claim), paced)
}

/// Waits for the start the shared store reserves for this attempt, in a cluster (a store of
/// this process's own reserves nothing: the pacer was exact). A node that begins too late for
/// its start gives it up and reserves another (see [`super::pacing`]). Should the store not
/// answer, the pacer has spaced the attempt already, and the limit holds per node until it is
/// back.
pub(super) async fn reserved_start(engine: &Engine, endpoint: EndpointId) {
    let scheduler = &engine.scheduler;
    loop {
        let tolerance = engine.round_trip.tolerance();
        let request = {
            let mut state = scheduler.lock();
            let slot = scheduler.slot(&mut state, endpoint);
            slot.pacer
                .as_ref()
                .map(|pacer| pacer.start_request(tolerance))
        };
        let Some(request) = request else {
            return; // no limit any more
        };
        let asked = tokio::time::Instant::now();
        match engine.store.reserve_start(endpoint, request).await {
            Ok(Some(wait)) => {
                let answered = tokio::time::Instant::now();
                engine.round_trip.observe(answered - asked);
                // The reserved time is somewhere in `asked + wait ..= answered + wait`: wait
                // for the latest, and count lateness from the earliest.
                tokio::time::sleep_until(answered + wait).await;
                let late = tokio::time::Instant::now().saturating_duration_since(asked + wait);
                if late > request.tolerance {
                    tracing::debug!(%endpoint, ?late, "began too late for a reserved start; reserving another");
                    metrics::counter!("herald_rate_limit_starts_given_up_total").increment(1);
                    continue;
                }
                let mut state = scheduler.lock();
                if let Some(pacer) = &mut scheduler.slot(&mut state, endpoint).pacer {
                    pacer.began(now_us());
                }
                state.refresh(endpoint); // its next start moved
                return;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    %endpoint, error = %e,
                    "could not reserve a start in the shared store; this node keeps the rate limit on its own meanwhile"
                );
                return;
            }
        }
    }
}
