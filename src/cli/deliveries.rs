//! `herald deliveries ...`: list, show, retry now, cancel.

use clap::Subcommand;
use serde_json::Value;

use super::format::{relative, text, truncate, when};
use super::remote::{Remote, encode, query};

/// Delivery commands.
#[derive(Subcommand)]
pub enum DeliveryCommand {
    /// List deliveries, newest first.
    ///
    /// Example: herald deliveries list --status failed --since 2h
    List {
        /// Only deliveries in this state.
        #[arg(long, value_parser = statuses())]
        status: Option<String>,
        /// Only this endpoint's.
        #[arg(long, value_name = "ID", value_parser = super::format::endpoint_id)]
        endpoint: Option<String>,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Created at or after: RFC 3339 or an age such as 2h.
        #[arg(long)]
        since: Option<String>,
        /// Created before: RFC 3339 or an age such as 30m.
        #[arg(long)]
        until: Option<String>,
        /// Continue after this delivery (the cursor printed under a full page).
        #[arg(long)]
        cursor: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Oldest first.
        #[arg(long)]
        oldest_first: bool,
    },
    /// Show one delivery: where it goes, why it waits, and every attempt.
    ///
    /// Example: herald deliveries show 0191f3c2-…  (ids come from `deliveries list`)
    Show {
        /// Delivery id.
        id: String,
    },
    /// Attempt a pending delivery now instead of at its next scheduled time.
    ///
    /// Example: herald deliveries retry 0191f3c2-…  (a finished one is replayed instead:
    /// herald replay ID)
    Retry {
        /// Delivery id.
        id: String,
    },
    /// Cancel a pending delivery: it is not attempted again.
    ///
    /// Example: herald deliveries cancel 0191f3c2-…
    Cancel {
        /// Delivery id.
        id: String,
    },
    /// Send a finished delivery again: a fresh attempt cycle, its history kept.
    ///
    /// The same as `herald replay ID`; replays by filter: `herald replay --help`.
    ///
    /// Example: herald deliveries replay 0191f3c2-…
    Replay {
        /// Delivery id.
        id: String,
    },
}

/// `--status`: the names of the delivery statuses.
fn statuses() -> clap::builder::PossibleValuesParser {
    herald::model::DeliveryStatus::ALL
        .map(herald::model::DeliveryStatus::as_str)
        .into()
}

/// Runs a delivery command.
pub async fn run(remote: &Remote, command: DeliveryCommand) -> Result<(), String> {
    match command {
        DeliveryCommand::List {
            status,
            endpoint,
            tenant,
            since,
            until,
            cursor,
            limit,
            oldest_first,
        } => {
            let order = if oldest_first { "asc" } else { "desc" };
            let filters = [
                ("status", status),
                ("endpoint_id", endpoint),
                ("tenant", tenant),
                ("since", since),
                ("until", until),
                ("order", Some(order.to_string())),
            ];
            let page_path = |limit: usize, cursor: Option<String>| {
                let mut pairs = filters.to_vec();
                pairs.push(("limit", Some(limit.to_string())));
                pairs.push(("cursor", cursor));
                format!("/admin/deliveries{}", query(&pairs))
            };
            let page = remote.get(&page_path(limit, cursor)).await?;
            if remote.printed_json(&page)? {
                return Ok(());
            }
            let deliveries = page["deliveries"].as_array().cloned().unwrap_or_default();
            if deliveries.is_empty() {
                println!("no deliveries match");
                return Ok(());
            }
            println!(
                "{:<36}  {:<9}  {:>8}  {:<14}  {:<14}  URL",
                "ID", "STATUS", "ATTEMPTS", "CREATED", "NEXT"
            );
            for d in &deliveries {
                println!(
                    "{:<36}  {:<9}  {:>8}  {:<14}  {:<14}  {}",
                    text(&d["id"]),
                    text(&d["status"]),
                    text(&d["attempt_count"]),
                    d["created_at"].as_str().map(relative).unwrap_or_default(),
                    d["next_attempt_at"]
                        .as_str()
                        .map(relative)
                        .unwrap_or_else(|| "-".into()),
                    text(&d["url"])
                );
            }
            if let Some(next) = page["next_cursor"].as_str() {
                // Count what is left, up to one more large page, so the line says how much.
                const COUNT_UP_TO: usize = 1000;
                let rest = remote
                    .get(&page_path(COUNT_UP_TO, Some(next.to_string())))
                    .await?;
                let more = rest["deliveries"].as_array().map_or(0, Vec::len);
                let more = if rest["next_cursor"].is_string() {
                    format!("more than {more}")
                } else {
                    more.to_string()
                };
                if more != "0" {
                    println!("{more} more — use --cursor {next}");
                }
            }
            Ok(())
        }
        DeliveryCommand::Show { id } => show(remote, &id).await,
        DeliveryCommand::Retry { id } => act(remote, &id, "retry").await,
        DeliveryCommand::Cancel { id } => act(remote, &id, "cancel").await,
        DeliveryCommand::Replay { id } => super::replay::one(remote, &id).await,
    }
}

async fn act(remote: &Remote, id: &str, verb: &str) -> Result<(), String> {
    let delivery = remote
        .post(&format!("/admin/deliveries/{}/{verb}", encode(id)), None)
        .await
        .map_err(|e| match verb {
            // Refused because the delivery is finished: what does send it again.
            "retry" if e.starts_with("conflict (409)") => {
                format!("{e}\n  to send a finished delivery again: herald deliveries replay {id}")
            }
            _ => e,
        })?;
    if remote.printed_json(&delivery)? {
        return Ok(());
    }
    let done = match verb {
        "retry" => "will be attempted now",
        _ => "is cancelled",
    };
    println!(
        "delivery {} {done} (status {}, next attempt {})",
        text(&delivery["id"]),
        text(&delivery["status"]),
        when(&delivery["next_attempt_at"])
    );
    Ok(())
}

/// `herald deliveries show ID`: the delivery, its message, endpoint and policy in one view.
async fn show(remote: &Remote, id: &str) -> Result<(), String> {
    let d = remote
        .get(&format!("/admin/deliveries/{}", encode(id)))
        .await?;
    // The message, endpoint and policy add context; any of them may be gone (purged, deleted).
    let message = match d["message_id"].as_str() {
        Some(mid) => remote
            .get(&format!("/v1/messages/{}", encode(mid)))
            .await
            .ok(),
        None => None,
    };
    let endpoint = match d["endpoint_id"].as_str() {
        Some(eid) => remote
            .get(&format!("/admin/endpoints/{}", encode(eid)))
            .await
            .ok(),
        None => None,
    };
    let policy = match endpoint.as_ref().and_then(|e| e["policy"].as_str()) {
        Some(name) => remote
            .get(&format!("/admin/policies/{}", encode(name)))
            .await
            .ok(),
        None => None,
    };
    if remote.json {
        let mut combined = d.clone();
        if let Some(object) = combined.as_object_mut() {
            object.insert("message".into(), message.clone().unwrap_or(Value::Null));
            object.insert("endpoint".into(), endpoint.clone().unwrap_or(Value::Null));
        }
        return super::remote::print_json(&combined);
    }
    let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
    let cycle = d["cycle"].as_u64();
    let in_cycle = attempts
        .iter()
        .filter(|a| a["cycle"].as_u64() == cycle)
        .count();
    let per_cycle = policy.as_ref().and_then(|p| p["attempts"].as_u64());
    let status = text(&d["status"]);

    println!("delivery   {}", text(&d["id"]));
    println!(
        "status     {}",
        status_line(&status, in_cycle, per_cycle, &d)
    );
    if status == "held" {
        println!("held       {}", held_reason(&d, endpoint.as_ref()));
    }
    if let Some(error) = d["last_error"].as_str() {
        println!("last error {error}");
    }
    match &message {
        Some(m) => println!(
            "message    {} (tenant {}, event {})",
            text(&d["message_id"]),
            text(&m["tenant"]),
            text(&m["event_type"])
        ),
        None => println!("message    {} (no longer stored)", text(&d["message_id"])),
    }
    match &endpoint {
        Some(e) => println!(
            "endpoint   {} (policy {}, {})",
            text(&d["endpoint_id"]),
            text(&e["policy"]),
            if e["enabled"] == false {
                "disabled"
            } else {
                "enabled"
            }
        ),
        None => println!("endpoint   {} (deleted)", text(&d["endpoint_id"])),
    }
    println!("url        {}", text(&d["url"]));
    println!("created    {}", when(&d["created_at"]));
    if !d["next_attempt_at"].is_null() {
        println!("next       {}", when(&d["next_attempt_at"]));
        if d["status"] == "pending" && overdue(&d["next_attempt_at"]) {
            println!(
                "           overdue: being attempted, waiting for a free slot or the rate limit, \
                 or claimed by a node that stopped (another takes it over when the claim \
                 ends: twice the policy's timeout plus 5 s after it was taken)"
            );
        }
    }
    if attempts.is_empty() {
        println!("\nno attempts yet");
        return Ok(());
    }
    println!();
    println!(
        "{:>3}  {:>5}  {:<40}  {:>8}  RESULT",
        "#", "CYCLE", "STARTED", "DURATION"
    );
    for a in &attempts {
        let result = match (&a["status_code"], a["error"].as_str()) {
            (Value::Number(code), Some(kind)) => format!("HTTP {code} ({kind})"),
            (Value::Number(code), None) => format!("HTTP {code}"),
            (_, Some(kind)) => kind.to_string(),
            _ => "-".into(),
        };
        let verdict = if a["success"] == true { "ok" } else { "failed" };
        println!(
            "{:>3}  {:>5}  {:<40}  {:>5} ms  {result}, {verdict}",
            text(&a["attempt"]),
            text(&a["cycle"]),
            when(&a["started_at"]),
            text(&a["duration_ms"]),
        );
        if let Some(detail) = a["error_detail"].as_str() {
            println!("{:>12}{}", "", truncate(detail, 160));
        }
        if let Some(excerpt) = a["response_excerpt"].as_str().filter(|e| !e.is_empty()) {
            let one_line = excerpt.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("{:>12}response: {}", "", truncate(&one_line, 160));
        }
    }
    Ok(())
}

/// "pending — attempt 3 of 9 made, next in 25 s".
fn status_line(status: &str, made: usize, per_cycle: Option<u64>, d: &Value) -> String {
    let of = per_cycle.map(|n| format!(" of {n}")).unwrap_or_default();
    let cycle = match d["cycle"].as_u64() {
        Some(c) if c > 1 => format!(" in replay cycle {c}"),
        _ => String::new(),
    };
    match status {
        "pending" if made == 0 => format!("pending — first attempt{of} due{cycle}"),
        "pending" => format!(
            "pending — {made}{of} attempts made{cycle}; next {}",
            d["next_attempt_at"]
                .as_str()
                .map(relative)
                .unwrap_or_else(|| "soon".into())
        ),
        "succeeded" => format!("succeeded on attempt {made}{of}{cycle}"),
        "failed" => format!("failed after {made}{of} attempts{cycle}"),
        other => format!("{other} — {made}{of} attempts made{cycle}"),
    }
}

/// Why a delivery waits: the daemon's reason, when it was disabled, and what releases it.
fn held_reason(delivery: &Value, endpoint: Option<&Value>) -> String {
    let reason = delivery["held_reason"]
        .as_str()
        .unwrap_or("the endpoint is disabled");
    let Some(e) = endpoint else {
        return reason.to_string();
    };
    let since = e["disabled_at"]
        .as_str()
        .map(|at| format!(" ({})", relative(at)))
        .unwrap_or_default();
    format!(
        "{reason}{since}; `herald endpoints enable {}` releases its deliveries",
        text(&e["id"])
    )
}

/// Whether a due time is more than a few seconds past: a delivery that should have been
/// attempted by now.
fn overdue(due: &Value) -> bool {
    let Some(at) = due
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    else {
        return false;
    };
    std::time::SystemTime::now()
        .duration_since(at)
        .is_ok_and(|late| late > std::time::Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_is_overdue_a_few_seconds_after_it_passed() {
        let at = |t| Value::String(humantime::format_rfc3339_millis(t).to_string());
        let (now, secs) = (std::time::SystemTime::now(), std::time::Duration::from_secs);
        assert!(overdue(&at(now - secs(30))));
        assert!(!overdue(&at(now - secs(1))));
        assert!(!overdue(&at(now + secs(60))));
        assert!(!overdue(&Value::Null));
    }
}
