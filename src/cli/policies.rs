//! `herald policies list|show|check`: works without a daemon.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use herald::policy::{Backoff, Encoding, HmacAlgorithm, SignatureEncoding, Signing};
use herald::{Policy, PolicySet};

use super::remote::print_json;

/// Policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// List the policies (built-in, plus a directory's).
    ///
    /// Example: herald policies list --dir ./policies
    List {
        /// Also load this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show what a policy does, and its schedule: every attempt's offset from the first.
    ///
    /// Example: herald policies show gengo-15m-12h
    Show {
        /// Policy name.
        name: String,
        /// Also load this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check every policy file in a directory; exits non-zero naming the first bad file and line.
    ///
    /// Example: herald policies check ./policies
    Check {
        /// The directory.
        dir: PathBuf,
    },
}

fn load(dir: Option<&PathBuf>) -> Result<PolicySet, String> {
    match dir {
        Some(dir) => PolicySet::load_dir(dir).map_err(|e| e.to_string()),
        None => Ok(PolicySet::built_in()),
    }
}

/// Runs a policy command; `json` prints JSON instead of text.
pub fn run(command: PolicyCommand, json: bool) -> Result<(), String> {
    match command {
        PolicyCommand::List { dir } => {
            let set = load(dir.as_ref())?;
            if json {
                let list: Vec<_> = set
                    .iter()
                    .map(|p| serde_json::json!({"name": p.name, "description": p.description, "attempts": p.schedule.attempts()}))
                    .collect();
                return print_json(&serde_json::Value::Array(list));
            }
            println!("{:<22} {:>8}  DESCRIPTION", "NAME", "ATTEMPTS");
            for p in set.iter() {
                println!(
                    "{:<22} {:>8}  {}",
                    p.name,
                    p.schedule.attempts(),
                    p.description
                );
            }
            Ok(())
        }
        PolicyCommand::Show { name, dir } => {
            let set = load(dir.as_ref())?;
            let policy = set
                .get(&name)
                .ok_or_else(|| format!("no policy named {name:?} (see `herald policies list`)"))?;
            if json {
                let value = herald::server::routes::policy_json(policy);
                let value = serde_json::to_value(&value).map_err(|e| e.to_string())?;
                return print_json(&value);
            }
            println!("{} — {}\n", policy.name, policy.description);
            for (label, lines) in describe(policy) {
                for (i, line) in lines.iter().enumerate() {
                    let label = if i == 0 { label } else { "" };
                    println!("{label:<10}  {line}");
                }
            }
            println!();
            println!("{:>7}  OFFSET FROM FIRST (before jitter)", "ATTEMPT");
            for (i, offset) in policy.schedule.offsets().iter().enumerate() {
                println!("{:>7}  {}", i + 1, human(*offset));
            }
            Ok(())
        }
        PolicyCommand::Check { dir } => {
            let policies = PolicySet::read_dir(&dir).map_err(|e| e.to_string())?;
            for p in &policies {
                println!("ok  {:<22} {} attempts", p.name, p.schedule.attempts());
            }
            println!("{} policies in {} are valid", policies.len(), dir.display());
            Ok(())
        }
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn percent(fraction: f64) -> String {
    format!("±{}%", (fraction * 100.0).round())
}

/// What a policy means, section by section, in words rather than its TOML.
fn describe(policy: &Policy) -> Vec<(&'static str, Vec<String>)> {
    let attempts = policy.schedule.attempts();
    let mut schedule = vec![match &policy.schedule.backoff {
        Backoff::Fixed {
            interval,
            max_attempts,
            max_duration,
        } => {
            let mut bounds = Vec::new();
            if let Some(n) = max_attempts {
                bounds.push(format!("at most {n} attempts"));
            }
            if let Some(window) = max_duration {
                bounds.push(format!("for {}", human(*window)));
            }
            format!(
                "every {} ({}): {attempts} attempts",
                human(*interval),
                bounds.join(", ")
            )
        }
        Backoff::Exponential {
            initial,
            factor,
            max_interval,
            max_retries,
            jitter,
        } => format!(
            "{} growing ×{factor} up to {} between attempts, {max_retries} retries ({attempts} attempts){}",
            human(*initial),
            human(*max_interval),
            if *jitter > 0.0 {
                format!(", each gap {}", percent(*jitter))
            } else {
                String::new()
            }
        ),
        Backoff::Explicit { delays, jitter } => format!(
            "retries after {} ({attempts} attempts){}",
            delays
                .iter()
                .map(|d| human(*d))
                .collect::<Vec<_>>()
                .join(", "),
            if *jitter > 0.0 {
                format!(", each gap {}", percent(*jitter))
            } else {
                String::new()
            }
        ),
    }];
    let last = policy
        .schedule
        .offsets()
        .last()
        .copied()
        .unwrap_or_default();
    schedule.push(format!("last attempt {} after the first", human(last)));
    schedule.push(if policy.schedule.honor_retry_after {
        format!(
            "a Retry-After on 429/503 may lengthen a gap (by at most {})",
            human(policy.schedule.max_retry_after)
        )
    } else {
        "Retry-After is ignored".into()
    });

    let statuses = if policy.success.status.is_empty() {
        "any 2xx".to_string()
    } else {
        let list: Vec<String> = policy.success.status.iter().map(u16::to_string).collect();
        format!("HTTP {}", list.join(" or "))
    };
    let success = match &policy.success.body_json {
        Some(body) => format!("{statuses} and a JSON body containing {body}"),
        None => statuses,
    };

    let request = &policy.request;
    let mut body = vec![match request.encoding {
        Encoding::Json => "JSON: the payload as the body (application/json)".to_string(),
        Encoding::Form => {
            let mut line = format!(
                "form (application/x-www-form-urlencoded): the payload's JSON in field `{}`",
                request.form_field
            );
            for (prefix, field) in &request.form_field_by_event_prefix {
                line.push_str(&format!(
                    ", `{field}` for event types starting with `{prefix}`"
                ));
            }
            line
        }
    }];
    body.push(format!(
        "at most {} bytes encoded; timeout {} per attempt",
        request.max_body_bytes,
        human(request.timeout)
    ));

    let signing = match &policy.signing {
        Signing::None {} => "none".to_string(),
        Signing::Hmac {
            algorithm,
            header,
            encoding,
        } => format!(
            "{header}: {} HMAC-{} of the body, keyed by the endpoint's secret",
            match encoding {
                SignatureEncoding::Hex => "hex",
                SignatureEncoding::Base64 => "base64",
            },
            match algorithm {
                HmacAlgorithm::Sha1 => "SHA1",
                HmacAlgorithm::Sha256 => "SHA256",
            }
        ),
        Signing::Token { header } => format!("{header}: the endpoint's security token"),
        Signing::StandardWebhooks {} => "Standard Webhooks: webhook-id, webhook-timestamp, \
             webhook-signature v1 (HMAC-SHA256, the endpoint's whsec_ secret)"
            .to_string(),
    };

    let mut urls = Vec::new();
    if policy.url.forbid_userinfo {
        urls.push("credentials in the URL (user:pass@) refused");
    }
    if policy.url.require_https {
        urls.push("https required");
    }
    let urls = if urls.is_empty() {
        "http or https".to_string()
    } else {
        urls.join("; ")
    };

    let mut health = Vec::new();
    match policy.endpoint.deactivate_after {
        0 => health.push("never disabled for failures".to_string()),
        n => health.push(format!("disabled after {n} consecutive failed attempts")),
    }
    if policy.endpoint.disable_on_gone {
        health.push("disabled at once on HTTP 410 Gone".into());
    }

    vec![
        ("schedule", schedule),
        ("success", vec![success]),
        ("request", body),
        ("signing", vec![signing]),
        ("urls", vec![urls]),
        ("endpoint", vec![health.join("; ")]),
    ]
}
