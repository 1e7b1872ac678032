//! The `meridian` binary: parses the command line, runs the command, prints, exits. Every
//! command but `dev` is the plane's (`meridian_plane::cli`); `dev` composes a plane and an
//! agent ([`dev`]), which is why the binary is a package of its own.

mod dev;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use meridian_plane::cli::client::{Client, ClientError};
use meridian_plane::cli::model::{self, CLUSTER, DC, ENV, GRANT, SCHEDULE, TENANT, WORKFLOW};
use meridian_plane::cli::plane::{self, PlaneCommand, SnapshotCommand};
use meridian_plane::cli::schedule::{self, ScheduleCommand};
use meridian_plane::cli::{Cli, Command, audit, certs};

/// Exit code for input the command refuses (clap uses the same for usage errors).
const BAD_INPUT: u8 = 2;

/// `meridian supervise --dir DIR`: the task supervisor `meridian dev`'s embedded agent starts
/// itself (the agent's `supervise`, in this binary); not part of the documented commands.
#[derive(Debug, Parser)]
#[command(name = "meridian supervise", hide = true)]
struct Supervise {
    #[arg(long)]
    dir: std::path::PathBuf,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "supervise") {
        let args = Supervise::parse_from(std::env::args_os().skip(1));
        return meridian_agent::supervisor::server::main(&args.dir);
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Certs(command) => finish(certs::run(command).map_err(|e| e.to_string())),
        Command::Schedule(ScheduleCommand::Preview(args)) => preview(args),
        _ => {
            init_tracing();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(&cli)) {
                Ok(out) => {
                    if !out.is_empty() {
                        println!("{out}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

fn finish(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(BAD_INPUT)
        }
    }
}

/// Logs go to stderr; `RUST_LOG`-style filtering is not wired yet, so only warnings and
/// errors are shown.
fn init_tracing() {
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::WARN)
            .finish(),
    );
}

async fn run(cli: &Cli) -> Result<String, ClientError> {
    let client = || Client::new(&cli.target);
    let config = || {
        cli.target.config.as_deref().ok_or_else(|| {
            ClientError::Refused("--config plane.toml is required: the node's config file".into())
        })
    };
    match &cli.command {
        Command::Dev(args) => dev::run(args, &cli.target.data_dir).await,
        Command::Plane(PlaneCommand::Serve) => plane::serve(config()?).await,
        Command::Plane(PlaneCommand::Init) => plane::init(config()?).await,
        Command::Plane(PlaneCommand::Add { node }) => plane::add(&client()?, node).await,
        Command::Plane(PlaneCommand::Remove { hostname }) => {
            plane::remove(&client()?, hostname).await
        }
        Command::Plane(PlaneCommand::Status) => plane::status(&client()?).await,
        Command::Plane(PlaneCommand::Snapshot(SnapshotCommand::Save { file, stale })) => {
            plane::snapshot_save(&client()?, file, *stale).await
        }
        Command::Plane(PlaneCommand::Snapshot(SnapshotCommand::Export { file })) => {
            plane::snapshot_export(config()?, file).await
        }
        Command::Plane(PlaneCommand::Snapshot(SnapshotCommand::Inspect { file })) => {
            plane::snapshot_inspect(file).await
        }
        Command::Plane(PlaneCommand::Restore { file }) => plane::restore(config()?, file).await,
        Command::Dc(verb) => model::run(&client()?, &DC, verb).await,
        Command::Cluster(verb) => model::run(&client()?, &CLUSTER, verb).await,
        Command::Env(verb) => model::run(&client()?, &ENV, verb).await,
        Command::Tenant(verb) => model::run(&client()?, &TENANT, verb).await,
        Command::Grant(verb) => model::run(&client()?, &GRANT, verb).await,
        Command::Workflow(verb) => model::run(&client()?, &WORKFLOW, verb).await,
        Command::Schedule(ScheduleCommand::Model(verb)) => {
            model::run(&client()?, &SCHEDULE, verb).await
        }
        Command::Token(command) => meridian_plane::cli::users::token(&client()?, command).await,
        Command::User(command) => meridian_plane::cli::users::user(&client()?, command).await,
        Command::Whoami => meridian_plane::cli::users::whoami(&client()?).await,
        Command::Resources(args) => meridian_plane::cli::resources::run(&client()?, args).await,
        Command::Audit(args) => audit::audit(&client()?, args).await,
        Command::Pause(args) => meridian_plane::cli::pauses::pause(&client()?, args).await,
        Command::Resume(args) => meridian_plane::cli::pauses::resume(&client()?, args).await,
        Command::Pauses(args) => meridian_plane::cli::pauses::list(&client()?, args).await,
        Command::Alert(command) => meridian_plane::cli::alerts::run(&client()?, command).await,
        Command::Backfill(command) => {
            meridian_plane::cli::backfills::run(&client()?, command).await
        }
        Command::Schedule(ScheduleCommand::Pause(args)) => {
            meridian_plane::cli::pauses::pause_schedule(&client()?, args).await
        }
        Command::Schedule(ScheduleCommand::Resume(args)) => {
            meridian_plane::cli::pauses::resume_schedule(&client()?, args).await
        }
        Command::Get(args) => meridian_plane::cli::document::get(&client()?, args).await,
        Command::Apply(args) => meridian_plane::cli::document::apply(&client()?, args).await,
        Command::Agents => meridian_plane::cli::agents::agents(&client()?).await,
        Command::Leases(args) => meridian_plane::cli::agents::leases(&client()?, args).await,
        Command::InDoubt { command } => {
            meridian_plane::cli::doubts::run(&client()?, command.as_ref()).await
        }
        Command::Runs(meridian_plane::cli::runs::RunsCommand::Logs { run, follow: true }) => {
            // Printed as it comes, not at the end.
            meridian_plane::cli::runs::follow(&client()?, run, |text| {
                let mut out = std::io::stdout().lock();
                // The reader went away (`| head`): stop following.
                out.write_all(text.as_bytes()).is_ok() && out.flush().is_ok()
            })
            .await
            .map(|()| String::new())
        }
        Command::Runs(command) => meridian_plane::cli::runs::runs(&client()?, command).await,
        Command::Certs(_) | Command::Schedule(ScheduleCommand::Preview(_)) => {
            unreachable!("handled without a runtime")
        }
    }
}

fn preview(args: &schedule::PreviewArgs) -> ExitCode {
    match schedule::preview(args, chrono::Utc::now()) {
        Ok(preview) => {
            let mut out = std::io::stdout().lock();
            for line in &preview.fire_times {
                if writeln!(out, "{line}").is_err() {
                    // The reader went away (`| head`); nothing left to say.
                    return ExitCode::SUCCESS;
                }
            }
            if preview.ended {
                eprintln!(
                    "note: the schedule has no fire times after the {} shown",
                    preview.fire_times.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(BAD_INPUT)
        }
    }
}
