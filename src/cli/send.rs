//! `herald send`: one message through the producer API.

use clap::Args;
use serde_json::{Value, json};

use super::format::text;
use super::remote::Remote;

/// `herald send`.
#[derive(Args)]
pub struct SendArgs {
    /// Tenant whose endpoints receive it.
    #[arg(long)]
    tenant: String,
    /// Event type.
    #[arg(long)]
    event_type: String,
    /// JSON payload.
    #[arg(long)]
    payload: String,
    /// Send to this URL only, with the tenant's default endpoint's policy.
    #[arg(long, value_name = "URL")]
    callback_url: Option<String>,
    /// The same key returns the first message and sends nothing twice.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Delta mode: skip the send when this key's last delivered payload was the same.
    #[arg(long)]
    dedup_key: Option<String>,
    /// Per endpoint, messages sharing this key are attempted one at a time, in order.
    #[arg(long)]
    ordering_key: Option<String>,
    /// The first attempt not before this time (RFC 3339).
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    deliver_at: Option<String>,
    /// The first attempt after this delay (e.g. 10m).
    #[arg(long, value_name = "DURATION")]
    delay: Option<String>,
}

/// Sends the message and prints where it is going.
pub async fn run(remote: &Remote, args: SendArgs) -> Result<(), String> {
    let payload: Value =
        serde_json::from_str(&args.payload).map_err(|e| format!("--payload is not JSON: {e}"))?;
    let tenant = args.tenant.clone();
    let body = json!({
        "tenant": args.tenant, "event_type": args.event_type, "payload": payload,
        "callback_url": args.callback_url, "idempotency_key": args.idempotency_key,
        "dedup_key": args.dedup_key, "ordering_key": args.ordering_key,
        "deliver_at": args.deliver_at, "delay": args.delay,
    });
    let (status, receipt) = remote
        .call_with_status(reqwest::Method::POST, "/v1/messages", Some(body))
        .await?;
    if remote.printed_json(&receipt)? {
        return Ok(());
    }
    let deliveries = receipt["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // 200 instead of 202: an earlier message had this idempotency key; nothing new is sent.
    let accepted = if status == 200 {
        "already accepted (same idempotency key): message"
    } else {
        "accepted message"
    };
    println!(
        "{accepted} {} → {} deliver{}",
        text(&receipt["id"]),
        deliveries.len(),
        if deliveries.len() == 1 { "y" } else { "ies" }
    );
    for d in &deliveries {
        println!(
            "  {}  {:<8}  {}",
            text(&d["id"]),
            text(&d["status"]),
            text(&d["url"])
        );
    }
    if deliveries.is_empty() {
        println!(
            "  no endpoint of tenant {tenant:?} takes this event: create one with `herald endpoints create`"
        );
    } else if let Some(first) = deliveries.first() {
        println!("follow it: herald deliveries show {}", text(&first["id"]));
    }
    Ok(())
}
