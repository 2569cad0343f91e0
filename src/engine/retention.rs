//! Retention: purging history older than the retention period, in bounded pages so deliveries
//! keep flowing meanwhile (each page is one short store write). Pending deliveries are never
//! purged.

use std::time::Duration;

use super::Engine;
use crate::error::Result;
use crate::model::now_ms;

/// Keys examined per page.
const PAGE: usize = 500;

/// What a housekeeping run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Finished messages removed.
    pub messages: u64,
    /// Their deliveries.
    pub deliveries: u64,
    /// Attempts removed (of purged and of kept deliveries).
    pub attempts: u64,
    /// Daily roll-ups removed.
    pub rollups: u64,
}

impl Engine {
    /// Purges everything older than `retention`.
    pub(crate) async fn housekeeping(&self, retention: Duration) -> Result<PurgeReport> {
        let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
        let mut report = PurgeReport::default();
        let mut cursor = None;
        let started = std::time::Instant::now();
        loop {
            let page = self.store.purge_page(cutoff, cursor, PAGE).await?;
            report.messages += page.messages;
            report.deliveries += page.deliveries;
            report.attempts += page.attempts;
            report.rollups += page.rollups;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        self.store.sync().await?;
        metrics::counter!("herald_purged_messages_total").increment(report.messages);
        metrics::counter!("herald_purged_attempts_total").increment(report.attempts);
        tracing::info!(
            messages = report.messages,
            deliveries = report.deliveries,
            attempts = report.attempts,
            rollups = report.rollups,
            seconds = started.elapsed().as_secs_f64(),
            "housekeeping done"
        );
        Ok(report)
    }
}
