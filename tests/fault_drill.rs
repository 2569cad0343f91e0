//! Fault drill: start the real `herald serve`, push messages at it over HTTP from several
//! clients, kill it with SIGKILL at a random moment, restart it, and repeat. At the end every
//! message id a client saw acknowledged must have reached the receiver: lost must be 0.
//! Duplicates are allowed (at-least-once) and reported next to what was in flight at each kill.
//!
//! CI runs a short drill (5 cycles). The full one:
//!
//! ```text
//! HERALD_DRILL_CYCLES=50 cargo test --release --test fault_drill -- --nocapture
//! ```

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Receiver;
use common::daemon::{Daemon, PRODUCER, metric};
use serde_json::{Value, json};

const PUSHERS: usize = 8;

/// One kill, as the drill saw it.
struct Kill {
    acked: usize,
    sends_unanswered: u64,
    herald_in_flight: f64,
    received: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_message() {
    let cycles: usize = std::env::var("HERALD_DRILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut kills = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut daemon = Daemon::start(dir.path());
        if cycle == 0 {
            daemon
                .create_endpoint(
                    json!({"tenant": "drill", "url": receiver.url(), "policy": "quick"}),
                )
                .await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let mut pushers = Vec::new();
        for p in 0..PUSHERS {
            let (stop, sent, answered, acked) =
                (stop.clone(), sent.clone(), answered.clone(), acked.clone());
            let url = format!("{}/v1/messages", daemon.base);
            pushers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = json!({"tenant": "drill", "event_type": "job.completed",
                        "payload": {"cycle": cycle, "pusher": p, "i": i}});
                    sent.fetch_add(1, Ordering::Relaxed);
                    let Ok(response) = client
                        .post(&url)
                        .bearer_auth(PRODUCER)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                    else {
                        break; // the daemon is gone
                    };
                    let status = response.status().as_u16();
                    let Ok(text) = response.text().await else {
                        break;
                    };
                    let answer: Value = serde_json::from_str(&text).unwrap();
                    answered.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(status, 202, "{answer}");
                    let id = answer["id"].as_str().unwrap().to_string();
                    acked.lock().unwrap().insert(id);
                }
            }));
        }
        // Let it run for a random moment, then kill it mid-flight.
        let moment = rand::random_range(150..700);
        tokio::time::sleep(Duration::from_millis(moment)).await;
        let in_flight = scrape(&daemon.base, "herald_in_flight").await;
        daemon.child.kill().unwrap(); // SIGKILL
        daemon.child.wait().unwrap();
        let unanswered = sent.load(Ordering::Relaxed) - answered.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for pusher in pushers {
            pusher.await.unwrap();
        }
        kills.push(Kill {
            acked: acked.lock().unwrap().len(),
            sends_unanswered: unanswered,
            herald_in_flight: in_flight,
            received: receiver.count(),
        });
    }

    // A last start delivers whatever is still pending.
    let _daemon = Daemon::start(dir.path());
    let acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing: Vec<String>;
    loop {
        let seen = receiver.message_ids();
        missing = acked.difference(&seen).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        receiver
            .wait_for(receiver.count() + 1, Duration::from_millis(200))
            .await;
    }
    let distinct = receiver.message_ids().len();
    let duplicates = receiver.count() - distinct;
    println!(
        "cycle  acked_total  unanswered_sends_at_kill  herald_in_flight_at_kill  received_total"
    );
    for (i, k) in kills.iter().enumerate() {
        println!(
            "{:>5}  {:>11}  {:>24}  {:>24}  {:>14}",
            i + 1,
            k.acked,
            k.sends_unanswered,
            k.herald_in_flight,
            k.received
        );
    }
    let in_flight_total: f64 = kills.iter().map(|k| k.herald_in_flight).sum();
    println!(
        "drill: {cycles} SIGKILL cycles in {:.1}s, {} acknowledged, {} lost, {} duplicates \
         (sum of attempts in flight at the kills: {in_flight_total})",
        started.elapsed().as_secs_f64(),
        acked.len(),
        missing.len(),
        duplicates
    );
    assert!(
        acked.len() > cycles * 10,
        "the drill pushed too little to mean anything"
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged messages never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// One gauge from `/metrics` (0 when it cannot be read).
async fn scrape(base: &str, name: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("{base}/metrics")).await else {
        return 0.0;
    };
    metric(&response.text().await.unwrap_or_default(), name, &[])
}
