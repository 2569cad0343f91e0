//! herald embedded in a program: open, create an endpoint, send, watch the outcome.
//!
//! `cargo run --example embed` delivers to http://127.0.0.1:9000/callbacks: to a receiver it
//! starts there itself, so that it finishes on its own, or, when the port is taken, to the
//! `herald receive --port 9000` of the README's quick start (whose shell then shows it).
//! `deliver` is the README's embedding example, word for word (a test checks).

use std::time::Duration;

use herald::{Herald, NewEndpoint, NewMessage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    start_receiver().await;
    deliver("http://127.0.0.1:9000/callbacks").await
}

/// A receiver on 127.0.0.1:9000 that prints what arrives and answers 200, unless something
/// (`herald receive`) already listens there.
async fn start_receiver() {
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:9000").await else {
        println!("127.0.0.1:9000 is taken: delivering to the receiver there");
        return;
    };
    let app =
        axum::Router::new().fallback(|headers: axum::http::HeaderMap, body: String| async move {
            let signature = headers
                .get("x-tolq-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            println!("receiver got {body} (X-Tolq-Signature {signature})");
            "ok"
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn deliver(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let herald = Herald::builder()
        .data_dir("./herald-embedded") // one process per store: not the daemon's directory
        .policies_dir("./policies") // your own policy files; a missing directory is fine
        // The receiver is on 127.0.0.1, which the SSRF guard refuses unless allowed.
        .allow_private_targets(true)
        .open()
        .await?;

    // Endpoints are stored: create this one on the first run only.
    let existing = herald.endpoints(Some("acme")).await?;
    if !existing.iter().any(|e| e.url == url) {
        herald
            .create_endpoint(NewEndpoint {
                tenant: "acme".into(),
                url: url.into(),
                policy: "tolq".into(),
                secret: Some("customer-api-key".into()),
                default: true,
                ..NewEndpoint::default()
            })
            .await?;
    }

    let mut outcomes = herald.outcomes(); // live feed of attempt outcomes
    let payload = serde_json::json!({"job_id": 7});
    let message = NewMessage::new("acme", "job.completed", &payload)?.idempotency_key("job-7");
    let receipt = herald.send(message).await?; // returns once the message is on disk

    if !receipt.created {
        // The key was used before: the first message stands and nothing is sent again.
        println!("message {} was accepted by an earlier run", receipt.id);
    } else {
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = outcomes.next().await {
                if event.message_id == receipt.id {
                    return Some(event);
                }
            }
            None
        })
        .await;
        match outcome {
            // e.g. keep callback_response_code / last_callback_at in your own tables
            Ok(Some(event)) => println!(
                "attempt {}: status {:?}, error {:?}, delivery {:?}",
                event.attempt, event.status_code, event.error, event.delivery_status
            ),
            _ => println!("no answer within 30 s; herald keeps retrying on the policy's schedule"),
        }
    }
    herald.shutdown().await?; // finish in-flight attempts, flush
    Ok(())
}
