//! `herald bench`: reproducible figures on this machine, against a local receiver.
//!
//! Each scenario uses a fresh store in the system temp directory (a real disk, real fsyncs)
//! and removes it afterwards. Results print as a table and, with `--json-file FILE`, as JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use herald::{EndpointId, EngineConfig, Herald, NewEndpoint, NewMessage};

use serde::Serialize;
use sink::Sink;

mod backlog;
mod deliver;
mod sink;

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
        #[arg(long = "json-file", id = "json_file", value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// End-to-end deliveries per second to a local receiver, and the receiver's own ceiling.
    Deliver {
        #[command(flatten)]
        load: Load,
        /// Also write the rows as JSON here.
        #[arg(long = "json-file", id = "json_file", value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Like `deliver`, with the messages posted to the daemon's `POST /v1/messages`.
    Http {
        #[command(flatten)]
        load: Load,
        /// Also write the rows as JSON here.
        #[arg(long = "json-file", id = "json_file", value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// A large pending backlog: enqueue time, disk, memory, restart to first delivery, idle CPU.
    Backlog {
        /// Pending deliveries.
        #[arg(long, default_value_t = 1_000_000)]
        deliveries: usize,
        /// Endpoints they are spread over.
        #[arg(long, default_value_t = 100)]
        endpoints: usize,
        /// Schedule every message this far ahead (e.g. `1h`) on enabled endpoints, instead of
        /// holding the backlog behind disabled ones.
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
        /// Also write the rows as JSON here.
        #[arg(long = "json-file", id = "json_file", value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// The restarted side of `backlog`, run by it as a separate process (not for direct use).
    #[command(hide = true)]
    BacklogChild {
        /// The store directory.
        #[arg(long)]
        dir: PathBuf,
        /// The endpoint to enable once open.
        #[arg(long)]
        probe: String,
    },
    /// Healthy throughput and first-delivery latency of 9 endpoints beside endpoints whose
    /// receiver never answers, against without them.
    Isolation {
        /// Messages to the healthy endpoints per run.
        #[arg(long, default_value_t = 45_000)]
        messages: usize,
        /// Attempts in flight per endpoint.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Alternating rounds of both runs; medians are compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Numbers of hung endpoints to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100")]
        hung: Vec<usize>,
        /// Also write the rows as JSON here.
        #[arg(long = "json-file", id = "json_file", value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// Load shape of the delivery scenarios.
#[derive(clap::Args)]
pub struct Load {
    /// Messages per run.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Endpoint counts, comma-separated (messages are spread evenly).
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    endpoints: Vec<usize>,
    /// Attempts in flight per endpoint.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give every message one of this many ordering keys (`deliver` only; 0: none).
    #[arg(long, default_value_t = 0)]
    ordering_keys: usize,
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
    /// herald against the receiver's ceiling (`deliver`, `http`) or against the run without
    /// the hung endpoint (`isolation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_ceiling: Option<f64>,
    /// Figures that fit no column (`backlog`): name and value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    figures: Vec<(String, f64)>,
}

impl Row {
    fn new(scenario: &str, params: String, count: usize, per_second: f64) -> Row {
        Row {
            scenario: scenario.into(),
            params,
            count,
            seconds: count as f64 / per_second,
            per_second,
            fsyncs_per_1000: None,
            p50_ms: None,
            p99_ms: None,
            ratio_to_ceiling: None,
            figures: Vec::new(),
        }
    }
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> Result<(), String> {
    let mut rows = Vec::new();
    let json = match scenario {
        Scenario::Send {
            messages,
            senders,
            json,
        } => {
            for s in senders {
                rows.push(send(messages, s.max(1)).await?);
            }
            json
        }
        Scenario::Deliver { load, json } => {
            for e in &load.endpoints {
                let shape = Shape {
                    ordering_keys: load.ordering_keys,
                    delay: None,
                };
                rows.extend(
                    deliver::deliver(load.messages, *e.max(&1), load.concurrency.max(1), shape)
                        .await?,
                );
            }
            json
        }
        Scenario::Http { load, json } => {
            for e in &load.endpoints {
                rows.extend(
                    deliver::http(load.messages, *e.max(&1), load.concurrency.max(1)).await?,
                );
            }
            json
        }
        Scenario::Backlog {
            deliveries,
            endpoints,
            delay,
            json,
        } => {
            rows.extend(backlog::backlog(deliveries, endpoints.max(1), delay).await?);
            json
        }
        Scenario::BacklogChild { dir, probe } => return backlog::child(&dir, &probe).await,
        Scenario::Isolation {
            messages,
            concurrency,
            rounds,
            hung,
            json,
        } => {
            rows.extend(
                deliver::isolation(messages, concurrency.max(1), rounds.max(1), &hung).await?,
            );
            json
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
        for (name, value) in &r.figures {
            println!("{:<9} {name:<30} {value:>8.2}", "");
        }
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

/// The payload every scenario sends: a typical TMS job callback.
fn payload() -> serde_json::Value {
    serde_json::json!({"job_id": 123456, "status": "completed", "target_language": "de", "words": 1200})
}

/// Sends `messages` through the library from 64 tasks; message `i` goes to `tenant(i)`.
async fn enqueue(
    herald: &Herald,
    messages: usize,
    tenant: impl Fn(usize) -> String + Send + Sync + Clone + 'static,
) -> Result<(), String> {
    enqueue_shaped(herald, messages, tenant, Shape::default()).await
}

/// What the messages of a scenario carry besides their payload.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// Message `i` gets ordering key `job-{i % ordering_keys}`; 0: no keys.
    ordering_keys: usize,
    /// Each message is scheduled this far ahead.
    delay: Option<Duration>,
}

/// [`enqueue`] with messages of a given shape.
async fn enqueue_shaped(
    herald: &Herald,
    messages: usize,
    tenant: impl Fn(usize) -> String + Send + Sync + Clone + 'static,
    shape: Shape,
) -> Result<(), String> {
    let senders = 64;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (herald, tenant, done) = (herald.clone(), tenant.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let payload = payload();
            let mut i = s;
            while i < messages {
                let mut message = NewMessage::new(tenant(i), "job.completed", &payload)
                    .map_err(|e| e.to_string())?;
                if shape.ordering_keys > 0 {
                    message = message.ordering_key(format!("job-{}", i % shape.ordering_keys));
                }
                if let Some(delay) = shape.delay {
                    message = message.delay(delay);
                }
                herald.send(message).await.map_err(|e| e.to_string())?;
                i += senders;
                let sent = done.fetch_add(1, Ordering::Relaxed) + 1;
                if sent % 100_000 == 0 {
                    eprintln!("{sent} enqueued");
                }
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// `n` disabled `tolq` endpoints on the sink, tenants `t0` .. `t{n-1}`.
async fn hooks(herald: &Herald, sink: &Sink, n: usize) -> Result<Vec<EndpointId>, String> {
    let mut ids = Vec::with_capacity(n);
    for e in 0..n {
        let url = format!("http://{}/hook/{e}", sink.addr);
        ids.push(disabled_endpoint(herald, format!("t{e}"), url).await?);
    }
    Ok(ids)
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
    let payload = payload();
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
        figures: Vec::new(),
    })
}
