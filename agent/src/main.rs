//! The `meridian-agent` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use meridian_agent::config::AgentConfig;

/// Meridian's data-center agent: runs the scheduled work of one cluster.
#[derive(Debug, Parser)]
#[command(name = "meridian-agent", version, about)]
struct Cli {
    /// The agent's config file.
    #[arg(long, default_value = "agent.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // Connecting to the plane, leases, firing and the outbox are issue #4; until then the
    // agent validates its config and says plainly that it cannot run yet.
    eprintln!(
        "error: agent {} (cluster {}) has a valid config, but this build cannot connect to the \
         plane yet (issue #4)",
        config.hostname, config.cluster
    );
    ExitCode::FAILURE
}
