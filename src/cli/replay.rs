//! `herald replay`: one delivery, a bulk replay by filter, and following a bulk replay.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::format::{bar, text};
use super::remote::{Remote, encode};

/// `herald replay ...`
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplayArgs {
    #[command(subcommand)]
    command: Option<ReplayCommand>,
    #[command(flatten)]
    target: ReplayTarget,
}

/// Subcommands of `herald replay`.
#[derive(Subcommand)]
pub enum ReplayCommand {
    /// Follow a bulk replay until it is done (a progress bar on a terminal).
    ///
    /// Example: herald replay status 5f3c…  (the id `herald replay --endpoint …` printed)
    Status {
        /// The bulk replay's id (printed when it started).
        id: String,
        /// Print the state once instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
}

/// What `herald replay` replays.
#[derive(Args)]
pub struct ReplayTarget {
    /// One delivery to replay (a fresh attempt cycle; its history is kept).
    #[arg(conflicts_with_all = ["endpoint", "tenant", "since", "until"])]
    delivery_id: Option<String>,
    /// Bulk: only this endpoint's deliveries.
    #[arg(long, value_name = "ID", value_parser = super::format::endpoint_id)]
    endpoint: Option<String>,
    /// Bulk: only this tenant's deliveries.
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

/// Replays one delivery (`herald replay ID`, `herald deliveries replay ID`).
pub async fn one(remote: &Remote, id: &str) -> Result<(), String> {
    let path = format!("/admin/deliveries/{}/replay", encode(id));
    let delivery = remote.post(&path, None).await?;
    if !remote.printed_json(&delivery)? {
        println!(
            "replaying delivery {} (cycle {}); follow it with `herald deliveries show {}`",
            text(&delivery["id"]),
            text(&delivery["cycle"]),
            text(&delivery["id"])
        );
    }
    Ok(())
}

/// Runs `herald replay ...`.
pub async fn run(remote: &Remote, args: ReplayArgs) -> Result<(), String> {
    if let Some(ReplayCommand::Status { id, no_wait }) = args.command {
        return status(remote, &id, !no_wait).await;
    }
    let target = args.target;
    if let Some(id) = &target.delivery_id {
        return one(remote, id).await;
    }
    if target.endpoint.is_none() && target.tenant.is_none() {
        return Err(
            "give a delivery id, or --endpoint and/or --tenant for a bulk replay (see --help)"
                .into(),
        );
    }
    let body = json!({
        "endpoint_id": target.endpoint, "tenant": target.tenant, "status": target.status,
        "since": target.since, "until": target.until,
    });
    let job = remote.post("/admin/replay", Some(body)).await?;
    if !remote.printed_json(&job)? {
        println!(
            "bulk replay {} started: {} matched; follow it with `herald replay status {}`",
            text(&job["id"]),
            match job["matched"].as_u64() {
                Some(1) => "1 delivery".to_string(),
                _ => format!("{} deliveries", text(&job["matched"])),
            },
            text(&job["id"])
        );
    }
    Ok(())
}

/// Prints a bulk replay's progress; with `follow`, until it is done.
async fn status(remote: &Remote, id: &str, follow: bool) -> Result<(), String> {
    let path = format!("/admin/replays/{}", encode(id));
    let terminal = std::io::stdout().is_terminal() && !remote.json;
    let mut last_line = String::new();
    loop {
        let job = remote.get(&path).await?;
        let done = job["state"] == "done";
        if remote.json {
            if done || !follow {
                return super::remote::print_json(&job);
            }
        } else {
            let line = progress_line(&job, terminal);
            if terminal {
                print!("\r{line}\x1b[K"); // rewrite the line, clear what is left of the last one
                let _ = std::io::stdout().flush();
            } else if line != last_line {
                println!("{line}");
            }
            last_line = line;
            if done || !follow {
                if terminal {
                    println!();
                }
                return Ok(());
            }
        }
        // A bulk replay is paced at about 1,000 deliveries a second: half a second is smooth.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn progress_line(job: &Value, with_bar: bool) -> String {
    let matched = job["matched"].as_u64().unwrap_or(0);
    let handled = job["queued"].as_u64().unwrap_or(0) + job["skipped"].as_u64().unwrap_or(0);
    let bar = if with_bar {
        let done = if matched == 0 { 1 } else { handled };
        format!("{} ", bar(done, matched.max(1), 30))
    } else {
        String::new()
    };
    format!(
        "{bar}{handled}/{matched} replayed ({} queued, {} skipped, {} remaining) — {}",
        text(&job["queued"]),
        text(&job["skipped"]),
        text(&job["remaining"]),
        text(&job["state"])
    )
}
