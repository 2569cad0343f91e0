//! Group commit: many writers, one store write, one fsync (or one database commit).
//!
//! Senders prepare their records in parallel and hand them to one writer thread. The thread
//! takes everything that queued up while its previous round ran and stores it with a single
//! [`Store::insert_messages`], which returns once the group is durable, and then answers every
//! sender. With an fsync or a commit costing a millisecond or more, throughput grows with the
//! number of concurrent senders instead of being capped at one message per fsync, and nothing
//! is acknowledged before it is durable.
//!
//! Applying the whole group in one write matters as much as sharing the fsync: measured on the
//! 2-core reference machine, 64 senders each applying its own sled batch reached ~5,000
//! sends/s with the disk mostly idle (contention and hand-offs around sled's log), while one
//! batch per group removes that contention.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::store::{Inserted, MessageWrite, Store, StoreError};

type Reply = oneshot::Sender<Result<(Inserted, Box<MessageWrite>), StoreError>>;

/// Hands out durability to writers, one store write per group.
pub(crate) struct GroupCommit {
    requests: mpsc::Sender<(Box<MessageWrite>, Reply)>,
    stats: Arc<CommitStats>,
}

/// Counters for the benchmark and the metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Group writes performed (each one fsync or commit).
    pub flushes: AtomicU64,
    /// Messages written.
    pub waiters: AtomicU64,
}

const STOPPED: &str = "the commit thread has stopped";

/// While a group is forming (more than one send queued), how long the writer waits for more
/// before it writes. Every group costs an fsync and a round of sled's log writers, and the
/// daemon is CPU-bound under load: measured end to end (bench/e2e.sh), waiting 300 µs made
/// groups ~1.4x larger and the run ~9% faster; 1 ms was slower again, and writing two groups
/// at once (one applied while the other syncs) made groups smaller and the run slower. A lone
/// send does not wait at all.
const WINDOW: std::time::Duration = std::time::Duration::from_micros(300);

impl GroupCommit {
    /// Starts the writer thread. It ends when the last `GroupCommit` handle is dropped.
    ///
    /// The thread drives the async store with the runtime's handle, so that gathering the next
    /// group never waits for a runtime worker.
    pub(crate) fn start(store: Arc<dyn Store>) -> std::io::Result<GroupCommit> {
        let (requests, queue) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("herald-commit".into())
            .spawn(move || run(&runtime, store.as_ref(), &queue, &thread_stats))?;
        Ok(GroupCommit { requests, stats })
    }

    /// Stores a message with its deliveries; returns once it is durable.
    pub(crate) async fn insert(
        &self,
        write: MessageWrite,
    ) -> Result<(Inserted, MessageWrite), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((Box::new(write), tx))
            .map_err(|_| StoreError::Backend(STOPPED.into()))?;
        match rx.await {
            Ok(Ok((inserted, write))) => Ok((inserted, *write)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Backend(STOPPED.into())),
        }
    }

    pub(crate) fn stats(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }
}

fn run(
    runtime: &tokio::runtime::Handle,
    store: &dyn Store,
    queue: &mpsc::Receiver<(Box<MessageWrite>, Reply)>,
    stats: &CommitStats,
) {
    crate::store::mark_blocking_thread();
    let mut writes: Vec<MessageWrite> = Vec::new();
    let mut replies = Vec::new();
    // `recv` blocks without spinning; it fails once every sender is gone.
    while let Ok(first) = queue.recv() {
        let window = std::time::Instant::now() + WINDOW;
        let mut next = Some(first);
        while let Some((write, reply)) = next {
            writes.push(*write);
            replies.push(reply);
            next = match queue.try_recv() {
                Ok(more) => Some(more),
                Err(mpsc::TryRecvError::Disconnected) => None,
                // Others are sending right now (a group is forming): wait a moment for them.
                Err(mpsc::TryRecvError::Empty) if writes.len() > 1 => {
                    let left = window.saturating_duration_since(std::time::Instant::now());
                    queue.recv_timeout(left).ok()
                }
                Err(mpsc::TryRecvError::Empty) => None,
            };
        }
        let outcome = runtime.block_on(store.insert_messages(&writes));
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats
            .waiters
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        metrics::counter!("herald_fsyncs_total").increment(1);
        metrics::histogram!("herald_group_commit_size").record(writes.len() as f64);
        match outcome {
            Ok(answers) => {
                for ((answer, write), reply) in answers
                    .into_iter()
                    .zip(writes.drain(..))
                    .zip(replies.drain(..))
                {
                    let _ = reply.send(Ok((answer, Box::new(write))));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; its senders are told nothing was acknowledged");
                writes.clear();
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
