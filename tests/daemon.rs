//! The real `herald serve` binary, driven over HTTP and through its CLI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{ADMIN, Daemon, PRODUCER, metric};
use common::{Receiver, Reply};
use serde_json::{Value, json};

async fn create_endpoint(daemon: &Daemon, tenant: &str, url: &str) -> String {
    let endpoint = daemon
        .create_endpoint(json!({"tenant": tenant, "url": url, "policy": "quick", "default": true, "secret": "never-shown"}))
        .await;
    assert!(endpoint.get("secret").is_none());
    endpoint["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn end_to_end_through_the_api_and_the_cli() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    create_endpoint(&daemon, "acme", &receiver.url()).await;

    let body = json!({"tenant": "acme", "event_type": "job.completed", "payload": {"job_id": 7}})
        .to_string();
    let (status, receipt, _) = daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await;
    assert_eq!(status, 202, "{receipt}");
    assert!(receiver.wait_for(1, Duration::from_secs(10)).await);
    assert_eq!(receiver.requests()[0].body.as_ref(), br#"{"job_id":7}"#);

    let delivery_id = receipt["deliveries"][0]["id"].as_str().unwrap().to_string();
    let mut delivery = json!(null);
    for _ in 0..50 {
        delivery = daemon
            .admin("GET", &format!("/admin/deliveries/{delivery_id}"), None)
            .await
            .1;
        if delivery["status"] == "succeeded" {
            break;
        }
        receiver.wait_for(2, Duration::from_millis(100)).await; // bounded wait for the outcome write
    }
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    assert_eq!(delivery["attempts"][0]["status_code"], 200);

    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["deliveries", "--server", &daemon.base, "show", &delivery_id])
        .env("HERALD_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("succeeded") && text.contains(&delivery_id),
        "{text}"
    );

    let (status, message, _) = daemon
        .call(
            "GET",
            &format!("/v1/messages/{}", receipt["id"].as_str().unwrap()),
            Some(PRODUCER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(message["payload"], json!({"job_id": 7}));
}

/// (method, path, token, body, expected status)
type AuthCase<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, u16);

#[tokio::test]
async fn auth_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let message = json!({"tenant": "nobody", "event_type": "e", "payload": {}}).to_string();
    let table: &[AuthCase] = &[
        ("GET", "/admin/endpoints", None, None, 401),
        (
            "GET",
            "/admin/endpoints",
            Some("wrong-token-0123456789"),
            None,
            401,
        ),
        ("GET", "/admin/endpoints", Some(PRODUCER), None, 403),
        ("GET", "/admin/endpoints", Some(ADMIN), None, 200),
        ("GET", "/admin/deliveries", Some(PRODUCER), None, 403),
        ("GET", "/admin/policies", Some(PRODUCER), None, 403),
        ("POST", "/v1/messages", None, Some(&message), 401),
        (
            "POST",
            "/v1/messages",
            Some("wrong-token-0123456789"),
            Some(&message),
            401,
        ),
        ("POST", "/v1/messages", Some(PRODUCER), Some(&message), 202),
        ("POST", "/v1/messages", Some(ADMIN), Some(&message), 202),
        ("GET", "/healthz", None, None, 200),
    ];
    for (method, path, token, body, expected) in table {
        let (status, value, content_type) = daemon.call(method, path, *token, *body).await;
        assert_eq!(status, *expected, "{method} {path} with {token:?}: {value}");
        if status == 401 || status == 403 {
            assert_eq!(content_type, "application/problem+json");
            let kind = if status == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_eq!(value["type"], kind);
        }
    }
}

#[tokio::test]
async fn bad_inputs_get_a_clear_problem_and_change_nothing() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let endpoint_id = create_endpoint(&daemon, "acme", &receiver.url()).await;
    let gengo = daemon
        .admin(
            "POST",
            "/admin/endpoints",
            Some(json!({"tenant": "gengo", "url": "https://tms.example/cb", "policy": "gengo-3x-hourly", "default": true})),
        )
        .await;
    assert_eq!(gengo.0, 201);
    let before_endpoints = daemon.admin("GET", "/admin/endpoints", None).await.1;
    let before_deliveries = daemon.admin("GET", "/admin/deliveries", None).await.1;

    let long = "t".repeat(300);
    let big = "x".repeat(70_000);
    let msg = |v: Value| Some(v.to_string());
    let ep = |v: Value| Some(v.to_string());
    let table: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/v1/messages".into(),
            Some("{not json".into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            Some("[]".into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"event_type": "e", "payload": {}})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": 5, "event_type": "e", "payload": {}})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": "acme", "event_type": "e"})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": "", "event_type": "e", "payload": {}})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": long, "event_type": "e", "payload": {}})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": "acme", "event_type": "e\n", "payload": {}})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": "acme", "event_type": "e", "payload": {}, "extra": 1})),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(json!({"tenant": "acme", "event_type": "e", "payload": {"b": big}})),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(
                json!({"tenant": "acme", "event_type": "e", "payload": {}, "callback_url": "ftp://x.example/"}),
            ),
            400,
            "invalid_url",
        ),
        (
            "POST",
            "/v1/messages".into(),
            msg(
                json!({"tenant": "gengo", "event_type": "e", "payload": {}, "callback_url": "https://u:p@x.example/"}),
            ),
            400,
            "invalid_url",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(json!({"tenant": "acme", "url": "gopher://x.example/", "policy": "quick"})),
            400,
            "invalid_url",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(
                json!({"tenant": "acme", "url": "https://u:p@x.example/", "policy": "gengo-15m-12h"}),
            ),
            400,
            "invalid_url",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(json!({"tenant": "acme", "url": "https://x.example/", "policy": "nope"})),
            400,
            "unknown_policy",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(
                json!({"tenant": "acme", "url": "https://x.example/", "policy": "quick", "headers": {"X-A": "a\r\nInjected: 1"}}),
            ),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(
                json!({"tenant": "acme", "url": "https://x.example/", "policy": "quick", "headers": {"Bad\nName": "v"}}),
            ),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(
                json!({"tenant": "acme", "url": "https://x.example/", "policy": "quick", "headers": {"Host": "evil"}}),
            ),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/admin/endpoints".into(),
            ep(json!({"tenant": "acme", "url": "https://x.example/", "policy": "tolq"})),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/endpoints/not-an-id".into(),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/admin/endpoints/01a205f8-61c4-7282-a4e6-a73672472c08".into(),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/admin/deliveries/01a205f8-61c4-7282-a4e6-a73672472c08".into(),
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/admin/deliveries/01a205f8-61c4-7282-a4e6-a73672472c08/replay".into(),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/admin/deliveries?cursor=garbage".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/deliveries?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/deliveries?since=yesterday-ish".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/deliveries?status=lost".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/admin/deliveries?limit=0".into(),
            None,
            400,
            "invalid_request",
        ),
        ("GET", "/admin/policies/nope".into(), None, 404, "not_found"),
        (
            "PATCH",
            format!("/admin/endpoints/{endpoint_id}"),
            ep(json!({"policy": "nope"})),
            400,
            "unknown_policy",
        ),
        (
            "PATCH",
            format!("/admin/endpoints/{endpoint_id}"),
            ep(json!({"url": "not a url"})),
            400,
            "invalid_url",
        ),
        ("GET", "/no/such/route".into(), None, 404, "not_found"),
        // The query string, the path and the method: the extractors' and router's own
        // rejections are problem+json too.
        query("/admin/deliveries?limit=lots"),
        query("/admin/deliveries?limit=-1"),
        query("/admin/deliveries?limit=1001"),
        query("/admin/deliveries?status=lost&limit=5"),
        query("/admin/deliveries?order=sideways"),
        query("/admin/deliveries?colour=blue"),
        query("/admin/endpoints?tenant=a&tenant=b"),
        query(&format!("/admin/endpoints/{endpoint_id}/stats?days=abc")),
        query(&format!("/admin/endpoints/{endpoint_id}/stats?days=91")),
        (
            "GET",
            "/admin/endpoints/%FF%FE".into(),
            None,
            404,
            "not_found",
        ),
        ("GET", "/v1/messages/%C3%28".into(), None, 404, "not_found"),
        (
            "POST",
            "/admin/deliveries/%FF/replay".into(),
            None,
            404,
            "not_found",
        ),
        ("GET", "/admin/policies/%FF".into(), None, 404, "not_found"),
        (
            "PUT",
            "/v1/messages".into(),
            None,
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/messages".into(),
            None,
            405,
            "method_not_allowed",
        ),
        (
            "DELETE",
            "/admin/policies".into(),
            None,
            405,
            "method_not_allowed",
        ),
        ("POST", "/healthz".into(), None, 405, "method_not_allowed"),
    ];
    assert!(table.len() >= 45);
    for (method, path, body, expected, kind) in &table {
        let token = if path.starts_with("/v1") {
            PRODUCER
        } else {
            ADMIN
        };
        let (status, value, content_type) = daemon
            .call(method, path, Some(token), body.as_deref())
            .await;
        assert_eq!(status, *expected, "{method} {path} {body:?}: {value}");
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        assert_eq!(value["type"], *kind, "{method} {path}: {value}");
        assert!(value["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let too_large = daemon
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            table[9].2.as_deref(),
        )
        .await
        .1;
    assert_eq!(too_large["limit"], 61_440);
    assert!(too_large["size"].as_u64().unwrap() > 70_000);
    let not_allowed = reqwest::Client::new()
        .put(format!("{}/v1/messages", daemon.base))
        .bearer_auth(PRODUCER)
        .send()
        .await
        .unwrap();
    assert_eq!(not_allowed.headers()["allow"], "POST");
    // A body that is not JSON, whatever it holds.
    let message = json!({"tenant": "acme", "event_type": "e", "payload": {}}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/json",
    ] {
        let answer = reqwest::Client::new()
            .post(format!("{}/v1/messages", daemon.base))
            .bearer_auth(PRODUCER)
            .header("content-type", content_type)
            .body(message.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 415, "{content_type}");
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        let problem: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert_eq!(problem["type"], "unsupported_media_type");
    }

    assert_eq!(
        daemon.admin("GET", "/admin/endpoints", None).await.1,
        before_endpoints
    );
    assert_eq!(
        daemon.admin("GET", "/admin/deliveries", None).await.1,
        before_deliveries
    );
    assert_eq!(receiver.count(), 0);
}

/// A query string the route refuses: 400 `invalid_request`.
fn query(path: &str) -> (&'static str, String, Option<String>, u16, &'static str) {
    ("GET", path.to_string(), None, 400, "invalid_request")
}

#[tokio::test]
async fn the_same_idempotency_key_gives_one_message_and_one_delivery() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    create_endpoint(&daemon, "acme", &receiver.url()).await;
    let body =
        json!({"tenant": "acme", "event_type": "e", "payload": {"v": 1}, "idempotency_key": "k-1"})
            .to_string();
    let (first_status, first, _) = daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await;
    let (second_status, second, _) = daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await;
    assert_eq!((first_status, second_status), (202, 200));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["deliveries"][0]["id"], second["deliveries"][0]["id"]);
    assert!(receiver.wait_for(1, Duration::from_secs(10)).await);
    assert!(!receiver.wait_for(2, Duration::from_millis(500)).await);
    let list = daemon.admin("GET", "/admin/deliveries", None).await.1;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn metrics_agree_with_what_happened() {
    let receiver = Receiver::flaky().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    create_endpoint(&daemon, "acme", &receiver.url()).await;
    // A disabled endpoint with 3 held deliveries: the pending and disabled gauges show them.
    let quiet = create_endpoint(&daemon, "quiet", &receiver.url()).await;
    let disabled = daemon
        .admin("POST", &format!("/admin/endpoints/{quiet}/disable"), None)
        .await;
    assert_eq!(disabled.0, 200);
    for i in 0..3 {
        let body = json!({"tenant": "quiet", "event_type": "e", "payload": {"i": i}}).to_string();
        let answer = daemon
            .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
            .await;
        assert_eq!(answer.1["deliveries"][0]["status"], "held");
    }
    for i in 0..12 {
        let body = json!({"tenant": "acme", "event_type": "e", "payload": {"i": i}}).to_string();
        assert_eq!(
            daemon
                .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
                .await
                .0,
            202
        );
    }
    // Every message succeeds eventually; wait until 12 distinct ids got a 200.
    for _ in 0..100 {
        let finished = metric(
            &daemon.scrape().await,
            "herald_deliveries_finished_total",
            &["status=\"succeeded\""],
        );
        if finished >= 12.0 {
            break;
        }
        receiver
            .wait_for(receiver.count() + 1, Duration::from_millis(100))
            .await;
    }
    // A scrape is not a snapshot: it reads the pending count first and renders the counters
    // after, so the scrape that first shows the 12th success may hold the pending count from
    // just before that delivery was recorded (the counter is incremented after the record).
    // Judge everything on a scrape taken after the last success was seen.
    let text = daemon.scrape().await;
    let requests = receiver.count() as f64;
    let failures = receiver
        .requests()
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 == 0)
        .count() as f64;
    assert_eq!(
        metric(&text, "herald_messages_accepted_total", &[]),
        15.0,
        "{text}"
    );
    assert_eq!(metric(&text, "herald_deliveries_pending", &[]), 3.0);
    assert_eq!(metric(&text, "herald_endpoints_disabled ", &[]), 1.0);
    assert_eq!(
        metric(
            &text,
            "herald_deliveries_finished_total",
            &["status=\"succeeded\""]
        ),
        12.0
    );
    assert_eq!(
        metric(&text, "herald_attempts_total", &["outcome=\"success\""]),
        requests - failures
    );
    assert_eq!(
        metric(&text, "herald_attempts_total", &["outcome=\"rejected\""]),
        failures
    );
    assert!(
        !text.contains(&receiver.addr.to_string()),
        "no URLs in metrics"
    );
}

/// The Prometheus text of `daemon`'s first scrape whose `name` samples with `labels` add up to
/// `want`; panics with the last scrape after 10 s.
async fn await_metric(daemon: &Daemon, name: &str, labels: &[&str], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = daemon.scrape().await;
        if metric(&text, name, labels) == want {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every way a delivery reaches a final status is counted once, with the labels an attempt's
/// is counted with: by its attempt, skipped by delta mode, cancelled by an operator, and
/// closed by its endpoint's deletion.
#[tokio::test]
async fn every_way_a_delivery_finishes_is_counted_once() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    create_endpoint(&daemon, "acme", &receiver.url()).await;
    let doomed = create_endpoint(&daemon, "doomed", &receiver.url()).await;
    let send = |body: Value| {
        let daemon = &daemon;
        async move {
            let body = body.to_string();
            let (status, receipt, _) = daemon
                .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
                .await;
            assert_eq!(status, 202, "{receipt}");
            receipt["deliveries"][0].clone()
        }
    };
    let finished = "herald_deliveries_finished_total";
    let labels = |status: &'static str| ["policy=\"quick\"", status];

    // Delivered, then the same payload under the same dedup key: skipped when accepted.
    let same =
        json!({"tenant": "acme", "event_type": "e", "dedup_key": "job-1", "payload": {"v": 1}});
    send(same.clone()).await;
    await_metric(&daemon, finished, &labels("status=\"succeeded\""), 1.0).await;
    assert_eq!(send(same).await["status"], "skipped");
    // Cancelled while scheduled an hour ahead.
    let later =
        send(json!({"tenant": "acme", "event_type": "e", "delay": "1h", "payload": {}})).await;
    let cancel = format!("/admin/deliveries/{}/cancel", later["id"].as_str().unwrap());
    let (status, cancelled) = daemon.admin("POST", &cancel, None).await;
    assert_eq!(
        (status, &cancelled["status"]),
        (200, &json!("failed")),
        "{cancelled}"
    );
    // Two closed by their endpoint's deletion.
    for _ in 0..2 {
        send(json!({"tenant": "doomed", "event_type": "e", "delay": "1h", "payload": {}})).await;
    }
    let deleted = daemon
        .admin("DELETE", &format!("/admin/endpoints/{doomed}"), None)
        .await;
    assert_eq!(deleted.0, 204);

    let text = await_metric(&daemon, finished, &labels("status=\"failed\""), 3.0).await;
    assert_eq!(
        metric(&text, finished, &labels("status=\"skipped\"")),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, finished, &labels("status=\"succeeded\"")),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, finished, &[]), 5.0, "{text}");
    // A second cancel changes nothing, and counts nothing.
    assert_eq!(daemon.admin("POST", &cancel, None).await.0, 409);
    let text = await_metric(&daemon, finished, &[], 5.0).await;
    assert_eq!(
        metric(&text, finished, &labels("status=\"failed\"")),
        3.0,
        "{text}"
    );
}

/// A deleted endpoint's finished deliveries still say where they were sent, redacted as the
/// live view shows it (no credentials, no query).
#[tokio::test]
async fn deliveries_keep_their_url_after_their_endpoint_is_deleted() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let with_token = format!("{}?token=secret-in-query", receiver.url());
    let endpoint = create_endpoint(&daemon, "acme", &with_token).await;
    let body =
        json!({"tenant": "acme", "event_type": "e", "payload": {}, "idempotency_key": "k-1"})
            .to_string();
    let (status, receipt, _) = daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await;
    assert_eq!(status, 202, "{receipt}");
    let message = receipt["id"].as_str().unwrap().to_string();
    let delivery = receipt["deliveries"][0]["id"].as_str().unwrap().to_string();
    let show = format!("/admin/deliveries/{delivery}");
    await_metric(&daemon, "herald_deliveries_finished_total", &[], 1.0).await;
    let live = daemon.admin("GET", &show, None).await.1;
    assert_eq!(live["status"], "succeeded", "{live}");
    assert_eq!(live["url"], receiver.url(), "{live}");

    let deleted = daemon
        .admin("DELETE", &format!("/admin/endpoints/{endpoint}"), None)
        .await;
    assert_eq!(deleted.0, 204);

    let shown = daemon.admin("GET", &show, None).await.1;
    assert_eq!(shown["url"], receiver.url(), "{shown}");
    assert_eq!(shown["attempts"][0]["status_code"], 200, "{shown}");
    let listed = daemon.admin("GET", "/admin/deliveries", None).await.1;
    assert_eq!(listed["deliveries"][0]["url"], receiver.url(), "{listed}");
    let (_, of_message, _) = daemon
        .call(
            "GET",
            &format!("/v1/messages/{message}"),
            Some(PRODUCER),
            None,
        )
        .await;
    assert_eq!(
        of_message["deliveries"][0]["url"],
        receiver.url(),
        "{of_message}"
    );
    // The receipt of a repeated send too.
    let (status, repeated, _) = daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await;
    assert_eq!(status, 200, "{repeated}");
    assert_eq!(
        repeated["deliveries"][0]["url"],
        receiver.url(),
        "{repeated}"
    );
    assert!(!format!("{shown}{listed}{of_message}{repeated}").contains("secret-in-query"));
}

/// A database that is not there is named, without its password, with the reason the
/// connection failed (the pool alone reports a timeout).
#[tokio::test]
async fn an_unreachable_database_is_named_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let store = format!("postgres://herald:pw-secret@127.0.0.1:{port}/herald");
    let Err((status, log)) =
        Daemon::try_start_with_env(dir.path(), None, &[("HERALD_STORE", &store)])
    else {
        panic!("a daemon started without its database");
    };
    assert!(!status.success());
    assert!(log.contains("Connection refused"), "{log}");
    assert!(
        log.contains(&format!("connecting to postgres://127.0.0.1:{port}/herald")),
        "{log}"
    );
    assert!(!log.contains("pw-secret"), "{log}");
}

#[tokio::test]
async fn sigterm_while_messages_flow_exits_0_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/hook"); // nothing listens yet
    let mut daemon = Daemon::start(dir.path());
    create_endpoint(&daemon, "acme", &url).await;
    let mut acked = std::collections::HashSet::new();
    for i in 0..200 {
        let body = json!({"tenant": "acme", "event_type": "e", "payload": {"i": i}}).to_string();
        let (status, receipt, _) = daemon
            .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
            .await;
        assert_eq!(status, 202);
        acked.insert(receipt["id"].as_str().unwrap().to_string());
    }
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");

    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        |_, _| Reply::Status(200, "ok"),
    );
    let _daemon = Daemon::start(dir.path());
    assert!(
        receiver
            .wait_for(acked.len(), Duration::from_secs(30))
            .await
    );
    let seen = receiver.message_ids();
    assert!(
        acked.iter().all(|id| seen.contains(id)),
        "every acknowledged message arrives"
    );
}

#[tokio::test]
async fn secrets_are_neither_stored_in_clear_nor_logged() {
    let receiver = Receiver::first_then_ok(Reply::Status(500, "first attempt fails")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let secret = "s3cret-customer-api-key-0001";
    let token = "t0ken-memsource-0002";
    let header = "Bearer h3ader-credential-0003";
    let url_token = "url-t0ken-0004";
    let password = "passw0rd-0005";
    let url = format!(
        "http://user:{password}@{}/hook?token={url_token}",
        receiver.addr
    );
    let (status, created) = daemon
        .admin(
            "POST",
            "/admin/endpoints",
            Some(
                json!({"tenant": "acme", "url": url, "policy": "quick", "secret": secret,
                        "token": token, "headers": {"Authorization": header}, "default": true}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let body = json!({"tenant": "acme", "event_type": "e", "payload": {"n": 1}}).to_string();
    assert_eq!(
        daemon
            .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
            .await
            .0,
        202
    );
    // A message's own callback URL, with credentials and a query token, is sealed as well.
    let override_token = "callback-t0ken-0006";
    let override_password = "callback-passw0rd-0007";
    let callback = format!(
        "http://cb:{override_password}@{}/own?token={override_token}",
        receiver.addr
    );
    let body = json!({"tenant": "acme", "event_type": "e", "payload": {"n": 2},
                      "callback_url": callback})
    .to_string();
    let (status, sent, _) = daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await;
    assert_eq!(status, 202, "{sent}");
    assert!(
        receiver.wait_for(3, Duration::from_secs(10)).await,
        "retried and delivered"
    );
    assert_eq!(
        receiver.requests()[1].header("authorization"),
        header,
        "the header itself is sent"
    );
    let listed = daemon
        .admin("GET", "/admin/endpoints", None)
        .await
        .1
        .to_string();
    assert_eq!(daemon.terminate().code(), Some(0));

    let needles = [
        secret,
        token,
        "h3ader-credential-0003",
        url_token,
        password,
        override_token,
        override_password,
    ];
    let log = daemon.log.lock().unwrap().clone();
    assert!(log.contains("attempt failed"), "the debug log was captured");
    for needle in needles {
        assert!(!log.contains(needle), "the log contains {needle:?}");
        assert!(!listed.contains(needle), "the API returned {needle:?}");
    }
    for entry in walk(&dir.path().join("store")) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains {needle:?} in clear text",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn the_example_configuration_in_deploy_starts_the_daemon() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/herald.toml");
    let daemon = Daemon::start_with(dir.path(), Some(&example));
    assert_eq!(daemon.call("GET", "/healthz", None, None).await.0, 200);
    create_endpoint(&daemon, "acme", &receiver.url()).await;
    let body = json!({"tenant": "acme", "event_type": "e", "payload": {}}).to_string();
    assert_eq!(
        daemon
            .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
            .await
            .0,
        202
    );
    assert!(receiver.wait_for(1, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn the_openapi_document_parses_and_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let (status, doc, content_type) = daemon.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    // Every route of the contract (DESIGN "Interfaces"), exactly.
    let mut expected = vec![
        "POST /v1/messages",
        "GET /v1/messages/{id}",
        "POST /admin/endpoints",
        "GET /admin/endpoints",
        "GET /admin/endpoints/{id}",
        "PATCH /admin/endpoints/{id}",
        "DELETE /admin/endpoints/{id}",
        "POST /admin/endpoints/{id}/enable",
        "POST /admin/endpoints/{id}/disable",
        "POST /admin/endpoints/{id}/test",
        "GET /admin/endpoints/{id}/stats",
        "GET /admin/deliveries",
        "GET /admin/deliveries/{id}",
        "POST /admin/deliveries/{id}/replay",
        "POST /admin/deliveries/{id}/retry",
        "POST /admin/deliveries/{id}/cancel",
        "POST /admin/replay",
        "GET /admin/replays/{id}",
        "GET /admin/policies",
        "GET /admin/policies/{name}",
        "GET /metrics",
        "GET /healthz",
        "GET /readyz",
        "POST /admin/store/backup",
        "GET /openapi.json",
    ];
    expected.sort();
    let paths = doc["paths"].as_object().expect("paths");
    let mut listed: Vec<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    listed.sort();
    assert_eq!(listed, expected);
    // Every documented schema and response reference resolves.
    let text = doc.to_string();
    for kind in ["schemas", "responses"] {
        let components = doc["components"][kind].as_object().expect(kind);
        let prefix = format!("\"$ref\":\"#/components/{kind}/");
        for reference in text.split(&prefix).skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(components.contains_key(name), "dangling $ref {kind}/{name}");
        }
    }
    // Every operation lists the errors it can meet, each as problem+json.
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
            let has_in = |place: &str| parameters.iter().any(|p| p["in"] == place);
            let mut expected = vec!["421"];
            if secured {
                expected.push("401");
            }
            if secured && path.starts_with("/admin") {
                expected.push("403");
            }
            if has_in("path") {
                expected.push("404");
            }
            if has_in("query") {
                expected.push("400");
            }
            if op.get("requestBody").is_some() {
                expected.extend(["400", "408", "413", "415"]);
            }
            for status in expected {
                let response = &responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path} does not list {status}"));
                let resolved = match response["$ref"].as_str() {
                    Some(reference) => {
                        let name = reference.rsplit('/').next().unwrap();
                        &doc["components"]["responses"][name]
                    }
                    None => response,
                };
                assert!(
                    resolved["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status}: {resolved}"
                );
            }
        }
    }
    assert!(doc["components"]["responses"]["MethodNotAllowed"].is_object());
    // Value limits are declared.
    let parameter = |path: &str, name: &str| {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))["schema"]
            .clone()
    };
    let limit = parameter("/admin/deliveries", "limit");
    assert_eq!(
        (limit["minimum"].clone(), limit["maximum"].clone()),
        (json!(1), json!(1000))
    );
    let days = parameter("/admin/endpoints/{id}/stats", "days");
    assert_eq!(
        (days["minimum"].clone(), days["maximum"].clone()),
        (json!(1), json!(90))
    );
    assert_eq!(
        parameter("/admin/deliveries", "status")["enum"],
        json!(["pending", "succeeded", "failed", "skipped", "held"])
    );
    assert_eq!(
        parameter("/admin/deliveries", "order")["enum"],
        json!(["asc", "desc"])
    );
    // And every listed operation is served: with an admin token and placeholder ids, the answer
    // comes from its handler, never from the router's "no such route" or a 405.
    for op in &listed {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
            .replace("{name}", "gengo-15m-12h");
        let body = matches!(method, "POST" | "PATCH").then_some("{}");
        let (status, answer, _) = daemon.call(method, &path, Some(ADMIN), body).await;
        assert_ne!(status, 405, "{op}");
        let fallback = answer["detail"].as_str() == Some("no such route");
        assert!(!fallback, "{op} is documented but not served");
    }
    // The CLI prints the same document.
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, doc);
}
