//! Test harness: real HTTP receivers on 127.0.0.1 and herald instances on temporary dirs.
#![allow(dead_code)]

pub mod daemon;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use herald::{Herald, Policy};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The request target as sent (absolute-form when the sender used us as a proxy).
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

/// How the receiver answers the n-th request (0-based).
pub enum Reply {
    Status(u16, &'static str),
    /// Accept the request and never answer.
    Hang,
}

type Script = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    script: Script,
}

/// A local HTTP receiver that records requests.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Receiver {
    /// Starts on a fresh port.
    pub async fn start(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, script)
    }

    /// Starts on a given listener.
    pub fn start_on(
        listener: TcpListener,
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            requests: Arc::default(),
            arrived: Arc::new(Notify::new()),
            script: Arc::new(script),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, shared }
    }

    /// Always answers 200.
    pub async fn ok() -> Receiver {
        Self::start(|_, _| Reply::Status(200, "ok")).await
    }

    /// Answers 500 to every third request (the 1st, 4th, ...) and 200 to the others.
    pub async fn flaky() -> Receiver {
        Receiver::start(|n, _| {
            if n % 3 == 0 {
                Reply::Status(500, "flaky")
            } else {
                Reply::Status(200, "ok")
            }
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; false on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() >= n;
            }
        }
    }

    /// Distinct `herald-message-id` values seen.
    pub fn message_ids(&self) -> std::collections::HashSet<String> {
        self.requests()
            .iter()
            .map(|r| r.header("herald-message-id"))
            .collect()
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let received = Received {
        at: Instant::now(),
        uri: uri.to_string(),
        headers,
        body,
    };
    let reply = {
        let mut requests = shared.requests.lock().unwrap();
        let reply = (shared.script)(requests.len(), &received);
        requests.push(received);
        reply
    };
    shared.arrived.notify_waiters();
    match reply {
        Reply::Status(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

/// A tenant's default endpoint.
pub fn endpoint(tenant: &str, url: String, policy: &str) -> herald::NewEndpoint {
    herald::NewEndpoint {
        tenant: tenant.into(),
        url,
        policy: policy.into(),
        default: true,
        ..herald::NewEndpoint::default()
    }
}

/// A policy from a TOML snippet with `name` set.
pub fn policy(name: &str, body: &str) -> Policy {
    Policy::from_toml(name, &format!("name = \"{name}\"\n{body}")).unwrap()
}

/// A quick fixed-interval policy.
pub fn quick_policy(name: &str, interval: &str, attempts: u32) -> Policy {
    policy(
        name,
        &format!(
            "[schedule]\nkind = \"fixed\"\ninterval = \"{interval}\"\nmax_attempts = {attempts}\n[request]\ntimeout = \"2s\"\n"
        ),
    )
}

/// Opens herald on `dir` with extra policies, private targets allowed.
pub async fn open(dir: &std::path::Path, policies: Vec<Policy>) -> Herald {
    open_with(dir, policies, herald::EngineConfig::default()).await
}

pub async fn open_with(
    dir: &std::path::Path,
    policies: Vec<Policy>,
    mut config: herald::EngineConfig,
) -> Herald {
    config.client.targets.allow_private = true; // receivers live on 127.0.0.1
    let mut builder = Herald::builder().data_dir(dir).engine_config(config);
    for p in policies {
        builder = builder.policy(p);
    }
    // A previous instance in this process releases the store's file lock once its last task
    // has ended; give it a moment.
    for _ in 0..50 {
        match builder.clone().open().await {
            Ok(herald) => return herald,
            Err(e) if e.to_string().contains("lock") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("open: {e}"),
        }
    }
    panic!("store still locked after 5s")
}

/// Waits for the outcome feed to report `n` final deliveries; returns them.
pub async fn wait_final(
    outcomes: &mut herald::Outcomes,
    n: usize,
    timeout: Duration,
) -> Vec<herald::AttemptEvent> {
    let mut finals = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while finals.len() < n {
        match tokio::time::timeout_at(deadline, outcomes.next()).await {
            Ok(Some(event)) if event.delivery_status.is_final() => finals.push(event),
            Ok(Some(_)) => {}
            _ => panic!(
                "only {} of {n} deliveries finished in {timeout:?}",
                finals.len()
            ),
        }
    }
    finals
}

/// Store fixtures: records written straight through the `Store` trait, with chosen times.
pub mod fixtures {
    use herald::model::{
        Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, Message, MessageId,
    };
    use herald::store::{AttemptOutcome, MessageWrite, NewDelivery, NextStep, Store};
    use uuid::{NoContext, Timestamp, Uuid};

    /// A UUIDv7 minted at `ms`.
    pub fn uuid_at(ms: u64) -> Uuid {
        Uuid::new_v7(Timestamp::from_unix(
            NoContext,
            ms / 1000,
            (ms % 1000) as u32 * 1_000_000,
        ))
    }

    /// A plain endpoint record.
    pub fn put_endpoint(store: &dyn Store) -> EndpointId {
        let id = EndpointId::new();
        store
            .put_endpoint(&Endpoint {
                id,
                tenant: "acme".into(),
                url: "https://tms.example/cb".into(),
                policy: "tolq".into(),
                secret: None,
                previous_secret: None,
                token: None,
                headers: Default::default(),
                event_types: vec![],
                default: true,
                enabled: true,
                consecutive_failures: 0,
                created_at: 0,
                updated_at: 0,
            })
            .unwrap();
        id
    }

    /// A message with one delivery in `status`, both created at `at_ms`.
    pub fn put_message(
        store: &dyn Store,
        endpoint: EndpointId,
        at_ms: u64,
        status: DeliveryStatus,
    ) -> (MessageId, DeliveryId) {
        let message = MessageId(uuid_at(at_ms));
        let delivery = DeliveryId(uuid_at(at_ms));
        let pending = status == DeliveryStatus::Pending;
        store
            .insert_messages(&[MessageWrite {
                message: Message {
                    id: message,
                    tenant: "acme".into(),
                    event_type: "e".into(),
                    payload: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
                    callback_url: None,
                    idempotency_key: None,
                    dedup_key: None,
                    created_at: at_ms,
                },
                deliveries: vec![NewDelivery {
                    delivery: Delivery {
                        id: delivery,
                        message_id: message,
                        endpoint_id: endpoint,
                        url_override: None,
                        status,
                        cycle: 1,
                        cycle_attempts: 0,
                        total_attempts: 0,
                        anchor_ms: at_ms,
                        next_attempt_at: pending.then_some(u64::MAX / 2),
                        last_status_code: None,
                        last_error: None,
                        created_at: at_ms,
                        updated_at: at_ms,
                    },
                    // Far in the future: a live engine leaves it alone.
                    due_ms: pending.then_some(u64::MAX / 2),
                }],
            }])
            .unwrap();
        (message, delivery)
    }

    /// An attempt outcome for `delivery` claimed at `due_ms`, started at `at_ms`.
    pub fn outcome(
        endpoint: EndpointId,
        delivery: DeliveryId,
        due_ms: u64,
        at_ms: u64,
        success: bool,
        next: NextStep,
    ) -> AttemptOutcome {
        AttemptOutcome {
            delivery_id: delivery,
            endpoint_id: endpoint,
            due_ms,
            attempt: Attempt {
                attempt: 0,
                cycle: 0,
                started_at: at_ms,
                duration_ms: 20,
                status_code: Some(if success { 200 } else { 500 }),
                error: None,
                error_detail: None,
                response_excerpt: String::new(),
                success,
            },
            next,
            dedup: None,
            counts_toward_health: true,
        }
    }

    /// Records an attempt started at `at_ms` (the delivery does not move: no due entry matches).
    pub fn record_attempt(
        store: &dyn Store,
        endpoint: EndpointId,
        delivery: DeliveryId,
        at_ms: u64,
        success: bool,
    ) {
        let next = NextStep::Retry {
            due_ms: 0,
            anchor_ms: 0,
        };
        store
            .record_attempt(outcome(endpoint, delivery, 0, at_ms, success, next))
            .unwrap();
    }
}
