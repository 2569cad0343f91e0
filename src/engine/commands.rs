//! An operator's commands on one delivery: replay a finished one, retry a pending one now, or
//! cancel a pending one. Each reads the delivery and what surrounds it, asks
//! [`decide::command`] for the new record, and has the store apply it if nothing changed
//! meanwhile.

use super::Engine;
use super::decide::{self, Command, CommandFacts};
use crate::error::{Error, Result};
use crate::model::{Delivery, DeliveryId, Endpoint, now_ms};
use crate::store::{StoreError, Transition};

/// A command's transition, with the endpoint it was planned against.
pub(crate) struct Planned {
    pub(crate) transition: Transition,
    /// The delivery's endpoint, if it still exists: its policy labels the count of a delivery
    /// the command finishes, as it labels one an attempt finishes.
    pub(crate) endpoint: Option<Endpoint>,
}

impl Engine {
    /// The transition `command` makes of `delivery`, or why it does not apply.
    pub(crate) async fn plan_command(
        &self,
        command: &Command,
        delivery: &Delivery,
        now: u64,
    ) -> Result<Planned> {
        let message = self.store.message(delivery.message_id).await?;
        let endpoint = self.store.endpoint(delivery.endpoint_id).await?;
        let facts = CommandFacts {
            message_kept: message.is_some(),
            endpoint_exists: endpoint.is_some(),
        };
        let ordering_key = message.as_ref().and_then(|m| m.ordering_key.as_deref());
        let next = decide::command(command, delivery, &facts, ordering_key, now)
            .map_err(Error::Conflict)?;
        let transition = Transition {
            expected: delivery.clone(),
            delivery: next.delivery,
            release: next.release,
        };
        Ok(Planned {
            transition,
            endpoint,
        })
    }

    /// Carries out `command` on one delivery and returns it as it is now.
    pub(crate) async fn command(&self, id: DeliveryId, command: Command) -> Result<Delivery> {
        let delivery = self
            .store
            .delivery(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("delivery {id}")))?;
        let Planned {
            transition,
            endpoint,
        } = self.plan_command(&command, &delivery, now_ms()).await?;
        self.store
            .apply_transitions(std::slice::from_ref(&transition), None)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(why) => Error::Conflict(why),
                other => other.into(),
            })?;
        let delivery = transition.delivery;
        if delivery.status.is_final() && !transition.expected.status.is_final() {
            // A cancel: applied only if the delivery was still pending, so an attempt that
            // finished it first (and was counted) makes this a conflict, and an attempt
            // recorded after it is stale (and not counted).
            self.count_finished(endpoint.as_ref(), delivery.status, 1);
        }
        if let Some(due) = delivery.next_attempt_at {
            self.scheduler.note_due(delivery.endpoint_id, due);
        }
        if transition.release.is_some() {
            // The next delivery of its ordering key's line may be due now.
            let endpoint = delivery.endpoint_id;
            if let Some(due) = self.store.due_head(endpoint, now_ms()).await? {
                self.scheduler.note_due(endpoint, due);
            }
        }
        let action = match command {
            Command::Replay => "replay",
            Command::RetryNow => "retry now",
            Command::Cancel => "cancel",
        };
        tracing::info!(delivery = %id, action, "operator command applied");
        Ok(delivery)
    }
}
