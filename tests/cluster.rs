//! Several real `herald serve` processes on one real PostgreSQL form one cluster: they share
//! one queue, answer for each other's messages, take over a dead node's work, and ride out a
//! database restart without losing anything they acknowledged.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, PRODUCER};
use common::postgres::{self, Cluster, OwnServer, create_endpoint, scrape, send};
use common::{Receiver, Reply};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_queue_and_answer_for_each_other() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    let nodes: Vec<Daemon> = (0..3).map(|n| cluster.node(n)).collect();
    let receiver = Receiver::ok().await;
    create_endpoint(&nodes[0], "acme", &receiver.url(), "quick").await;

    // 300 messages, sent round-robin to the three nodes: each delivered exactly once.
    let mut accepted = Vec::new();
    for i in 0..300 {
        let body = json!({"tenant": "acme", "event_type": "e", "payload": {"i": i}});
        let (status, answer) = send(&nodes[i % 3], &body).await;
        assert_eq!(status, 202, "{answer}");
        accepted.push(answer["id"].as_str().unwrap().to_string());
    }
    assert!(
        receiver.wait_for(300, Duration::from_secs(30)).await,
        "{} of 300 delivered",
        receiver.count()
    );
    let seen: HashSet<String> = receiver.message_ids();
    assert_eq!(seen.len(), 300);
    assert!(accepted.iter().all(|id| seen.contains(id)));
    // Nothing twice: no node crashed, so nothing was attempted twice.
    assert!(!receiver.wait_for(301, Duration::from_millis(500)).await);

    // The attempts were spread over the nodes.
    let mut per_node = Vec::new();
    for node in &nodes {
        per_node.push(scrape(node, "herald_attempts_total").await);
    }
    assert_eq!(per_node.iter().sum::<f64>(), 300.0, "{per_node:?}");
    assert!(
        per_node.iter().filter(|n| **n > 0.0).count() >= 2,
        "attempts were not spread: {per_node:?}"
    );

    // Any node answers for any message.
    let (status, message, _) = nodes[2]
        .call(
            "GET",
            &format!("/v1/messages/{}", accepted[0]),
            Some(PRODUCER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(message["deliveries"][0]["status"], "succeeded");

    // An idempotency key holds across nodes.
    let keyed = json!({"tenant": "acme", "event_type": "e", "payload": {"k": 1},
                       "idempotency_key": "job-7"});
    let (first, a) = send(&nodes[0], &keyed).await;
    let (second, b) = send(&nodes[1], &keyed).await;
    assert_eq!((first, second), (202, 200));
    assert_eq!(a["id"], b["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failed_on_one_node_is_replayed_from_another() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    let (a, b) = (cluster.node(0), cluster.node(1));
    let receiver = Receiver::first_then_ok(Reply::Status(500, "down")).await;
    create_endpoint(&a, "acme", &receiver.url(), "once").await;
    let body = json!({"tenant": "acme", "event_type": "e", "payload": {"n": 1}});
    let (status, sent) = send(&a, &body).await;
    assert_eq!(status, 202);
    let delivery = sent["deliveries"][0]["id"].as_str().unwrap().to_string();
    assert!(receiver.wait_for(1, Duration::from_secs(10)).await);
    let path = format!("/admin/deliveries/{delivery}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.admin("GET", &path, None).await.1["status"] != "failed" {
        assert!(Instant::now() < deadline, "the delivery never failed");
        receiver.wait_for(2, Duration::from_millis(100)).await;
    }
    let (status, _) = b.admin("POST", &format!("{path}/replay"), None).await;
    assert_eq!(status, 202);
    assert!(
        receiver.wait_for(2, Duration::from_secs(10)).await,
        "replay not delivered"
    );
    let (_, replayed) = a.admin("GET", &path, None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = replayed["status"].clone();
    while status != "succeeded" {
        assert!(Instant::now() < deadline, "{status}");
        receiver.wait_for(3, Duration::from_millis(100)).await;
        status = a.admin("GET", &path, None).await.1["status"].clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_attempt_is_taken_over_and_nothing_is_lost() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    // The first request hangs (the node holding it is killed meanwhile); later ones succeed.
    let body = json!({"tenant": "acme", "event_type": "e", "payload": {"n": 1}});
    let (receiver, mut doomed, sent) = cluster.hung_attempt(&body).await;
    let survivor = cluster.node(1);
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    // The lease (the policy's 2 s timeout + 5 s) runs out and the survivor takes it over.
    assert!(
        receiver.wait_for(2, Duration::from_secs(30)).await,
        "the killed node's delivery was never taken over"
    );
    let takeover = killed.elapsed();
    eprintln!("taken over {takeover:?} after the SIGKILL");
    assert!(takeover < Duration::from_secs(15), "{takeover:?}");
    let id = sent["id"].as_str().unwrap();
    assert!(receiver.message_ids().contains(id));
    let (_, message, _) = survivor
        .call("GET", &format!("/v1/messages/{id}"), Some(PRODUCER), None)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = message["deliveries"][0]["status"].clone();
    while status != "succeeded" {
        assert!(Instant::now() < deadline, "{status}");
        receiver.wait_for(3, Duration::from_millis(100)).await;
        let (_, message, _) = survivor
            .call("GET", &format!("/v1/messages/{id}"), Some(PRODUCER), None)
            .await;
        status = message["deliveries"][0]["status"].clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing_and_leaves_every_node_running() {
    let Some(mut server) = OwnServer::start() else {
        return;
    };
    let url = server.database("herald_restart").await;
    let cluster = Cluster::new(url);
    let nodes = [cluster.node(0), cluster.node(1)];
    let receiver = Receiver::ok().await;
    create_endpoint(&nodes[0], "acme", &receiver.url(), "quick").await;

    // Eight producers send for the whole test; the database restarts in the middle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..8 {
        let base = nodes[p % 2].base.clone();
        let stop = stop.clone();
        producers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut acked, mut refused) = (Vec::new(), 0);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let body =
                    json!({"tenant": "acme", "event_type": "e", "payload": {"p": p, "i": i}});
                let answer = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(PRODUCER)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                match answer.status().as_u16() {
                    202 => {
                        let value: Value =
                            serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
                        acked.push(value["id"].as_str().unwrap().to_string());
                    }
                    503 => {
                        let value: Value =
                            serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
                        assert_eq!(value["type"], "unavailable", "{value}");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("a send answered {other}"),
                }
            }
            (acked, refused)
        }));
    }
    assert!(receiver.wait_for(200, Duration::from_secs(30)).await);
    server.stop();
    // While it is down, sends are refused with 503 and readiness says so.
    let (status, ready, _) = nodes[1].call("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["type"].as_str()), (503, Some("unavailable")));
    tokio::time::sleep(Duration::from_secs(2)).await; // the outage itself
    server.start_again();
    let count_at_restart = receiver.count();
    assert!(
        receiver
            .wait_for(count_at_restart + 200, Duration::from_secs(60))
            .await,
        "deliveries did not resume after the restart"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut refused = 0;
    for producer in producers {
        let (ids, r) = producer.await.unwrap();
        acked.extend(ids);
        refused += r;
    }
    eprintln!(
        "{} acknowledged, {refused} refused during the outage",
        acked.len()
    );
    // Every acknowledged message arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = receiver.message_ids();
        let missing = acked.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged messages never arrived"
        );
        receiver
            .wait_for(receiver.count() + 1, Duration::from_secs(1))
            .await;
    }
    // Both nodes are still up and ready.
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, _, _) = node.call("GET", "/readyz", None, None).await;
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a node did not become ready again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let _: &Path = cluster.root.path();
}

/// An endpoint's concurrency holds for the cluster: two nodes, each free to claim ahead, never
/// have more requests on the wire to one endpoint than its limit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_concurrency_holds_across_nodes() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    let limit = [("HERALD_ENDPOINT_CONCURRENCY", "3")];
    let nodes: Vec<Daemon> = (0..2).map(|n| cluster.node_with(n, &limit)).collect();
    // Slow answers: each node's window grows to the limit, and attempts overlap.
    let receiver = Receiver::start(|_, _| Reply::Late(200, Duration::from_millis(50))).await;
    create_endpoint(&nodes[0], "acme", &receiver.url(), "quick").await;

    // Both nodes take sends, and so know of the work and claim it.
    for i in 0..120 {
        let body = json!({"tenant": "acme", "event_type": "e", "payload": {"i": i}});
        let (status, answer) = send(&nodes[i % 2], &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    assert!(
        receiver.wait_for(120, Duration::from_secs(30)).await,
        "{} of 120 delivered",
        receiver.count()
    );
    assert_eq!(
        receiver.max_on_wire(),
        3,
        "the most requests on the wire at once, with a limit of 3"
    );
}
