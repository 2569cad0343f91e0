//! An operator's commands on one delivery: replay a finished one, retry a pending one now, or
//! cancel a pending one. Each reads the delivery and what surrounds it, asks
//! [`decide::command`] for the new record, and has the store apply it if nothing changed
//! meanwhile.

use super::Engine;
use super::decide::{self, Command, CommandFacts};
use crate::error::{Error, Result};
use crate::model::{Delivery, DeliveryId, now_ms};
use crate::store::{StoreError, Transition};

impl Engine {
    /// The transition `command` makes of `delivery`, or why it does not apply.
    pub(crate) async fn plan_command(
        &self,
        command: &Command,
        delivery: &Delivery,
        now: u64,
    ) -> Result<Transition> {
        let message = self.store.message(delivery.message_id).await?;
        let facts = CommandFacts {
            message_kept: message.is_some(),
            endpoint_exists: self.store.endpoint(delivery.endpoint_id).await?.is_some(),
        };
        let ordering_key = message.as_ref().and_then(|m| m.ordering_key.as_deref());
        let next = decide::command(command, delivery, &facts, ordering_key, now)
            .map_err(Error::Conflict)?;
        Ok(Transition {
            expected: delivery.clone(),
            delivery: next.delivery,
            release: next.release,
        })
    }

    /// Carries out `command` on one delivery and returns it as it is now.
    pub(crate) async fn command(&self, id: DeliveryId, command: Command) -> Result<Delivery> {
        let delivery = self
            .store
            .delivery(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("delivery {id}")))?;
        let transition = self.plan_command(&command, &delivery, now_ms()).await?;
        self.store
            .apply_transitions(std::slice::from_ref(&transition), None)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(why) => Error::Conflict(why),
                other => other.into(),
            })?;
        let delivery = transition.delivery;
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
