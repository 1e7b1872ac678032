//! The `meridian` command line. Flags follow kubectl/nomad habits: `meridian <noun> <verb>`.

pub mod certs;
pub mod schedule;

use clap::{Parser, Subcommand};

/// Meridian: a federated job and workflow scheduler.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with schedules.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Create the federation's CA and issue node certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}
