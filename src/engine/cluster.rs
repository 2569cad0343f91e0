//! Following the other nodes of a cluster. A shared store tells this node what the others
//! changed (new due deliveries, endpoint changes); the scheduler is woken by those notices, not
//! by polling. Notices can be lost (a reconnect), so a bounded fallback timer looks again: the
//! due heads, the endpoints' states, and bulk replay jobs whose node stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::Engine;
use crate::model::{EndpointId, now_ms};
use crate::store::Notice;

/// How often a node looks again without a notice.
const RESYNC: Duration = Duration::from_secs(30);

impl Engine {
    /// Starts following the store's notices, if it is shared; the task ends at shutdown.
    pub(crate) fn follow_cluster(self: &Arc<Self>) {
        let Some(mut notices) = self.store.notices() else {
            return;
        };
        let engine = self.clone();
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let resync = tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(RESYNC) => true,
                    notice = notices.recv() => match notice {
                        Ok(Notice::Due(endpoint, due)) => {
                            engine.scheduler.note_due(endpoint, due);
                            false
                        }
                        Ok(Notice::Endpoint(endpoint)) => {
                            engine.endpoint_changed(endpoint).await;
                            false
                        }
                        Ok(Notice::Resync) | Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    },
                };
                if resync && let Err(e) = engine.resync().await {
                    tracing::warn!(error = %e, "could not look at the cluster's state; trying again later");
                }
            }
        });
    }

    /// Another node (or this one) changed an endpoint: schedule it as it is now.
    async fn endpoint_changed(&self, endpoint: EndpointId) {
        let found = self.store.endpoint(endpoint).await;
        match found {
            Ok(Some(found)) => {
                let head = self.store.due_head(endpoint, now_ms()).await.ok().flatten();
                self.schedule_endpoint(&found, head);
                self.apply_rate_limit(&found);
            }
            Ok(None) => {
                let queued = self.scheduler.remove(endpoint);
                if let Err(e) = self.store.release(&queued).await {
                    tracing::warn!(error = %e, "leases of a deleted endpoint not given back; they expire");
                }
            }
            Err(e) => tracing::warn!(%endpoint, error = %e, "endpoint change not followed"),
        }
    }

    /// Looks at everything a lost notice could have said.
    async fn resync(self: &Arc<Self>) -> crate::error::Result<()> {
        for endpoint in self.store.endpoints(None).await? {
            self.schedule_endpoint(&endpoint, None);
            self.apply_rate_limit(&endpoint);
        }
        for (endpoint, head) in self.store.due_heads(now_ms()).await? {
            self.scheduler.note_due(endpoint, head);
        }
        self.resume_replays().await
    }
}
