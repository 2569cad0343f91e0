//! Bulk replay is a durable job: killed part-way, it resumes after a restart and finishes.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Receiver, Reply, endpoint, open_with, policy, wait_final};
use herald::{
    DeliveryStatus, EndpointUpdate, EngineConfig, NewMessage, ReplayRequest, ReplayState,
};
use serde_json::json;

const CHILD_DIR: &str = "HERALD_REPLAY_CHILD_DIR";
const MESSAGES: usize = 1_000;

fn policies() -> Vec<herald::Policy> {
    vec![
        policy(
            "once",
            "[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 1\n[request]\ntimeout = \"1s\"\n",
        ),
        policy(
            "patient",
            "[schedule]\nkind = \"fixed\"\ninterval = \"200ms\"\nmax_attempts = 10000\n[request]\ntimeout = \"1s\"\n",
        ),
    ]
}

/// The child: starts the bulk replay slowly and reports progress until it is killed.
#[tokio::test]
async fn replay_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let config = EngineConfig {
        replay_per_second: 300,
        ..EngineConfig::default()
    };
    let herald = open_with(std::path::Path::new(&dir), policies(), config).await;
    let endpoint_id = herald.endpoints(Some("acme")).await.unwrap()[0].id;
    let job = herald
        .replay_many(ReplayRequest {
            endpoint_id: Some(endpoint_id),
            tenant: None,
            status: DeliveryStatus::Failed,
            since_ms: None,
            until_ms: None,
        })
        .await
        .unwrap();
    println!("job {} matched {}", job.id, job.matched);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let job = herald.replay_job(job.id).await.unwrap();
        println!("queued {}", job.queued);
    }
}

#[tokio::test]
async fn a_bulk_replay_killed_part_way_resumes_and_delivers_everything() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    // 1. A thousand deliveries fail (nothing listens), then the endpoint gets a patient policy.
    {
        let herald = open_with(dir.path(), policies(), EngineConfig::default()).await;
        let created = herald
            .create_endpoint(endpoint("acme", format!("http://{addr}/hook"), "once"))
            .await
            .unwrap();
        let mut outcomes = herald.outcomes();
        for i in 0..MESSAGES {
            herald
                .send(NewMessage::new("acme", "e", &json!({ "i": i })).unwrap())
                .await
                .unwrap();
        }
        let finals = wait_final(&mut outcomes, MESSAGES, Duration::from_secs(60)).await;
        assert!(
            finals
                .iter()
                .all(|e| e.delivery_status == DeliveryStatus::Failed)
        );
        herald
            .update_endpoint(
                created.id,
                EndpointUpdate {
                    policy: Some("patient".into()),
                    ..EndpointUpdate::default()
                },
            )
            .await
            .unwrap();
        herald.shutdown().await.unwrap();
    }

    // 2. A child starts the bulk replay and is killed with SIGKILL part-way.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "replay_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (job_id, queued_at_kill) = std::thread::spawn(move || {
        let mut job_id = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest's "test replay_child ... " may precede the first line without a newline.
            if let Some(at) = line.find("job ") {
                job_id = line[at + 4..].split(' ').next().map(str::to_string);
            }
            if let Some(n) = line
                .strip_prefix("queued ")
                .and_then(|n| n.parse::<u64>().ok())
                && n >= 200
            {
                return (job_id, n);
            }
        }
        (job_id, 0)
    })
    .join()
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let job_id: uuid::Uuid = job_id.expect("child reported no job").parse().unwrap();
    assert!(
        (200..MESSAGES as u64).contains(&queued_at_kill),
        "killed part-way, at {queued_at_kill}"
    );

    // 3. Restart with the receiver up: the job resumes and every delivery arrives.
    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        |_, _| Reply::Status(200, "ok"),
    );
    let herald = open_with(dir.path(), policies(), EngineConfig::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.message_ids().len() < MESSAGES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {MESSAGES} delivered",
            receiver.message_ids().len()
        );
        receiver
            .wait_for(receiver.count() + 1, Duration::from_secs(1))
            .await;
    }
    let seen: HashSet<String> = receiver.message_ids();
    assert_eq!(seen.len(), MESSAGES);
    let mut job = herald.replay_job(job_id).await.unwrap();
    for _ in 0..50 {
        if job.state == ReplayState::Done {
            break;
        }
        receiver
            .wait_for(usize::MAX, Duration::from_millis(100))
            .await;
        job = herald.replay_job(job_id).await.unwrap();
    }
    assert_eq!(job.state, ReplayState::Done);
    assert_eq!(job.matched, MESSAGES as u64);
    assert_eq!(job.queued + job.skipped, job.matched, "{job:?}");
    herald.shutdown().await.unwrap();
}
