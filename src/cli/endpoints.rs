//! `herald endpoints ...`: the admin API's endpoint routes.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::format::{text, when};
use super::remote::{Remote, encode, query};

/// Endpoint commands.
#[derive(Subcommand)]
pub enum EndpointCommand {
    /// List endpoints.
    ///
    /// Example: herald endpoints list --tenant acme
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one endpoint: its state, failures, subscriptions and the rate limit that applies.
    ///
    /// Example: herald endpoints show 0191f3c2-…  (ids come from `endpoints list`)
    Show {
        /// Endpoint id.
        id: String,
    },
    /// Create an endpoint.
    ///
    /// Example: herald endpoints create --tenant acme --url http://127.0.0.1:9000/callbacks
    /// --policy tolq --secret customer-api-key --default
    Create {
        /// Tenant (the customer account).
        #[arg(long)]
        tenant: String,
        /// Callback URL.
        #[arg(long)]
        url: String,
        /// Policy name (see `herald policies list`).
        #[arg(long)]
        policy: String,
        #[command(flatten)]
        fields: EndpointFields,
        /// Make it the tenant's default endpoint (used for per-message callback URLs).
        #[arg(long)]
        default: bool,
    },
    /// Change an endpoint: only the options given change.
    ///
    /// Example: herald endpoints update 0191f3c2-… --rate-limit 5 --header X-Env=prod
    Update {
        /// Endpoint id.
        id: String,
        /// New callback URL.
        #[arg(long)]
        url: Option<String>,
        /// New policy.
        #[arg(long)]
        policy: Option<String>,
        #[command(flatten)]
        fields: EndpointFields,
        /// Set or clear the default flag.
        #[arg(long, value_name = "BOOL")]
        default: Option<bool>,
    },
    /// Enable an endpoint: resets its failure count and releases its held deliveries.
    ///
    /// Example: herald endpoints enable 0191f3c2-…
    Enable {
        /// Endpoint id.
        id: String,
    },
    /// Disable an endpoint: nothing is sent to it; its deliveries are held, not lost.
    ///
    /// Example: herald endpoints disable 0191f3c2-…
    Disable {
        /// Endpoint id.
        id: String,
    },
    /// Delete an endpoint; its pending deliveries fail. Asks first unless --yes.
    ///
    /// Example: herald endpoints delete 0191f3c2-… --yes
    Delete {
        /// Endpoint id.
        id: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Send a `herald.test` event now and show the answer (stores nothing).
    ///
    /// Example: herald endpoints test 0191f3c2-…
    Test {
        /// Endpoint id.
        id: String,
    },
    /// Attempts, successes, failures and median latency per day, with a bar per day.
    ///
    /// Example: herald endpoints stats 0191f3c2-… --days 30
    Stats {
        /// Endpoint id.
        id: String,
        /// Days back from today (1-90).
        #[arg(long, default_value_t = 14)]
        days: u32,
    },
}

/// Options shared by create and update.
#[derive(Args)]
pub struct EndpointFields {
    /// Signing secret (hmac and standard-webhooks policies); write-only. On update, the old
    /// secret keeps signing for 24 h.
    #[arg(long)]
    secret: Option<String>,
    /// Security token sent by token policies (Phrase's x-memsource-token); write-only.
    #[arg(long, value_name = "TOKEN")]
    security_token: Option<String>,
    /// Extra request header NAME=VALUE; repeat for more (on update: replaces all).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Subscribe to this event type; repeat for more (none = all events; on update: replaces all).
    #[arg(long = "event-type", value_name = "TYPE")]
    event_types: Vec<String>,
    /// At most this many attempts per second to the endpoint (5, or 0.5 for one every 2 s);
    /// without it the policy's default applies, if it has one. On update, `none` removes it.
    #[arg(long, value_name = "PER_SECOND", value_parser = rate_limit)]
    rate_limit: Option<RateLimit>,
}

/// The API names an endpoint's fields; where a flag is named otherwise — the security token
/// is `--security-token`, as `--token` is the admin token — the error says which flag it is.
fn flag_names(error: String) -> String {
    if error.contains("`token`") {
        format!("{error}\n  on the command line: --security-token (--token is the admin token)")
    } else {
        error
    }
}

/// `--rate-limit`: attempts per second, or `none`.
#[derive(Clone, Copy)]
struct RateLimit(Option<f64>);

fn rate_limit(value: &str) -> Result<RateLimit, String> {
    if value == "none" {
        return Ok(RateLimit(None));
    }
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("expected attempts per second (5, 0.5) or none, not {value:?}"))?;
    herald::model::check_rate_limit(rate)?;
    Ok(RateLimit(Some(rate)))
}

impl EndpointFields {
    fn headers(&self) -> Result<Option<BTreeMap<String, String>>, String> {
        if self.headers.is_empty() {
            return Ok(None);
        }
        self.headers
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .ok_or_else(|| format!("--header {pair:?}: expected NAME=VALUE"))
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// The fields as a JSON object, leaving out what was not given.
    fn into_json(self, mut body: serde_json::Map<String, Value>) -> Result<Value, String> {
        if let Some(headers) = self.headers()? {
            body.insert("headers".into(), json!(headers));
        }
        if !self.event_types.is_empty() {
            body.insert("event_types".into(), json!(self.event_types));
        }
        if let Some(secret) = self.secret {
            body.insert("secret".into(), json!(secret));
        }
        if let Some(token) = self.security_token {
            body.insert("token".into(), json!(token));
        }
        if let Some(RateLimit(rate)) = self.rate_limit {
            body.insert("rate_limit".into(), json!(rate));
        }
        Ok(Value::Object(body))
    }
}

fn path(id: &str) -> String {
    format!("/admin/endpoints/{}", encode(id))
}

/// Runs an endpoint command.
pub async fn run(remote: &Remote, command: EndpointCommand) -> Result<(), String> {
    match command {
        EndpointCommand::List { tenant } => {
            let list = remote
                .get(&format!("/admin/endpoints{}", query(&[("tenant", tenant)])))
                .await?;
            if remote.printed_json(&list)? {
                return Ok(());
            }
            let endpoints = list["endpoints"].as_array().cloned().unwrap_or_default();
            if endpoints.is_empty() {
                println!("no endpoints; create one with `herald endpoints create`");
                return Ok(());
            }
            println!(
                "{:<36}  {:<12}  {:<18}  {:<8}  {:>8}  URL",
                "ID", "TENANT", "POLICY", "STATE", "FAILURES"
            );
            for e in &endpoints {
                println!(
                    "{:<36}  {:<12}  {:<18}  {:<8}  {:>8}  {}",
                    text(&e["id"]),
                    text(&e["tenant"]),
                    text(&e["policy"]),
                    state(e),
                    text(&e["consecutive_failures"]),
                    text(&e["url"])
                );
            }
            Ok(())
        }
        EndpointCommand::Show { id } => {
            let endpoint = remote.get(&path(&id)).await?;
            if !remote.printed_json(&endpoint)? {
                print_endpoint(&endpoint);
            }
            Ok(())
        }
        EndpointCommand::Create {
            tenant,
            url,
            policy,
            fields,
            default,
        } => {
            let mut body = serde_json::Map::new();
            body.insert("tenant".into(), json!(tenant));
            body.insert("url".into(), json!(url));
            body.insert("policy".into(), json!(policy));
            body.insert("default".into(), json!(default));
            let endpoint = remote
                .post("/admin/endpoints", Some(fields.into_json(body)?))
                .await
                .map_err(flag_names)?;
            if !remote.printed_json(&endpoint)? {
                println!(
                    "created endpoint {} for {} → {} (policy {})",
                    text(&endpoint["id"]),
                    text(&endpoint["tenant"]),
                    text(&endpoint["url"]),
                    text(&endpoint["policy"])
                );
            }
            Ok(())
        }
        EndpointCommand::Update {
            id,
            url,
            policy,
            fields,
            default,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(url) = url {
                body.insert("url".into(), json!(url));
            }
            if let Some(policy) = policy {
                body.insert("policy".into(), json!(policy));
            }
            if let Some(default) = default {
                body.insert("default".into(), json!(default));
            }
            let body = fields.into_json(body)?;
            if body.as_object().is_some_and(serde_json::Map::is_empty) {
                return Err("nothing to change: give at least one option (see --help)".into());
            }
            let endpoint = remote
                .call(Method::PATCH, &path(&id), Some(body))
                .await
                .map_err(flag_names)?;
            if !remote.printed_json(&endpoint)? {
                println!("updated endpoint {}", text(&endpoint["id"]));
                print_endpoint(&endpoint);
            }
            Ok(())
        }
        EndpointCommand::Enable { id } => switch(remote, &id, "enable").await,
        EndpointCommand::Disable { id } => switch(remote, &id, "disable").await,
        EndpointCommand::Delete { id, yes } => {
            let endpoint = remote.get(&path(&id)).await?;
            if !yes && !confirm(&endpoint)? {
                return Err("not deleted".into());
            }
            remote.call(Method::DELETE, &path(&id), None).await?;
            if !remote.printed_json(&json!({"id": id, "deleted": true}))? {
                println!("deleted endpoint {id}");
            }
            Ok(())
        }
        EndpointCommand::Test { id } => {
            let result = remote.post(&format!("{}/test", path(&id)), None).await?;
            if remote.printed_json(&result)? {
                return Ok(());
            }
            let verdict = if result["success"] == true {
                "success"
            } else {
                "failure"
            };
            let answer = match (&result["status_code"], &result["error"]) {
                (Value::Number(code), _) => format!("HTTP {code}"),
                (_, Value::String(kind)) => kind.clone(),
                _ => "no answer".into(),
            };
            println!(
                "{verdict}: {answer} in {} ms (the policy's verdict; nothing stored)",
                text(&result["duration_ms"])
            );
            if let Some(detail) = result["error_detail"].as_str() {
                println!("error:    {detail}");
            }
            if let Some(excerpt) = result["response_excerpt"]
                .as_str()
                .filter(|e| !e.is_empty())
            {
                println!("response: {excerpt}");
            }
            if result["success"] == true {
                Ok(())
            } else {
                Err("the test send failed".into())
            }
        }
        EndpointCommand::Stats { id, days } => {
            let stats = remote
                .get(&format!("{}/stats?days={days}", path(&id)))
                .await?;
            if remote.printed_json(&stats)? {
                return Ok(());
            }
            print_stats(&stats);
            Ok(())
        }
    }
}

fn state(endpoint: &Value) -> &'static str {
    if endpoint["enabled"] == false {
        "disabled"
    } else {
        "enabled"
    }
}

fn print_endpoint(e: &Value) {
    let list = |v: &Value, empty: &str| match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(text).collect::<Vec<_>>().join(", "),
        _ => empty.to_string(),
    };
    println!("endpoint     {}", text(&e["id"]));
    println!("tenant       {}", text(&e["tenant"]));
    println!("url          {}", text(&e["url"]));
    println!("policy       {}", text(&e["policy"]));
    println!(
        "state        {}{}",
        state(e),
        if e["default"] == true {
            ", the tenant's default"
        } else {
            ""
        }
    );
    if let Some(reason) = e["disabled_reason"].as_str() {
        println!("disabled     {reason}, {}", when(&e["disabled_at"]));
    }
    println!("failures     {} in a row", text(&e["consecutive_failures"]));
    println!("events       {}", list(&e["event_types"], "all"));
    println!(
        "secret       {}",
        if e["has_secret"] == true {
            "set"
        } else {
            "none"
        }
    );
    println!(
        "token        {}",
        if e["has_token"] == true {
            "set"
        } else {
            "none"
        }
    );
    println!("headers      {}", list(&e["header_names"], "none"));
    match e["pacing"].as_object() {
        Some(pacing) => println!(
            "rate limit   {}/s ({}'s), next attempt waits {} ms",
            text(&pacing["rate_limit"]),
            text(&pacing["source"]),
            text(&pacing["wait_ms"])
        ),
        None => println!("rate limit   none"),
    }
    println!("created      {}", when(&e["created_at"]));
}

fn print_stats(stats: &Value) {
    let days = stats["days"].as_array().cloned().unwrap_or_default();
    let most = days
        .iter()
        .filter_map(|d| d["attempts"].as_u64())
        .max()
        .unwrap_or(0);
    println!(
        "{:<10}  {:>8}  {:>9}  {:>8}  {:>7}  (█ successes ▒ failures)",
        "DAY", "ATTEMPTS", "SUCCESSES", "FAILURES", "MEDIAN"
    );
    const WIDTH: u64 = 30;
    for day in &days {
        let attempts = day["attempts"].as_u64().unwrap_or(0);
        let successes = day["successes"].as_u64().unwrap_or(0);
        let failures = day["failures"].as_u64().unwrap_or(0);
        // Scaled to the busiest day; a day with any attempt gets at least one cell.
        let cells = |n: u64| match (n, most) {
            (0, _) | (_, 0) => 0,
            (n, most) => ((n * WIDTH).div_ceil(most)).max(1) as usize,
        };
        let median = day["median_latency_ms"]
            .as_u64()
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10}  {attempts:>8}  {successes:>9}  {failures:>8}  {median:>7}  {}{}",
            text(&day["date"]),
            "█".repeat(cells(successes)),
            "▒".repeat(cells(failures)),
        );
    }
    let total: u64 = days.iter().filter_map(|d| d["attempts"].as_u64()).sum();
    if total == 0 {
        println!("no attempts in these {} days", days.len());
    }
}

/// Asks on the terminal; refuses without one (a script must say --yes).
fn confirm(endpoint: &Value) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err("refusing to delete without --yes: standard input is not a terminal".into());
    }
    print!(
        "Delete endpoint {} ({} → {})? Its pending deliveries will fail. [y/N] ",
        text(&endpoint["id"]),
        text(&endpoint["tenant"]),
        text(&endpoint["url"])
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn switch(remote: &Remote, id: &str, verb: &str) -> Result<(), String> {
    let endpoint = remote.post(&format!("{}/{verb}", path(id)), None).await?;
    if !remote.printed_json(&endpoint)? {
        println!(
            "endpoint {} is {} ({} → {})",
            text(&endpoint["id"]),
            state(&endpoint),
            text(&endpoint["tenant"]),
            text(&endpoint["url"])
        );
    }
    Ok(())
}
