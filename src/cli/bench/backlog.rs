//! `backlog`: a million pending deliveries. How long they take to enqueue, what they cost on
//! disk and in memory, how soon after a restart the first due delivery goes out, and what the
//! process burns while it waits.
//!
//! The backlog is held behind disabled endpoints — in the store that is the same state as
//! deliveries waiting for a retry hours away: a due-index entry per delivery, and in memory
//! one scheduler slot per endpoint, nothing per delivery.

use std::time::{Duration, Instant};

use herald::{EngineConfig, NewMessage};

use super::sink::Sink;
use super::{Row, Scratch, Shape, disabled_endpoint, enqueue_shaped, hooks, open, payload};

/// `(resident, peak resident)` of process `pid` in MiB, from `/proc/PID/status`.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) from a `/proc/.../stat` file.
fn stat_seconds(path: &std::path::Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds process `pid` has used, and how many of them sled's own threads (its log
/// flusher, which also cleans segments, and its I/O pool) used: what herald's scheduler
/// spends while it waits is the difference.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let total = stat_seconds(&proc.join("stat"));
    let mut sled = 0.0;
    let tasks = std::fs::read_dir(proc.join("task")).into_iter().flatten();
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("sled") || comm.starts_with("log flusher") {
            sled += stat_seconds(&path.join("stat"));
        }
    }
    (total, sled)
}

/// With `delay`, the backlog is scheduled sends that far ahead on enabled endpoints: the
/// scheduler then holds one sleeping slot per endpoint, due in `delay`.
pub async fn backlog(
    deliveries: usize,
    endpoints: usize,
    delay: Option<Duration>,
) -> Result<Vec<Row>, String> {
    let sink = Sink::start().await?;
    let dir = Scratch::new("backlog");
    let herald = open(&dir, EngineConfig::default()).await?;
    let hooks = hooks(&herald, &sink, endpoints).await?;
    if delay.is_some() {
        for id in hooks {
            herald
                .set_endpoint_enabled(id, true)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let probe_url = format!("http://{}/probe", sink.addr);
    let probe = disabled_endpoint(&herald, "probe".into(), probe_url).await?;

    let started = Instant::now();
    let shape = Shape {
        ordering_keys: 0,
        delay,
    };
    enqueue_shaped(
        &herald,
        deliveries,
        move |i| format!("t{}", i % endpoints),
        shape,
    )
    .await?;
    let enqueue_seconds = started.elapsed().as_secs_f64();
    let message = NewMessage::new("probe", "e", &payload()).map_err(|e| e.to_string())?;
    herald.send(message).await.map_err(|e| e.to_string())?;
    let (rss_loaded, _) = memory_mib(std::process::id());
    herald.shutdown().await.map_err(|e| e.to_string())?;
    let disk = herald
        .disk_bytes()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0);
    drop(herald);
    // The closed instance's threads let go of the store's file lock as they wind down.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Restart in a fresh process (so its memory is its own): it opens the store and enables
    // the probe endpoint; the clock runs from spawning it to the probe's delivery arriving.
    sink.expect(1);
    let restarted = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args([
            "bench",
            "backlog-child",
            "--probe",
            &probe.to_string(),
            "--dir",
        ])
        .arg(&dir.0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("restart: {e}"))?;
    let waited = sink.wait().await;
    let first_delivery = restarted.elapsed().as_secs_f64();
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    let mut reported = line
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok());
    let (opened, pending) = (
        reported.next().unwrap_or(0.0),
        reported.next().unwrap_or(0.0),
    );

    // Idle: everything else is held; nothing should run.
    let idle = Duration::from_secs(5);
    let pid = child.id();
    let (total_before, sled_before) = cpu_seconds(pid);
    tokio::time::sleep(idle).await;
    let (total_after, sled_after) = cpu_seconds(pid);
    let percent = |seconds: f64| seconds / idle.as_secs_f64() * 100.0;
    let idle_cpu = percent(total_after - total_before);
    let idle_sled = percent(sled_after - sled_before);
    let (rss_restarted, peak_restarted) = memory_mib(pid);
    let _ = child.kill();
    let _ = child.wait();
    waited?;

    let held = match delay {
        Some(delay) => format!("scheduled {} ahead", humantime::format_duration(delay)),
        None => "held".into(),
    };
    let mut enqueue = Row::new(
        "backlog",
        format!("enqueue, {endpoints} endpoints, {held}"),
        deliveries,
        deliveries as f64 / enqueue_seconds,
    );
    enqueue.figures = vec![
        ("disk MiB".into(), disk),
        ("RSS MiB after enqueue".into(), rss_loaded),
    ];
    let mut restart = Row::new("backlog", "restart -> first delivery".into(), 1, 1.0);
    restart.seconds = first_delivery;
    restart.per_second = 0.0;
    restart.figures = vec![
        ("store open s".into(), opened),
        ("first delivery s".into(), first_delivery),
        ("pending after restart".into(), pending),
        ("idle CPU % (5 s)".into(), idle_cpu),
        ("of it sled's threads %".into(), idle_sled),
        ("RSS MiB".into(), rss_restarted),
        ("peak RSS MiB".into(), peak_restarted),
    ];
    Ok(vec![enqueue, restart])
}

/// The restarted process: opens the store, reports how long that took and what is pending,
/// enables the probe endpoint, then idles until the parent kills it.
pub async fn child(dir: &std::path::Path, probe: &str) -> Result<(), String> {
    let mut config = EngineConfig::default();
    config.client.targets.allow_private = true;
    let builder = herald::Herald::builder()
        .data_dir(dir)
        .engine_config(config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (herald, opened) = loop {
        let started = Instant::now();
        match builder.clone().open().await {
            Ok(herald) => break (herald, started.elapsed().as_secs_f64()),
            Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let probe = probe.parse().map_err(|_| "bad probe id".to_string())?;
    herald
        .set_endpoint_enabled(probe, true)
        .await
        .map_err(|e| e.to_string())?;
    let pending = herald
        .pending_deliveries()
        .await
        .map_err(|e| e.to_string())?;
    println!("{opened} {pending}");
    std::future::pending::<()>().await;
    Ok(())
}
