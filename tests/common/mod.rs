//! Test harness: real HTTP receivers on 127.0.0.1 and herald instances on temporary dirs.
#![allow(dead_code)]

pub mod browser;
pub mod daemon;
pub mod postgres;
pub mod raw_http;

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
#[derive(Clone, Copy)]
pub enum Reply {
    Status(u16, &'static str),
    /// Accept the request and never answer.
    Hang,
    /// Answer with this status after this long.
    Late(u16, Duration),
}

type Script = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    script: Script,
    /// Requests being answered now, and the most there ever were at once.
    on_wire: Arc<Mutex<(usize, usize)>>,
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
            on_wire: Arc::default(),
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

    /// Answers the first request with `first`, and 200 to the others.
    pub async fn first_then_ok(first: Reply) -> Receiver {
        Self::start(move |n, _| {
            if n == 0 {
                first
            } else {
                Reply::Status(200, "ok")
            }
        })
        .await
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

    /// The most requests that were being answered at once.
    pub fn max_on_wire(&self) -> usize {
        self.shared.on_wire.lock().unwrap().1
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
    {
        let mut on_wire = shared.on_wire.lock().unwrap();
        on_wire.0 += 1;
        on_wire.1 = on_wire.1.max(on_wire.0);
    }
    shared.arrived.notify_waiters();
    let code = match reply {
        Reply::Status(code, _) => code,
        Reply::Hang => std::future::pending().await,
        Reply::Late(code, after) => {
            tokio::time::sleep(after).await;
            code
        }
    };
    shared.on_wire.lock().unwrap().0 -= 1;
    let body = match reply {
        Reply::Status(_, body) => body,
        _ => "",
    };
    (StatusCode::from_u16(code).unwrap(), body).into_response()
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
    use std::time::Duration;

    use herald::model::{
        Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointId, Message, MessageId,
    };
    use herald::store::{HealthChange, Lease, LeaseToken, MessageWrite, Outcome, Store};
    use uuid::{NoContext, Timestamp, Uuid};

    /// Pending deliveries made by [`put_message`] are due at this time: far in the future, so
    /// a live engine leaves them alone.
    pub const DUE: u64 = 4_000_000_000_000;
    /// A claim's lease in the fixtures.
    pub const LEASE: Duration = Duration::from_secs(30);

    /// A UUIDv7 minted at `ms`.
    pub fn uuid_at(ms: u64) -> Uuid {
        Uuid::new_v7(Timestamp::from_unix(
            NoContext,
            ms / 1000,
            (ms % 1000) as u32 * 1_000_000,
        ))
    }

    /// An endpoint record of tenant `acme`: enabled, the tenant's default, every other field
    /// as a record without it reads.
    pub fn endpoint_record() -> Endpoint {
        serde_json::from_value(serde_json::json!({
            "id": EndpointId::new(), "tenant": "acme", "url": "https://tms.example/cb",
            "policy": "tolq", "default": true, "enabled": true, "created_at": 0, "updated_at": 0,
        }))
        .unwrap_or_else(|e| panic!("endpoint record: {e}"))
    }

    /// Stores a plain endpoint.
    pub async fn put_endpoint(store: &dyn Store) -> EndpointId {
        let endpoint = endpoint_record();
        store.put_endpoint(&endpoint).await.unwrap();
        endpoint.id
    }

    /// A message record created at `at_ms`.
    pub fn message_record(at_ms: u64, idempotency_key: Option<&str>) -> Message {
        Message {
            id: MessageId(uuid_at(at_ms)),
            tenant: "acme".into(),
            event_type: "e".into(),
            payload: serde_json::value::to_raw_value(&serde_json::json!({"at": at_ms})).unwrap(),
            callback_url: None,
            idempotency_key: idempotency_key.map(str::to_string),
            dedup_key: None,
            ordering_key: None,
            traceparent: None,
            created_at: at_ms,
        }
    }

    /// A delivery record of `message` to `endpoint`; pending ones are due at `due_ms`.
    pub fn delivery_record(
        message: &Message,
        endpoint: EndpointId,
        status: DeliveryStatus,
        due_ms: u64,
    ) -> Delivery {
        let pending = status == DeliveryStatus::Pending;
        Delivery {
            id: DeliveryId(uuid_at(message.created_at)),
            message_id: message.id,
            endpoint_id: endpoint,
            url_override: None,
            status,
            cycle: 1,
            cycle_attempts: 0,
            total_attempts: 0,
            anchor_ms: due_ms,
            next_attempt_at: pending.then_some(due_ms),
            last_status_code: None,
            last_error: None,
            created_at: message.created_at,
            updated_at: message.created_at,
        }
    }

    /// A message with one delivery in `status`, both created at `at_ms`; pending deliveries
    /// are due at [`DUE`].
    pub async fn put_message(
        store: &dyn Store,
        endpoint: EndpointId,
        at_ms: u64,
        status: DeliveryStatus,
    ) -> (MessageId, DeliveryId) {
        put_message_due(store, endpoint, at_ms, status, DUE).await
    }

    /// [`put_message`] with a chosen due time.
    pub async fn put_message_due(
        store: &dyn Store,
        endpoint: EndpointId,
        at_ms: u64,
        status: DeliveryStatus,
        due_ms: u64,
    ) -> (MessageId, DeliveryId) {
        let message = message_record(at_ms, None);
        let delivery = delivery_record(&message, endpoint, status, due_ms);
        let ids = (message.id, delivery.id);
        store
            .insert_messages(&[MessageWrite {
                message,
                deliveries: vec![delivery],
            }])
            .await
            .unwrap();
        ids
    }

    /// An attempt started at `at_ms`, numbered `number`.
    pub fn attempt(number: u32, at_ms: u64, success: bool) -> Attempt {
        Attempt {
            attempt: number,
            cycle: 1,
            started_at: at_ms,
            duration_ms: 20,
            status_code: Some(if success { 200 } else { 500 }),
            error: None,
            error_detail: None,
            response_excerpt: String::new(),
            success,
        }
    }

    /// The outcome of one attempt under `lease`: the delivery as read, moved on by one
    /// attempt to `status` (pending ones due again at `next_due`).
    pub fn outcome(
        lease: Lease,
        before: &Delivery,
        at_ms: u64,
        success: bool,
        status: DeliveryStatus,
        next_due: Option<u64>,
    ) -> Outcome {
        let mut delivery = before.clone();
        delivery.total_attempts += 1;
        delivery.cycle_attempts += 1;
        delivery.status = status;
        delivery.next_attempt_at = next_due;
        delivery.updated_at = at_ms;
        Outcome {
            lease,
            attempt: attempt(delivery.total_attempts, at_ms, success),
            delivery,
            health: if success {
                HealthChange::Reset
            } else {
                HealthChange::Increment
            },
            dedup: None,
            release: None,
        }
    }

    /// Records one attempt started at `at_ms` under a lease the store never handed out: the
    /// attempt, the roll-up and the failure count change, the delivery does not move.
    pub async fn record_attempt(
        store: &dyn Store,
        endpoint: EndpointId,
        delivery: DeliveryId,
        at_ms: u64,
        success: bool,
    ) {
        let before = store.delivery(delivery).await.unwrap().unwrap();
        let lease = Lease {
            delivery_id: delivery,
            endpoint_id: endpoint,
            due_ms: 0,
            expires_at_ms: 0,
            token: LeaseToken::new(),
        };
        let status = before.status;
        let next = outcome(
            lease,
            &before,
            at_ms,
            success,
            status,
            before.next_attempt_at,
        );
        let recorded = store.record_outcomes(&[next]).await.unwrap().remove(0);
        assert!(recorded.unwrap().stale);
    }
}
