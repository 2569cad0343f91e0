//! The `herald` command: the daemon, the operator CLI, a test receiver and the benchmarks.

mod cli;

/// The daemon allocates and frees small buffers at a high rate (requests, records, outcomes):
/// measured, glibc's allocator took ~13% of its CPU under load; mimalloc's per-thread free lists
/// take far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults keep what was freed: after opening a store of a million pending
/// deliveries (sled's recovery allocates and frees a lot) the process held 324–331 MiB; with
/// arenas committed as used, much less (`bench backlog`; see the README's Benchmarks). Freed
/// memory goes back to the system after 100 ms unused, not at once: given back at once, pages
/// the next requests need were handed back and faulted in again thousands of times a second
/// (`madvise`, page faults and the TLB shootdowns they cause took ~9 % of the CPU while
/// delivering); 100 ms keeps the pages a steady load reuses and still returns a burst's.
/// mimalloc commits its first arena before `main` runs, so these two settings only take effect
/// from its environment: the process starts itself again (same pid, same arguments) with them,
/// unless they are set already — an operator's own `MIMALLOC_*` values win.
#[cfg(unix)]
fn allocator_settings() {
    use std::os::unix::process::CommandExt as _;
    const SETTINGS: [(&str, &str); 2] = [
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DELAY", "100"),
    ];
    if SETTINGS
        .iter()
        .all(|(name, _)| std::env::var_os(name).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    again.args(args);
    for (name, value) in SETTINGS {
        if std::env::var_os(name).is_none() {
            again.env(name, value);
        }
    }
    // Returns only when the exec failed (the binary was replaced meanwhile): run as we are.
    let _ = again.exec();
}

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// herald — a reliable outbound callback (webhook) dispatcher.
///
/// Run `herald serve` next to your TMS; send events with `POST /v1/messages` (or `herald
/// send`); inspect, test and replay with the commands below. `herald receive` is a receiver
/// that prints what herald sends. Every daemon setting can come from `herald.toml`, a
/// `HERALD_*` environment variable or a flag (see `herald serve --help`).
#[derive(Parser)]
#[command(name = "herald", version = env!("HERALD_VERSION"), about, long_about)]
struct Cli {
    #[command(flatten)]
    remote: cli::remote::Remote,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (producer API, admin API, metrics) until SIGTERM/SIGINT.
    ///
    /// Example: HERALD_ADMIN_TOKEN=… herald serve --listen 0.0.0.0:8088 --data-dir /var/lib/herald
    Serve(cli::serve::ServeArgs),
    /// Listen for callbacks and print each one, checking its signature (for trying herald out).
    ///
    /// Example: herald receive --port 9000 --secret customer-api-key
    Receive(cli::receive::ReceiveArgs),
    /// Send a message through a running daemon's producer API.
    ///
    /// Example: herald send --tenant acme --event-type job.completed --payload '{"job_id": 42}'
    Send(cli::send::SendArgs),
    /// Endpoints on a running daemon: list, show, create, update, enable, disable, delete,
    /// test, stats.
    Endpoints {
        #[command(subcommand)]
        command: cli::endpoints::EndpointCommand,
    },
    /// Deliveries on a running daemon: list, show, retry now, cancel, replay.
    Deliveries {
        #[command(subcommand)]
        command: cli::deliveries::DeliveryCommand,
    },
    /// Replay one delivery by id, or in bulk by filter (a durable job); follow a bulk replay.
    ///
    /// Examples: `herald replay 01a2...` ·
    /// `herald replay --endpoint 01a2... --status failed --since 2h` ·
    /// `herald replay status 5f3c...`
    Replay(cli::replay::ReplayArgs),
    /// Inspect policies: the built-in ones and those in a directory (no daemon needed).
    Policies {
        #[command(subcommand)]
        command: cli::policies::PolicyCommand,
    },
    /// Check, recover or back up the store (see the README's "Backup and restore").
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
    },
    /// Print the HTTP API's OpenAPI document (the same as `GET /openapi.json`).
    ///
    /// Example: herald openapi > openapi.json
    Openapi,
    /// Print a shell completion script.
    ///
    /// Example: herald completions bash > /etc/bash_completion.d/herald
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Measure herald on this machine with a local receiver (see the README's figures).
    Bench {
        #[command(subcommand)]
        scenario: cli::bench::Scenario,
    },
}

fn main() -> ExitCode {
    #[cfg(unix)]
    allocator_settings();
    let cli = parse();
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Receive(_) | Command::Bench { .. }
    ) {
        die_quietly_on_closed_pipes();
    }
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
    let remote = cli.remote;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => args.run().await,
            Command::Receive(args) => cli::receive::run(args, remote.json).await,
            Command::Send(args) => cli::send::run(&remote, args).await,
            Command::Endpoints { command } => cli::endpoints::run(&remote, command).await,
            Command::Deliveries { command } => cli::deliveries::run(&remote, command).await,
            Command::Replay(args) => cli::replay::run(&remote, args).await,
            Command::Policies { command } => cli::policies::run(command, remote.json),
            Command::Store { command } => cli::store::run(command, &remote).await,
            Command::Openapi => herald::server::openapi()
                .to_pretty_json()
                .map(|doc| println!("{doc}"))
                .map_err(|e| format!("openapi: {e}")),
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "herald",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
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

/// Parses the command line. The options that reach a running daemon are accepted anywhere
/// (`herald --json deliveries list`), so clap would also take them after `serve` and
/// `receive`, where they mean nothing: `herald serve --token T` would start a daemon without
/// any token. Given there on the command line, they are refused instead.
fn parse() -> Cli {
    use clap::FromArgMatches as _;
    use clap::parser::ValueSource;
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some((name @ ("serve" | "receive"), sub)) = matches.subcommand() {
        let given = |id: &str| sub.value_source(id) == Some(ValueSource::CommandLine);
        let stray: Vec<&str> = [("server", "--server"), ("token", "--token")]
            .into_iter()
            .chain((name == "serve").then_some(("json", "--json")))
            .filter(|(id, _)| given(id))
            .map(|(_, flag)| flag)
            .collect();
        if !stray.is_empty() {
            let instead = match name {
                "serve" => {
                    "the daemon's own tokens are --admin-token and --producer-token, its \
                     address --listen (see `herald serve --help`)"
                }
                _ => {
                    "`herald receive` checks signatures with --secret (see `herald receive --help`)"
                }
            };
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{} {} for commands that talk to a running daemon, not for `{name}`: {instead}",
                        stray.join(" and "),
                        if stray.len() == 1 { "is" } else { "are" },
                    ),
                )
                .exit();
        }
    }
    cli
}

/// `herald deliveries list | head` should end quietly when `head` has read enough, as other
/// command-line tools do, instead of panicking on a broken pipe. Not for the servers: a peer
/// closing a socket must be an error there, not the end of the process.
fn die_quietly_on_closed_pipes() {
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
