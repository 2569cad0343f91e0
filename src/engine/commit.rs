//! Group commit: many writers, one fsync.
//!
//! A writer applies its batch to the store, then asks [`GroupCommit::durable`] to wait until
//! it is on disk. A dedicated thread takes every request that queued up while the previous
//! flush ran and answers all of them with a single [`Store::flush`]. With an fsync costing a
//! few milliseconds, throughput grows with the number of concurrent writers instead of being
//! capped at one write per fsync, and no write is acknowledged before it is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::store::{Store, StoreError};

type Waiter = oneshot::Sender<Result<(), String>>;

/// Hands out durability to writers, one flush per group.
pub(crate) struct GroupCommit {
    requests: mpsc::Sender<Waiter>,
    stats: Arc<CommitStats>,
}

/// Counters for the benchmark and the metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Flushes performed.
    pub flushes: AtomicU64,
    /// Writers served.
    pub waiters: AtomicU64,
}

impl GroupCommit {
    /// Starts the flushing thread. It ends when the last `GroupCommit` handle is dropped.
    pub(crate) fn start(store: Arc<dyn Store>) -> std::io::Result<GroupCommit> {
        let (requests, queue) = mpsc::channel::<Waiter>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("herald-commit".into())
            .spawn(move || run(store.as_ref(), &queue, &thread_stats))?;
        Ok(GroupCommit { requests, stats })
    }

    /// Returns once every write this task made before calling is durable.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| StoreError::Backend("commit thread has stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(e)),
            Err(_) => Err(StoreError::Backend("commit thread has stopped".into())),
        }
    }

    pub(crate) fn stats(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }
}

fn run(store: &dyn Store, queue: &mpsc::Receiver<Waiter>, stats: &CommitStats) {
    let mut group: Vec<Waiter> = Vec::new();
    // `recv` blocks without spinning; it fails once every sender is gone.
    while let Ok(first) = queue.recv() {
        group.push(first);
        group.extend(queue.try_iter());
        let result = store.flush().map_err(|e| e.to_string());
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats
            .waiters
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        metrics::counter!("herald_fsyncs_total").increment(1);
        metrics::histogram!("herald_group_commit_size").record(group.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, "flush failed; writers are told their writes are not durable");
        }
        for waiter in group.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}
