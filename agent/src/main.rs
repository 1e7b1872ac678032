//! The `meridian-agent` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use meridian_agent::agent::Agent;
use meridian_agent::config::AgentConfig;
use meridian_domain::SystemClock;

/// Meridian's data-center agent: runs the scheduled work of one cluster.
#[derive(Debug, Parser)]
#[command(name = "meridian-agent", version, about)]
struct Cli {
    /// The agent's config file.
    #[arg(long, default_value = "agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The task supervisor the agent starts itself (in `<data_dir>/supervisor`): starts the
    /// agent's shell tasks and keeps them going through an agent restart. Not for starting by
    /// hand.
    #[command(hide = true)]
    Supervise {
        /// The supervisor's directory (its socket, tasks' output and exit statuses).
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Supervise { dir }) = &cli.command {
        return meridian_agent::supervisor::server::main(dir);
    }
    let config = match AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let tls = match config.tls.load() {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("error: agent config field `tls`: {err}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let agent = match Agent::start(&config, &tls, Arc::new(SystemClock)).await {
            Ok(agent) => agent,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "agent {} (cluster {}) running; plane: {}",
            config.hostname,
            config.cluster,
            config.plane.join(", ")
        );
        shutdown_signal().await;
        eprintln!("stopping: finishing runs, flushing the outbox, giving partitions back");
        agent.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
