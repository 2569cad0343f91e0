//! Delivery controls on a cluster of real `herald serve` processes sharing one real
//! PostgreSQL: an ordering key's order across nodes and a killed node, a rate limit held by
//! the nodes together, and a message's trace continued by the node that attempts it. (A test
//! binary of its own: its timings are not shared with the heavier cluster tests.)

mod common;

use std::time::{Duration, Instant};

use common::Receiver;
use common::daemon::PRODUCER;
use common::postgres::{self, Cluster, create_endpoint, scrape, send};
use serde_json::{Value, json};

/// The payload field `n` of each request to `receiver` whose payload `key` is `key`, in
/// arrival order.
fn arrived(receiver: &Receiver, key: &str) -> Vec<u64> {
    receiver
        .requests()
        .iter()
        .filter_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).ok()?;
            (body["key"] == key).then(|| body["n"].as_u64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordering_key_holds_across_nodes_and_a_node_killed_mid_attempt() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    let keyed = |key: &str, n: u64| {
        json!({"tenant": "acme", "event_type": "job.status", "ordering_key": key,
               "payload": {"key": key, "n": n}})
    };
    // The first request hangs: the node attempting it is killed meanwhile.
    let (receiver, mut doomed, _) = cluster.hung_attempt(&keyed("job-1", 0)).await;
    // The rest of the key goes to both nodes in turn, each acknowledged before the next is
    // sent: acceptance order is 0, 1, ... 9 whichever node took a message.
    let survivor = cluster.node(1);
    for n in 1..10 {
        let node = if n % 2 == 0 { &doomed } else { &survivor };
        let (status, answer) = send(node, &keyed("job-1", n)).await;
        assert_eq!(status, 202, "{answer}");
    }
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    // Another key is not held back by the hung head.
    assert_eq!(send(&survivor, &keyed("job-2", 0)).await.0, 202);

    // The survivor takes the head over when its lease runs out, then the rest, in order.
    assert!(
        receiver.wait_for(12, Duration::from_secs(30)).await,
        "{} of 12 requests arrived",
        receiver.count()
    );
    assert!(!receiver.wait_for(13, Duration::from_millis(300)).await);
    assert_eq!(
        arrived(&receiver, "job-1"),
        [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    let job2 = receiver
        .requests()
        .iter()
        .position(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["key"] == "job-2")
        .unwrap();
    assert_eq!(job2, 1, "job-2 waited for job-1's head");
    eprintln!(
        "the key's head taken over {:?} after the SIGKILL",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_whole_cluster() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    let nodes = [cluster.node(0), cluster.node(1)];
    let receiver = Receiver::ok().await;
    let (status, endpoint) = nodes[0]
        .admin(
            "POST",
            "/admin/endpoints",
            Some(
                json!({"tenant": "acme", "url": receiver.url(), "policy": "quick",
                        "default": true, "rate_limit": 20}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    // Both nodes know the limit before anything is sent (the other hears of it by a notice).
    let path = format!("/admin/endpoints/{}", endpoint["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[1].admin("GET", &path, None).await.1["pacing"]["rate_limit"] != 20.0 {
        assert!(
            Instant::now() < deadline,
            "the other node never saw the limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 60 messages, sent to both nodes at once.
    let sends = (0..60u64).map(|n| {
        let node = &nodes[(n % 2) as usize];
        async move {
            let body = json!({"tenant": "acme", "event_type": "e", "payload": {"n": n}});
            send(node, &body).await.0
        }
    });
    let statuses = futures_util::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert!(receiver.wait_for(60, Duration::from_secs(30)).await);

    let times: Vec<Instant> = receiver.requests().iter().map(|r| r.at).collect();
    let span = times[59] - times[0];
    assert!(
        span >= Duration::from_millis(2_900),
        "60 attempts at 20/s over two nodes took {span:?}"
    );
    // No second holds more than 20 starts, as the nodes recorded them (ms; a start may begin a
    // few ms after the moment it was given, on a busy machine) ...
    let (_, page) = nodes[0]
        .admin("GET", "/admin/deliveries?limit=100", None)
        .await;
    let mut starts = Vec::new();
    for delivery in page["deliveries"].as_array().unwrap() {
        let path = format!("/admin/deliveries/{}", delivery["id"].as_str().unwrap());
        let (_, delivery) = nodes[1].admin("GET", &path, None).await;
        for attempt in delivery["attempts"].as_array().unwrap() {
            let at = humantime::parse_rfc3339(attempt["started_at"].as_str().unwrap()).unwrap();
            starts.push(
                at.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            );
        }
    }
    starts.sort_unstable();
    assert_eq!(starts.len(), 60);
    for (i, first) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|t| **t - *first < 990)
            .count();
        assert!(
            within <= 20,
            "{within} starts within a second from #{i}: {starts:?}"
        );
    }
    // ... nor as the receiver saw them (50 ms allowed for the way there: both nodes, the
    // database and the receiver share this machine's two cores with the other tests).
    for (i, first) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|t| **t - *first < Duration::from_millis(950))
            .count();
        let gaps: Vec<u128> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert!(
            within <= 20,
            "{within} attempts within a second from #{i}: {gaps:?}"
        );
    }
    // Both nodes attempted: the limit was shared, not kept by one node doing all the work.
    // (An attempt is counted once its outcome is recorded, just after the receiver saw it.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let per_node = loop {
        let mut per_node = Vec::new();
        for node in &nodes {
            per_node.push(scrape(node, "herald_attempts_total").await);
        }
        if per_node.iter().sum::<f64>() == 60.0 {
            break per_node;
        }
        assert!(Instant::now() < deadline, "{per_node:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(per_node.iter().all(|n| *n > 0.0), "{per_node:?}");
    eprintln!("attempts per node: {per_node:?}; 60 starts over {span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_on_another_node_joins_the_trace_of_the_accepting_one() {
    let Some(url) = postgres::database().await else {
        return;
    };
    let cluster = Cluster::new(url);
    // Spans go to a receiver that takes anything: this test reads the delivery's headers.
    let collector = Receiver::ok().await;
    let otlp = [("HERALD_OTLP_ENDPOINT", collector.url())];
    let otlp: Vec<(&str, &str)> = otlp.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut accepting = cluster.node_with(0, &otlp);
    let attempting = cluster.node_with(1, &otlp);
    let receiver = Receiver::ok().await;
    create_endpoint(&accepting, "acme", &receiver.url(), "quick").await;

    // Accepted on one node, which dies before the delivery is due; the other attempts it.
    let producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/messages", accepting.base))
        .bearer_auth(PRODUCER)
        .header("content-type", "application/json")
        .header(
            "traceparent",
            format!("00-{producer_trace}-00f067aa0ba902b7-01"),
        )
        .body(
            json!({"tenant": "acme", "event_type": "e", "payload": {"n": 1}, "delay": "1s"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let answer = answer.text().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    accepting.child.kill().unwrap();
    accepting.child.wait().unwrap();
    assert!(receiver.wait_for(1, Duration::from_secs(15)).await);
    let seen = receiver.requests()[0].header("traceparent");
    assert_eq!(
        seen.split('-').nth(1),
        Some(producer_trace),
        "the producer's trace continues on the other node: {seen:?}"
    );
    drop(attempting);
}
