//! The `meridian` command line. Flags follow kubectl/nomad habits: `meridian <noun> <verb>`.

pub mod agents;
pub mod alerts;
pub mod audit;
pub mod backfills;
pub mod certs;
pub mod client;
pub mod document;
pub mod doubts;
pub mod model;
pub mod pauses;
pub mod plane;
pub mod resources;
pub mod runs;
pub mod schedule;
pub mod users;

use clap::{Parser, Subcommand};

/// Meridian: a federated job and workflow scheduler.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub target: client::Target,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a one-node plane with an example federation on local defaults.
    Dev(plane::DevArgs),
    /// Run and manage plane nodes (the Raft group holding every definition).
    #[command(subcommand)]
    Plane(plane::PlaneCommand),
    /// Data centers.
    #[command(subcommand)]
    Dc(model::Verb<model::DcCreate>),
    /// Compute clusters in data centers.
    #[command(subcommand)]
    Cluster(model::Verb<model::ClusterCreate>),
    /// Environments: a cluster plus settings for the runs there.
    #[command(subcommand)]
    Env(model::Verb<model::EnvCreate>),
    /// Tenants.
    #[command(subcommand)]
    Tenant(model::Verb<model::TenantCreate>),
    /// Grants of environments to tenants.
    #[command(subcommand)]
    Grant(model::Verb<model::GrantCreate>),
    /// Workflows (versioned; creating an existing one makes a new version).
    #[command(subcommand)]
    Workflow(model::Verb<model::WorkflowCreate>),
    /// Schedules; `schedule preview` checks a cron expression offline.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// The run history across data centers, logs, run now, kill.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// The resource center: a tenant's files in the S3 bucket (upload, ls, get, rm).
    Resources(resources::ResourcesArgs),
    /// Agents the plane knows, and the partitions each holds.
    Agents,
    /// Partition leases: holder, epoch, expiry.
    Leases(agents::LeasesArgs),
    /// Records in doubt after a takeover (`list`, the default), and settling them by hand
    /// (`resolve --run|--mark-done`).
    InDoubt {
        #[command(subcommand)]
        command: Option<doubts::InDoubtCommand>,
    },
    /// Users: people who sign in to the web UI, with their roles.
    #[command(subcommand)]
    User(users::UserCommand),
    /// API tokens for automation, with their roles and expiry.
    #[command(subcommand)]
    Token(users::TokenCommand),
    /// Who this CLI acts as: the token's (or session's) name and roles.
    Whoami,
    /// Hold a schedule, a workflow's schedules, a tenant or an environment still: due
    /// records are recorded skipped (paused) and nothing runs.
    Pause(pauses::PauseArgs),
    /// Lift a pause (`--catch-up`: run what it skipped, as the catch-up policy says).
    Resume(pauses::ResumeArgs),
    /// What is paused, since when and why.
    Pauses(pauses::ListArgs),
    /// Backfills: a range of a schedule's fire times run after the fact, with live progress.
    #[command(subcommand)]
    Backfill(backfills::BackfillCommand),
    /// Alerts: channels (webhook, email, chat), rules (what raises them) and deliveries.
    #[command(subcommand)]
    Alert(alerts::AlertCommand),
    /// Print entities as documents `apply` takes back (YAML by default; `-o json`).
    Get(document::GetArgs),
    /// Create or change what documents describe (files or directories of YAML, JSON or
    /// TOML): one write per document that differs; `--dry-run` shows the diff only.
    Apply(document::ApplyArgs),
    /// The audit trail: every applied change, who and when.
    Audit(audit::AuditArgs),
    /// Create the federation's CA and issue node certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn env_create_flags_make_the_run_as_document() {
        use super::model::CreateBody;
        use clap::Parser;
        let args = [
            "meridian",
            "env",
            "create",
            "shared",
            "--cluster",
            "nj-main",
            "--run-as",
            "ads=ads-etl:etl",
            "--run-as",
            "web=web",
            "--run-as-default",
            "mrd-shared",
            "--allow-agent-user",
        ];
        let super::Command::Env(super::model::Verb::Create(create)) =
            super::Cli::try_parse_from(args).unwrap().command
        else {
            panic!("parsed as env create");
        };
        assert_eq!(
            create.flags.flags_document().unwrap(),
            serde_json::json!({
                "name": "shared",
                "cluster": "nj-main",
                "run_as": {
                    "default": {"user": "mrd-shared"},
                    "tenants": {
                        "ads": {"user": "ads-etl", "group": "etl"},
                        "web": {"user": "web"},
                    },
                    "allow_agent_user": true,
                },
            })
        );
        let document = serde_json::from_value::<crate::model::Environment>(
            create.flags.flags_document().unwrap(),
        )
        .unwrap();
        assert!(document.run_as.allow_agent_user);
    }
}
