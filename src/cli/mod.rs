//! The command line: each subcommand in its own module.

pub mod bench;
pub mod policies;
pub mod remote;
pub mod store;

use std::path::Path;

use herald::config::Config;
use tracing_subscriber::EnvFilter;

/// `herald serve`.
pub async fn serve(config_path: Option<&Path>) -> Result<(), String> {
    let config =
        Config::load(config_path, |var| std::env::var(var).ok()).map_err(|e| e.to_string())?;
    let filter = EnvFilter::try_new(&config.log).map_err(|e| format!("HERALD_LOG: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    herald::server::serve(config).await
}
