//! Talking to a running daemon: where it is, the token, and what its errors mean to a person.

use clap::Args;
use reqwest::Method;
use serde_json::Value;

/// The help heading of the options that reach a running daemon.
const CLIENT: &str = "Talking to a running daemon (not `serve` or `receive`)";

/// Where the daemon is, how to authenticate, and how to print. Accepted before or after the
/// subcommand (`herald --json deliveries list` = `herald deliveries list --json`). Shown under
/// a heading of their own, so that `serve --help` does not pass them off as the daemon's.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = CLIENT)]
pub struct Remote {
    /// The daemon's base URL.
    #[arg(
        long,
        global = true,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8088",
        value_name = "URL"
    )]
    pub server: String,
    /// Bearer token: the admin token (the producer token is enough for `send`). Defaults to
    /// HERALD_ADMIN_TOKEN when HERALD_TOKEN is not set.
    #[arg(
        long,
        global = true,
        env = "HERALD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print JSON (the daemon's own answer) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Remote {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var("HERALD_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty())
    }

    /// One API call; a problem+json answer becomes an error naming its type and detail.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        Ok(self.call_with_status(method, path, body).await?.1)
    }

    /// [`Remote::call`], with the success status (200 and 202 mean different things on send).
    pub async fn call_with_status(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let client = reqwest::Client::new();
        let mut request = client.request(method, self.url(path));
        if let Some(token) = self.token() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{}: reading the answer: {e}", self.server))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok((status.as_u16(), value));
        }
        let kind = value["type"].as_str().unwrap_or("");
        let detail = value["detail"]
            .as_str()
            .or(value["title"].as_str())
            .or(value.as_str())
            .unwrap_or("");
        let mut message = match kind {
            "" => format!("{status}: {detail}"),
            kind => format!("{kind} ({}): {detail}", status.as_u16()),
        };
        if detail == "no such route" {
            message.push_str(&format!(
                "\n  the daemon at {} does not serve {path}: is it older than this command?",
                self.server
            ));
        }
        if status.as_u16() == 401 {
            message.push_str(match self.token() {
                None => {
                    "\n  pass the admin token with --token or HERALD_TOKEN (the daemon's HERALD_ADMIN_TOKEN; for `send` its HERALD_PRODUCER_TOKEN is enough)"
                }
                Some(_) => {
                    "\n  the token given (--token, HERALD_TOKEN or HERALD_ADMIN_TOKEN) is not one of the daemon's: its HERALD_ADMIN_TOKEN, or for `send` its HERALD_PRODUCER_TOKEN"
                }
            });
        }
        Err(message)
    }

    fn unreachable(&self, error: &reqwest::Error) -> String {
        let mut cause = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(error);
        while let Some(e) = source {
            cause = e.to_string();
            source = e.source();
        }
        if error.is_connect() {
            format!(
                "cannot reach {} — is `herald serve` running? ({cause})\n  another address: --server URL or HERALD_URL",
                self.server
            )
        } else if error.is_builder() {
            format!("--server {:?} is not a URL: {cause}", self.server)
        } else {
            format!("{}: {cause}", self.server)
        }
    }

    /// GET
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(Method::GET, path, None).await
    }

    /// POST
    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(Method::POST, path, body).await
    }

    /// Prints `value` as JSON when `--json` was given; true when it did.
    pub fn printed_json(&self, value: &Value) -> Result<bool, String> {
        if !self.json {
            return Ok(false);
        }
        print_json(value)?;
        Ok(true)
    }
}

/// Pretty JSON on stdout.
pub fn print_json(value: &Value) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// A value for a URL query or path segment.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `?a=1&b=2` from the pairs whose value is set; empty when none is.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| Some(format!("{key}={}", encode(value.as_deref()?))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
