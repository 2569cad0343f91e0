//! `herald bench`: reproducible figures on this machine, against a local receiver.
//!
//! Each scenario uses a fresh store in the system temp directory (a real disk, real fsyncs)
//! and removes it afterwards. Results print as a table and, with `--json FILE`, as JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use herald::{EngineConfig, Herald, NewEndpoint, NewMessage};
use serde::Serialize;
use tokio::sync::Notify;

/// Benchmark scenarios.
#[derive(Subcommand)]
pub enum Scenario {
    /// Durable sends per second through the library, by number of concurrent senders.
    Send {
        /// Messages per run (the 1-sender run uses at most 2,000: it is fsync-bound).
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Concurrent senders, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        senders: Vec<usize>,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// End-to-end deliveries per second to a local receiver, and the receiver's own ceiling.
    Deliver {
        /// Messages per run.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Endpoint counts, comma-separated (messages are spread evenly).
        #[arg(long, value_delimiter = ',', default_value = "1,100")]
        endpoints: Vec<usize>,
        /// Attempts in flight per endpoint.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize)]
struct Row {
    scenario: String,
    params: String,
    count: usize,
    seconds: f64,
    per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fsyncs_per_1000: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_ceiling: Option<f64>,
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> Result<(), String> {
    let (rows, json) = match scenario {
        Scenario::Send {
            messages,
            senders,
            json,
        } => {
            let mut rows = Vec::new();
            for s in senders {
                rows.push(send(messages, s.max(1)).await?);
            }
            (rows, json)
        }
        Scenario::Deliver {
            messages,
            endpoints,
            concurrency,
            json,
        } => {
            let mut rows = Vec::new();
            for e in endpoints {
                rows.extend(deliver(messages, e.max(1), concurrency.max(1)).await?);
            }
            (rows, json)
        }
    };
    print_table(&rows);
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<9} {:<30} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "SCENARIO",
        "PARAMS",
        "COUNT",
        "SECONDS",
        "PER_SEC",
        "FSYNC/1K",
        "P50_MS",
        "P99_MS",
        "RATIO"
    );
    for r in rows {
        println!(
            "{:<9} {:<30} {:>8} {:>8.2} {:>10.0} {:>8} {:>8} {:>8} {:>7}",
            r.scenario,
            r.params,
            r.count,
            r.seconds,
            r.per_second,
            opt(r.fsyncs_per_1000),
            opt(r.p50_ms),
            opt(r.p99_ms),
            opt(r.ratio_to_ceiling)
        );
    }
}

/// A store directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Scratch(
            std::env::temp_dir().join(format!("herald-bench-{}-{label}-{n}", std::process::id())),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &Scratch, mut config: EngineConfig) -> Result<Herald, String> {
    config.client.targets.allow_private = true; // the receiver is on 127.0.0.1
    Herald::builder()
        .data_dir(&dir.0)
        .engine_config(config)
        .open()
        .await
        .map_err(|e| e.to_string())
}

/// A disabled `tolq` endpoint: its deliveries are stored (held) but not attempted until it is
/// enabled, so enqueueing and delivering can be measured apart.
async fn disabled_endpoint(
    herald: &Herald,
    tenant: String,
    url: String,
) -> Result<herald::EndpointId, String> {
    let endpoint = herald
        .create_endpoint(NewEndpoint {
            tenant,
            url,
            policy: "tolq".into(),
            secret: Some("bench-secret".into()),
            ..NewEndpoint::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    herald
        .set_endpoint_enabled(endpoint.id, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok(endpoint.id)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn send(messages: usize, senders: usize) -> Result<Row, String> {
    let messages = if senders == 1 {
        messages.min(2_000)
    } else {
        messages
    };
    let dir = Scratch::new("send");
    let herald = open(&dir, EngineConfig::default()).await?;
    // A disabled endpoint: every delivery is stored (and held), none is attempted, so the
    // figure is the durable accept path alone.
    disabled_endpoint(&herald, "bench".into(), "http://127.0.0.1:9/unused".into()).await?;
    let payload = serde_json::json!({"job_id": 123456, "status": "completed", "target_language": "de", "words": 1200});
    let stats = herald.commit_stats();
    let flushes_before = stats.flushes.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let herald = herald.clone();
        let payload = payload.clone();
        let share = messages / senders + usize::from(s < messages % senders);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let message = NewMessage::new("bench", "job.completed", &payload)
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                herald.send(message).await.map_err(|e| e.to_string())?;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(messages);
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let flushes = stats.flushes.load(Ordering::Relaxed) - flushes_before;
    latencies.sort();
    herald.shutdown().await.map_err(|e| e.to_string())?;
    Ok(Row {
        scenario: "send".into(),
        params: format!("senders={senders}"),
        count: messages,
        seconds,
        per_second: messages as f64 / seconds,
        fsyncs_per_1000: Some(flushes as f64 * 1000.0 / messages as f64),
        p50_ms: Some(percentile(&latencies, 0.50)),
        p99_ms: Some(percentile(&latencies, 0.99)),
        ratio_to_ceiling: None,
    })
}

/// A minimal local receiver: answers 200 to everything and counts.
struct Sink {
    addr: std::net::SocketAddr,
    count: Arc<AtomicU64>,
    reached: Arc<Notify>,
    target: Arc<AtomicU64>,
}

impl Sink {
    async fn start() -> Result<Sink, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let count = Arc::new(AtomicU64::new(0));
        let reached = Arc::new(Notify::new());
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let (c, r, t) = (count.clone(), reached.clone(), target.clone());
        let app = axum::Router::new().fallback(move || {
            let (c, r, t) = (c.clone(), r.clone(), t.clone());
            async move {
                if c.fetch_add(1, Ordering::Relaxed) + 1 >= t.load(Ordering::Relaxed) {
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
        })
    }

    /// Resets the counter and waits until `n` requests arrived (or a minute passed).
    fn expect(&self, n: usize) {
        self.count.store(0, Ordering::Relaxed);
        self.target.store(n as u64, Ordering::Relaxed);
    }

    async fn wait(&self) -> Result<(), String> {
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
async fn ceiling(
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

async fn deliver(
    messages: usize,
    endpoints: usize,
    concurrency: usize,
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let payload = serde_json::json!({"job_id": 123456, "status": "completed", "target_language": "de", "words": 1200});
    let body = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    let total_concurrency = (endpoints * concurrency).min(1024);
    let ceiling_rate = ceiling(&sink, messages, total_concurrency.min(256), &body).await?;

    let dir = Scratch::new("deliver");
    let config = EngineConfig {
        endpoint_concurrency: concurrency,
        max_in_flight: 2048,
        ..EngineConfig::default()
    };
    let herald = open(&dir, config).await?;
    let mut ids = Vec::new();
    for e in 0..endpoints {
        let url = format!("http://{}/hook/{e}", sink.addr);
        ids.push(disabled_endpoint(&herald, format!("t{e}"), url).await?);
    }
    // Enqueue everything while the endpoints are disabled, then release them at once: the
    // figure is delivery throughput, not enqueue throughput.
    let senders = 64;
    let mut tasks = Vec::new();
    for s in 0..senders {
        let herald = herald.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = s;
            while i < messages {
                let message =
                    NewMessage::new(format!("t{}", i % endpoints), "job.completed", &payload)
                        .map_err(|e| e.to_string())?;
                herald.send(message).await.map_err(|e| e.to_string())?;
                i += senders;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    sink.expect(messages);
    let started = Instant::now();
    for id in &ids {
        herald
            .set_endpoint_enabled(*id, true)
            .await
            .map_err(|e| e.to_string())?;
    }
    sink.wait().await?;
    let seconds = started.elapsed().as_secs_f64();
    herald.shutdown().await.map_err(|e| e.to_string())?;
    let rate = messages as f64 / seconds;
    Ok(vec![
        Row {
            scenario: "ceiling".into(),
            params: format!("plain client, concurrency={}", total_concurrency.min(256)),
            count: messages,
            seconds: messages as f64 / ceiling_rate,
            per_second: ceiling_rate,
            fsyncs_per_1000: None,
            p50_ms: None,
            p99_ms: None,
            ratio_to_ceiling: None,
        },
        Row {
            scenario: "deliver".into(),
            params: format!("endpoints={endpoints} conc={concurrency}"),
            count: messages,
            seconds,
            per_second: rate,
            fsyncs_per_1000: None,
            p50_ms: None,
            p99_ms: None,
            ratio_to_ceiling: Some(rate / ceiling_rate),
        },
    ])
}
