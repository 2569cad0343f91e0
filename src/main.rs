//! The `herald` command: the daemon, the operator CLI and the benchmark harness.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// herald — a reliable outbound callback (webhook) dispatcher.
///
/// Run `herald serve` next to your TMS; send events with `POST /v1/messages`; inspect and replay
/// with the admin API or the commands below. Every setting can come from `herald.toml` or a
/// `HERALD_*` environment variable.
#[derive(Parser)]
#[command(name = "herald", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (producer API, admin API, metrics) until SIGTERM/SIGINT.
    Serve {
        /// Configuration file; without one, the built-in defaults and HERALD_* variables apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Inspect policies: the built-in ones and those in a directory.
    Policies {
        #[command(subcommand)]
        command: cli::policies::PolicyCommand,
    },
    /// Deliveries on a running daemon.
    Deliveries {
        #[command(flatten)]
        remote: cli::remote::Remote,
        #[command(subcommand)]
        command: cli::remote::DeliveryCommand,
    },
    /// Endpoints on a running daemon.
    Endpoints {
        #[command(flatten)]
        remote: cli::remote::Remote,
        #[command(subcommand)]
        command: cli::remote::EndpointCommand,
    },
    /// Replay on a running daemon: one delivery by id, or in bulk by filter (a durable job).
    ///
    /// Examples: `herald replay 01a2...` ·
    /// `herald replay --endpoint 01a2... --status failed --since 2h`
    Replay {
        #[command(flatten)]
        remote: cli::remote::Remote,
        #[command(flatten)]
        target: cli::remote::ReplayTarget,
    },
    /// Send a message through a running daemon's producer API.
    Send {
        #[command(flatten)]
        remote: cli::remote::Remote,
        /// Tenant whose endpoints receive it.
        #[arg(long)]
        tenant: String,
        /// Event type.
        #[arg(long)]
        event_type: String,
        /// JSON payload.
        #[arg(long)]
        payload: String,
        /// Idempotency key.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Check, recover or back up the store (see the README's "Backup and restore").
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
    },
    /// Print the HTTP API's OpenAPI document (the same as `GET /openapi.json`).
    Openapi,
    /// Measure herald on this machine with a local receiver (see the README's figures).
    Bench {
        #[command(subcommand)]
        scenario: cli::bench::Scenario,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => cli::serve(config.as_deref()).await,
            Command::Policies { command } => cli::policies::run(command),
            Command::Deliveries { remote, command } => remote.deliveries(command).await,
            Command::Endpoints { remote, command } => remote.endpoints(command).await,
            Command::Replay { remote, target } => remote.replay(target).await,
            Command::Send {
                remote,
                tenant,
                event_type,
                payload,
                idempotency_key,
            } => {
                remote
                    .send(&tenant, &event_type, &payload, idempotency_key)
                    .await
            }
            Command::Store { command } => cli::store::run(command).await,
            Command::Openapi => herald::server::openapi()
                .to_pretty_json()
                .map(|doc| println!("{doc}"))
                .map_err(|e| format!("openapi: {e}")),
            Command::Bench { scenario } => cli::bench::run(scenario).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("herald: {message}");
            ExitCode::FAILURE
        }
    }
}
