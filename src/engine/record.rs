//! Grouped attempt records: many runners, one store write.
//!
//! A store write has a fixed cost per call (sled writes its log buffer out for every atomic
//! batch; PostgreSQL pays a round trip and a commit), so one write per attempt made that write
//! — not HTTP — the ceiling of delivery throughput. Runners therefore hand their outcomes to
//! one recorder thread, which records everything that queued up while its previous round ran —
//! and during a short window after the first outcome — with a single
//! [`Store::record_outcomes`], and then hands each outcome back with its answer ([`Then`]).
//! The store may make the write durable lazily: losing the last ones in a crash repeats those
//! attempts once their leases expire, which at-least-once delivery allows.
//!
//! The thread drives the async store with the runtime's handle; a thread (not a task) keeps
//! the gathering window precise to microseconds, where the runtime's timers round to
//! milliseconds.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::store::{Outcome, Recorded, Store, StoreError};

/// What happens once an outcome is recorded (or could not be): it gets the outcome back with
/// the store's answer. It runs on the record thread, so it must not block: whatever waits
/// (a store call) it spawns. Answering in place spares every attempt a task, a channel and a
/// wake-up of its own; the record thread answers a whole group in one go.
pub(crate) type Then = Box<dyn FnOnce(Outcome, Result<Recorded, StoreError>) + Send>;

/// Outcomes recorded in one write at most (bounds the batch and the wait of the first).
const MAX_GROUP: usize = 512;

/// After the first outcome of a group arrives, how long the recorder waits for more. Every
/// sled batch costs a log write and a global write lock that stalls readers, so a slightly
/// larger group is cheaper than an early one: with 32 attempts in flight on the reference
/// machine, groups grow from ~5 to ~20 and deliveries/s rise ~15% (measured with windows of
/// 0, 250, 500, 800 and 1,500 µs; 1,500 was slower again). The window costs each attempt at
/// most this much latency, and only when other attempts are in flight does it gather anything.
const WINDOW: Duration = Duration::from_micros(300);

const STOPPED: &str = "the record thread has stopped";

/// How long a group of outcomes waits for an unavailable store (a database restarting, a
/// failover) before it is given up; the attempts are then repeated once their leases expire.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(60);

/// Hands attempt outcomes to the recorder thread.
pub(crate) struct Recorder {
    requests: mpsc::Sender<Box<(Outcome, Then)>>,
}

impl Recorder {
    /// Starts the recorder thread. It ends when the last handle is dropped.
    pub(crate) fn start(store: Arc<dyn Store>) -> std::io::Result<Recorder> {
        let runtime = tokio::runtime::Handle::current();
        Recorder::writing_with(move |outcomes| record(&runtime, store.as_ref(), outcomes))
    }

    /// Starts the recorder thread with `write` recording each group.
    fn writing_with(
        write: impl FnMut(&[Outcome]) -> Answers + Send + 'static,
    ) -> std::io::Result<Recorder> {
        let (requests, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("herald-record".into())
            .spawn(move || run(&queue, write))?;
        Ok(Recorder { requests })
    }

    /// Records one attempt with whatever else is waiting; `then` gets the answer.
    pub(crate) fn record(&self, outcome: Outcome, then: Then) {
        if let Err(mpsc::SendError(request)) = self.requests.send(Box::new((outcome, then))) {
            let (outcome, then) = *request;
            then(outcome, Err(StoreError::Backend(STOPPED.into())));
        }
    }
}

/// What recording a group answers: one answer per outcome, or an error for all of them.
type Answers = Result<Vec<Result<Recorded, StoreError>>, StoreError>;

fn run(queue: &mpsc::Receiver<Box<(Outcome, Then)>>, mut write: impl FnMut(&[Outcome]) -> Answers) {
    let mut outcomes = Vec::new();
    let mut thens: Vec<Then> = Vec::new();
    // `recv` blocks without spinning; it fails once every sender is gone.
    while let Ok(first) = queue.recv() {
        let (outcome, then) = *first;
        outcomes.push(outcome);
        thens.push(then);
        let window = Instant::now() + WINDOW;
        while outcomes.len() < MAX_GROUP {
            let next = match queue.try_recv() {
                Ok(next) => next,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let left = window.saturating_duration_since(Instant::now());
                    match queue.recv_timeout(left) {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            let (outcome, then) = *next;
            outcomes.push(outcome);
            thens.push(then);
        }
        metrics::histogram!("herald_record_group_size").record(thens.len() as f64);
        // A panic in the store is that group's error, not the end of the thread (every later
        // outcome would then fail).
        let answers = catch_unwind(AssertUnwindSafe(|| write(&outcomes)))
            .unwrap_or_else(|_| Err(StoreError::Backend("the store panicked".into())));
        let answers: Vec<_> = match answers {
            Ok(answers) => answers,
            Err(e) => {
                tracing::error!(error = %e, "attempt records not written; those deliveries will be attempted again");
                vec![Err(e); outcomes.len()]
            }
        };
        for ((outcome, then), answer) in outcomes.drain(..).zip(thens.drain(..)).zip(answers) {
            if catch_unwind(AssertUnwindSafe(|| then(outcome, answer))).is_err() {
                tracing::error!("a recorded attempt's follow-up panicked");
            }
        }
    }
}

/// Records a group; while the store is unavailable, tries again each second (what happened on
/// the wire is kept, not repeated) until [`OUTAGE_PATIENCE`] runs out.
fn record(runtime: &tokio::runtime::Handle, store: &dyn Store, outcomes: &[Outcome]) -> Answers {
    let started = Instant::now();
    loop {
        match runtime.block_on(store.record_outcomes(outcomes)) {
            Err(StoreError::Unavailable(reason)) if started.elapsed() < OUTAGE_PATIENCE => {
                tracing::warn!(
                    reason,
                    outcomes = outcomes.len(),
                    "store unavailable; recording again in 1 s"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            answer => return answer,
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
