//! JSON shapes of the HTTP API, built from library records.

use serde::Serialize;

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::Herald;
use crate::model::{Attempt, Delivery, DeliveryStatus, Endpoint, EndpointId, rfc3339};
use crate::transport::redact;

/// One attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    attempt: u32,
    cycle: u32,
    started_at: String,
    duration_ms: u64,
    status_code: Option<u16>,
    error: Option<&'static str>,
    error_detail: Option<String>,
    response_excerpt: String,
    success: bool,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        AttemptView {
            attempt: a.attempt,
            cycle: a.cycle,
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error.map(|e| e.as_str()),
            error_detail: a.error_detail.clone(),
            response_excerpt: a.response_excerpt.clone(),
            success: a.success,
        }
    }
}

/// One delivery; `attempts` only on the single-delivery route.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: String,
    message_id: String,
    endpoint_id: String,
    url: String,
    pub(crate) status: DeliveryStatus,
    cycle: u32,
    attempt_count: u32,
    /// When the next attempt is due; absent while held.
    next_attempt_at: Option<String>,
    /// Why a held delivery is not attempted (its endpoint is disabled, and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    held_reason: Option<String>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
}

/// A delivery's endpoint as its view needs it.
pub enum EndpointOf {
    /// The endpoint exists: its URL, and whether it holds the delivery.
    Live(Box<Endpoint>),
    /// The endpoint was deleted: the URL its deletion kept, so that the history still says
    /// where the delivery was sent; `None` when none was kept (an earlier herald deleted it).
    Deleted(Option<String>),
}

impl EndpointOf {
    /// Reads endpoint `id`, or what its deletion kept. A failed read shows as a deleted
    /// endpoint, as it always has: a view is still worth showing without it.
    pub async fn read(herald: &Herald, id: EndpointId) -> EndpointOf {
        match herald.endpoint(id).await {
            Ok(endpoint) => EndpointOf::Live(Box::new(endpoint)),
            Err(_) => EndpointOf::Deleted(herald.deleted_endpoint_url(id).await.ok().flatten()),
        }
    }

    fn live(&self) -> Option<&Endpoint> {
        match self {
            EndpointOf::Live(endpoint) => Some(endpoint),
            EndpointOf::Deleted(_) => None,
        }
    }

    /// Where the endpoint's deliveries go, or went. A kept URL was stored redacted; it is
    /// redacted again when shown, like every URL a view shows, whatever the store holds.
    fn url(&self) -> Option<&str> {
        match self {
            EndpointOf::Live(endpoint) => Some(&endpoint.url),
            EndpointOf::Deleted(kept) => kept.as_deref(),
        }
    }
}

impl DeliveryView {
    /// A delivery as shown; pending deliveries of a disabled endpoint show as `held`.
    pub fn new(d: &Delivery, endpoint: &EndpointOf, attempts: Option<&[Attempt]>) -> Self {
        let held_reason = endpoint
            .live()
            .filter(|_| d.status == DeliveryStatus::Pending)
            .and_then(crate::engine::decide::held_reason);
        let held = held_reason.is_some();
        let url = d
            .url_override
            .as_deref()
            .or(endpoint.url())
            .map(redact)
            .unwrap_or_default();
        DeliveryView {
            id: d.id.to_string(),
            message_id: d.message_id.to_string(),
            endpoint_id: d.endpoint_id.to_string(),
            url,
            status: if held { DeliveryStatus::Held } else { d.status },
            cycle: d.cycle,
            attempt_count: d.total_attempts,
            next_attempt_at: d.next_attempt_at.filter(|_| !held).map(rfc3339),
            held_reason,
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            attempts: attempts.map(|a| a.iter().map(AttemptView::from).collect()),
        }
    }
}

/// The view of one delivery, with `attempts` if given.
pub async fn delivery_view(
    herald: &Herald,
    delivery: &Delivery,
    attempts: Option<&[Attempt]>,
) -> DeliveryView {
    let endpoint = EndpointOf::read(herald, delivery.endpoint_id).await;
    DeliveryView::new(delivery, &endpoint, attempts)
}

/// Views of deliveries, each with its endpoint (each endpoint read once).
pub async fn delivery_views(herald: &Herald, deliveries: &[Delivery]) -> Vec<DeliveryView> {
    let mut endpoints: HashMap<EndpointId, EndpointOf> = HashMap::new();
    let mut views = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let endpoint = match endpoints.entry(delivery.endpoint_id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                slot.insert(EndpointOf::read(herald, delivery.endpoint_id).await)
            }
        };
        views.push(DeliveryView::new(delivery, endpoint, None));
    }
    views
}
