//! A full disk: sends are refused with 503 `unavailable` while writes fail, `/readyz` says so,
//! acknowledged messages stay readable, and once space returns herald takes writes again by
//! itself — without a restart and without losing anything it acknowledged.
//!
//! The data directory lives on a small tmpfs mounted by the test (root only). Where mounting
//! is not allowed the test says why and skips — except in CI (`CI=true`), where it must run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, PRODUCER, metric};
use serde_json::json;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if output.status.success() {
            Ok(Tmpfs { dir })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 1 << 16];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn send(daemon: &Daemon, i: usize) -> (u16, serde_json::Value, String) {
    let body = json!({"tenant": "acme", "event_type": "e", "payload": {"i": i}}).to_string();
    daemon
        .call("POST", "/v1/messages", Some(PRODUCER), Some(&body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_with_503_and_recovers_without_a_restart() {
    let tmpfs = match Tmpfs::mount(48) {
        Ok(tmpfs) => tmpfs,
        Err(reason) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot mount a tmpfs here ({reason}); CI runs this test as root");
            return;
        }
        Err(reason) => panic!("CI must be able to mount a tmpfs: {reason}"),
    };
    let data = tmpfs.path();
    let mut daemon = Daemon::start(&data);
    let endpoint = daemon
        .create_endpoint(
            json!({"tenant": "acme", "url": "http://127.0.0.1:9/cb", "policy": "quick"}),
        )
        .await;
    let id = endpoint["id"].as_str().unwrap();
    daemon
        .admin("POST", &format!("/admin/endpoints/{id}/disable"), None)
        .await;
    let (status, first, _) = send(&daemon, 0).await;
    assert_eq!(status, 202);
    let mut acknowledged = 1;

    // Fill the disk: sends are refused with 503 problem+json, never a 500.
    let filler = fill(&data);
    let mut refused = None;
    for i in 1..5_000 {
        let (status, problem, content_type) = send(&daemon, i).await;
        match status {
            202 => acknowledged += 1,
            503 => {
                assert_eq!(problem["type"], "unavailable", "{problem}");
                assert_eq!(content_type, "application/problem+json");
                refused = Some(problem);
                break;
            }
            other => panic!("send {i} answered {other}: {problem}"),
        }
    }
    let refused = refused.expect("no send was refused on a full disk");
    assert!(
        refused["detail"].as_str().unwrap().contains("full"),
        "{refused}"
    );
    let (status, problem, _) = send(&daemon, 9_999).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (503, Some("unavailable"))
    );
    let (status, ready, _) = daemon.call("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["type"].as_str()), (503, Some("unavailable")));
    let (status, health, _) = daemon.call("GET", "/healthz", None, None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
    // What was acknowledged stays readable.
    let message_id = first["id"].as_str().unwrap();
    let (status, _, _) = daemon
        .call(
            "GET",
            &format!("/v1/messages/{message_id}"),
            Some(PRODUCER),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Space returns: herald takes writes again by itself.
    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(15);
    loop {
        let (status, _, _) = daemon.call("GET", "/readyz", None, None).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "herald did not recover within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = freed.elapsed();
    eprintln!("writes accepted again {recovery:?} after space returned");
    let (status, _, _) = send(&daemon, 10_000).await;
    assert_eq!(status, 202);
    acknowledged += 1;
    let (status, health, _) = daemon.call("GET", "/healthz", None, None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    // Nothing acknowledged was lost, before or after a restart.
    let pending = |text: String| metric(&text, "herald_deliveries_pending", &[]);
    assert_eq!(pending(daemon.scrape().await), acknowledged as f64);
    assert!(daemon.terminate().success());
    let daemon = Daemon::start(&data);
    assert_eq!(pending(daemon.scrape().await), acknowledged as f64);
    drop(daemon);
}
