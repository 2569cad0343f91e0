//! `herald serve`: its flags (one per setting, generated from [`herald::config::SETTINGS`]),
//! logging, and the daemon.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use herald::config::{Config, SETTINGS, Setting};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// The arguments of `herald serve`: a configuration file and any setting as a flag.
pub struct ServeArgs {
    config: Option<PathBuf>,
    /// (setting key, value) for the flags given on the command line.
    flags: Vec<(String, String)>,
}

impl ServeArgs {
    /// Loads the configuration, sets up logging and runs the daemon until SIGTERM/SIGINT.
    pub async fn run(self) -> Result<(), String> {
        let config = Config::load(self.config.as_deref(), std::env::vars(), &self.flags)
            .map_err(|e| e.to_string())?;
        let filter = EnvFilter::try_new(&config.log).map_err(|e| format!("log filter: {e}"))?;
        // Colours only for a person at a terminal: files and journald get plain text.
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        // Spans also go to an OTLP collector when one is configured.
        let (otel, export) = match &config.otlp_endpoint {
            Some(endpoint) => herald::otel::layer(endpoint).map(|(l, e)| (Some(l), Some(e)))?,
            None => (None, None),
        };
        let log = fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
        tracing_subscriber::registry()
            .with(otel)
            .with(log.with_filter(filter))
            .init();
        let served = herald::server::serve(config).await;
        if let Some(export) = export {
            export.shutdown().await;
        }
        served
    }
}

fn setting_arg(setting: &Setting) -> Arg {
    let meaning = setting.meaning();
    let default = setting
        .default_value()
        .map(|d| format!(" [default: {d}]"))
        .unwrap_or_default();
    let arg = Arg::new(setting.key)
        .long(setting.flag())
        .env(setting.env_var())
        .hide_env_values(setting.secret)
        .help(format!("{meaning}{default}"))
        .action(ArgAction::Set);
    if setting.is_switch() {
        arg.value_name("BOOL")
            .num_args(0..=1)
            .default_missing_value("true")
    } else {
        arg.value_name(setting.key.to_ascii_uppercase())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        let command = command.arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Configuration file (herald.toml); every key is optional"),
        );
        SETTINGS
            .iter()
            .fold(command.next_help_heading("Settings"), |command, setting| {
                command.arg(setting_arg(setting))
            })
            .after_help(
                "Each setting comes from, in rising order of precedence: its default, the \
                 --config file (the same key), the HERALD_* environment variable, the flag.",
            )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        // Values clap took from the environment are left to the configuration loader, which
        // reads the same variables (and names them in its errors).
        let flags = SETTINGS
            .iter()
            .filter(|s| matches.value_source(s.key) == Some(ValueSource::CommandLine))
            .filter_map(|s| {
                let value = matches.get_one::<String>(s.key)?;
                Some((s.key.to_string(), value.clone()))
            })
            .collect();
        Ok(ServeArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}
