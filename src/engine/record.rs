//! Grouped attempt records: many runners, one store write.
//!
//! sled writes its log buffer out (with a `sync_file_range`) for every atomic batch, so one
//! batch per attempt made that write — not HTTP — the ceiling of delivery throughput. Runners
//! therefore hand their outcomes to one recorder thread, which records everything that queued
//! up while its previous round ran as a single batch and then answers each runner. Records
//! are not fsynced: losing the last ones in a crash repeats those attempts (their due entries
//! are still in the store), which at-least-once delivery allows. The next flush — lazy, or a
//! group commit's — makes them durable.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::store::{AttemptOutcome, Recorded, Store, StoreError};

type Reply = oneshot::Sender<Result<Recorded, StoreError>>;

/// Outcomes recorded in one write at most (bounds the batch and the wait of the first).
const MAX_GROUP: usize = 512;

const STOPPED: &str = "the record thread has stopped";

/// Hands attempt outcomes to the recorder thread.
pub(crate) struct Recorder {
    requests: mpsc::Sender<(Box<AttemptOutcome>, Reply)>,
}

impl Recorder {
    /// Starts the recorder thread. It ends when the last handle is dropped.
    pub(crate) fn start(store: Arc<dyn Store>) -> std::io::Result<Recorder> {
        let (requests, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("herald-record".into())
            .spawn(move || run(store.as_ref(), &queue))?;
        Ok(Recorder { requests })
    }

    /// Records one attempt with whatever else is waiting; returns what was recorded.
    pub(crate) async fn record(&self, outcome: AttemptOutcome) -> Result<Recorded, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((Box::new(outcome), tx))
            .map_err(|_| StoreError::Backend(STOPPED.into()))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Backend(STOPPED.into())))
    }
}

fn run(store: &dyn Store, queue: &mpsc::Receiver<(Box<AttemptOutcome>, Reply)>) {
    let mut outcomes = Vec::new();
    let mut replies = Vec::new();
    // `recv` blocks without spinning; it fails once every sender is gone.
    while let Ok(first) = queue.recv() {
        for (outcome, reply) in std::iter::once(first).chain(queue.try_iter().take(MAX_GROUP - 1)) {
            outcomes.push(*outcome);
            replies.push(reply);
        }
        metrics::histogram!("herald_record_group_size").record(replies.len() as f64);
        match store.record_attempts(std::mem::take(&mut outcomes)) {
            Ok(answers) => {
                for (answer, reply) in answers.into_iter().zip(replies.drain(..)) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "attempt records not written; those deliveries will be attempted again");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}
