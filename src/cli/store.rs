//! `herald store`: examine, recover and back up the embedded store.
//!
//! `check` and `recover` open the store directly, so herald must not be running on it; `backup`
//! asks a running daemon for a consistent copy (or copies a stopped store with `--data-dir`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use herald::config::Config;
use herald::store::{SledOptions, SledStore, Store};

use super::remote::Remote;

/// `herald store ...`
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Examine a stopped store: the ledger of durable writes, the secret key, every record.
    /// Exits non-zero when herald would refuse to open it.
    ///
    /// Example: herald store check --data-dir /var/lib/herald
    Check {
        #[command(flatten)]
        place: Place,
    },
    /// Open a store that lost acknowledged data anyway, keeping what is left: the ledger
    /// starts again from the store as it is. Prefer restoring a backup when you have one.
    ///
    /// Example: herald store recover --data-dir /var/lib/herald --accept-loss
    Recover {
        #[command(flatten)]
        place: Place,
        /// Confirms that the missing data is given up.
        #[arg(long, required = true)]
        accept_loss: bool,
    },
    /// Write a consistent copy of the store into DIR (a new directory): from the running
    /// daemon (writes pause for the copy), or from a stopped store with `--data-dir`.
    /// Restore: stop herald, move the data directory aside, put DIR in its place (or point
    /// `data_dir` at it), start herald.
    ///
    /// Example: herald store backup /var/backups/herald-2026-11-25
    Backup {
        /// Where the copy goes, on the daemon's host; a relative path is made absolute from
        /// this command's current directory (the daemon's may differ).
        dir: PathBuf,
        /// Copy a stopped store in this directory instead of asking the daemon.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Which store, and its key.
#[derive(clap::Args)]
pub struct Place {
    /// The store's directory (default: `data_dir` from the configuration, `./herald-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The daemon's configuration file, for `data_dir` and `secret_key`.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl Place {
    fn resolve(&self) -> Result<(PathBuf, SledOptions), String> {
        let config = Config::load(self.config.as_deref(), std::env::vars(), &[])
            .map_err(|e| e.to_string())?;
        let options = SledOptions {
            secret_key: config.secret_key_bytes().map_err(|e| e.to_string())?,
            ..SledOptions::default()
        };
        Ok((self.data_dir.clone().unwrap_or(config.data_dir), options))
    }
}

/// Runs a `herald store` command; `remote` is the daemon `backup` asks, and says whether to
/// print JSON.
pub async fn run(command: StoreCommand, remote: &Remote) -> Result<(), String> {
    let json = remote.json;
    match command {
        StoreCommand::Check { place } => {
            let (dir, options) = place.resolve()?;
            let report = SledStore::check_dir(&dir, &options).map_err(|e| e.to_string())?;
            if json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                println!("store      {}", dir.display());
                println!(
                    "sequence   {} (ledger: {})",
                    report.store_seq,
                    report
                        .ledger_seq
                        .map_or_else(|| "none".into(), |s| s.to_string())
                );
                println!(
                    "records    {} endpoints, {} messages, {} deliveries, {} pending",
                    report.endpoints, report.messages, report.deliveries, report.pending
                );
                for problem in &report.problems {
                    println!("PROBLEM    {problem}");
                }
                if report.problems.is_empty() {
                    println!("ok         nothing acknowledged is missing");
                }
            }
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{}: the store has problems (see above)",
                    dir.display()
                ))
            }
        }
        StoreCommand::Recover { place, .. } => {
            let (dir, options) = place.resolve()?;
            let (store, loss) = SledStore::recover(&dir, &options).map_err(|e| e.to_string())?;
            store.sync().await.map_err(|e| e.to_string())?;
            let pending = store.pending_count().await.map_err(|e| e.to_string())?;
            match loss {
                Some(loss) => println!("recovered {} with a loss: {loss}", dir.display()),
                None => println!("{}: nothing was missing", dir.display()),
            }
            println!("{pending} deliveries pending; herald will open this store again");
            Ok(())
        }
        StoreCommand::Backup { dir, data_dir } => match data_dir {
            Some(data_dir) => offline_backup(&data_dir, &dir).await,
            None => {
                let dir = absolute(&dir)?;
                let body = serde_json::json!({ "dir": dir.display().to_string() });
                let report = remote.post("/admin/store/backup", Some(body)).await?;
                if remote.printed_json(&report)? {
                    return Ok(());
                }
                println!(
                    "backup written to {} ({} records; writes paused {} ms)",
                    report["dir"].as_str().unwrap_or(""),
                    report["records"],
                    report["paused_ms"]
                );
                Ok(())
            }
        },
    }
}

async fn offline_backup(data_dir: &Path, to: &Path) -> Result<(), String> {
    let options = SledOptions {
        secret_key: Config::load(None, std::env::vars(), &[])
            .map_err(|e| e.to_string())?
            .secret_key_bytes()
            .map_err(|e| e.to_string())?,
        ..SledOptions::default()
    };
    let store = SledStore::open(data_dir, &options).map_err(|e| e.to_string())?;
    let report = store.backup(to).await.map_err(|e| e.to_string())?;
    println!(
        "backup written to {} ({} records)",
        report.dir, report.records
    );
    Ok(())
}

/// The daemon may run elsewhere in the filesystem: send it an absolute path.
fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))
}
