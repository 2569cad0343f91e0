//! `herald policies list|show|check`: works without a daemon.

use std::path::PathBuf;

use clap::Subcommand;
use herald::PolicySet;

/// Policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// List the policies (built-in, plus a directory's).
    List {
        /// Also load this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one policy and its schedule: every attempt's offset from the first.
    Show {
        /// Policy name.
        name: String,
        /// Also load this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every policy file in a directory; exits non-zero naming the first bad file and line.
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

/// Runs a policy command.
pub fn run(command: PolicyCommand) -> Result<(), String> {
    match command {
        PolicyCommand::List { dir, json } => {
            let set = load(dir.as_ref())?;
            if json {
                let list: Vec<_> = set
                    .iter()
                    .map(|p| serde_json::json!({"name": p.name, "description": p.description, "attempts": p.schedule.attempts()}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?
                );
            } else {
                println!("{:<22} {:>8}  DESCRIPTION", "NAME", "ATTEMPTS");
                for p in set.iter() {
                    println!(
                        "{:<22} {:>8}  {}",
                        p.name,
                        p.schedule.attempts(),
                        p.description
                    );
                }
            }
            Ok(())
        }
        PolicyCommand::Show { name, dir, json } => {
            let set = load(dir.as_ref())?;
            let policy = set
                .get(&name)
                .ok_or_else(|| format!("no policy named {name:?}"))?;
            if json {
                let value = herald::server::routes::policy_json(policy);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            println!("{} — {}", policy.name, policy.description);
            println!(
                "{}",
                toml::to_string_pretty(policy.as_ref()).map_err(|e| e.to_string())?
            );
            println!("{:>7}  OFFSET FROM FIRST", "ATTEMPT");
            for (i, offset) in policy.schedule.offsets().iter().enumerate() {
                println!("{:>7}  {}", i + 1, humantime::format_duration(*offset));
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
