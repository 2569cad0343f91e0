//! The benchmark's own receiver, and its ceiling measured with a plain HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A minimal local receiver: answers 200 to everything and counts, except `/dead/...`, which
/// accepts the request and never answers (a hung customer endpoint).
pub struct Sink {
    pub addr: std::net::SocketAddr,
    count: Arc<AtomicU64>,
    reached: Arc<Notify>,
    target: Arc<AtomicU64>,
    /// Requests to `/dead/...` so far (all still waiting).
    pub hung: Arc<AtomicU64>,
    /// When the first counted request after [`Sink::expect`] arrived.
    first: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Sink {
    pub async fn start() -> Result<Sink, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let count = Arc::new(AtomicU64::new(0));
        let reached = Arc::new(Notify::new());
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let hung = Arc::new(AtomicU64::new(0));
        let first = Arc::new(std::sync::Mutex::new(None));
        let (c, r, t, f) = (
            count.clone(),
            reached.clone(),
            target.clone(),
            first.clone(),
        );
        let h = hung.clone();
        let hang = axum::routing::any(move || {
            h.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<&'static str>()
        });
        let app = axum::Router::new()
            .route("/dead/{*rest}", hang)
            .fallback(move || {
                let (c, r, t, f) = (c.clone(), r.clone(), t.clone(), f.clone());
                async move {
                    let n = c.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == 1 {
                        *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                    if n >= t.load(Ordering::Relaxed) {
                        r.notify_one();
                    }
                    ""
                }
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Sink {
            addr,
            count,
            reached,
            target,
            hung,
            first,
        })
    }

    /// Resets the counter; [`Sink::wait`] then waits for `n` answered requests.
    pub fn expect(&self, n: usize) {
        *self.first.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.count.store(0, Ordering::Relaxed);
        self.target.store(n as u64, Ordering::Relaxed);
    }

    /// When the first answered request since [`Sink::expect`] arrived.
    pub fn first_at(&self) -> Option<Instant> {
        *self.first.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the expected requests arrived (or two minutes passed).
    pub async fn wait(&self) -> Result<(), String> {
        let deadline = Duration::from_secs(120);
        while self.count.load(Ordering::Relaxed) < self.target.load(Ordering::Relaxed) {
            tokio::time::timeout(deadline, self.reached.notified())
                .await
                .map_err(|_| {
                    format!(
                        "receiver got only {} requests",
                        self.count.load(Ordering::Relaxed)
                    )
                })?;
        }
        Ok(())
    }
}

/// The receiver's ceiling: the same receiver driven directly by a plain HTTP client.
pub async fn ceiling(
    sink: &Sink,
    messages: usize,
    concurrency: usize,
    body: &[u8],
) -> Result<f64, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}/hook", sink.addr);
    let next = Arc::new(AtomicU64::new(0));
    sink.expect(messages);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, body) = (client.clone(), url.clone(), next.clone(), body.to_vec());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages as u64 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                response.bytes().await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    sink.wait().await?;
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}
