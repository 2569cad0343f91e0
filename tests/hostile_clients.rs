//! Clients that do not play by the rules, against the real `herald serve`: connections that
//! send half a request or nothing, bodies that never end, a browser page posting across sites,
//! a rebound DNS name, an unusual but valid `Authorization` header, a payload nested too deep.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{ADMIN, Daemon, PRODUCER};
use common::raw_http::{RawConnection, exchange};
use serde_json::{Value, json};

/// The daemon with short connection timeouts, so that tests see them expire.
fn daemon_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
    Daemon::start_with_env(dir, None, env)
}

/// The tokenless loopback mode: no admin and no producer token.
fn tokenless(dir: &std::path::Path) -> Daemon {
    daemon_with(
        dir,
        &[("HERALD_ADMIN_TOKEN", ""), ("HERALD_PRODUCER_TOKEN", "")],
    )
}

#[tokio::test]
async fn half_sent_and_silent_connections_are_closed_while_healthz_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with(dir.path(), &[("HERALD_HEADER_READ_TIMEOUT", "1s")]);
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for n in 0..10 {
        let mut connection = RawConnection::open(daemon.addr()).await;
        if n % 2 == 0 {
            connection
                .send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow")
                .await;
        }
        stalled.push(connection);
    }

    let (status, _, _) = daemon.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "healthz answers while they hang");
    for connection in &mut stalled {
        assert!(
            connection.closed_within(Duration::from_secs(10)).await,
            "a stalled connection is still open 10 s after the 1 s header timeout"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before the header timeout: {:?}",
        opened.elapsed()
    );
    let (status, _, _) = daemon.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_a_408_problem_and_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with(dir.path(), &[("HERALD_BODY_READ_TIMEOUT", "1s")]);
    let mut connection = RawConnection::open(daemon.addr()).await;
    connection
        .send(&format!(
            "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {PRODUCER}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"tenant\":"
        ))
        .await;
    let response = connection
        .response(Duration::from_secs(10))
        .await
        .expect("an answer before the close");
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(response.json()["type"], "request_timeout");
    assert!(connection.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_for_the_idle_timeout_then_closes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with(
        dir.path(),
        &[
            ("HERALD_HEADER_READ_TIMEOUT", "1s"),
            ("HERALD_IDLE_TIMEOUT", "3s"),
        ],
    );
    let healthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut connection = RawConnection::open(daemon.addr()).await;
    connection.send(healthz).await;
    let first = connection.response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.status, 200);

    // Idle for longer than the header timeout: the idle timeout is its own clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    connection.send(healthz).await;
    let second = connection
        .response(Duration::from_secs(5))
        .await
        .expect("the kept-alive connection still serves");
    assert_eq!(second.status, 200);

    let idle_since = Instant::now();
    assert!(
        connection.closed_within(Duration::from_secs(10)).await,
        "an idle connection is still open 10 s after the 3 s idle timeout"
    );
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(2500), "closed after {idle:?}");
}

#[tokio::test]
async fn with_the_cap_held_by_silent_connections_the_daemon_serves_once_they_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with(
        dir.path(),
        &[
            ("HERALD_MAX_CONNECTIONS", "4"),
            ("HERALD_HEADER_READ_TIMEOUT", "2s"),
        ],
    );
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(RawConnection::open(daemon.addr()).await);
    }
    let asked = Instant::now();
    let mut fifth = RawConnection::open(daemon.addr()).await;
    fifth
        .send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    let answer = fifth
        .response(Duration::from_secs(15))
        .await
        .expect("served once a slot is free");
    let waited = asked.elapsed();
    assert_eq!(answer.status, 200);
    assert!(
        waited >= Duration::from_millis(1500),
        "answered after {waited:?}, while 4 silent connections held the cap of 4"
    );
    for connection in &mut silent {
        assert!(connection.closed_within(Duration::from_secs(5)).await);
    }
    let (status, _, _) = daemon.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sigterm_drains_without_waiting_for_stalled_or_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path()); // default timeouts: 10 s for a header
    let mut half_sent = RawConnection::open(daemon.addr()).await;
    half_sent
        .send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await;
    let mut kept_alive = RawConnection::open(daemon.addr()).await;
    kept_alive
        .send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    assert_eq!(
        kept_alive
            .response(Duration::from_secs(5))
            .await
            .unwrap()
            .status,
        200
    );
    let _silent = RawConnection::open(daemon.addr()).await;

    let started = Instant::now();
    let pid = daemon.child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(daemon.terminate());
    });
    let Ok(status) = rx.recv_timeout(Duration::from_secs(8)) else {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("SIGTERM did not stop the daemon within 8 s");
    };
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(half_sent.closed_within(Duration::from_secs(1)).await);
    assert!(kept_alive.closed_within(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn a_cross_site_simple_post_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = tokenless(dir.path());
    let endpoint = json!({"tenant": "acme", "url": "https://attacker.example/cb", "policy": "tolq",
                          "secret": "0123456789abcdef", "default": true})
    .to_string();
    // What a web page can send without a preflight: text/plain, a form, multipart, a typeless blob.
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| vec![("Content-Type", t)])
            .unwrap_or_default();
        let answer = exchange(
            daemon.addr(),
            "POST",
            "/admin/endpoints",
            &headers,
            Some(&endpoint),
        )
        .await;
        assert_eq!(answer.status, 415, "{content_type:?}: {answer:?}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(answer.json()["type"], "unsupported_media_type");
    }
    let message = json!({"tenant": "acme", "event_type": "e", "payload": {}}).to_string();
    let answer = exchange(
        daemon.addr(),
        "POST",
        "/v1/messages",
        &[("Content-Type", "text/plain")],
        Some(&message),
    )
    .await;
    assert_eq!(answer.status, 415);

    let (status, list) = daemon.admin("GET", "/admin/endpoints", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["endpoints"], json!([]), "nothing was created");

    // The same request as JSON works; a bodyless POST needs no content type.
    let created = exchange(
        daemon.addr(),
        "POST",
        "/admin/endpoints",
        &[("Content-Type", "application/json; charset=utf-8")],
        Some(&endpoint),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["id"].as_str().unwrap().to_string();
    let disabled = exchange(
        daemon.addr(),
        "POST",
        &format!("/admin/endpoints/{id}/disable"),
        &[],
        None,
    )
    .await;
    assert_eq!(disabled.status, 200, "{disabled:?}");
}

#[tokio::test]
async fn a_foreign_host_is_refused_without_tokens_and_not_checked_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = tokenless(dir.path());
    let port = daemon.addr().port();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "10.0.0.1".to_string(),
        String::new(),
    ] {
        for path in ["/admin/endpoints", "/healthz"] {
            let answer = exchange(daemon.addr(), "GET", path, &[("Host", &host)], None).await;
            assert_eq!(answer.status, 421, "Host {host:?} {path}: {answer:?}");
            assert_eq!(
                answer.header("content-type"),
                Some("application/problem+json")
            );
            assert_eq!(answer.json()["type"], "misdirected_request");
        }
    }
    let message = json!({"tenant": "acme", "event_type": "e", "payload": {}}).to_string();
    let answer = exchange(
        daemon.addr(),
        "POST",
        "/v1/messages",
        &[
            ("Host", "evil.example"),
            ("Content-Type", "application/json"),
        ],
        Some(&message),
    )
    .await;
    assert_eq!(answer.status, 421);

    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        "127.1.2.3".to_string(),
        format!("localhost:{port}"),
        "localhost".to_string(),
        "LocalHost".to_string(),
        format!("[::1]:{port}"),
        "[::1]".to_string(),
    ] {
        let answer = exchange(
            daemon.addr(),
            "GET",
            "/admin/endpoints",
            &[("Host", &host)],
            None,
        )
        .await;
        assert_eq!(answer.status, 200, "Host {host:?}: {answer:?}");
    }

    // With tokens, a name is how the daemon is reached (a service name, a load balancer).
    let dir = tempfile::tempdir().unwrap();
    let with_tokens = Daemon::start(dir.path());
    let answer = exchange(
        with_tokens.addr(),
        "GET",
        "/admin/endpoints",
        &[
            ("Host", "herald.internal.example"),
            ("Authorization", &format!("Bearer {ADMIN}")),
        ],
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let cases = [
        (format!("bearer {ADMIN}"), 200),
        (format!("BEARER {ADMIN}"), 200),
        (format!("Bearer  {ADMIN}"), 200),
        (format!("Basic {ADMIN}"), 401),
        (format!("Bearer{ADMIN}"), 401),
        (format!("bearer {PRODUCER}"), 403),
    ];
    for (authorization, expected) in cases {
        let answer = exchange(
            daemon.addr(),
            "GET",
            "/admin/endpoints",
            &[("Authorization", &authorization)],
            None,
        )
        .await;
        assert_eq!(answer.status, expected, "{authorization:?}: {answer:?}");
    }
}

/// `{"a": {"a": ... 1}}`, `depth` objects deep, with a space after every colon.
fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn a_payload_nested_too_deep_is_refused_and_one_at_the_limit_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let send = |payload: String| {
        format!(r#"{{"tenant": "acme", "event_type": "e", "payload": {payload}}}"#)
    };

    let (status, problem, content_type) = daemon
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            Some(&send(nested(65))),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["type"], "invalid_request");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("64"), "the limit is stated: {detail}");
    let (status, problem, _) = daemon
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            Some(&send(nested(500))),
        )
        .await;
    assert_eq!(status, 400, "{problem}");

    let deepest = nested(64);
    let (status, receipt, _) = daemon
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            Some(&send(deepest.clone())),
        )
        .await;
    assert_eq!(status, 202, "{receipt}");
    let id = receipt["id"].as_str().unwrap();
    let text = reqwest::Client::new()
        .get(format!("{}/v1/messages/{id}", daemon.base))
        .bearer_auth(PRODUCER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("\"payload\":{deepest}")),
        "the payload reads back byte for byte: {text}"
    );
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        message["payload"],
        serde_json::from_str::<Value>(&deepest).unwrap()
    );
}
