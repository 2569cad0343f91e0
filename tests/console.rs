//! The operator console in a real browser: headless Chromium through ChromeDriver, against the
//! real `herald serve` binary and real receivers. Screenshots land in `target/ui-shots/`.
//!
//! Without a browser installed these tests say so and pass; with `CI=true` they fail instead.

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{Browser, DESKTOP, PHONE};
use common::daemon::{ADMIN, Daemon, PRODUCER};
use common::{Receiver, Reply};
use serde_json::{Value, json};

/// Longest wait for anything the page does by itself (it refreshes every few seconds).
const PATIENCE: Duration = Duration::from_secs(20);

/// Two browsers at a time: each is several processes, and the machine may have two cores.
static BROWSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn create_endpoint(daemon: &Daemon, body: Value) -> String {
    let endpoint = daemon.create_endpoint(body).await;
    endpoint["id"].as_str().unwrap().to_string()
}

async fn send(daemon: &Daemon, tenant: &str, event_type: &str) -> String {
    let body = json!({"tenant": tenant, "event_type": event_type, "payload": {"job_id": 7}});
    let (status, receipt, _) = daemon
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 202, "{receipt}");
    receipt["deliveries"][0]["id"].as_str().unwrap().to_string()
}

/// Opens `path` in a fresh tab and signs in there: the deep link is shown after sign-in.
async fn sign_in_at(browser: &Browser, daemon: &Daemon, path: &str) {
    browser.goto(&format!("{}{path}", daemon.base)).await;
    browser.wait_for("#token", None, PATIENCE).await;
    browser.type_into("#token", ADMIN).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for("#sign-out", None, PATIENCE).await;
}

/// Starts recording Content-Security-Policy violations in the page (a blocked style or script
/// would otherwise fail silently).
async fn watch_csp(browser: &Browser) {
    browser
        .script(
            "window.cspViolations = [];
             document.addEventListener('securitypolicyviolation',
                 (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));",
            json!([]),
        )
        .await;
}

async fn assert_no_csp_violations(browser: &Browser) {
    let violations = browser
        .script("return window.cspViolations;", json!([]))
        .await;
    assert_eq!(violations, json!([]), "the page broke its own CSP");
}

async fn session_token(browser: &Browser) -> Value {
    browser
        .script(
            "return sessionStorage.getItem('herald.console.admin-token');",
            json!([]),
        )
        .await
}

#[tokio::test]
async fn the_console_is_served_without_a_token_with_strict_headers_and_stays_out_of_the_api_document()
 {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let client = reqwest::Client::new();

    for path in [
        "/ui/",
        "/ui/endpoints/0190c0de-0000-7000-8000-000000000000",
        "/ui/deliveries?status=failed",
        "/ui/no/such/page",
    ] {
        let response = client
            .get(format!("{}{path}", daemon.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let html = response.text().await.unwrap();
        // No inline script or style: every script and stylesheet comes from /ui/assets/.
        assert!(html.contains(r#"<script type="module" src="/ui/assets/js/app.js">"#));
        assert!(!html.contains("<style"), "{html}");
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(!html.contains(ADMIN));
    }

    let script = client
        .get(format!("{}/ui/assets/js/app.js", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].clone();
    let again = client
        .get(format!("{}/ui/assets/js/app.js", daemon.base))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let (status, problem, content_type) = daemon
        .call("GET", "/ui/assets/js/missing.js", None, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["type"], "not_found");
    let missing = client
        .get(format!("{}/ui/assets/js/missing.js", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["x-content-type-options"], "nosniff");
    assert!(missing.headers().contains_key("content-security-policy"));

    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/ui/");
    assert_eq!(redirect.headers()["x-frame-options"], "DENY");

    let (_, document, _) = daemon.call("GET", "/openapi.json", None, None).await;
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert!(!paths.is_empty());
    assert!(paths.iter().all(|p| !p.starts_with("/ui")), "{paths:?}");
}

#[tokio::test]
async fn a_wrong_token_shows_an_error_and_no_data_and_signing_out_forgets_the_token() {
    let _turn = BROWSERS.acquire().await.unwrap();
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let url = "https://hooks.acme.example/herald";
    let endpoint = create_endpoint(
        &daemon,
        json!({"tenant": "acme", "url": url, "policy": "quick", "default": true}),
    )
    .await;

    browser.goto(&format!("{}/ui/", daemon.base)).await;
    browser.wait_for("#token", None, PATIENCE).await;
    browser
        .type_into("#token", "not-the-admin-token-at-all")
        .await;
    browser.click("form button[type=submit]").await;
    browser
        .wait_for("#sign-in-error", Some("not accepted"), PATIENCE)
        .await;
    browser.screenshot("sign-in-wrong-token-desktop").await;
    let shown = browser.page_text().await;
    assert!(!shown.contains("hooks.acme.example"), "{shown}");
    assert!(!shown.contains("acme"), "{shown}");
    assert_eq!(browser.count("#endpoints").await, 0);
    assert_eq!(browser.count_visible("#sign-out, .mainnav").await, 0);
    assert_eq!(session_token(&browser).await, Value::Null);

    // The producer token is a real token, but not one that may read endpoints.
    browser.type_into("#token", PRODUCER).await;
    browser.click("form button[type=submit]").await;
    browser
        .wait_for("#sign-in-error", Some("producer token"), PATIENCE)
        .await;
    assert_eq!(session_token(&browser).await, Value::Null);

    browser.type_into("#token", ADMIN).await;
    browser.click("form button[type=submit]").await;
    let row = format!("#endpoints tr[data-endpoint-id='{endpoint}']");
    browser
        .wait_for(&row, Some("hooks.acme.example/herald"), PATIENCE)
        .await;
    assert!(browser.text(&row).await.contains("acme"));
    assert_eq!(session_token(&browser).await, json!(ADMIN));

    // An unknown console path is the app's own "not found", still signed in.
    browser
        .goto(&format!("{}/ui/no/such/page", daemon.base))
        .await;
    browser
        .wait_for("h1", Some("Page not found"), PATIENCE)
        .await;
    assert_eq!(browser.count_visible("#sign-out").await, 1);

    browser.click("#sign-out").await;
    browser.wait_for("#token", None, PATIENCE).await;
    assert_eq!(session_token(&browser).await, Value::Null);
    assert!(!browser.page_text().await.contains("hooks.acme.example"));
}

#[tokio::test]
async fn a_failed_delivery_opened_by_its_deep_link_is_replayed_and_turns_succeeded_by_itself() {
    let _turn = BROWSERS.acquire().await.unwrap();
    let Some(browser) = Browser::start().await else {
        return;
    };
    // The receiver is down for the first two requests, then back.
    let receiver = Receiver::start(|n, _| {
        if n < 2 {
            Reply::Status(503, "{\"error\":\"maintenance\"}")
        } else {
            Reply::Status(200, "{\"ok\":true}")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "once",
        "[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 1\n[request]\ntimeout = \"2s\"\n",
    );
    let daemon = Daemon::start(dir.path());
    let endpoint = create_endpoint(
        &daemon,
        json!({"tenant": "acme", "url": receiver.url(), "policy": "once", "default": true}),
    )
    .await;
    let first = send(&daemon, "acme", "job.completed").await;
    let second = send(&daemon, "acme", "job.completed").await;
    assert!(receiver.wait_for(2, PATIENCE).await);

    sign_in_at(&browser, &daemon, &format!("/ui/deliveries/{first}")).await;
    watch_csp(&browser).await;
    browser
        .wait_for("#delivery-status[data-status=failed]", None, PATIENCE)
        .await;
    browser
        .wait_for("#attempts tbody tr", Some("HTTP 503"), PATIENCE)
        .await;
    assert!(browser.page_text().await.contains("maintenance"));
    browser.screenshot("delivery-failed-desktop").await;

    browser.click("#replay").await;
    assert!(receiver.wait_for(3, PATIENCE).await);
    browser
        .wait_for("#delivery-status[data-status=succeeded]", None, PATIENCE)
        .await;
    browser
        .wait_for("#attempts tbody tr", Some("HTTP 200"), PATIENCE)
        .await;
    assert_eq!(browser.count("#attempts tbody tr").await, 2);
    browser.screenshot("delivery-replayed-desktop").await;

    // The other failed delivery, by the endpoint's bulk replay, with its progress shown.
    browser
        .goto(&format!("{}/ui/endpoints/{endpoint}", daemon.base))
        .await;
    watch_csp(&browser).await;
    browser.wait_for("#replay-failed", None, PATIENCE).await;
    browser.click("#replay-failed").await;
    browser
        .wait_for("#replay-done", Some("1 of 1"), PATIENCE)
        .await;
    assert!(receiver.wait_for(4, PATIENCE).await);
    let (_, delivery) = daemon
        .admin("GET", &format!("/admin/deliveries/{second}"), None)
        .await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 2);
    assert_no_csp_violations(&browser).await;
}

#[tokio::test]
async fn a_pending_delivery_is_attempted_now_or_cancelled_from_its_page() {
    let _turn = BROWSERS.acquire().await.unwrap();
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The next attempt would be an hour away.
    write_policy(
        dir.path(),
        "hourly",
        "[schedule]\nkind = \"fixed\"\ninterval = \"1h\"\nmax_attempts = 5\n[request]\ntimeout = \"2s\"\n",
    );
    let daemon = Daemon::start(dir.path());
    let down = Receiver::start(|_, _| Reply::Status(503, "down")).await;
    create_endpoint(
        &daemon,
        json!({"tenant": "initech", "url": down.url(), "policy": "hourly", "default": true}),
    )
    .await;
    let pending = send(&daemon, "initech", "job.completed").await;
    assert!(down.wait_for(1, PATIENCE).await);
    sign_in_at(&browser, &daemon, &format!("/ui/deliveries/{pending}")).await;
    watch_csp(&browser).await;
    browser
        .wait_for("#delivery-status[data-status=pending]", None, PATIENCE)
        .await;
    browser.wait_for("#retry-now", None, PATIENCE).await;
    assert_eq!(browser.count_visible("#replay").await, 0);
    browser.click("#retry-now").await;
    assert!(down.wait_for(2, PATIENCE).await);
    browser
        .wait_for("#attempts-title", Some("Attempts (2)"), PATIENCE)
        .await;
    browser.screenshot("delivery-pending-desktop").await;
    browser.click("#cancel").await;
    browser.wait_for("dialog[open]", None, PATIENCE).await;
    browser.screenshot("delivery-cancel-dialog-desktop").await;
    browser.click("#confirm-cancel").await;
    browser
        .wait_for("#delivery-status[data-status=failed]", None, PATIENCE)
        .await;
    browser.wait_for("#replay", None, PATIENCE).await;
    assert_eq!(browser.count_visible("#retry-now, #cancel").await, 0);
    assert_eq!(down.count(), 2);
    assert_no_csp_violations(&browser).await;
}

#[tokio::test]
async fn an_endpoint_is_disabled_enabled_tested_and_deleted_from_its_page() {
    let _turn = BROWSERS.acquire().await.unwrap();
    let Some(browser) = Browser::start().await else {
        return;
    };
    let receiver = Receiver::start(|_, _| Reply::Status(200, "{\"received\":true}")).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let endpoint = create_endpoint(
        &daemon,
        json!({"tenant": "globex", "url": receiver.url(), "policy": "quick", "default": true}),
    )
    .await;
    let path = format!("/admin/endpoints/{endpoint}");

    sign_in_at(&browser, &daemon, &format!("/ui/endpoints/{endpoint}")).await;
    watch_csp(&browser).await;
    browser
        .wait_for("#toggle-enabled", Some("Disable"), PATIENCE)
        .await;

    // By keyboard: the actions are real buttons.
    browser.press_enter("#toggle-enabled").await;
    browser
        .wait_for("#endpoint-status[data-status=disabled]", None, PATIENCE)
        .await;
    assert_eq!(daemon.admin("GET", &path, None).await.1["enabled"], false);
    browser
        .wait_for("#toggle-enabled", Some("Enable"), PATIENCE)
        .await;
    browser.click("#toggle-enabled").await;
    browser
        .wait_for("#endpoint-status[data-status=enabled]", None, PATIENCE)
        .await;
    assert_eq!(daemon.admin("GET", &path, None).await.1["enabled"], true);

    browser.click("#send-test").await;
    browser
        .wait_for(
            "#test-result[data-success=true]",
            Some("HTTP 200"),
            PATIENCE,
        )
        .await;
    assert!(browser.text("#test-result").await.contains("received"));
    assert!(receiver.wait_for(1, PATIENCE).await);
    assert!(
        String::from_utf8_lossy(&receiver.requests()[0].body).contains("herald.test"),
        "{:?}",
        receiver.requests()[0].body
    );
    browser.screenshot("endpoint-tested-desktop").await;

    // Delete asks first; cancelling keeps the endpoint.
    browser.click("#delete-endpoint").await;
    browser.wait_for("dialog[open]", None, PATIENCE).await;
    browser.click("dialog[open] button[value=cancel]").await;
    assert_eq!(browser.count("dialog[open]").await, 0);
    assert_eq!(daemon.admin("GET", &path, None).await.0, 200);

    browser.click("#delete-endpoint").await;
    browser.wait_for("dialog[open]", None, PATIENCE).await;
    browser.click("#confirm-delete").await;
    browser
        .wait_for(".empty-state", Some("No endpoints yet"), PATIENCE)
        .await;
    assert_eq!(browser.location().await, "/ui/");
    assert_eq!(daemon.admin("GET", &path, None).await.0, 404);
    assert_no_csp_violations(&browser).await;
}

fn write_policy(data: &Path, name: &str, body: &str) {
    let dir = data.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\n{body}"),
    )
    .unwrap();
}

/// One endpoint's seeded history: deliveries per day, the share that fail, typical latency.
struct Traffic {
    tenant: &'static str,
    url: &'static str,
    policy: &'static str,
    per_day: u64,
    failure_rate: f64,
    latency_ms: u64,
}

const TRAFFIC: [Traffic; 5] = [
    Traffic {
        tenant: "acme",
        url: "https://tms.acme.example/hooks/herald",
        policy: "phrase",
        per_day: 120,
        failure_rate: 0.01,
        latency_ms: 85,
    },
    Traffic {
        tenant: "acme",
        url: "https://staging.acme.example/hooks/herald",
        policy: "phrase",
        per_day: 4,
        failure_rate: 0.5,
        latency_ms: 240,
    },
    Traffic {
        tenant: "globex",
        url: "https://api.globex.example/v2/callbacks",
        policy: "tolq",
        per_day: 60,
        failure_rate: 0.005,
        latency_ms: 140,
    },
    Traffic {
        tenant: "initech",
        url: "https://initech.example/webhooks/translations",
        policy: "ovesio",
        per_day: 25,
        failure_rate: 0.05,
        latency_ms: 410,
    },
    Traffic {
        tenant: "umbrella",
        url: "https://l10n.umbrella.example/gengo-callback",
        policy: "gengo-15m-12h",
        per_day: 12,
        failure_rate: 0.0,
        latency_ms: 60,
    },
];

/// Writes 14 days of deliveries and attempts for `endpoints` straight into a stopped daemon's
/// store (a live daemon can only make history from now on): each endpoint's deliveries in one
/// batch, their attempts recorded as outcomes of leases the store never handed out, which add
/// the attempts, the daily roll-up and the failure count and leave the deliveries as written.
/// Returns the deliveries written and one failed delivery of the first endpoint.
async fn seed_history(store_dir: &Path, endpoints: &[String]) -> (usize, String) {
    use common::fixtures::{delivery_record, message_record, outcome};
    use herald::model::{Attempt, DeliveryStatus, EndpointId, ErrorKind};
    use herald::store::{Lease, LeaseToken, MessageWrite, SledOptions, SledStore, Store};

    const DAY: u64 = 86_400_000;
    let store = SledStore::open(store_dir, &SledOptions::default()).unwrap();
    let now = herald::model::now_ms();
    let today = now / DAY * DAY;
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let mut written = 0;
    let mut failed_example = None;
    for (traffic, id) in TRAFFIC.iter().zip(endpoints) {
        let endpoint: EndpointId = id.parse().unwrap();
        let mut writes = Vec::new();
        let mut outcomes = Vec::new();
        for days_ago in (0..14u64).rev() {
            let start = today - days_ago * DAY;
            // Quieter weekends, an outage at globex four days ago.
            let weekday = (start / DAY + 4) % 7;
            let volume = if weekday >= 5 {
                traffic.per_day / 3
            } else {
                traffic.per_day
            };
            let outage = traffic.tenant == "globex" && days_ago == 4;
            let span = if days_ago == 0 { now - start } else { DAY };
            let count = volume * span / DAY;
            let mut times: Vec<u64> = (0..count).map(|_| start + next() % span).collect();
            times.sort_unstable();
            for at in times {
                let fails = outage && next() % 3 != 0
                    || (next() % 1000) as f64 / 1000.0 < traffic.failure_rate;
                let tries = if fails {
                    3
                } else {
                    1 + (next() % 25 == 0) as u32
                };
                let message = message_record(at, None);
                let status = if fails {
                    DeliveryStatus::Failed
                } else {
                    DeliveryStatus::Succeeded
                };
                let mut delivery = delivery_record(&message, endpoint, status, 0);
                for n in 1..=tries {
                    let success = !fails && n == tries;
                    let mut attempt = Attempt {
                        attempt: n,
                        cycle: 1,
                        started_at: at + u64::from(n - 1) * 60_000,
                        duration_ms: traffic.latency_ms * 3 / 4
                            + next() % (traffic.latency_ms / 2 + 1),
                        status_code: Some(200),
                        error: None,
                        error_detail: None,
                        response_excerpt: "{\"received\":true}".into(),
                        success,
                    };
                    if !success && next() % 4 == 0 {
                        attempt.status_code = None;
                        attempt.error = Some(ErrorKind::Timeout);
                        attempt.error_detail = Some("no response within 30s".into());
                        attempt.response_excerpt = String::new();
                        attempt.duration_ms = 30_000;
                    } else if !success {
                        attempt.status_code = Some(502);
                        attempt.error = Some(ErrorKind::Rejected);
                        attempt.error_detail = Some("status 502 is not a success".into());
                        attempt.response_excerpt =
                            "<html><body><h1>502 Bad Gateway</h1></body></html>".into();
                    }
                    let lease = Lease {
                        delivery_id: delivery.id,
                        endpoint_id: endpoint,
                        due_ms: 0,
                        expires_at_ms: 0,
                        token: LeaseToken::new(),
                    };
                    let mut record =
                        outcome(lease, &delivery, attempt.started_at, success, status, None);
                    delivery.last_status_code = attempt.status_code;
                    delivery.last_error = attempt.error_detail.clone();
                    delivery.updated_at = attempt.started_at + attempt.duration_ms;
                    record.attempt = attempt;
                    outcomes.push(record);
                }
                delivery.total_attempts = tries;
                delivery.cycle_attempts = tries;
                if fails && failed_example.is_none() {
                    failed_example = Some(delivery.id.to_string());
                }
                writes.push(MessageWrite {
                    message,
                    deliveries: vec![delivery],
                });
                written += 1;
            }
        }
        store.insert_messages(&writes).await.unwrap();
        for recorded in store.record_outcomes(&outcomes).await.unwrap() {
            assert!(recorded.unwrap().stale);
        }
    }
    (written, failed_example.expect("some delivery failed"))
}

#[tokio::test]
async fn thousands_of_deliveries_are_paged_and_fourteen_days_are_charted() {
    let _turn = BROWSERS.acquire().await.unwrap();
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let mut endpoints = Vec::new();
    for traffic in &TRAFFIC {
        let body = json!({"tenant": traffic.tenant, "url": traffic.url, "policy": traffic.policy,
                          "secret": "customer-api-key", "token": "security-token",
                          "default": !traffic.url.contains("staging")});
        endpoints.push(create_endpoint(&daemon, body).await);
    }
    let staging = &endpoints[1];
    daemon
        .admin("POST", &format!("/admin/endpoints/{staging}/disable"), None)
        .await;
    assert!(daemon.terminate().success());
    let started = std::time::Instant::now();
    let (written, failed) = seed_history(&dir.path().join("store"), &endpoints).await;
    eprintln!("seeded {written} deliveries in {:?}", started.elapsed());
    assert!(written > 2_000, "{written}");
    let daemon = Daemon::start(dir.path());

    // The overview: every endpoint with its sparkline.
    sign_in_at(&browser, &daemon, "/ui/").await;
    watch_csp(&browser).await;
    for id in &endpoints {
        browser
            .wait_for(
                &format!("#endpoints tr[data-endpoint-id='{id}'] svg.sparkline"),
                None,
                PATIENCE,
            )
            .await;
    }
    assert_eq!(
        browser
            .count(&format!(
                "#endpoints tr[data-endpoint-id='{staging}'] [data-status=disabled]"
            ))
            .await,
        1
    );
    browser.screenshot("endpoints-desktop").await;
    phone_screenshot(&browser, "endpoints-phone", None).await;

    // The endpoint page: 14 days in the chart and in its table, today's count as seeded.
    let busiest = &endpoints[0];
    browser
        .click(&format!(
            "#endpoints tr[data-endpoint-id='{busiest}'] a[href$='{busiest}']"
        ))
        .await;
    browser
        .wait_for("#chart svg.day-chart .bar-ok", None, PATIENCE)
        .await;
    assert_eq!(browser.count("#chart svg.day-chart g.day").await, 14);
    assert!(browser.count("#chart svg.day-chart .latency-dot").await >= 13);
    let (_, stats) = daemon
        .admin(
            "GET",
            &format!("/admin/endpoints/{busiest}/stats?days=14"),
            None,
        )
        .await;
    let today = &stats["days"][13];
    let today_row = browser
        .script(
            "return document.querySelector('.as-table tbody tr').textContent;",
            json!([]),
        )
        .await;
    let today_row = today_row.as_str().unwrap();
    assert!(
        today_row.contains(today["date"].as_str().unwrap()),
        "{today_row}"
    );
    assert!(
        today_row.contains(&today["attempts"].to_string()),
        "{today_row}"
    );
    browser.wait_for("#recent-title", None, PATIENCE).await;
    browser.screenshot("endpoint-desktop").await;
    browser.color_scheme("dark").await;
    browser.screenshot("endpoint-desktop-dark").await;
    browser.color_scheme("light").await;
    // The chart is redrawn for the narrower screen.
    phone_screenshot(
        &browser,
        "endpoint-phone",
        Some("#chart svg.day-chart[data-compact]"),
    )
    .await;

    // Deliveries: newest first, 50 a page, older pages by cursor; never more than a page.
    browser
        .goto(&format!("{}/ui/deliveries", daemon.base))
        .await;
    watch_csp(&browser).await;
    browser
        .wait_for("table.deliveries tbody tr", None, PATIENCE)
        .await;
    let (_, newest) = daemon
        .admin("GET", "/admin/deliveries?order=desc&limit=50", None)
        .await;
    let first_page = row_ids(&browser).await;
    let expected: Vec<String> = newest["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first_page, expected);
    browser.screenshot("deliveries-desktop").await;
    browser.click("#older").await;
    browser
        .wait_for(".lede", Some("older page"), PATIENCE)
        .await;
    let second_page = row_ids(&browser).await;
    assert!(browser.location().await.contains("cursor="));
    assert_eq!(second_page.len(), 50);
    assert!(second_page.iter().all(|id| !first_page.contains(id)));
    assert!(second_page.last() < first_page.last(), "newest first");
    let pages_asked = browser
        .script(
            "return performance.getEntriesByType('resource')
                 .map((e) => e.name).filter((n) => n.includes('/admin/deliveries?'));",
            json!([]),
        )
        .await;
    for url in pages_asked.as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(
            url.contains("limit=50") && url.contains("order=desc"),
            "{url}"
        );
    }

    // Filters come from the URL, so a filtered list can be pasted into a ticket.
    assert_no_csp_violations(&browser).await;
    browser
        .goto(&format!(
            "{}/ui/deliveries?status=failed&endpoint_id={busiest}&since=14d",
            daemon.base
        ))
        .await;
    watch_csp(&browser).await;
    browser
        .wait_for("table.deliveries tbody tr", None, PATIENCE)
        .await;
    let statuses = browser
        .script(
            "return [...document.querySelectorAll('table.deliveries tbody [data-status]')]
                 .map((e) => e.dataset.status);",
            json!([]),
        )
        .await;
    let statuses = statuses.as_array().unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| s == "failed"), "{statuses:?}");
    phone_screenshot(&browser, "deliveries-phone", None).await;
    assert_no_csp_violations(&browser).await;

    browser
        .goto(&format!("{}/ui/deliveries/{failed}", daemon.base))
        .await;
    watch_csp(&browser).await;
    browser
        .wait_for("#attempts tbody tr", Some("502"), PATIENCE)
        .await;
    assert_eq!(browser.count("#attempts tbody tr").await, 3);
    browser.screenshot("delivery-desktop").await;
    phone_screenshot(&browser, "delivery-phone", None).await;
    assert_no_csp_violations(&browser).await;
}

/// A screenshot at phone width, after checking that nothing is wider than the screen (which
/// would make a phone zoom the whole page out); back at desktop width afterwards.
async fn phone_screenshot(browser: &Browser, name: &str, ready: Option<&str>) {
    browser.resize(PHONE).await;
    if let Some(css) = ready {
        browser.wait_for(css, None, PATIENCE).await;
    }
    let width = browser
        .script("return document.documentElement.scrollWidth;", json!([]))
        .await;
    assert!(
        width.as_u64().unwrap() <= u64::from(PHONE.0),
        "{name}: the page is {width} px wide on a {} px screen",
        PHONE.0
    );
    browser.screenshot(name).await;
    browser.resize(DESKTOP).await;
}

/// The delivery ids of the list on screen, top to bottom.
async fn row_ids(browser: &Browser) -> Vec<String> {
    let ids = browser
        .script(
            "return [...document.querySelectorAll('table.deliveries tbody tr')]
                 .map((tr) => tr.dataset.deliveryId);",
            json!([]),
        )
        .await;
    ids.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}
