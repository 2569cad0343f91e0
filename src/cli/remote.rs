//! Commands that talk to a running daemon over its HTTP API.

use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the daemon is and how to authenticate.
#[derive(Args)]
pub struct Remote {
    /// The daemon's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8088")]
    url: String,
    /// Bearer token (the admin token for admin commands).
    #[arg(long, env = "HERALD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the daemon's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `herald deliveries ...`
#[derive(Subcommand)]
pub enum DeliveryCommand {
    /// List deliveries, oldest first.
    List {
        /// pending | succeeded | failed | skipped | held
        #[arg(long)]
        status: Option<String>,
        /// Only this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Created since (RFC 3339 or an age such as 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one delivery with every attempt.
    Show {
        /// Delivery id.
        id: String,
    },
}

/// What `herald replay` replays.
#[derive(Args)]
pub struct ReplayTarget {
    /// One delivery to replay.
    #[arg(conflicts_with_all = ["endpoint", "tenant", "since", "until"])]
    delivery_id: Option<String>,
    /// Bulk: only this endpoint.
    #[arg(long)]
    endpoint: Option<String>,
    /// Bulk: only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Bulk: deliveries in this status.
    #[arg(long, default_value = "failed")]
    status: String,
    /// Bulk: created since (RFC 3339 or an age such as 2h).
    #[arg(long)]
    since: Option<String>,
    /// Bulk: created until.
    #[arg(long)]
    until: Option<String>,
}

/// `herald endpoints ...`
#[derive(Subcommand)]
pub enum EndpointCommand {
    /// List endpoints.
    List {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create an endpoint.
    Create {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Callback URL.
        #[arg(long)]
        url: String,
        /// Policy name (see `herald policies list`).
        #[arg(long)]
        policy: String,
        /// Signing secret.
        #[arg(long)]
        secret: Option<String>,
        /// Token for token policies.
        #[arg(long)]
        token: Option<String>,
        /// Make it the tenant's default endpoint.
        #[arg(long)]
        default: bool,
    },
}

impl Remote {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let client = reqwest::Client::new();
        let mut request =
            client.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let detail = value.get("detail").and_then(Value::as_str).unwrap_or("");
            Err(format!("{status}: {detail}"))
        }
    }

    fn print_json(&self, value: &Value) -> Result<(), String> {
        println!(
            "{}",
            serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
        );
        Ok(())
    }

    /// `herald deliveries ...`
    pub async fn deliveries(&self, command: DeliveryCommand) -> Result<(), String> {
        match command {
            DeliveryCommand::List {
                status,
                endpoint,
                since,
                limit,
            } => {
                let mut query = vec![format!("limit={limit}")];
                for (key, value) in [
                    ("status", status),
                    ("endpoint_id", endpoint),
                    ("since", since),
                ] {
                    if let Some(value) = value {
                        query.push(format!(
                            "{key}={}",
                            url::form_urlencoded::byte_serialize(value.as_bytes())
                                .collect::<String>()
                        ));
                    }
                }
                let value = self
                    .call(
                        reqwest::Method::GET,
                        &format!("/admin/deliveries?{}", query.join("&")),
                        None,
                    )
                    .await?;
                if self.json {
                    return self.print_json(&value);
                }
                println!(
                    "{:<36}  {:<9}  {:>8}  {:<24}  URL",
                    "ID", "STATUS", "ATTEMPTS", "CREATED"
                );
                for d in value["deliveries"].as_array().into_iter().flatten() {
                    println!(
                        "{:<36}  {:<9}  {:>8}  {:<24}  {}",
                        text(&d["id"]),
                        text(&d["status"]),
                        text(&d["attempt_count"]),
                        text(&d["created_at"]),
                        text(&d["url"])
                    );
                }
                Ok(())
            }
            DeliveryCommand::Show { id } => {
                let d = self
                    .call(
                        reqwest::Method::GET,
                        &format!("/admin/deliveries/{id}"),
                        None,
                    )
                    .await?;
                if self.json {
                    return self.print_json(&d);
                }
                println!("delivery  {}", text(&d["id"]));
                println!("message   {}", text(&d["message_id"]));
                println!("endpoint  {}", text(&d["endpoint_id"]));
                println!("url       {}", text(&d["url"]));
                println!("status    {}", text(&d["status"]));
                println!("next      {}", text(&d["next_attempt_at"]));
                println!();
                println!(
                    "{:>3} {:>5}  {:<24}  {:>7}  {:>6}  {:<9}  DETAIL",
                    "#", "CYCLE", "STARTED", "MS", "STATUS", "ERROR"
                );
                for a in d["attempts"].as_array().into_iter().flatten() {
                    println!(
                        "{:>3} {:>5}  {:<24}  {:>7}  {:>6}  {:<9}  {}",
                        text(&a["attempt"]),
                        text(&a["cycle"]),
                        text(&a["started_at"]),
                        text(&a["duration_ms"]),
                        text(&a["status_code"]),
                        text(&a["error"]),
                        text(&a["error_detail"])
                    );
                }
                Ok(())
            }
        }
    }

    /// `herald endpoints ...`
    pub async fn endpoints(&self, command: EndpointCommand) -> Result<(), String> {
        let value = match command {
            EndpointCommand::List { tenant } => {
                let path = match tenant {
                    Some(t) => format!(
                        "/admin/endpoints?tenant={}",
                        url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
                    ),
                    None => "/admin/endpoints".to_string(),
                };
                let value = self.call(reqwest::Method::GET, &path, None).await?;
                if !self.json {
                    println!(
                        "{:<36}  {:<12}  {:<18}  {:<7}  URL",
                        "ID", "TENANT", "POLICY", "ENABLED"
                    );
                    for e in value["endpoints"].as_array().into_iter().flatten() {
                        println!(
                            "{:<36}  {:<12}  {:<18}  {:<7}  {}",
                            text(&e["id"]),
                            text(&e["tenant"]),
                            text(&e["policy"]),
                            text(&e["enabled"]),
                            text(&e["url"])
                        );
                    }
                    return Ok(());
                }
                value
            }
            EndpointCommand::Create {
                tenant,
                url,
                policy,
                secret,
                token,
                default,
            } => {
                let body = serde_json::json!({
                    "tenant": tenant, "url": url, "policy": policy,
                    "secret": secret, "token": token, "default": default,
                });
                self.call(reqwest::Method::POST, "/admin/endpoints", Some(body))
                    .await?
            }
        };
        self.print_json(&value)
    }

    /// `herald replay ID` or `herald replay --endpoint ... --status failed --since 2h`
    pub async fn replay(&self, target: ReplayTarget) -> Result<(), String> {
        if let Some(id) = &target.delivery_id {
            let path = format!("/admin/deliveries/{id}/replay");
            let value = self.call(reqwest::Method::POST, &path, None).await?;
            if self.json {
                return self.print_json(&value);
            }
            println!(
                "replaying {} (cycle {})",
                text(&value["id"]),
                text(&value["cycle"])
            );
            return Ok(());
        }
        if target.endpoint.is_none() && target.tenant.is_none() {
            return Err(
                "give a delivery id, or --endpoint and/or --tenant for a bulk replay".into(),
            );
        }
        let body = serde_json::json!({
            "endpoint_id": target.endpoint, "tenant": target.tenant, "status": target.status,
            "since": target.since, "until": target.until,
        });
        let value = self
            .call(reqwest::Method::POST, "/admin/replay", Some(body))
            .await?;
        if self.json {
            return self.print_json(&value);
        }
        println!(
            "bulk replay {} started: {} deliveries matched; follow it with GET /admin/replays/{}",
            text(&value["id"]),
            text(&value["matched"]),
            text(&value["id"])
        );
        Ok(())
    }

    /// `herald send`
    pub async fn send(
        &self,
        tenant: &str,
        event_type: &str,
        payload: &str,
        idempotency_key: Option<String>,
    ) -> Result<(), String> {
        let payload: Value =
            serde_json::from_str(payload).map_err(|e| format!("--payload is not JSON: {e}"))?;
        let body = serde_json::json!({
            "tenant": tenant, "event_type": event_type, "payload": payload,
            "idempotency_key": idempotency_key,
        });
        let value = self
            .call(reqwest::Method::POST, "/v1/messages", Some(body))
            .await?;
        self.print_json(&value)
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
