//! Delivery controls on the real `herald serve`: ordering keys and scheduled sends across a
//! SIGKILL, the HTTP shapes and the inputs they refuse, and spans exported over OTLP/HTTP
//! to a local collector whose trace ids the receivers see.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, PRODUCER, metric};
use common::{Receiver, Reply};
use serde_json::{Value, json};

async fn post(daemon: &Daemon, body: Value, traceparent: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/messages", daemon.base))
        .bearer_auth(PRODUCER)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A `quick` endpoint of tenant `tms` delivering to `url`, as created.
async fn tms_endpoint(daemon: &Daemon, url: &str) -> Value {
    daemon
        .create_endpoint(json!({"tenant": "tms", "url": url, "policy": "quick"}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_keys_and_scheduled_sends_hold_across_sigkill() {
    let accept = Arc::new(AtomicBool::new(false));
    let switch = accept.clone();
    let receiver = Receiver::start(move |_, _| {
        if switch.load(Ordering::SeqCst) {
            Reply::Status(200, "ok")
        } else {
            Reply::Status(503, "down")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    tms_endpoint(&daemon, &receiver.url()).await;
    for n in 0..5 {
        for key in ["job-1", "job-2"] {
            let body = json!({"tenant": "tms", "event_type": "job.status", "ordering_key": key,
                "payload": {"key": key, "n": n}});
            assert_eq!(post(&daemon, body, None).await.0, 202);
        }
    }
    let accepted = Instant::now();
    let body = json!({"tenant": "tms", "event_type": "job.deadline", "delay": "3s",
        "payload": {"key": "scheduled", "n": 0}});
    let (status, receipt) = post(&daemon, body, None).await;
    assert_eq!(status, 202, "{receipt}");
    let scheduled = receipt["deliveries"][0]["id"].as_str().unwrap().to_string();
    assert!(receipt["deliveries"][0]["next_attempt_at"].is_string());

    // The heads fail and are retried; nothing behind them moves.
    assert!(receiver.wait_for(6, Duration::from_secs(10)).await);
    let (_, view) = daemon
        .admin("GET", &format!("/admin/deliveries/{scheduled}"), None)
        .await;
    assert_eq!(view["status"], "pending");
    assert!(view["next_attempt_at"].is_string());
    let metrics = daemon.scrape().await;
    assert_eq!(metric(&metrics, "herald_deliveries_pending", &[]), 11.0);
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();

    let daemon = Daemon::start(dir.path());
    let before = receiver.count();
    assert!(receiver.wait_for(before + 2, Duration::from_secs(10)).await);
    accept.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.message_ids().len() < 11 && Instant::now() < deadline {
        receiver
            .wait_for(receiver.count() + 1, Duration::from_millis(500))
            .await;
    }
    let mut by_key: HashMap<String, Vec<(u64, Instant)>> = HashMap::new();
    for request in receiver.requests() {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        by_key
            .entry(body["key"].as_str().unwrap().to_string())
            .or_default()
            .push((body["n"].as_u64().unwrap(), request.at));
    }
    for key in ["job-1", "job-2"] {
        let ns: Vec<u64> = by_key[key].iter().map(|(n, _)| *n).collect();
        // One at a time and in order: never an earlier message after a later one.
        assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{key}: {ns:?}");
        let mut distinct = ns.clone();
        distinct.dedup();
        assert_eq!(distinct, [0, 1, 2, 3, 4], "{key}: {ns:?}");
        assert!(ns.iter().filter(|n| **n == 0).count() >= 2, "{key}: {ns:?}");
    }
    let first = by_key["scheduled"][0].1;
    assert!(
        first - accepted >= Duration::from_millis(2_950),
        "the scheduled send came after {:?}",
        first - accepted
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_over_http_and_the_inputs_they_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let endpoint = |rate: Value| {
        json!({"tenant": "tms", "url": "http://127.0.0.1:9/hook", "policy": "quick",
            "rate_limit": rate})
    };
    for rate in [json!(0), json!(-1), json!("fast"), json!(2_000_000)] {
        let (status, problem) = daemon
            .admin("POST", "/admin/endpoints", Some(endpoint(rate.clone())))
            .await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (400, Some("invalid_request")),
            "rate_limit {rate}: {problem}"
        );
    }
    let (status, created) = daemon
        .admin("POST", "/admin/endpoints", Some(endpoint(json!(20))))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["rate_limit"], 20.0);
    let path = format!("/admin/endpoints/{}", created["id"].as_str().unwrap());
    let (_, view) = daemon.admin("GET", &path, None).await;
    assert_eq!(view["pacing"]["rate_limit"], 20.0);
    assert_eq!(view["pacing"]["source"], "endpoint");
    assert!(view["pacing"]["wait_ms"].as_u64().unwrap() <= 50, "{view}");
    let (status, changed) = daemon
        .admin("PATCH", &path, Some(json!({"rate_limit": null})))
        .await;
    assert_eq!((status, &changed["rate_limit"]), (200, &Value::Null));
    let (_, view) = daemon.admin("GET", &path, None).await;
    assert!(view.get("pacing").is_none(), "{view}");
    let (_, changed) = daemon
        .admin("PATCH", &path, Some(json!({"rate_limit": 2.5})))
        .await;
    assert_eq!(changed["rate_limit"], 2.5);
    let (_, listed) = daemon.admin("GET", "/admin/endpoints", None).await;
    assert_eq!(listed["endpoints"][0]["rate_limit"], 2.5);

    let message = |extra: Value| {
        let mut body = json!({"tenant": "tms", "event_type": "e", "payload": {}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let refused = [
        json!({"delay": "10m", "deliver_at": "2030-01-01T00:00:00Z"}),
        json!({"delay": "-10m"}),
        json!({"delay": "soon"}),
        json!({"delay": 600}),
        json!({"delay": "400d"}),
        json!({"deliver_at": "tomorrow"}),
        json!({"deliver_at": "2999-01-01T00:00:00Z"}),
        json!({"ordering_key": "k".repeat(257)}),
        json!({"ordering_key": ""}),
    ];
    for extra in refused {
        let (status, problem) = post(&daemon, message(extra.clone()), None).await;
        assert_eq!(
            (status, problem["type"].as_str()),
            (400, Some("invalid_request")),
            "{extra}: {problem}"
        );
    }
    let (status, receipt) = post(
        &daemon,
        message(json!({"ordering_key": "job-7", "deliver_at": "2001-01-01T00:00:00+01:00"})),
        None,
    )
    .await;
    assert_eq!(status, 202, "{receipt}");
    let id = receipt["id"].as_str().unwrap();
    let (status, stored, _) = daemon
        .call("GET", &format!("/v1/messages/{id}"), Some(PRODUCER), None)
        .await;
    assert_eq!((status, &stored["ordering_key"]), (200, &json!("job-7")));
}

/// One exported span, as the collector decoded it.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    attributes: HashMap<String, String>,
}

/// What the collector received.
#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<Exported>>,
    arrived: tokio::sync::Notify,
}

/// A local OTLP/HTTP collector: decodes `POST /v1/traces` (protobuf) and keeps the spans.
async fn collector() -> (String, Arc<Collected>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message as _;
    let collected: Arc<Collected> = Arc::default();
    let kept = collected.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let request = ExportTraceServiceRequest::decode(body).unwrap();
            let mut spans = kept.spans.lock().unwrap();
            for span in request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Any::StringValue(s)) => s.clone(),
                            Some(Any::IntValue(i)) => i.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect();
                spans.push(Exported {
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    attributes,
                });
            }
            drop(spans);
            kept.arrived.notify_waiters();
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, collected)
}

/// Waits until a span matching `wanted` was exported.
async fn exported(collected: &Collected, wanted: impl Fn(&Exported) -> bool) -> Exported {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let arrived = collected.arrived.notified();
        if let Some(span) = collected.spans.lock().unwrap().iter().find(|s| wanted(s)) {
            return span.clone();
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            panic!("not exported: {:#?}", collected.spans.lock().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_see_the_trace_id_of_the_exported_attempt_span() {
    let (otlp, collected) = collector().await;
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_env(
        dir.path(),
        None,
        &[
            ("HERALD_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // The default level: the log leaves the per-message spans out, the exporter not.
            ("HERALD_LOG", "info"),
        ],
    );
    let endpoint = tms_endpoint(&daemon, &receiver.url()).await;
    let producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = json!({"tenant": "tms", "event_type": "job.completed", "payload": {"n": 1}});
    let traceparent = format!("00-{producer_trace}-00f067aa0ba902b7-01");
    let (status, receipt) = post(&daemon, body.clone(), Some(&traceparent)).await;
    assert_eq!(status, 202, "{receipt}");
    let (_, second) = post(&daemon, body, None).await;
    assert!(receiver.wait_for(2, Duration::from_secs(10)).await);

    for (request, receipt, parent_trace) in
        [(0, &receipt, Some(producer_trace)), (1, &second, None)]
    {
        let seen = receiver.requests()[request].header("traceparent");
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "traceparent {seen:?}");
        let (trace_id, span_id) = (parts[1].to_string(), parts[2].to_string());
        if let Some(parent_trace) = parent_trace {
            assert_eq!(trace_id, parent_trace, "the producer's trace continues");
        }
        let ids = [
            ("message_id", receipt["id"].as_str().unwrap()),
            (
                "delivery_id",
                receipt["deliveries"][0]["id"].as_str().unwrap(),
            ),
            ("endpoint_id", endpoint["id"].as_str().unwrap()),
        ];
        let attempt = exported(&collected, |s| s.name == "attempt" && s.span_id == span_id).await;
        assert_eq!(
            attempt.trace_id, trace_id,
            "the receiver's trace id is exported"
        );
        let accept = exported(&collected, |s| s.name == "accept" && s.trace_id == trace_id).await;
        for (name, id) in ids {
            assert_eq!(attempt.attributes.get(name).map(String::as_str), Some(id));
            assert_eq!(accept.attributes.get(name).map(String::as_str), Some(id));
        }
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_logged_with_its_ids_at_the_default_level() {
    let receiver = Receiver::first_then_ok(Reply::Status(500, "first attempt fails")).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_env(dir.path(), None, &[("HERALD_LOG", "info")]);
    let endpoint = tms_endpoint(&daemon, &receiver.url()).await;
    let body = json!({"tenant": "tms", "event_type": "job.completed", "payload": {"n": 1}});
    let (status, receipt) = post(&daemon, body, None).await;
    assert_eq!(status, 202, "{receipt}");
    // The retry arrives after the failed attempt was recorded and logged.
    assert!(receiver.wait_for(2, Duration::from_secs(10)).await);
    let Some(line) = daemon
        .wait_for_log("attempt failed", Duration::from_secs(10))
        .await
    else {
        panic!(
            "no 'attempt failed' line in:\n{}",
            daemon.log.lock().unwrap()
        );
    };
    for (field, id) in [
        ("message_id", receipt["id"].as_str().unwrap()),
        (
            "delivery_id",
            receipt["deliveries"][0]["id"].as_str().unwrap(),
        ),
        ("endpoint_id", endpoint["id"].as_str().unwrap()),
    ] {
        assert!(
            line.contains(&format!("{field}={id}")),
            "{field} in {line:?}"
        );
    }
    assert!(
        !line.contains("attempt{"),
        "no span prefix at the default level: {line:?}"
    );
}

/// Each of a process's threads: (name, nice value), from /proc.
#[cfg(target_os = "linux")]
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the parenthesised name: state is the first, nice the 17th.
        let after_name = stat.rsplit(')').next().unwrap();
        let nice = after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        threads.push((name.trim().to_string(), nice));
    }
    threads
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_run_on_their_own_threads_below_the_api_priority() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_env(dir.path(), None, &[("HERALD_DELIVERY_NICENESS", "7")]);
    // A host name, so that resolving it starts one of the delivery runtime's blocking threads
    // (created by an already lowered worker: it must not be lowered twice).
    tms_endpoint(&daemon, &receiver.url().replace("127.0.0.1", "localhost")).await;
    let (status, _) = post(
        &daemon,
        json!({"tenant": "tms", "event_type": "e", "payload": {}}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert!(receiver.wait_for(1, Duration::from_secs(10)).await);

    let pid = daemon.child.id();
    let threads = threads(pid);
    let nice_of = |wanted: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, nice)| *nice)
            .collect()
    };
    // The main thread's priority is the API's: its runtime's workers have the default name.
    let base = nice_of("herald")[0];
    let api: Vec<i64> = ["tokio-rt-worker", "tokio-runtime-w"]
        .iter()
        .flat_map(|name| nice_of(name))
        .collect();
    let delivery = nice_of("herald-deliver");
    assert!(!api.is_empty() && !delivery.is_empty(), "{threads:?}");
    assert!(api.iter().all(|&nice| nice == base), "{threads:?}");
    assert!(delivery.iter().all(|&nice| nice == base + 7), "{threads:?}");
    // The writer threads hold the store's write lock, which accepting also takes: they keep
    // the API's priority.
    assert_eq!(nice_of("herald-record"), vec![base], "{threads:?}");
    assert_eq!(nice_of("herald-commit"), vec![base], "{threads:?}");
}

/// The allocator settings the daemon starts itself with (see `src/main.rs`): arenas committed
/// as used, and freed memory returned once unused for 100 ms — not at once, which cost ~9 % of
/// the CPU while delivering. An operator's own value wins.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_daemon_runs_with_its_allocator_settings_unless_given_others() {
    // Its MIMALLOC_* variables, from /proc.
    let environ = |daemon: &Daemon| -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{}/environ", daemon.child.id())).unwrap();
        raw.split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_"))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let own = environ(&daemon);
    assert!(
        own.iter().any(|v| v == "MIMALLOC_PURGE_DELAY=100"),
        "{own:?}"
    );
    assert!(
        own.iter().any(|v| v == "MIMALLOC_ARENA_EAGER_COMMIT=0"),
        "{own:?}"
    );
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_env(dir.path(), None, &[("MIMALLOC_PURGE_DELAY", "5")]);
    let given = environ(&daemon);
    assert!(
        given.iter().any(|v| v == "MIMALLOC_PURGE_DELAY=5"),
        "{given:?}"
    );
    assert!(
        !given.iter().any(|v| v == "MIMALLOC_PURGE_DELAY=100"),
        "{given:?}"
    );
    assert!(
        given.iter().any(|v| v == "MIMALLOC_ARENA_EAGER_COMMIT=0"),
        "{given:?}"
    );
}
