//! A damaged store is never served silently: the real daemon refuses a store that lost
//! acknowledged messages, says what is missing and what to do, and the operator's tools
//! (`herald store check | recover | backup`) work on it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::{ADMIN, Daemon, PRODUCER, metric};
use serde_json::json;

const MESSAGES: usize = 2_000;

/// A stopped daemon's data with `MESSAGES` messages held for a disabled endpoint.
async fn held_store(base: &Path) {
    let daemon = Daemon::start(base);
    let endpoint = daemon
        .create_endpoint(
            json!({"tenant": "acme", "url": "http://127.0.0.1:9/cb", "policy": "quick"}),
        )
        .await;
    let id = endpoint["id"].as_str().unwrap().to_string();
    let (status, _) = daemon
        .admin("POST", &format!("/admin/endpoints/{id}/disable"), None)
        .await;
    assert_eq!(status, 200);
    let mut senders = Vec::new();
    for sender in 0..16 {
        let base = daemon.base.clone();
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in (sender..MESSAGES).step_by(16) {
                let body = json!({"tenant": "acme", "event_type": "e", "payload": {"i": i}});
                let answer = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(PRODUCER)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 202);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the daemon data in `base` (its store and policies) in a fresh directory.
fn case(base: &Path, root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    copy_dir(base, &dir);
    dir
}

fn flip_byte(file: &Path, at: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

fn herald(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_DATA_DIR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

async fn pending(daemon: &Daemon) -> f64 {
    let text = daemon.scrape().await;
    metric(&text, "herald_deliveries_pending", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_acknowledged_messages_is_refused_not_served() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    held_store(&base).await;
    let log = base.join("store").join("db");
    let size = std::fs::metadata(&log).unwrap().len();

    let mut refused = 0;
    for (name, fraction) in [
        ("start", 0.001),
        ("quarter", 0.25),
        ("half", 0.5),
        ("late", 0.9),
    ] {
        let dir = case(&base, root.path(), name);
        let at = (size as f64 * fraction) as u64 + 16;
        flip_byte(&dir.join("store").join("db"), at);
        match Daemon::try_start(&dir, None) {
            Err((status, log)) => {
                // Refused: with what is missing, which file, and what to do.
                assert!(!status.success());
                assert!(
                    log.contains("refuses") || log.contains("damaged"),
                    "{name}: {log}"
                );
                assert!(
                    log.contains("herald store"),
                    "{name}: no way out named: {log}"
                );
                refused += 1;
                let reason = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("herald"))
                    .unwrap_or("");
                eprintln!("{name} (byte {at} of {size}): refused: {reason}");
                let store = dir.join("store");
                let store = store.to_str().unwrap();
                let (ok, report) = herald(&["store", "check", "--data-dir", store]);
                assert!(!ok, "{name}: check passed a damaged store: {report}");
                assert!(
                    report.contains("PROBLEM") || report.contains("damaged"),
                    "{report}"
                );
                let (ok, text) =
                    herald(&["store", "recover", "--data-dir", store, "--accept-loss"]);
                if ok {
                    // What is left is served again, and said to be incomplete.
                    assert!(text.contains("with a loss"), "{text}");
                    let daemon = Daemon::start(&dir);
                    assert!(pending(&daemon).await < MESSAGES as f64);
                } else {
                    // sled cannot read it at all: only a backup helps, and that is said.
                    assert!(text.contains("backup"), "{name}: {text}");
                }
            }
            Ok(daemon) => {
                eprintln!("{name} (byte {at} of {size}): opened, nothing lost");
                // The flip hit nothing live: everything acknowledged is there.
                assert_eq!(pending(&daemon).await, MESSAGES as f64, "{name}");
            }
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of 4 damaged stores were refused"
    );
}

/// A name, what is done to the store directory, and what the refusal must say.
type Damage = (&'static str, fn(&Path), &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_configuration_and_key_files_get_readable_refusals() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    held_store(&base).await;
    let cases: [Damage; 4] = [
        ("conf", |s| flip_byte(&s.join("conf"), 3), "conf is damaged"),
        (
            "short-key",
            |s| std::fs::write(s.join("secret.key"), b"too short").unwrap(),
            "key file is damaged",
        ),
        (
            "other-key",
            |s| std::fs::write(s.join("secret.key"), [9u8; 32]).unwrap(),
            "does not open the sealed records",
        ),
        (
            "no-key",
            |s| std::fs::remove_file(s.join("secret.key")).unwrap(),
            "secret.key is missing",
        ),
    ];
    for (name, damage, expected) in cases {
        let dir = case(&base, root.path(), name);
        damage(&dir.join("store"));
        let Err((status, log)) = Daemon::try_start(&dir, None) else {
            panic!("{name}: the daemon started");
        };
        assert!(!status.success());
        assert!(log.contains(expected), "{name}: {log}");
        assert!(!log.contains("earlier than 0.29"), "{name}: {log}");
        if name == "no-key" {
            assert!(
                !dir.join("store").join("secret.key").exists(),
                "a new key was made for an existing store"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_running_restores_every_message() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    held_store(&base).await;
    let daemon = Daemon::start(&base);
    let backup = root.path().join("backup");
    let (ok, text) = herald(&[
        "store",
        "backup",
        backup.to_str().unwrap(),
        "--server",
        &daemon.base,
        "--token",
        ADMIN,
    ]);
    assert!(ok, "{text}");
    // Sends keep working after the copy.
    let (status, _, _) = daemon
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            Some(r#"{"tenant": "acme", "event_type": "e", "payload": {"after": true}}"#),
        )
        .await;
    assert_eq!(status, 202);
    drop(daemon);

    // Restore: the backup directory is a store of its own.
    let restored = root.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::rename(&backup, restored.join("store")).unwrap();
    copy_dir(&base.join("policies"), &restored.join("policies"));
    let daemon = Daemon::start(&restored);
    assert_eq!(pending(&daemon).await, MESSAGES as f64);
    let (ok, report) = herald(&[
        "store",
        "check",
        "--data-dir",
        base.join("store").to_str().unwrap(),
    ]);
    assert!(ok, "the source is sound: {report}");
}
