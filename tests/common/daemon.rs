//! The real `herald serve` binary on a temporary directory, driven over HTTP.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const ADMIN: &str = "admin-token-0123456789";
pub const PRODUCER: &str = "producer-token-0123456789";

/// A running daemon on a free port; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    /// Everything it logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    /// Told of every line added to `log`.
    logged: std::sync::Arc<tokio::sync::Notify>,
}

/// The address in a `herald serving` log line (`... listen=127.0.0.1:40123 ...`).
pub fn listening(line: &str) -> Option<std::net::SocketAddr> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("listen="))
        .and_then(|addr| addr.parse().ok())
}

impl Daemon {
    pub fn start(data: &Path) -> Daemon {
        Self::start_with(data, None)
    }

    /// With `--config FILE`; the environment still overrides listen, data and tokens.
    pub fn start_with(data: &Path, config: Option<&Path>) -> Daemon {
        match Self::try_start(data, config) {
            Ok(daemon) => daemon,
            Err((status, log)) => panic!("daemon exited with {status}:\n{log}"),
        }
    }

    /// With extra `HERALD_*` variables, set after the harness's own (an empty token variable
    /// turns that token off).
    pub fn start_with_env(data: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Daemon {
        match Self::try_start_with_env(data, config, env) {
            Ok(daemon) => daemon,
            Err((status, log)) => panic!("daemon exited with {status}:\n{log}"),
        }
    }

    /// Starts the daemon, or returns how it exited and what it logged when it refuses to
    /// start.
    pub fn try_start(
        data: &Path,
        config: Option<&Path>,
    ) -> Result<Daemon, (std::process::ExitStatus, String)> {
        Self::try_start_with_env(data, config, &[])
    }

    /// [`Daemon::try_start`] with extra `HERALD_*` variables.
    pub fn try_start_with_env(
        data: &Path,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<Daemon, (std::process::ExitStatus, String)> {
        let policies = data.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("quick.toml"),
            "name = \"quick\"\n[schedule]\nkind = \"fixed\"\ninterval = \"200ms\"\nmax_attempts = 50\n[request]\ntimeout = \"2s\"\n",
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            // Port 0: the daemon binds a free port itself and names it in `herald serving`.
            // (A port picked here and bound there could be taken in between by another
            // test's receiver.)
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_DATA_DIR", data.join("store"))
            .env("HERALD_POLICIES_DIR", &policies)
            .env("HERALD_ADMIN_TOKEN", ADMIN)
            .env("HERALD_PRODUCER_TOKEN", PRODUCER)
            .env("HERALD_LOG", "debug")
            .env("HERALD_ALLOW_PRIVATE_TARGETS", "true")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the "serving" log line (not a sleep); keep draining stderr afterwards.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let logged = std::sync::Arc::new(tokio::sync::Notify::new());
        let (sink, tell) = (log.clone(), logged.clone());
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut sink = sink.lock().unwrap();
                    sink.push_str(&line);
                    sink.push('\n');
                }
                tell.notify_waiters();
                if !told && line.contains("herald serving") {
                    let _ = tx.send(listening(&line));
                    told = true;
                }
            }
            let _ = tx.send(None); // stderr closed: the process ended
        });
        let serving = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("daemon did not start in 20s");
        let Some(addr) = serving else {
            let status = child.wait().unwrap();
            let text = log.lock().unwrap().clone();
            return Err((status, text));
        };
        Ok(Daemon {
            child,
            base: format!("http://{addr}"),
            log,
            logged,
        })
    }

    /// The first line it logged that contains `needle`, once there is one; `None` after
    /// `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let more = self.logged.notified();
            let log = self.log.lock().unwrap().clone();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return Some(line.to_string());
            }
            tokio::time::timeout_at(deadline, more).await.ok()?;
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    /// Its Prometheus text (`GET /metrics`, which needs no token).
    pub async fn scrape(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value, String) {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            content_type,
        )
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, value, _) = self.call(method, path, Some(ADMIN), body.as_deref()).await;
        (status, value)
    }

    /// Creates an endpoint (`body` as `POST /admin/endpoints` takes it); the created record.
    pub async fn create_endpoint(&self, body: Value) -> Value {
        let (status, endpoint) = self.admin("POST", "/admin/endpoints", Some(body)).await;
        assert_eq!(status, 201, "{endpoint}");
        endpoint
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples of `name` in Prometheus text whose labels include all `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
