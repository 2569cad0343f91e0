//! A real PostgreSQL server for the tests: `initdb` into a temporary directory (as the
//! `postgres` OS user when the tests run as root), one server per test process, one database
//! per test. Where PostgreSQL is not installed the tests say so and skip — except in CI
//! (`CI=true`), where `.ci/run` installs it and a missing server fails them. And real
//! `herald serve` nodes of one cluster on such a database ([`Cluster`]).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::daemon::{Daemon, PRODUCER, metric};

/// The running server; it stops when the test process exits (its watchdog sees stdin close)
/// and its watchdog then removes its directory: a static is never dropped, so a `TempDir`
/// here would leave a cluster of every test process behind in `/tmp`.
pub struct PgServer {
    pub port: u16,
    _watchdog: Child,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();

/// Where PostgreSQL's server programs are: on PATH, or in Debian's versioned directory.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The uid and gid to run the server as: `postgres` when we are root (initdb refuses root).
fn server_user() -> Option<(u32, u32)> {
    if rustix::process::geteuid().as_raw() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// Starts the shared server. Its port is picked free and then given to PostgreSQL, which binds
/// it a moment later — another test's receiver may take it in between: then the whole start
/// is tried again (the failed one's directory is removed by its watchdog).
fn start() -> Result<PgServer, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        match start_once() {
            Err(e) if tries < 3 && e.contains(PORT_TAKEN) => eprintln!("{e}; once more"),
            started => return started,
        }
    }
}

/// What PostgreSQL says when its port is taken.
const PORT_TAKEN: &str = "could not bind";

/// Waits for a starting server's `ready to accept connections`; its port taken meanwhile, or
/// the end of its output, is an error.
fn await_ready(stderr: impl std::io::Read + Send + 'static) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, ready or not: the server's output must not fill its pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready to accept connections") {
                let _ = tx.send(Ok(()));
            } else if line.contains(PORT_TAKEN) {
                // Not any FATAL line: clients reconnecting during a restart make the server
                // log "FATAL: the database system is starting up" before it is ready.
                let _ = tx.send(Err(format!("postgres: {line}")));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(ready) => ready,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err("postgres did not start within 30 s".into())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("postgres exited while starting".into())
        }
    }
}

fn start_once() -> Result<PgServer, String> {
    let bin = bin_dir().ok_or("PostgreSQL is not installed (no initdb found)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("data");
    let user = server_user();
    if let Some((uid, gid)) = user {
        rustix::fs::chown(
            dir.path(),
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(|e| format!("chown: {e}"))?;
    } else if rustix::process::geteuid().as_raw() == 0 {
        return Err("running as root and there is no `postgres` user".into());
    }
    let as_server_user = |command: &mut Command| {
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ])
        .args(["--no-sync", "--no-instructions"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_server_user(&mut initdb);
    let output = initdb.output().map_err(|e| format!("initdb: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // A watchdog shell runs the server, stops it when our end of its stdin closes (when the
    // test process exits, however it exits) and then removes the cluster's directory.
    // The paths are the script's arguments, quoted where used: a space or a glob character
    // in TMPDIR must not turn `rm -rf` on anything else.
    let dir = dir.keep();
    let script = "\"$1\" -D \"$2\" -p \"$3\" -k \"$4\" -c listen_addresses=127.0.0.1 -c fsync=on \
                  -c max_connections=300 -c shared_buffers=64MB & pid=$!; read _; kill -QUIT $pid; \
                  wait; rm -rf -- \"$4\"";
    let mut watchdog = Command::new("sh");
    watchdog
        .args(["-c", script, "sh"])
        .arg(bin.join("postgres"))
        .arg(&data)
        .arg(port.to_string())
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_server_user(&mut watchdog);
    let mut watchdog = watchdog.spawn().map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        format!("postgres: {e}")
    })?;
    // Ready when it says so; dropping the watchdog on failure stops it and removes the
    // directory.
    await_ready(watchdog.stderr.take().ok_or("no stderr")?)?;
    Ok(PgServer {
        port,
        _watchdog: watchdog,
    })
}

/// The shared server, or why there is none (the caller skips, or fails in CI).
pub fn server() -> Option<&'static PgServer> {
    match SERVER.get_or_init(start) {
        Ok(server) => Some(server),
        Err(reason) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: {reason}; CI installs PostgreSQL and runs this test");
            None
        }
        Err(reason) => panic!("CI needs PostgreSQL: {reason}"),
    }
}

/// A fresh, empty database on the shared server; its URL.
pub async fn database() -> Option<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let server = server()?;
    let name = format!(
        "herald_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    let started = Instant::now();
    loop {
        match sqlx_create(&admin, &name).await {
            Ok(()) => break,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                eprintln!("creating {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create database {name}: {e}"),
        }
    }
    Some(format!(
        "postgres://postgres@127.0.0.1:{}/{name}",
        server.port
    ))
}

async fn sqlx_create(admin: &str, name: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A server of one test's own, which the test may stop and start again (a database restart);
/// it is stopped when dropped.
pub struct OwnServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

impl OwnServer {
    /// A fresh server, or `None` (the test skips) where PostgreSQL is not installed outside CI.
    pub fn start() -> Option<OwnServer> {
        match Self::try_start() {
            Ok(server) => Some(server),
            Err(reason) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: {reason}; CI installs PostgreSQL and runs this test");
                None
            }
            Err(reason) => panic!("CI needs PostgreSQL: {reason}"),
        }
    }

    fn try_start() -> Result<OwnServer, String> {
        let bin = bin_dir().ok_or("PostgreSQL is not installed (no initdb found)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let user = server_user();
        if let Some((uid, gid)) = user {
            rustix::fs::chown(
                dir.path(),
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
            )
            .map_err(|e| format!("chown: {e}"))?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg("--no-instructions")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        if !initdb.status().map_err(|e| e.to_string())?.success() {
            return Err("initdb failed".into());
        }
        let mut server = OwnServer {
            port: 0,
            bin,
            dir,
            user,
            child: None,
        };
        // A port picked free may be taken before the server binds it: then another one.
        let mut tries = 0;
        loop {
            tries += 1;
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            match server.try_start_again() {
                Err(e) if tries < 3 && e.contains(PORT_TAKEN) => eprintln!("{e}; once more"),
                started => return started.map(|()| server),
            }
        }
    }

    /// Starts the server (again) on the same data and port; returns once it takes connections.
    pub fn start_again(&mut self) {
        if let Err(e) = self.try_start_again() {
            panic!("{e}");
        }
    }

    fn try_start_again(&mut self) -> Result<(), String> {
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().map_err(|e| format!("postgres: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        if let Err(e) = await_ready(stderr) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server (a fast shutdown: sessions are cut, as in a restart or failover).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// A fresh database on this server; its URL.
    pub async fn database(&self, name: &str) -> String {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        sqlx_create(&admin, name).await.expect("create database");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One attempt only: a failure is final (then replayed by hand).
const ONCE: &str = "name = \"once\"\n[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 1\n[request]\ntimeout = \"2s\"\n";

/// How to start nodes of one cluster.
pub struct Cluster {
    pub root: tempfile::TempDir,
    store: String,
    key: String,
}

impl Cluster {
    pub fn new(store: String) -> Cluster {
        Cluster {
            root: tempfile::tempdir().unwrap(),
            store,
            key: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        }
    }

    /// Node 0 in the middle of an attempt that does not end, for killing a node mid-attempt:
    /// a receiver whose first request hangs (later ones succeed), tenant `acme`'s default
    /// `quick` endpoint on it, and `first` sent to node 0 and seen by the receiver. Returns the
    /// receiver, the node and the send's answer.
    pub async fn hung_attempt(&self, first: &Value) -> (super::Receiver, Daemon, Value) {
        let receiver = super::Receiver::first_then_ok(super::Reply::Hang).await;
        let node = self.node(0);
        create_endpoint(&node, "acme", &receiver.url(), "quick").await;
        let (status, sent) = send(&node, first).await;
        assert_eq!(status, 202, "{sent}");
        assert!(receiver.wait_for(1, Duration::from_secs(10)).await);
        (receiver, node, sent)
    }

    /// Starts node `n` (its own data directory, with the `once` policy).
    pub fn node(&self, n: usize) -> Daemon {
        self.node_with(n, &[])
    }

    /// [`Cluster::node`] with more `HERALD_*` (or other) variables.
    pub fn node_with(&self, n: usize, env: &[(&str, &str)]) -> Daemon {
        let data = self.root.path().join(format!("node{n}"));
        std::fs::create_dir_all(data.join("policies")).unwrap();
        std::fs::write(data.join("policies").join("once.toml"), ONCE).unwrap();
        let mut all = vec![
            ("HERALD_STORE", self.store.as_str()),
            ("HERALD_SECRET_KEY", self.key.as_str()),
            ("HERALD_LOG", "info"),
        ];
        all.extend_from_slice(env);
        Daemon::start_with_env(&data, None, &all)
    }
}

/// `POST /v1/messages` on one node.
pub async fn send(node: &Daemon, body: &Value) -> (u16, Value) {
    let (status, answer, _) = node
        .call(
            "POST",
            "/v1/messages",
            Some(PRODUCER),
            Some(&body.to_string()),
        )
        .await;
    (status, answer)
}

/// A tenant's default endpoint, created on one node; its id.
pub async fn create_endpoint(node: &Daemon, tenant: &str, url: &str, policy: &str) -> String {
    let endpoint = node
        .create_endpoint(json!({"tenant": tenant, "url": url, "policy": policy, "default": true}))
        .await;
    endpoint["id"].as_str().unwrap().to_string()
}

/// One metric of one node.
pub async fn scrape(node: &Daemon, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&text, name, &[])
}
