//! The command line: each subcommand in its own module.

pub mod bench;
pub mod deliveries;
pub mod endpoints;
pub mod format;
pub mod policies;
pub mod receive;
pub mod remote;
pub mod replay;
pub mod send;
pub mod serve;
pub mod store;
