//! Delivery scenarios: `deliver` (library to receiver), `http` (through the daemon's producer
//! API) and `isolation` (healthy endpoints next to one that never answers).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::{EndpointId, EngineConfig, Herald};

use super::sink::{Sink, ceiling};
use super::{
    Row, Scratch, Shape, disabled_endpoint, enqueue, enqueue_shaped, hooks, open, payload,
    percentile,
};

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
    shape: Shape,
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let (ceiling_row, ceiling_rate) = ceiling_for(&sink, messages, endpoints, concurrency).await?;
    let dir = Scratch::new("deliver");
    let herald = open(&dir, engine(concurrency)).await?;
    let ids = hooks(&herald, &sink, endpoints).await?;
    let tenant = move |i| format!("t{}", i % endpoints);
    enqueue_shaped(&herald, messages, tenant, shape).await?;
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
                match shape.ordering_keys {
                    0 => format!("endpoints={endpoints} conc={concurrency}"),
                    keys => format!("endpoints={endpoints} conc={concurrency} keys={keys}"),
                },
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

/// `isolation`: 9 healthy endpoints, with and without `hung` more whose receiver accepts
/// connections and never answers (20 messages each); the healthy throughput with them as a
/// ratio of without them, and the healthy endpoints' first-delivery latency beside the hung
/// ones. The two kinds of run alternate `rounds` times and the medians are compared, so that
/// drift of a shared machine does not land on one side.
pub async fn isolation(
    messages: usize,
    concurrency: usize,
    rounds: usize,
    hung: &[usize],
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let mut rows = Vec::new();
    for &hung in hung {
        let mut rates = [Vec::new(), Vec::new()];
        let mut latencies = Vec::new();
        for _ in 0..rounds {
            for with_hung in [0, hung] {
                let (rate, first_ms) =
                    isolation_run(&sink, messages, concurrency, with_hung).await?;
                rates[usize::from(with_hung > 0)].push(rate);
                if with_hung > 0 {
                    latencies.push(first_ms);
                }
            }
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (alone, beside) = (median(&mut rates[0]), median(&mut rates[1]));
        rows.push(Row::new(
            "isolation",
            format!("9 healthy, conc={concurrency}, median of {rounds}"),
            messages,
            alone,
        ));
        rows.push(Row {
            ratio_to_ceiling: Some(beside / alone),
            p50_ms: Some(median(&mut latencies)),
            ..Row::new(
                "isolation",
                format!("9 healthy + {hung} hung, median of {rounds}"),
                messages,
                beside,
            )
        });
    }
    Ok(rows)
}

/// One isolation run: healthy deliveries per second, and the first healthy delivery's
/// latency (ms) after the healthy endpoints are enabled beside the hung ones.
async fn isolation_run(
    sink: &Sink,
    messages: usize,
    concurrency: usize,
    hung: usize,
) -> Result<(f64, f64), String> {
    let dir = Scratch::new("isolation");
    let herald = open(&dir, engine(concurrency)).await?;
    let ids = hooks(&herald, sink, 9).await?;
    enqueue(&herald, messages, |i| format!("t{}", i % 9)).await?;
    if hung > 0 {
        // The hung endpoints go first and fill what they can before the healthy ones start.
        let before = sink.hung.load(std::sync::atomic::Ordering::Relaxed);
        for h in 0..hung {
            let url = format!("http://{}/dead/{h}", sink.addr);
            disabled_endpoint(&herald, format!("dead{h}"), url).await?;
        }
        enqueue(&herald, 20 * hung, move |i| format!("dead{}", i % hung)).await?;
        for endpoint in herald.endpoints(None).await.map_err(|e| e.to_string())? {
            if endpoint.tenant.starts_with("dead") {
                herald
                    .set_endpoint_enabled(endpoint.id, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let started = Instant::now();
        while sink.hung.load(std::sync::atomic::Ordering::Relaxed) < before + hung as u64 {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("the hung endpoints were not attempted within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let released = Instant::now();
    let seconds = release(&herald, sink, &ids, messages).await?;
    let first_ms = sink
        .first_at()
        .map_or(f64::NAN, |at| (at - released).as_secs_f64() * 1000.0);
    // The hung endpoints' attempts are still waiting: stop without waiting for them.
    herald
        .shutdown_within(Duration::from_millis(100))
        .await
        .map_err(|e| e.to_string())?;
    Ok((messages as f64 / seconds, first_ms))
}
