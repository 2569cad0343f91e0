//! Crash safety: a child process sends while the receiver is down and is killed with SIGKILL
//! part-way; every message it saw acknowledged must arrive after a restart.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Receiver, Reply, open, quick_policy};
use herald::{NewEndpoint, NewMessage};
use serde_json::json;

const CHILD_DIR: &str = "HERALD_CRASH_CHILD_DIR";
const CHILD_URL: &str = "HERALD_CRASH_CHILD_URL";
const MESSAGES: usize = 2_000;

fn policies() -> Vec<herald::Policy> {
    vec![quick_policy("crash", "200ms", 10_000)]
}

/// The child's side: runs only when the parent sets the environment.
#[tokio::test]
async fn crash_child() {
    let (Ok(dir), Ok(url)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_URL)) else {
        return; // not launched as a child
    };
    let herald = open(std::path::Path::new(&dir), policies()).await;
    herald
        .create_endpoint(NewEndpoint {
            tenant: "acme".into(),
            url,
            policy: "crash".into(),
            ..NewEndpoint::default()
        })
        .await
        .unwrap();
    println!("ready");
    // 16 concurrent senders; each prints an id only after `send` returned (= durable).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for worker in 0..16 {
        let herald = herald.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in (worker..MESSAGES).step_by(16) {
                let receipt = herald
                    .send(NewMessage::new("acme", "job.completed", &json!({ "i": i })).unwrap())
                    .await
                    .unwrap();
                tx.send(receipt.id.to_string()).unwrap();
            }
        });
    }
    drop(tx);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while let Some(id) = rx.recv().await {
        writeln!(out, "ack {id}").unwrap();
        out.flush().unwrap();
    }
    writeln!(out, "done").unwrap();
}

#[tokio::test]
async fn sigkill_mid_send_loses_no_acknowledged_message() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A port where nothing listens yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_URL, format!("http://{addr}/hook"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let kill_after = 600 + (std::process::id() as usize % 600);
    let reader = std::thread::spawn(move || {
        let mut acked = HashSet::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ack ") {
                acked.insert(id.to_string());
                if acked.len() == kill_after {
                    return (acked, true);
                }
            }
        }
        (acked, false)
    });
    let (mut acked, reached) = reader.join().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(reached, "child stopped early after {} acks", acked.len());
    // Lines the child wrote before dying but after our read stopped are acknowledged too;
    // they were already counted up to `kill_after`, and any later ack we did not read is
    // simply not checked (it cannot make the check pass falsely).
    acked.retain(|id| !id.is_empty());

    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        |_, _| Reply::Status(200, "ok"),
    );
    let herald = open(dir.path(), policies()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = receiver.message_ids();
        let lost = acked.iter().filter(|id| !seen.contains(*id)).count();
        if lost == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let mut states = Vec::new();
            for id in acked.iter().filter(|id| !seen.contains(*id)).take(5) {
                states.push(match herald.message_deliveries(id.parse().unwrap()).await {
                    Ok(ds) => format!(
                        "{id}: {:?}",
                        ds.iter()
                            .map(|d| (d.status, d.total_attempts, d.next_attempt_at))
                            .collect::<Vec<_>>()
                    ),
                    Err(e) => format!("{id}: {e}"),
                });
            }
            panic!(
                "{lost} of {} acknowledged messages never arrived; e.g. {states:#?}",
                acked.len()
            );
        }
        receiver
            .wait_for(receiver.count() + 1, Duration::from_secs(2))
            .await;
    }
    herald.shutdown().await.unwrap();
}
