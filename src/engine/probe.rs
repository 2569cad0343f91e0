//! Test-send: one request to an endpoint now, with its policy's encoding, signature and headers.
//! Nothing is stored and the endpoint's failure count does not move.

use serde_json::json;

use super::Engine;
use super::attempt::{Outgoing, exchange};
use crate::api::TestSendResult;
use crate::error::{Error, Result};
use crate::model::{EndpointId, MessageId, now_ms, rfc3339};

impl Engine {
    /// Sends a `herald.test` event to the endpoint and reports what came back.
    pub(crate) async fn test_endpoint(&self, id: EndpointId) -> Result<TestSendResult> {
        let endpoint = self.endpoint(id).await?;
        let policy = self
            .policies
            .get(&endpoint.policy)
            .cloned()
            .ok_or_else(|| Error::UnknownPolicy(endpoint.policy.clone()))?;
        let payload = json!({
            "type": "herald.test",
            "endpoint_id": id,
            "sent_at": rfc3339(now_ms()),
        })
        .to_string();
        let outgoing = Outgoing {
            message_id: MessageId::new().to_string(),
            delivery_id: "test".into(),
            attempt: 1,
            event_type: "herald.test",
            payload: &payload,
        };
        let started = std::time::Instant::now();
        let judged = exchange(self, &endpoint, &policy, &endpoint.url, &outgoing).await;
        metrics::counter!("herald_test_sends_total").increment(1);
        let (error, error_detail) = match judged.error {
            Some((kind, detail)) => (Some(kind), Some(detail)),
            None => (None, None),
        };
        Ok(TestSendResult {
            success: error.is_none(),
            status_code: judged.status_code,
            error,
            error_detail,
            duration_ms: started.elapsed().as_millis() as u64,
            response_excerpt: judged.excerpt,
        })
    }
}
