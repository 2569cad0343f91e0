//! Delivery scenarios: `deliver` (library to receiver), `http` (through the daemon's producer
//! API) and `isolation` (healthy endpoints next to one that never answers).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::{EndpointId, EngineConfig, Herald};

use super::sink::{Sink, ceiling};
use super::{Row, Scratch, disabled_endpoint, enqueue, hooks, open, payload, percentile};

/// The sink's ceiling for this load shape, as a row and as a rate.
async fn ceiling_for(
    sink: &Sink,
    messages: usize,
    endpoints: usize,
    concurrency: usize,
) -> Result<(Row, f64), String> {
    let body = serde_json::to_vec(&payload()).map_err(|e| e.to_string())?;
    let client_concurrency = (endpoints * concurrency).min(256);
    let rate = ceiling(sink, messages, client_concurrency, &body).await?;
    let row = Row {
        seconds: messages as f64 / rate,
        ..Row::new(
            "ceiling",
            format!("plain client, concurrency={client_concurrency}"),
            messages,
            rate,
        )
    };
    Ok((row, rate))
}

/// Enables `ids` at once and waits until the sink got `expected` requests; returns seconds.
async fn release(
    herald: &Herald,
    sink: &Sink,
    ids: &[EndpointId],
    expected: usize,
) -> Result<f64, String> {
    sink.expect(expected);
    let started = Instant::now();
    for id in ids {
        herald
            .set_endpoint_enabled(*id, true)
            .await
            .map_err(|e| e.to_string())?;
    }
    sink.wait().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Every endpoint of a scenario is the same local receiver, i.e. one host: the idle pool per
/// host must hold all attempts in flight, or most of them would open a new connection — a cost
/// of the benchmark's shape, not of herald (real endpoints are spread over many hosts).
fn engine(concurrency: usize) -> EngineConfig {
    let mut config = EngineConfig {
        endpoint_concurrency: concurrency,
        max_in_flight: 2048,
        ..EngineConfig::default()
    };
    config.client.pool_idle_per_host = config.max_in_flight;
    config
}

/// `deliver`: everything is enqueued while the endpoints are disabled, then they are enabled
/// at once: the figure is delivery throughput alone.
pub async fn deliver(
    messages: usize,
    endpoints: usize,
    concurrency: usize,
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let (ceiling_row, ceiling_rate) = ceiling_for(&sink, messages, endpoints, concurrency).await?;
    let dir = Scratch::new("deliver");
    let herald = open(&dir, engine(concurrency)).await?;
    let ids = hooks(&herald, &sink, endpoints).await?;
    enqueue(&herald, messages, move |i| format!("t{}", i % endpoints)).await?;
    let seconds = release(&herald, &sink, &ids, messages).await?;
    herald.shutdown().await.map_err(|e| e.to_string())?;
    let rate = messages as f64 / seconds;
    Ok(vec![
        ceiling_row,
        Row {
            seconds,
            ratio_to_ceiling: Some(rate / ceiling_rate),
            ..Row::new(
                "deliver",
                format!("endpoints={endpoints} conc={concurrency}"),
                messages,
                rate,
            )
        },
    ])
}

/// `http`: 64 producers post to a daemon (the real router on 127.0.0.1) while it delivers to
/// enabled endpoints; accept latency over HTTP, and end-to-end deliveries per second from the
/// first post to the last delivery.
pub async fn http(
    messages: usize,
    endpoints: usize,
    concurrency: usize,
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let (ceiling_row, ceiling_rate) = ceiling_for(&sink, messages, endpoints, concurrency).await?;
    let dir = Scratch::new("http");
    let herald = open(&dir, engine(concurrency)).await?;
    for id in hooks(&herald, &sink, endpoints).await? {
        herald
            .set_endpoint_enabled(id, true)
            .await
            .map_err(|e| e.to_string())?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = herald::server::router(herald.clone(), herald::server::Tokens::default(), None);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{addr}/v1/messages");
    let next = Arc::new(AtomicU64::new(0));
    sink.expect(messages);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= messages {
                    return Ok::<_, String>(latencies);
                }
                let body = serde_json::json!({
                    "tenant": format!("t{}", i % endpoints),
                    "event_type": "job.completed",
                    "payload": payload(),
                });
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                response.bytes().await.map_err(|e| e.to_string())?;
                if status != 202 {
                    return Err(format!("POST /v1/messages answered {status}"));
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(messages);
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let accepted_seconds = started.elapsed().as_secs_f64();
    sink.wait().await?;
    let seconds = started.elapsed().as_secs_f64();
    herald.shutdown().await.map_err(|e| e.to_string())?;
    latencies.sort();
    let rate = messages as f64 / seconds;
    Ok(vec![
        ceiling_row,
        Row {
            seconds: accepted_seconds,
            p50_ms: Some(percentile(&latencies, 0.50)),
            p99_ms: Some(percentile(&latencies, 0.99)),
            ..Row::new(
                "http-post",
                "64 producers, durable 202s".into(),
                messages,
                messages as f64 / accepted_seconds,
            )
        },
        Row {
            seconds,
            ratio_to_ceiling: Some(rate / ceiling_rate),
            ..Row::new(
                "http-e2e",
                format!("endpoints={endpoints} conc={concurrency}"),
                messages,
                rate,
            )
        },
    ])
}

/// `isolation`: 9 healthy endpoints, with and without a tenth that accepts connections and
/// never answers; the healthy throughput with it as a ratio of without it. The two kinds of
/// run alternate `rounds` times and the medians are compared, so that drift of a shared
/// machine does not land on one side.
pub async fn isolation(
    messages: usize,
    concurrency: usize,
    rounds: usize,
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for with_dead in [false, true] {
            let rate = isolation_run(&sink, messages, concurrency, with_dead).await?;
            rates[usize::from(with_dead)].push(rate);
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (alone, beside) = (median(&mut rates[0]), median(&mut rates[1]));
    Ok(vec![
        Row::new(
            "isolation",
            format!("9 healthy, conc={concurrency}, median of {rounds}"),
            messages,
            alone,
        ),
        Row {
            ratio_to_ceiling: Some(beside / alone),
            ..Row::new(
                "isolation",
                format!("9 healthy + 1 hung, median of {rounds}"),
                messages,
                beside,
            )
        },
    ])
}

/// One isolation run: healthy deliveries per second.
async fn isolation_run(
    sink: &Sink,
    messages: usize,
    concurrency: usize,
    with_dead: bool,
) -> Result<f64, String> {
    let dir = Scratch::new("isolation");
    let herald = open(&dir, engine(concurrency)).await?;
    let mut ids = hooks(&herald, sink, 9).await?;
    enqueue(&herald, messages, |i| format!("t{}", i % 9)).await?;
    if with_dead {
        let url = format!("http://{}/dead", sink.addr);
        ids.push(disabled_endpoint(&herald, "dead".into(), url).await?);
        // As many messages as each healthy endpoint gets: far more than it can ever hold.
        enqueue(&herald, messages / 9, |_| "dead".into()).await?;
    }
    let seconds = release(&herald, sink, &ids, messages).await?;
    // The hung endpoint's attempts are still waiting: stop without waiting for them.
    herald
        .shutdown_within(Duration::from_millis(100))
        .await
        .map_err(|e| e.to_string())?;
    Ok(messages as f64 / seconds)
}
