//! Bulk replay: a durable job that replays every finished delivery matching a filter.
//!
//! Each batch of replays is stored in one atomic write together with the job record (filter,
//! cursor, counts), so a job interrupted by a crash resumes exactly after the last batch it
//! stored: every matching delivery is counted once, as replayed or as skipped. Replays are
//! paced at
//! [`super::EngineConfig::replay_per_second`] so a receiver that just recovered is not flooded.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::decide::Command;
use crate::error::{Error, Result};
use crate::model::{DeliveryStatus, EndpointId, now_ms};
use crate::store::{DeliveryFilter, ReplayJob, ReplayState, StoreError};

/// Deliveries replayed per batch (one job-record write each).
const BATCH: usize = 100;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Only this endpoint.
    pub endpoint_id: Option<EndpointId>,
    /// Only this tenant's endpoints.
    pub tenant: Option<String>,
    /// Deliveries in this (final) status: usually `failed`.
    pub status: DeliveryStatus,
    /// Created at or after (ms).
    pub since_ms: Option<u64>,
    /// Created before (ms).
    pub until_ms: Option<u64>,
}

impl Engine {
    /// Creates a durable bulk replay job and starts it.
    pub(crate) async fn start_replay(
        self: &Arc<Self>,
        request: ReplayRequest,
    ) -> Result<ReplayJob> {
        if !request.status.is_final() {
            return Err(Error::InvalidRequest(
                "`status` must be failed, succeeded or skipped: only finished deliveries are replayed".into(),
            ));
        }
        let mut endpoint_ids: Vec<EndpointId> = request.endpoint_id.into_iter().collect();
        if let Some(id) = request.endpoint_id {
            self.endpoint(id).await?;
        }
        if let Some(tenant) = &request.tenant {
            let ids: Vec<EndpointId> = self
                .store
                .endpoints(Some(tenant))
                .await?
                .iter()
                .map(|e| e.id)
                .collect();
            if ids.is_empty() {
                return Err(Error::NotFound(format!("endpoints of tenant {tenant:?}")));
            }
            endpoint_ids = if endpoint_ids.is_empty() {
                ids
            } else {
                endpoint_ids
                    .into_iter()
                    .filter(|id| ids.contains(id))
                    .collect()
            };
        }
        let mut job = ReplayJob {
            id: uuid::Uuid::now_v7(),
            state: ReplayState::Running,
            status: request.status,
            endpoint_ids,
            since_ms: request.since_ms,
            until_ms: request.until_ms,
            matched: 0,
            queued: 0,
            skipped: 0,
            cursor: None,
            created_at: now_ms(),
        };
        job.matched = self.count_matching(&job).await?;
        self.store.put_job(&job).await?;
        tokio::spawn(run_job(self.clone(), job.clone()));
        Ok(job)
    }

    fn filter(job: &ReplayJob, limit: usize) -> DeliveryFilter {
        DeliveryFilter {
            status: Some(job.status),
            endpoint_id: None,
            endpoint_ids: job.endpoint_ids.clone(),
            since_ms: job.since_ms,
            until_ms: job.until_ms,
            after: job.cursor,
            newest_first: false,
            limit,
        }
    }

    async fn count_matching(&self, job: &ReplayJob) -> Result<u64> {
        let mut probe = job.clone();
        let mut count = 0;
        loop {
            let page = self.store.deliveries(&Self::filter(&probe, 10_000)).await?;
            count += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == 10_000 => probe.cursor = Some(last.id),
                _ => return Ok(count),
            }
        }
    }

    /// Resumes every job that was running when herald stopped.
    pub(crate) async fn resume_replays(self: &Arc<Self>) -> Result<()> {
        for job in self.store.adopt_jobs(now_ms()).await? {
            tracing::info!(job = %job.id, queued = job.queued, matched = job.matched, "resuming bulk replay");
            tokio::spawn(run_job(self.clone(), job));
        }
        Ok(())
    }
}

async fn run_job(engine: Arc<Engine>, mut job: ReplayJob) {
    let pause =
        Duration::from_secs_f64(BATCH as f64 / f64::from(engine.config.replay_per_second.max(1)));
    loop {
        match replay_batch(&engine, &mut job).await {
            Ok(true) => tokio::time::sleep(pause).await,
            Ok(false) => {
                tracing::info!(job = %job.id, queued = job.queued, skipped = job.skipped, "bulk replay done");
                return;
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "bulk replay stopped; it resumes at the next start");
                return;
            }
        }
    }
}

/// Replays one batch; false once the job is done.
async fn replay_batch(engine: &Engine, job: &mut ReplayJob) -> Result<bool> {
    if engine.scheduler.is_stopping() {
        return Ok(false);
    }
    let page = engine.store.deliveries(&Engine::filter(job, BATCH)).await?;
    let now = now_ms();
    let mut next = job.clone();
    let mut transitions = Vec::with_capacity(page.len());
    for delivery in &page {
        match engine.plan_command(&Command::Replay, delivery, now).await {
            Ok(planned) => {
                transitions.push(planned.transition);
                next.queued += 1;
            }
            Err(Error::Conflict(reason)) => {
                next.skipped += 1;
                tracing::info!(job = %job.id, delivery = %delivery.id, reason, "not replayed");
            }
            Err(e) => return Err(e),
        }
        next.cursor = Some(delivery.id);
    }
    let more = page.len() == BATCH;
    if !more {
        next.state = ReplayState::Done;
    }
    match engine
        .store
        .apply_transitions(&transitions, Some(&next))
        .await
    {
        Ok(()) => {}
        // A delivery of the page changed between reading and writing: read the page again.
        Err(StoreError::Conflict(reason)) => {
            tracing::debug!(job = %job.id, reason, "bulk replay batch raced a change; retrying it");
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    }
    *job = next;
    for transition in &transitions {
        if let Some(due) = transition.delivery.next_attempt_at {
            engine
                .scheduler
                .note_due(transition.delivery.endpoint_id, due);
        }
    }
    Ok(more)
}
