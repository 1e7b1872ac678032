//! The command processor over a real SQLite file: validation, refusals that change nothing,
//! versions, the audit trail; agents' heartbeats (partition leases, decided at each proposal's
//! time) and reports (the run history, with epoch fencing).

use meridian_domain::run::{
    Assignment, AttemptEvent, AttemptOutcome, Job, LogChunk, OsUser, Report, ReportItem, RunEvent,
    RunState, partition_of,
};
use meridian_domain::workflow::WorkflowDefinition;
use meridian_domain::{FireId, ScheduleId, ScheduleSpec};
use meridian_plane::model::doubt::Resolution;
use meridian_plane::model::history::ReportOutcome;
use meridian_plane::model::leasing::{AgentOrder, HeartbeatOutcome, HeldLease};
use meridian_plane::model::processor::{self, ApplyError, Refusal};
use meridian_plane::model::query::{ClaimedLease, LeaseRecord, PageMark, RunFilter};
use meridian_plane::model::{
    AgentReport, Cluster, ClusterRole, Command, DataCenter, Environment, Grant, Heartbeat, Name,
    PartitionRef, Proposal, Relinquished, ReportEntry, ResolveDoubts, RunAs, RunRequest, Schedule,
    Tenant, Workflow, query,
};
use meridian_plane::raft::backup;
use sqlx::{Row, SqlitePool};

/// Dumped rows without the audit trail's records of refusals.
fn without_refusals(rows: Vec<String>) -> Vec<String> {
    rows.into_iter()
        .filter(|row| !(row.starts_with("audit") && row.contains("| refused |")))
        .collect()
}

struct Model {
    pool: SqlitePool,
    index: u64,
    _dir: tempfile::TempDir,
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

impl Model {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pool = meridian_plane::model::open(&dir.path().join("model.db"))
            .await
            .unwrap();
        Self {
            pool,
            index: 0,
            _dir: dir,
        }
    }

    async fn apply(&mut self, command: Command) -> Result<processor::Applied, ApplyError> {
        self.apply_at(1_700_000_000_000 + self.index as i64 + 1, command)
            .await
    }

    /// Applies `command` as a proposal stamped `at_ms`: the time the lease plan decides with.
    async fn apply_at(
        &mut self,
        at_ms: i64,
        command: Command,
    ) -> Result<processor::Applied, ApplyError> {
        self.index += 1;
        let proposal = Proposal::new("alice", at_ms, command);
        let mut conn = self.pool.acquire().await.unwrap();
        processor::apply(&mut conn, self.index, &proposal).await
    }

    async fn ok(&mut self, command: Command) -> processor::Applied {
        self.apply(command).await.expect("command applies")
    }

    async fn refused(&mut self, command: Command) -> String {
        let before = self.dump().await;
        let err = match self.apply(command.clone()).await {
            Err(ApplyError::Refused(r)) => r.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        // The refusal is in the audit trail (agents' traffic aside), naming who was refused and
        // why; nothing else is.
        if command.audited() {
            let last = query::audit(&self.pool, &query::AuditFilter::recent(1))
                .await
                .unwrap();
            assert_eq!(
                (
                    last[0].outcome.as_str(),
                    last[0].actor.as_str(),
                    last[0].message.as_str()
                ),
                ("refused", "alice", err.as_str())
            );
        }
        assert_eq!(
            without_refusals(self.dump().await),
            without_refusals(before.clone()),
            "a refused command changed state"
        );
        // Inside a batch (no savepoint per command) the same refusal must leave no trace
        // either: only the batch's own audit row is new.
        let in_batch = self.ok(Command::Batch(vec![command])).await;
        assert_eq!(in_batch.items.len(), 1);
        assert_eq!(in_batch.items[0].clone().unwrap_err().message, err);
        let without_batches = |rows: Vec<String>| -> Vec<String> {
            rows.into_iter()
                .filter(|row| !row.starts_with("audit") || !row.contains("| batch |"))
                .collect()
        };
        assert_eq!(
            without_batches(without_refusals(self.dump().await)),
            without_batches(without_refusals(before)),
            "a refused command in a batch changed state"
        );
        err
    }

    /// Every row of every table (users and their sessions too), to prove a refusal left no
    /// trace.
    async fn dump(&self) -> Vec<String> {
        self.dump_tables(&[
            "data_centers",
            "clusters",
            "environments",
            "tenants",
            "grants",
            "workflows",
            "schedules",
            "tokens",
            "users",
            "sessions",
            "audit",
        ])
        .await
    }

    /// Every row of the run history, to prove a refused report left no trace. (A refused
    /// `started` is kept aside in `fenced_starts`, which is left out here.)
    async fn history(&self) -> Vec<String> {
        self.dump_tables(&["runs", "task_attempts", "run_logs", "schedule_cursors"])
            .await
    }

    async fn dump_tables(&self, tables: &[&str]) -> Vec<String> {
        let mut out = vec![];
        for table in tables {
            let rows = sqlx::query(&format!("SELECT * FROM {table}"))
                .fetch_all(&self.pool)
                .await
                .unwrap();
            for row in rows {
                let cols: Vec<String> = (0..row.len())
                    .map(|i| {
                        row.try_get::<String, _>(i)
                            .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                            .unwrap_or_else(|_| "NULL".into())
                    })
                    .collect();
                out.push(format!("{table}: {}", cols.join(" | ")));
            }
        }
        out
    }

    /// A data center, an active cluster, an environment, a tenant and a grant.
    async fn federation(&mut self) {
        self.ok(Command::CreateDataCenter(DataCenter {
            name: n("nj"),
            description: "New Jersey".into(),
        }))
        .await;
        self.ok(Command::CreateCluster(cluster("nj-main", "nj", None)))
            .await;
        self.ok(Command::CreateEnvironment(env("prod-nj", "nj-main")))
            .await;
        self.ok(Command::CreateTenant(Tenant {
            name: n("ads"),
            description: String::new(),
            log_retention_days: None,
            history_retention_days: None,
        }))
        .await;
        self.ok(Command::CreateGrant(Grant {
            tenant: n("ads"),
            environment: n("prod-nj"),
            max_concurrent_runs: 5,
        }))
        .await;
    }
}

fn cluster(name: &str, dc: &str, backup: Option<&str>) -> Cluster {
    Cluster {
        name: n(name),
        dc: n(dc),
        role: ClusterRole::Active,
        backup: backup.map(n),
        partitions: 16,
        lease_seconds: 30,
    }
}

fn env(name: &str, cluster: &str) -> Environment {
    Environment {
        name: n(name),
        cluster: n(cluster),
        vars: [("JAVA_HOME".to_string(), "/opt/java".to_string())].into(),
        work_dir: None,
        queue: None,
        run_as: Default::default(),
    }
}

fn workflow(tenant: &str, name: &str, script: &str) -> Workflow {
    Workflow {
        tenant: n(tenant),
        name: n(name),
        environment: None,
        definition: WorkflowDefinition::shell("main", script),
    }
}

fn schedule(tenant: &str, name: &str, workflow: &str, env: &str, cron: &str) -> Schedule {
    Schedule {
        tenant: n(tenant),
        name: n(name),
        workflow: n(workflow),
        environment: n(env),
        spec: ScheduleSpec::cron(cron),
        overlap: Default::default(),
        takeover: Default::default(),
    }
}

#[tokio::test]
async fn a_federation_is_defined_queried_and_audited() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo hi")))
        .await;
    let applied = m
        .ok(Command::CreateSchedule(schedule(
            "ads",
            "nightly",
            "etl",
            "prod-nj",
            "0 0 2 * * ?",
        )))
        .await;
    assert_eq!(applied.subject, "schedule ads/nightly");

    assert_eq!(
        query::clusters(&m.pool).await.unwrap()[0].name,
        n("nj-main")
    );
    let env = query::environment(&m.pool, &n("prod-nj"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.vars["JAVA_HOME"], "/opt/java");
    let grants = query::grants(&m.pool, Some(&n("ads"))).await.unwrap();
    assert_eq!(grants[0].max_concurrent_runs, 5);
    let s = query::schedule(&m.pool, &n("ads"), &n("nightly"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.id(), "ads.nightly");

    let audit = query::audit(&m.pool, &query::AuditFilter::applied(100))
        .await
        .unwrap();
    assert_eq!(audit.len(), 7);
    assert_eq!(audit[0].op, "create_schedule");
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(audit[0].log_index, 7);
    assert_eq!(audit[0].at_ms, 1_700_000_000_007);
    assert_eq!(audit[6].subject, "data center nj");
}

#[tokio::test]
async fn a_schedule_may_only_use_a_granted_environment() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::CreateEnvironment(env("staging-nj", "nj-main")))
        .await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    let err = m
        .refused(Command::CreateSchedule(schedule(
            "ads",
            "nightly",
            "etl",
            "staging-nj",
            "0 0 2 * * ?",
        )))
        .await;
    assert_eq!(
        err,
        "creating schedule `nightly` of tenant `ads`: environment `staging-nj` is not granted to \
         tenant `ads`"
    );
    let mut wf = workflow("ads", "report", "true");
    wf.environment = Some(n("staging-nj"));
    let err = m.refused(Command::ApplyWorkflow(wf)).await;
    assert!(
        err.contains("environment `staging-nj` is not granted to tenant `ads`"),
        "{err}"
    );
}

#[tokio::test]
async fn deleting_something_in_use_names_its_users_and_changes_nothing() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    m.ok(Command::CreateSchedule(schedule(
        "ads",
        "nightly",
        "etl",
        "prod-nj",
        "0 0 2 * * ?",
    )))
    .await;

    let err = m
        .refused(Command::DeleteEnvironment { name: n("prod-nj") })
        .await;
    assert_eq!(
        err,
        "deleting environment `prod-nj`: it is still used by grant to tenant `ads`; schedule \
         `ads/nightly`; delete or move those first"
    );
    let err = m
        .refused(Command::DeleteCluster { name: n("nj-main") })
        .await;
    assert!(err.contains("environment `prod-nj`"), "{err}");
    let err = m.refused(Command::DeleteDataCenter { name: n("nj") }).await;
    assert!(err.contains("cluster `nj-main`"), "{err}");
    let err = m
        .refused(Command::DeleteGrant {
            tenant: n("ads"),
            environment: n("prod-nj"),
        })
        .await;
    assert!(err.contains("schedule `nightly`"), "{err}");
    let err = m
        .refused(Command::DeleteWorkflow {
            tenant: n("ads"),
            name: n("etl"),
        })
        .await;
    assert!(err.contains("schedule `nightly`"), "{err}");

    // Taken apart in order, everything goes.
    for command in [
        Command::DeleteSchedule {
            tenant: n("ads"),
            name: n("nightly"),
        },
        Command::DeleteWorkflow {
            tenant: n("ads"),
            name: n("etl"),
        },
        Command::DeleteGrant {
            tenant: n("ads"),
            environment: n("prod-nj"),
        },
        Command::DeleteTenant { name: n("ads") },
        Command::DeleteEnvironment { name: n("prod-nj") },
        Command::DeleteCluster { name: n("nj-main") },
        Command::DeleteDataCenter { name: n("nj") },
    ] {
        m.ok(command).await;
    }
    assert!(query::data_centers(&m.pool).await.unwrap().is_empty());
}

#[tokio::test]
async fn names_are_unique_and_references_must_exist() {
    let mut m = Model::new().await;
    m.federation().await;
    let err = m
        .refused(Command::CreateCluster(cluster("nj-main", "nj", None)))
        .await;
    assert_eq!(
        err,
        "creating cluster `nj-main`: cluster `nj-main` already exists"
    );
    let err = m
        .refused(Command::CreateCluster(cluster("sh-main", "shanghai", None)))
        .await;
    assert_eq!(
        err,
        "creating cluster `sh-main`: data center `shanghai` does not exist"
    );
    let err = m
        .refused(Command::CreateCluster(cluster(
            "sh-main",
            "nj",
            Some("sh-main"),
        )))
        .await;
    assert!(
        err.contains("backup: a cluster cannot back itself up"),
        "{err}"
    );
    let err = m
        .refused(Command::CreateGrant(Grant {
            tenant: n("ads"),
            environment: n("prod-nj"),
            max_concurrent_runs: 1,
        }))
        .await;
    assert!(err.contains("grant `ads/prod-nj` already exists"), "{err}");
    let err = m
        .refused(Command::CreateSchedule(schedule(
            "ads",
            "nightly",
            "ghost",
            "prod-nj",
            "0 0 2 * * ?",
        )))
        .await;
    assert!(err.contains("workflow `ads/ghost` does not exist"), "{err}");
}

#[tokio::test]
async fn invalid_specs_and_definitions_name_the_field() {
    let mut m = Model::new().await;
    m.federation().await;
    let mut bad = workflow("ads", "etl", "true");
    bad.definition.tasks[0].depends_on = vec!["ghost".into()];
    let err = m.refused(Command::ApplyWorkflow(bad)).await;
    assert!(
        err.contains("definition: tasks.main.depends_on: `ghost` is not a task"),
        "{err}"
    );
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    let err = m
        .refused(Command::CreateSchedule(schedule(
            "ads",
            "nightly",
            "etl",
            "prod-nj",
            "0 61 * * * ?",
        )))
        .await;
    assert!(
        err.contains("spec.cron.minute: cron: minute field `61` is invalid"),
        "{err}"
    );
}

fn os_user(user: &str, group: Option<&str>) -> OsUser {
    OsUser {
        user: user.into(),
        group: group.map(Into::into),
    }
}

#[tokio::test]
async fn an_environment_maps_tenants_to_os_users_and_runs_carry_their_tenants() {
    let mut m = Model::new().await;
    m.federation().await;
    let shared = |run_as: RunAs| Environment {
        run_as,
        ..env("shared-nj", "nj-main")
    };
    let err = m
        .refused(Command::CreateEnvironment(shared(RunAs {
            tenants: [(n("ads"), os_user("Ads Team", None))].into(),
            ..Default::default()
        })))
        .await;
    assert_eq!(
        err,
        "creating environment `shared-nj`: run_as.tenants.ads.user: must start with a \
         lower-case letter or `_` (or be a numeric id)"
    );
    let err = m
        .refused(Command::CreateEnvironment(shared(RunAs {
            default: Some(os_user("svc", Some("etl;rm"))),
            ..Default::default()
        })))
        .await;
    assert_eq!(
        err,
        "creating environment `shared-nj`: run_as.default.group: may only contain lower-case \
         letters, digits, `_` and `-`"
    );
    let run_as = RunAs {
        default: Some(os_user("mrd-shared", None)),
        tenants: [(n("ads"), os_user("ads-etl", Some("etl")))].into(),
        allow_agent_user: true,
    };
    m.ok(Command::CreateEnvironment(shared(run_as.clone())))
        .await;
    let stored = query::environment(&m.pool, &n("shared-nj"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.run_as, run_as);

    // `ads` has its own user; `web` gets the default; in `prod-nj`, which maps nothing and
    // allows nothing, the job says so (the agent refuses it).
    m.ok(Command::CreateTenant(Tenant {
        name: n("web"),
        description: String::new(),
        log_retention_days: None,
        history_retention_days: None,
    }))
    .await;
    for (tenant, environment) in [("ads", "shared-nj"), ("web", "shared-nj")] {
        m.ok(Command::CreateGrant(Grant {
            tenant: n(tenant),
            environment: n(environment),
            max_concurrent_runs: 1,
        }))
        .await;
    }
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    m.ok(Command::ApplyWorkflow(workflow("web", "site", "true")))
        .await;
    let mut jobs = Vec::new();
    for (tenant, workflow, environment) in [
        ("ads", "etl", "shared-nj"),
        ("web", "site", "shared-nj"),
        ("ads", "etl", "prod-nj"),
    ] {
        m.ok(Command::RequestRun(RunRequest {
            tenant: n(tenant),
            workflow: n(workflow),
            environment: Some(n(environment)),
        }))
        .await;
        let job: String =
            sqlx::query_scalar("SELECT job FROM agent_commands ORDER BY id DESC LIMIT 1")
                .fetch_one(&m.pool)
                .await
                .unwrap();
        let job: Job = meridian_domain::stored::read(&job).unwrap();
        jobs.push((job.os_user, job.allow_agent_user));
    }
    assert_eq!(
        jobs,
        [
            (Some(os_user("ads-etl", Some("etl"))), true),
            (Some(os_user("mrd-shared", None)), true),
            (None, false),
        ]
    );
}

#[tokio::test]
async fn applying_a_workflow_again_makes_a_new_version_and_old_ones_stay_readable() {
    let mut m = Model::new().await;
    m.federation().await;
    let v1 = m
        .ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo one")))
        .await;
    let v2 = m
        .ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo two")))
        .await;
    assert_eq!((v1.version, v2.version), (Some(1), Some(2)));
    let latest = query::workflow(&m.pool, &n("ads"), &n("etl"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, 2);
    let first = query::workflow(&m.pool, &n("ads"), &n("etl"), Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.workflow.definition,
        WorkflowDefinition::shell("main", "echo one")
    );
    assert_eq!(
        query::workflows(&m.pool, &query::Page::all())
            .await
            .unwrap()
            .len(),
        1
    );

    // Deleted and re-applied: versions keep counting up, never reused.
    m.ok(Command::DeleteWorkflow {
        tenant: n("ads"),
        name: n("etl"),
    })
    .await;
    assert!(
        query::workflows(&m.pool, &query::Page::all())
            .await
            .unwrap()
            .is_empty()
    );
    let v3 = m
        .ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo three")))
        .await;
    assert_eq!(v3.version, Some(3));
}

#[tokio::test]
async fn a_refusal_inside_an_outer_transaction_undoes_only_itself() {
    use sqlx::Connection;
    let m = Model::new().await;
    let mut conn = m.pool.acquire().await.unwrap();
    let mut outer = conn.begin().await.unwrap();
    let dc = Proposal::new(
        "alice",
        1,
        Command::CreateDataCenter(DataCenter {
            name: n("nj"),
            description: String::new(),
        }),
    );
    processor::apply(&mut outer, 1, &dc).await.unwrap();
    let again = processor::apply(&mut outer, 2, &dc).await;
    assert!(matches!(
        again,
        Err(ApplyError::Refused(Refusal::Exists { .. }))
    ));
    // The caller (the Raft state machine) records its own progress in the same transaction.
    sqlx::query("CREATE TABLE progress (last INTEGER)")
        .execute(&mut *outer)
        .await
        .unwrap();
    outer.commit().await.unwrap();
    assert_eq!(query::data_centers(&m.pool).await.unwrap().len(), 1);
    assert_eq!(
        query::audit(&m.pool, &query::AuditFilter::applied(10))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_batch_applies_each_command_on_its_own_and_is_audited_once() {
    let mut m = Model::new().await;
    let dc = |name: &str| {
        Command::CreateDataCenter(DataCenter {
            name: n(name),
            description: String::new(),
        })
    };
    let applied = m
        .ok(Command::Batch(vec![
            dc("nj"),
            dc("nj"),
            Command::Batch(vec![dc("inner")]),
            dc("sg"),
        ]))
        .await;
    assert_eq!(applied.subject, "batch of 4 (2 refused)");
    let outcomes: Vec<Result<String, String>> = applied
        .items
        .iter()
        .map(|r| r.clone().map(|a| a.subject).map_err(|e| e.message))
        .collect();
    assert_eq!(
        outcomes,
        [
            Ok("data center nj".into()),
            Err("creating data center `nj`: data center `nj` already exists".into()),
            Err("batch: a batch may not contain a batch".into()),
            Ok("data center sg".into()),
        ]
    );
    let names: Vec<String> = query::data_centers(&m.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(names, ["nj", "sg"]);
    let audit = query::audit(&m.pool, &query::AuditFilter::applied(10))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].op, "batch");
    assert_eq!(audit[0].command["batch"].as_array().unwrap().len(), 4);
}

/// Issue #18, defect 5: runs asked for in one batch each get their own id (derived from the
/// log position and the place in the batch, so the same on every replica) and all start.
#[tokio::test]
async fn runs_asked_for_in_one_batch_each_get_their_own_id() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    let now = || {
        Command::RequestRun(RunRequest {
            tenant: n("ads"),
            workflow: n("etl"),
            environment: Some(n("prod-nj")),
        })
    };
    let applied = m.ok(Command::Batch(vec![now(), now()])).await;
    assert_eq!(applied.subject, "batch of 2 (0 refused)");
    let ids: Vec<String> = sqlx::query_scalar("SELECT run_id FROM runs ORDER BY run_id")
        .fetch_all(&m.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    // A run asked for on its own keeps the id shape it always had.
    m.ok(now()).await;
    let id: String = sqlx::query_scalar(
        "SELECT run_id FROM runs ORDER BY requested_ms DESC, rowid DESC LIMIT 1",
    )
    .fetch_one(&m.pool)
    .await
    .unwrap();
    assert_eq!(id, format!("ads.etl@manual-{}", m.index));
}

// Agents: heartbeats (partition leases) and reports (run history with epoch fencing).

/// A plane time well after every proposal `Model::apply` stamps, so lease tests choose each
/// heartbeat's time exactly.
const T0: i64 = 1_800_000_000_000;
/// `lease_seconds` of the clusters built by [`cluster`], in ms.
const LEASE_MS: i64 = 30_000;

impl Model {
    /// Applies `hb` as a heartbeat proposed at `at_ms` and returns what the agent is told.
    async fn heartbeat(&mut self, at_ms: i64, hb: Heartbeat) -> HeartbeatOutcome {
        let applied = self
            .apply_at(at_ms, Command::AgentHeartbeat(hb))
            .await
            .expect("heartbeat applies");
        serde_json::from_str(&applied.detail.expect("a heartbeat has an outcome")).unwrap()
    }

    /// A plain heartbeat of `agent` of `cluster` at `at_ms`.
    async fn beat(&mut self, at_ms: i64, agent: &str, cluster: &str) -> HeartbeatOutcome {
        self.heartbeat(at_ms, heartbeat(agent, cluster)).await
    }

    /// Sends `reports` as one outbox batch of `agent` (seq 1, 2, …); returns the refused seqs
    /// with their reasons.
    async fn report(
        &mut self,
        agent: &str,
        cluster: &str,
        reports: Vec<Report>,
    ) -> Vec<(u64, String)> {
        let entries = reports
            .into_iter()
            .zip(1..)
            .map(|(report, seq)| ReportEntry { seq, report })
            .collect();
        let applied = self
            .ok(Command::AgentReport(AgentReport {
                agent: agent.into(),
                cluster: n(cluster),
                entries,
            }))
            .await;
        let outcome: ReportOutcome =
            serde_json::from_str(&applied.detail.expect("a report has an outcome")).unwrap();
        outcome.refused
    }

    /// Reports that must all be refused, and leave the history as it was.
    async fn report_refused(&mut self, agent: &str, cluster: &str, reports: Vec<Report>) {
        let count = reports.len();
        let before = self.history().await;
        let refused = self.report(agent, cluster, reports).await;
        assert_eq!(
            refused.len(),
            count,
            "expected every entry refused: {refused:?}"
        );
        assert_eq!(
            self.history().await,
            before,
            "a refused report changed the history"
        );
    }

    /// Reports that must all be accepted.
    async fn report_ok(&mut self, agent: &str, cluster: &str, reports: Vec<Report>) {
        let refused = self.report(agent, cluster, reports).await;
        assert!(refused.is_empty(), "refused: {refused:?}");
    }

    /// Starts refused or not applied, kept as evidence: (run, agent).
    async fn fenced_starts(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT run_id, agent FROM fenced_starts ORDER BY run_id, agent")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// This model saved as a snapshot file (with the Raft progress a state machine keeps:
    /// entry 42 of term 3) and restored at `at_ms` as a one-node plane of `plane-9.test`.
    async fn restored(&self, at_ms: i64) -> (Model, backup::Summary) {
        let dir = tempfile::tempdir().unwrap();
        let applied = openraft::LogId::new(openraft::CommittedLeaderId::new(3, 7), 42);
        sqlx::query("INSERT INTO raft_state (key, value) VALUES ('last_applied', ?)")
            .bind(serde_json::to_string(&Some(applied)).unwrap())
            .execute(&self.pool)
            .await
            .unwrap();
        let file = dir.path().join("plane.snapshot");
        sqlx::query("VACUUM INTO ?")
            .bind(file.to_str().unwrap())
            .execute(&self.pool)
            .await
            .unwrap();
        let data = dir.path().join("data");
        let node = meridian_plane::raft::Node::new("plane-9.test", 7443);
        let summary = backup::restore(&file, &data, &node, at_ms).await.unwrap();
        let pool = meridian_plane::model::open(&data.join("model.db"))
            .await
            .unwrap();
        let model = Model {
            pool,
            index: self.index,
            _dir: dir,
        };
        (model, summary)
    }

    async fn leases_of(&self, cluster: &str) -> Vec<LeaseRecord> {
        query::leases(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.cluster == cluster)
            .collect()
    }

    async fn lease(&self, cluster: &str, partition: u32) -> LeaseRecord {
        self.leases_of(cluster)
            .await
            .into_iter()
            .find(|l| l.partition == partition)
            .expect("the partition has a lease row")
    }

    async fn run(&self, run_id: &str) -> query::RunRecord {
        query::run_in(&self.pool, run_id)
            .await
            .unwrap()
            .expect("the run is recorded")
    }

    /// Two agents of a 16-partition cluster, balanced 8/8 the way the plane does it: `a`
    /// heartbeats first and gets everything, `b` joins, `a` is asked to give half back and
    /// does. `a` last heartbeats at `at + 3`, `b` at `at + 4`.
    async fn balanced(&mut self, at: i64, a: &str, b: &str, cluster: &str) {
        assert_eq!(self.beat(at, a, cluster).await.leases.len(), 16);
        assert!(self.beat(at + 1, b, cluster).await.leases.is_empty());
        let asked = self.beat(at + 2, a, cluster).await.release;
        assert_eq!(asked.len(), 8);
        let released = self.heartbeat(at + 3, released(a, cluster, &asked)).await;
        assert_eq!(released.leases.len(), 8);
        assert_eq!(self.beat(at + 4, b, cluster).await.leases.len(), 8);
    }

    /// The federation, a workflow and schedule `ads/nightly` on `prod-nj`; returns the
    /// schedule's partition in `nj-main`.
    async fn scheduled(&mut self) -> u32 {
        self.federation().await;
        self.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
            .await;
        self.ok(Command::CreateSchedule(schedule(
            "ads",
            "nightly",
            "etl",
            "prod-nj",
            "0 0 2 * * ?",
        )))
        .await;
        partition_of(&ScheduleId::new("ads.nightly").unwrap(), 16)
    }
}

fn heartbeat(agent: &str, cluster: &str) -> Heartbeat {
    Heartbeat {
        agent: agent.into(),
        cluster: n(cluster),
        free_slots: 4,
        releasing: false,
        released: vec![],
        heartbeat_ms: 0,
        relinquished: vec![],
        usage: vec![],
        load: None,
    }
}

/// A heartbeat giving back `leases`.
fn released(agent: &str, cluster: &str, leases: &[HeldLease]) -> Heartbeat {
    Heartbeat {
        released: leases
            .iter()
            .map(|l| PartitionRef {
                cluster: n(&l.cluster),
                partition: l.partition,
            })
            .collect(),
        ..heartbeat(agent, cluster)
    }
}

/// What an agent holding `leases` claims when it fetches.
fn claims_of(leases: &[HeldLease]) -> Vec<ClaimedLease> {
    leases
        .iter()
        .map(|l| ClaimedLease {
            cluster: l.cluster.clone(),
            partition: l.partition,
            epoch: l.epoch,
        })
        .collect()
}

fn partitions(leases: &[HeldLease]) -> Vec<u32> {
    leases.iter().map(|l| l.partition).collect()
}

/// 2026-01-01T02:00:00Z plus `hours`: fire times of `ads/nightly`'s records.
fn fire_ms(hours: i64) -> i64 {
    1_767_232_800_000 + hours * 3_600_000
}

/// The id of `schedule`'s fire record at `fire_ms`.
fn record(schedule: &str, fire_ms: i64) -> String {
    FireId::derive(
        &ScheduleId::new(schedule).unwrap(),
        chrono::DateTime::from_timestamp_millis(fire_ms).unwrap(),
    )
    .to_string()
}

/// `ads/nightly`'s record at `fire` reaching `state` at `at_ms`, reported from partition
/// `partition` of `nj-main` under `epoch`.
fn event(partition: u32, epoch: u64, fire: i64, state: RunState, at_ms: i64) -> Report {
    event_in("nj-main", partition, epoch, fire, state, at_ms)
}

/// [`event`], reported as of a partition of `cluster`.
fn event_in(
    cluster: &str,
    partition: u32,
    epoch: u64,
    fire: i64,
    state: RunState,
    at_ms: i64,
) -> Report {
    Report::V1 {
        cluster: cluster.into(),
        partition: Some(partition),
        epoch,
        item: ReportItem::Run(RunEvent {
            run_id: record("ads.nightly", fire),
            schedule: Some(ScheduleId::new("ads.nightly").unwrap()),
            fire_ms: Some(fire),
            tenant: "ads".into(),
            workflow: "etl".into(),
            workflow_version: 1,
            environment: "prod-nj".into(),
            state,
            at_ms,
            message: String::new(),
        }),
    }
}

/// A report of something else about a run (an attempt, a log chunk).
fn about_run(partition: u32, epoch: u64, item: ReportItem) -> Report {
    Report::V1 {
        cluster: "nj-main".into(),
        partition: Some(partition),
        epoch,
        item,
    }
}

#[tokio::test]
async fn two_agents_share_a_clusters_partitions_and_keep_them() {
    let mut m = Model::new().await;
    m.federation().await;

    // The first agent to heartbeat gets every partition, each with a first epoch.
    let a = m.beat(T0, "a", "nj-main").await;
    assert_eq!(a.now_ms, T0);
    assert_eq!(partitions(&a.leases), (0..16).collect::<Vec<_>>());
    assert!(
        a.leases
            .iter()
            .all(|l| l.cluster == "nj-main" && l.epoch == 1 && l.expires_ms == T0 + LEASE_MS),
        "{:?}",
        a.leases
    );
    // A second agent gets nothing taken away early: `a` is asked (on its own heartbeat) to
    // give back the excess, and once it does, `b` has it at once, long before `a`'s leases
    // would have run out.
    let b = m.beat(T0 + 1, "b", "nj-main").await;
    assert!(b.leases.is_empty() && b.release.is_empty(), "{b:?}");
    let a = m.beat(T0 + 2, "a", "nj-main").await;
    assert_eq!(a.leases.len(), 16);
    let mut asked = partitions(&a.release);
    asked.sort();
    assert_eq!(asked, (8..16).collect::<Vec<_>>());
    let a = m
        .heartbeat(T0 + 3, released("a", "nj-main", &a.release))
        .await;
    assert_eq!(partitions(&a.leases), (0..8).collect::<Vec<_>>());
    assert!(a.release.is_empty());
    let b = m.beat(T0 + 4, "b", "nj-main").await;
    assert_eq!(partitions(&b.leases), (8..16).collect::<Vec<_>>());
    assert!(
        b.leases
            .iter()
            .all(|l| l.epoch == 2 && l.expires_ms == T0 + 4 + LEASE_MS),
        "a moved partition gets a new epoch: {:?}",
        b.leases
    );

    // Heartbeats from then on are sticky: the same partitions and epochs, the expiry renewed
    // from each heartbeat's time, nothing asked back.
    for round in 1..=3 {
        let at = T0 + round * 10_000;
        let a = m.beat(at, "a", "nj-main").await;
        let b = m.beat(at + 1, "b", "nj-main").await;
        assert_eq!(partitions(&a.leases), (0..8).collect::<Vec<_>>());
        assert_eq!(partitions(&b.leases), (8..16).collect::<Vec<_>>());
        assert!(
            a.leases
                .iter()
                .all(|l| l.epoch == 1 && l.expires_ms == at + LEASE_MS)
        );
        assert!(
            b.leases
                .iter()
                .all(|l| l.epoch == 2 && l.expires_ms == at + 1 + LEASE_MS)
        );
        assert!(a.release.is_empty() && b.release.is_empty());
    }
    // The lease table says the same.
    let table = m.leases_of("nj-main").await;
    assert_eq!(table.len(), 16);
    for l in &table {
        let (holder, epoch) = if l.partition < 8 { ("a", 1) } else { ("b", 2) };
        assert_eq!(
            (l.holder.as_deref(), l.epoch),
            (Some(holder), epoch),
            "{l:?}"
        );
    }
    // Heartbeats are machine traffic: not in the audit trail.
    assert!(
        query::audit(&m.pool, &query::AuditFilter::applied(100))
            .await
            .unwrap()
            .iter()
            .all(|e| e.op != "agent_heartbeat")
    );
}

#[tokio::test]
async fn a_silent_agent_keeps_its_leases_for_exactly_lease_seconds() {
    let mut m = Model::new().await;
    m.federation().await;
    m.balanced(T0, "a", "b", "nj-main").await;
    let a_last = T0 + 3;

    // One millisecond before `a`'s leases run out, `b` still gets none of them.
    let b = m.beat(a_last + LEASE_MS - 1, "b", "nj-main").await;
    assert_eq!(partitions(&b.leases), (8..16).collect::<Vec<_>>());
    for l in m
        .leases_of("nj-main")
        .await
        .iter()
        .filter(|l| l.partition < 8)
    {
        assert_eq!(l.holder.as_deref(), Some("a"));
        assert_eq!((l.epoch, l.expires_ms), (1, a_last + LEASE_MS));
    }

    // At exactly `lease_seconds` after `a`'s last heartbeat they are `b`'s, under a new epoch.
    let at = a_last + LEASE_MS;
    let before = m.leases_of("nj-main").await;
    let b = m.beat(at, "b", "nj-main").await;
    assert_eq!(partitions(&b.leases), (0..16).collect::<Vec<_>>());
    for (l, was) in b.leases.iter().zip(&before) {
        assert_eq!(l.expires_ms, at + LEASE_MS, "{l:?}");
        if l.partition < 8 {
            assert!(
                l.epoch > was.epoch,
                "moved without a new epoch: {was:?} -> {l:?}"
            );
        } else {
            assert_eq!(
                l.epoch, was.epoch,
                "kept, yet a new epoch: {was:?} -> {l:?}"
            );
        }
    }
    for l in m.leases_of("nj-main").await {
        assert_eq!(l.holder.as_deref(), Some("b"));
    }

    // `a` coming back takes nothing early: `b` is asked to give half back.
    let a = m.beat(at + 1, "a", "nj-main").await;
    assert!(a.leases.is_empty(), "{a:?}");
    let b = m.beat(at + 2, "b", "nj-main").await;
    assert_eq!(b.leases.len(), 16);
    assert_eq!(b.release.len(), 8);
}

#[tokio::test]
async fn a_restored_plane_leases_nothing_for_a_lease_then_gives_holders_back_their_partitions() {
    let mut m = Model::new().await;
    m.federation().await;
    m.balanced(T0, "a", "b", "nj-main").await;
    let before = m.leases_of("nj-main").await;
    let at = T0 + 10;
    let (mut r, summary) = m.restored(at).await;
    assert_eq!((summary.index, summary.term), (42, 3));
    assert_eq!(summary.members, ["plane-9.test:7443"]);

    // Every epoch is past anything the old timeline can have issued; nothing outlives `at`.
    for (l, was) in r.leases_of("nj-main").await.iter().zip(&before) {
        assert_eq!(l.holder, was.holder);
        assert!(l.epoch >= was.epoch + (1 << 32), "{was:?} -> {l:?}");
        assert!(l.expires_ms <= at, "{l:?}");
    }
    // For one lease, nobody is given anything, holders included.
    for (t, agent) in [(at, "a"), (at + 1, "b"), (at + LEASE_MS - 1, "a")] {
        let beat = r.beat(t, agent, "nj-main").await;
        assert!(beat.leases.is_empty(), "{agent} at +{}: {beat:?}", t - at);
    }
    // Then each holder gets back what it held, under a new epoch, and nobody else does.
    let a = r.beat(at + LEASE_MS, "a", "nj-main").await;
    assert_eq!(partitions(&a.leases), (0..8).collect::<Vec<_>>());
    let b = r.beat(at + LEASE_MS + 1, "b", "nj-main").await;
    assert_eq!(partitions(&b.leases), (8..16).collect::<Vec<_>>());
    for (l, was) in a.leases.iter().chain(&b.leases).zip(&before) {
        assert!(l.epoch > was.epoch + (1 << 32), "{was:?} -> {l:?}");
    }
}

#[tokio::test]
async fn a_graceful_shutdown_hands_partitions_over_at_once() {
    let mut m = Model::new().await;
    m.federation().await;
    m.balanced(T0, "a", "b", "nj-main").await;

    let at = T0 + 5_000;
    let a = m
        .heartbeat(
            at,
            Heartbeat {
                releasing: true,
                ..heartbeat("a", "nj-main")
            },
        )
        .await;
    assert!(a.leases.is_empty(), "{a:?}");
    let agents = query::agents(&m.pool).await.unwrap();
    assert!(agents.iter().any(|r| r.hostname == "a" && r.gone));
    // `a`'s leases had 25 seconds left; `b` has them now, with new epochs.
    let b = m.beat(at + 1, "b", "nj-main").await;
    assert_eq!(partitions(&b.leases), (0..16).collect::<Vec<_>>());
    assert!(b.leases.iter().all(|l| l.epoch == 2), "{:?}", b.leases);
    assert!(
        m.leases_of("nj-main")
            .await
            .iter()
            .all(|l| l.holder.as_deref() == Some("b"))
    );
}

#[tokio::test]
async fn an_agent_gets_nothing_of_a_cluster_it_neither_belongs_to_nor_backs_up() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::CreateDataCenter(DataCenter {
        name: n("sg"),
        description: String::new(),
    }))
    .await;
    m.ok(Command::CreateCluster(cluster("sg-main", "sg", None)))
        .await;
    m.ok(Command::CreateEnvironment(env("prod-sg", "sg-main")))
        .await;
    m.ok(Command::CreateGrant(Grant {
        tenant: n("ads"),
        environment: n("prod-sg"),
        max_concurrent_runs: 1,
    }))
    .await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    m.ok(Command::CreateSchedule(schedule(
        "ads",
        "sg-job",
        "etl",
        "prod-sg",
        "0 0 2 * * ?",
    )))
    .await;

    let s = m.beat(T0, "s1", "sg-main").await;
    assert_eq!(s.leases.len(), 16);
    let sg_before = m.leases_of("sg-main").await;

    // `a` of nj-main: only nj-main's partitions, even once sg-main's leases have run out and
    // nobody of sg-main is left to take them.
    let a = m.beat(T0 + 1, "a", "nj-main").await;
    assert_eq!(a.leases.len(), 16);
    assert!(a.leases.iter().all(|l| l.cluster == "nj-main"));
    let a = m.beat(T0 + LEASE_MS, "a", "nj-main").await;
    assert_eq!(a.leases.len(), 16);
    assert!(a.leases.iter().all(|l| l.cluster == "nj-main"), "{a:?}");
    assert_eq!(m.leases_of("sg-main").await, sg_before);

    // `s1` is back (its own expired leases again, same epochs' tenure); `a` giving back
    // partitions of another cluster, which it does not hold, changes nothing.
    let s = m.beat(T0 + LEASE_MS + 1, "s1", "sg-main").await;
    assert_eq!(s.leases.len(), 16);
    let sg_before = m.leases_of("sg-main").await;
    m.heartbeat(T0 + LEASE_MS + 2, released("a", "nj-main", &s.leases))
        .await;
    assert_eq!(m.leases_of("sg-main").await, sg_before);

    // Claiming another cluster's partitions (even with the right epochs) fetches nothing.
    let claims: Vec<ClaimedLease> = s
        .leases
        .iter()
        .map(|l| ClaimedLease {
            cluster: l.cluster.clone(),
            partition: l.partition,
            epoch: l.epoch,
        })
        .collect();
    assert!(
        query::assignments(&m.pool, "a", "nj-main", &claims, None, 0)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(
        query::assignments(&m.pool, "a", "sg-main", &claims, None, 0)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    // The holder itself gets its schedule: the claims were good, just not `a`'s.
    assert_eq!(
        query::assignments(&m.pool, "s1", "sg-main", &claims, None, 0)
            .await
            .unwrap()
            .0
            .len(),
        1
    );

    // A heartbeat for a cluster that does not exist is refused.
    let err = m
        .refused(Command::AgentHeartbeat(heartbeat("a", "tokyo")))
        .await;
    assert_eq!(
        err,
        "heartbeat of agent `a`: cluster `tokyo` does not exist"
    );

    // The model takes the heartbeat's cluster as given (the gRPC layer checks it against the
    // certificate): `a` heartbeating as sg-main's is not handed any lease sg-main's agent
    // holds; `s1` is only asked, on its own heartbeat, to give half back.
    let a = m.beat(T0 + LEASE_MS + 3, "a", "sg-main").await;
    assert!(
        a.leases.iter().all(|l| l.cluster == "nj-main"),
        "{:?}",
        a.leases
    );
    assert_eq!(m.leases_of("sg-main").await, sg_before);
    let s = m.beat(T0 + LEASE_MS + 4, "s1", "sg-main").await;
    assert_eq!((s.leases.len(), s.release.len()), (16, 8));
}

#[tokio::test]
async fn a_fire_record_is_taken_only_under_the_partitions_current_tenure() {
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    // Takeover `rerun`: nothing is held in doubt, so what is refused here is refused by the
    // tenure alone (records in doubt have tests of their own).
    m.ok(Command::UpdateSchedule(Schedule {
        takeover: meridian_domain::TakeoverPolicy::Rerun,
        ..schedule("ads", "nightly", "etl", "prod-nj", "0 0 2 * * ?")
    }))
    .await;
    m.balanced(T0, "a", "b", "nj-main").await;
    let lease = m.lease("nj-main", p).await;
    let holder = lease.holder.clone().unwrap();
    let other = if holder == "a" { "b" } else { "a" };
    let epoch = lease.epoch;
    let first = record("ads.nightly", fire_ms(0));

    // Not the holder, under the holder's very epoch: refused, nothing recorded, the schedule's
    // cursor unmoved.
    m.report_refused(
        other,
        "nj-main",
        vec![event(p, epoch, fire_ms(0), RunState::Queued, fire_ms(0))],
    )
    .await;
    // The holder, with a run whose tenant is not the one its id names: refused (the access
    // policy reads a run's tenant from its id).
    let mut wrong_tenant = event(p, epoch, fire_ms(0), RunState::Queued, fire_ms(0));
    let Report::V1 {
        item: ReportItem::Run(e),
        ..
    } = &mut wrong_tenant
    else {
        unreachable!()
    };
    e.tenant = "bi".into();
    m.report_refused(&holder, "nj-main", vec![wrong_tenant])
        .await;
    // The holder under an epoch older than its tenure: refused.
    m.report_refused(
        &holder,
        "nj-main",
        vec![event(
            p,
            epoch - 1,
            fire_ms(0),
            RunState::Queued,
            fire_ms(0),
        )],
    )
    .await;
    // Reporting a partition of a cluster the agent neither belongs to nor backs up: refused.
    let refused = m
        .report(
            &holder,
            "nj-main",
            vec![event_in(
                "sg-main",
                p,
                epoch,
                fire_ms(0),
                RunState::Started,
                fire_ms(0),
            )],
        )
        .await;
    assert!(
        refused[0]
            .1
            .contains("may not report for cluster `sg-main`"),
        "{refused:?}"
    );
    assert!(m.history().await.is_empty());
    assert!(m.fenced_starts().await.is_empty());

    // The holder under its epoch: accepted. Sent again (a lost acknowledgement), it counts once.
    let queued = event(p, epoch, fire_ms(0), RunState::Queued, fire_ms(0) + 500);
    let started = event(p, epoch, fire_ms(0), RunState::Started, fire_ms(0) + 1_500);
    m.report_ok(&holder, "nj-main", vec![queued.clone(), started.clone()])
        .await;
    let history = m.history().await;
    m.report_ok(&holder, "nj-main", vec![queued, started.clone(), started])
        .await;
    assert_eq!(
        m.history().await,
        history,
        "a repeated event changed the history"
    );
    let run = m.run(&first).await;
    assert_eq!(
        (
            run.state.as_str(),
            run.agent.as_deref(),
            run.epoch,
            run.starts
        ),
        ("started", Some(holder.as_str()), epoch, 1)
    );
    assert_eq!(
        (run.queued_ms, run.started_ms),
        (Some(fire_ms(0) + 500), Some(fire_ms(0) + 1_500))
    );
    assert_eq!(
        query::runs(&m.pool, &RunFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // The holder goes silent; at its leases' expiry the other agent takes the partition.
    m.beat(T0 + 10, &holder, "nj-main").await;
    m.beat(T0 + 10, other, "nj-main").await;
    let takeover = T0 + 10 + LEASE_MS;
    let o = m.beat(takeover, other, "nj-main").await;
    let new_epoch = o
        .leases
        .iter()
        .find(|l| l.partition == p)
        .expect("the other agent took the partition")
        .epoch;
    assert!(new_epoch > epoch);

    // The old holder's first report of a new record is fenced off: no run, no cursor move.
    // (A refused `started` is kept aside as evidence that the record ran there.)
    let second = record("ads.nightly", fire_ms(24));
    m.report_refused(
        &holder,
        "nj-main",
        vec![
            event(p, epoch, fire_ms(24), RunState::Queued, fire_ms(24)),
            event(p, epoch, fire_ms(24), RunState::Started, fire_ms(24)),
        ],
    )
    .await;
    assert_eq!(m.fenced_starts().await, [(second.clone(), holder.clone())]);
    assert!(query::run_in(&m.pool, &second).await.unwrap().is_none());

    // A second agent starting the record already started is evidence, not a new run:
    // `starts` counts it, nothing else changes.
    m.report_ok(
        other,
        "nj-main",
        vec![event(
            p,
            new_epoch,
            fire_ms(0),
            RunState::Started,
            takeover + 10,
        )],
    )
    .await;
    let run = m.run(&first).await;
    assert_eq!(
        (
            run.state.as_str(),
            run.agent.as_deref(),
            run.epoch,
            run.starts
        ),
        ("started", Some(holder.as_str()), epoch, 2)
    );
    assert_eq!(run.started_ms, Some(fire_ms(0) + 1_500));
    // Its attempts and logs are not the run's either.
    let refused = m
        .report(
            other,
            "nj-main",
            vec![about_run(
                p,
                new_epoch,
                ReportItem::Log(LogChunk {
                    run_id: first.clone(),
                    task: "main".into(),
                    attempt: 1,
                    offset: 0,
                    data: "from the wrong agent\n".into(),
                }),
            )],
        )
        .await;
    assert!(
        refused[0].1.contains("is not running on agent"),
        "{refused:?}"
    );
    assert!(query::logs(&m.pool, &first).await.unwrap().is_empty());

    // The old holder can still finish the run it started under its old lease.
    m.report_ok(
        &holder,
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(0),
            RunState::Succeeded,
            takeover + 20,
        )],
    )
    .await;
    let run = m.run(&first).await;
    assert_eq!(
        (run.state.as_str(), run.finished_ms, run.starts),
        ("succeeded", Some(takeover + 20), 2)
    );
    // A final state is never left.
    m.report_ok(
        &holder,
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(0),
            RunState::Started,
            takeover + 30,
        )],
    )
    .await;
    assert_eq!(m.run(&first).await.state, "succeeded");

    // The new holder takes the new record; the old holder's fenced-off start of it shows as
    // the record having run twice.
    m.report_ok(
        other,
        "nj-main",
        vec![event(
            p,
            new_epoch,
            fire_ms(24),
            RunState::Started,
            fire_ms(24) + 1,
        )],
    )
    .await;
    let run = m.run(&second).await;
    assert_eq!(
        (
            run.state.as_str(),
            run.agent.as_deref(),
            run.epoch,
            run.starts
        ),
        ("started", Some(other), new_epoch, 2)
    );

    // Now the other agent goes silent and the first one gets the partition back: a new
    // tenure, so a record it reports under its first tenure's epoch is refused although it
    // holds the partition again.
    let back_at = takeover + LEASE_MS;
    let back = m.beat(back_at, &holder, "nj-main").await;
    let third_epoch = back
        .leases
        .iter()
        .find(|l| l.partition == p)
        .expect("the first agent got the partition back")
        .epoch;
    assert!(third_epoch > new_epoch);
    m.report_refused(
        &holder,
        "nj-main",
        vec![event(p, epoch, fire_ms(48), RunState::Queued, fire_ms(48))],
    )
    .await;
    // A lapse with nobody else in between keeps the tenure: after its lease ran out and it
    // got the partition back under yet another epoch, the agent's records from before the
    // lapse are still its own.
    let lapsed = m.beat(back_at + 2 * LEASE_MS, &holder, "nj-main").await;
    let fourth_epoch = lapsed
        .leases
        .iter()
        .find(|l| l.partition == p)
        .unwrap()
        .epoch;
    assert!(fourth_epoch > third_epoch);
    m.report_ok(
        &holder,
        "nj-main",
        vec![event(
            p,
            third_epoch,
            fire_ms(48),
            RunState::Queued,
            fire_ms(48),
        )],
    )
    .await;
    assert_eq!(
        m.run(&record("ads.nightly", fire_ms(48))).await.epoch,
        third_epoch
    );
}

/// What a sequence of agents' reports left: the history, the evidence, the hand-outs and the
/// counts (`task_attempts.ended_index` left out: it is the entry's log index, which differs
/// when the same entries come in more reports).
async fn report_trace(m: &Model) -> Vec<String> {
    let mut rows = m
        .dump_tables(&[
            "runs",
            "run_logs",
            "schedule_cursors",
            "fenced_starts",
            "handed",
        ])
        .await;
    let attempts: Vec<String> = sqlx::query_scalar(
        "SELECT json_array(run_id, task, attempt, outcome, started_ms, finished_ms, exit_code, \
         message, warning) FROM task_attempts ORDER BY run_id, task, attempt",
    )
    .fetch_all(&m.pool)
    .await
    .unwrap();
    rows.extend(attempts.into_iter().map(|a| format!("task_attempts: {a}")));
    let hours: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT hour_ms, dc, state, n FROM run_hours WHERE n != 0 ORDER BY 1, 2, 3")
            .fetch_all(&m.pool)
            .await
            .unwrap();
    rows.extend(hours.into_iter().map(|h| format!("run_hours: {h:?}")));
    rows
}

#[tokio::test]
async fn a_report_decides_each_entry_as_if_it_came_alone() {
    // A report's ordinary entries are decided in memory and written together; the rest on the
    // database one at a time. Sent as few reports or one entry a report, the same entries must
    // leave the same history, the same evidence and the same refusals.
    async fn setup() -> (Model, u32, u64, String, String) {
        let mut m = Model::new().await;
        let p = m.scheduled().await;
        m.ok(Command::UpdateSchedule(Schedule {
            takeover: meridian_domain::TakeoverPolicy::Rerun,
            ..schedule("ads", "nightly", "etl", "prod-nj", "0 0 2 * * ?")
        }))
        .await;
        m.balanced(T0, "a", "b", "nj-main").await;
        let lease = m.lease("nj-main", p).await;
        let holder = lease.holder.clone().unwrap();
        let other = if holder == "a" { "b" } else { "a" }.to_owned();
        (m, p, lease.epoch, holder, other)
    }
    let (mut one, p, epoch, holder, other) = setup().await;
    let (mut each, ..) = setup().await;
    let attempt = |fire: i64, attempt: u32, outcome: AttemptOutcome, warning: &str| {
        about_run(
            p,
            epoch,
            ReportItem::Attempt(AttemptEvent {
                run_id: record("ads.nightly", fire),
                task: "main".into(),
                attempt,
                outcome,
                at_ms: fire + 2_000,
                exit_code: (outcome != AttemptOutcome::Started).then_some(1),
                message: format!("{outcome:?}"),
                warning: warning.into(),
            }),
        )
    };
    let ended = |fire: i64, state: RunState, message: &str| {
        let mut e = event(p, epoch, fire, state, fire + 3_000);
        let Report::V1 {
            item: ReportItem::Run(run),
            ..
        } = &mut e
        else {
            unreachable!()
        };
        run.message = message.into();
        e
    };
    let mut misnamed = event(p, epoch, fire_ms(5), RunState::Started, fire_ms(5));
    let Report::V1 {
        item: ReportItem::Run(run),
        ..
    } = &mut misnamed
    else {
        unreachable!()
    };
    run.fire_ms = Some(fire_ms(6));
    let mut early = event(p, epoch, -60_000, RunState::Queued, 0);
    let Report::V1 {
        item: ReportItem::Run(run),
        ..
    } = &mut early
    else {
        unreachable!()
    };
    run.schedule = Some(ScheduleId::new("ads.early").unwrap());
    run.run_id = record("ads.early", -60_000);
    let (h, o) = (holder.as_str(), other.as_str());
    let entries: Vec<(&str, Report)> = vec![
        (h, event(p, epoch, fire_ms(0), RunState::Queued, fire_ms(0))),
        (
            h,
            event(p, epoch, fire_ms(0), RunState::Started, fire_ms(0) + 1),
        ),
        (h, attempt(fire_ms(0), 1, AttemptOutcome::Started, "")),
        (h, attempt(fire_ms(0), 1, AttemptOutcome::Succeeded, "")),
        (h, attempt(fire_ms(0), 1, AttemptOutcome::Succeeded, "")),
        (
            h,
            about_run(
                p,
                epoch,
                ReportItem::Log(LogChunk {
                    run_id: record("ads.nightly", fire_ms(0)),
                    task: "main".into(),
                    attempt: 1,
                    offset: 0,
                    data: "a line\n".into(),
                }),
            ),
        ),
        (h, ended(fire_ms(0), RunState::Succeeded, "done")),
        (
            h,
            event(p, epoch, fire_ms(0), RunState::Started, fire_ms(0) + 9),
        ),
        // An attempt of a run nobody took: refused.
        (h, attempt(fire_ms(1), 1, AttemptOutcome::Started, "")),
        // Not the holder: refused, its start kept as evidence.
        (
            o,
            event(p, epoch, fire_ms(1), RunState::Started, fire_ms(1)),
        ),
        // The holder under an older epoch: refused likewise.
        (
            h,
            event(p, epoch - 1, fire_ms(1), RunState::Started, fire_ms(1)),
        ),
        (
            h,
            event(p, epoch, fire_ms(1), RunState::Started, fire_ms(1) + 5),
        ),
        (
            h,
            attempt(fire_ms(1), 1, AttemptOutcome::Started, "stale resource"),
        ),
        (h, attempt(fire_ms(1), 1, AttemptOutcome::Started, "")),
        // Another agent's start of a run the holder has: counted, not applied.
        (
            o,
            event(p, epoch, fire_ms(1), RunState::Started, fire_ms(1) + 6),
        ),
        (h, attempt(fire_ms(1), 1, AttemptOutcome::Failed, "")),
        (h, attempt(fire_ms(1), 2, AttemptOutcome::Started, "")),
        (h, ended(fire_ms(1), RunState::Failed, "it broke")),
        // Taken, given back unstarted, taken again and run.
        (h, event(p, epoch, fire_ms(2), RunState::Queued, fire_ms(2))),
        (
            h,
            event(p, epoch, fire_ms(2), RunState::Returned, fire_ms(2) + 1),
        ),
        (
            h,
            event(p, epoch, fire_ms(2), RunState::Started, fire_ms(2) + 2),
        ),
        (h, ended(fire_ms(2), RunState::Succeeded, "")),
        // Ended with no start seen, then its start late: the end stays.
        (h, ended(fire_ms(3), RunState::Succeeded, "quick")),
        (
            h,
            event(p, epoch, fire_ms(3), RunState::Started, fire_ms(3)),
        ),
        (h, attempt(fire_ms(3), 1, AttemptOutcome::Succeeded, "")),
        (
            h,
            attempt(fire_ms(3), 1, AttemptOutcome::Started, "late warning"),
        ),
        // Skipped by policy.
        (
            h,
            event(p, epoch, fire_ms(4), RunState::Skipped, fire_ms(4)),
        ),
        // Not the id of its schedule at its fire time: refused.
        (h, misnamed),
        // A message with a NUL in it, kept whole.
        (h, ended(fire_ms(7), RunState::Succeeded, "before\0after")),
        // The first fire record ever taken of a schedule, before 1970: its cursor is there.
        (h, early),
    ];

    // As few reports as the agents' turns allow.
    let mut refused_one = vec![None; entries.len()];
    let mut i = 0;
    while i < entries.len() {
        let agent = entries[i].0;
        let len = entries[i..].iter().take_while(|(a, _)| *a == agent).count();
        let batch: Vec<Report> = entries[i..i + len].iter().map(|(_, r)| r.clone()).collect();
        let applied = one
            .apply_at(
                T0 + 10,
                Command::AgentReport(AgentReport {
                    agent: agent.into(),
                    cluster: n("nj-main"),
                    entries: batch
                        .into_iter()
                        .zip(1..)
                        .map(|(report, seq)| ReportEntry { seq, report })
                        .collect(),
                }),
            )
            .await
            .unwrap();
        let outcome: ReportOutcome = serde_json::from_str(&applied.detail.unwrap()).unwrap();
        for (seq, reason) in outcome.refused {
            refused_one[i + seq as usize - 1] = Some(reason);
        }
        i += len;
    }
    // One entry a report.
    let mut refused_each = Vec::new();
    for (agent, report) in &entries {
        let applied = each
            .apply_at(
                T0 + 10,
                Command::AgentReport(AgentReport {
                    agent: (*agent).into(),
                    cluster: n("nj-main"),
                    entries: vec![ReportEntry {
                        seq: 1,
                        report: report.clone(),
                    }],
                }),
            )
            .await
            .unwrap();
        let outcome: ReportOutcome = serde_json::from_str(&applied.detail.unwrap()).unwrap();
        refused_each.push(outcome.refused.into_iter().next().map(|(_, reason)| reason));
    }
    assert_eq!(refused_one, refused_each);
    let refused = refused_one.iter().filter(|r| r.is_some()).count();
    assert_eq!(
        refused, 5,
        "the scenario refuses what it means to: {refused_one:?}"
    );
    let trace = report_trace(&one).await;
    assert_eq!(trace, report_trace(&each).await);
    // And it is the history the scenario describes.
    let runs = query::runs(&one.pool, &RunFilter::default()).await.unwrap();
    let state_of = |fire: i64| {
        runs.iter()
            .find(|r| r.run_id == record("ads.nightly", fire))
            .map(|r| (r.state.clone(), r.starts))
    };
    assert_eq!(state_of(fire_ms(0)), Some(("succeeded".into(), 1)));
    assert_eq!(state_of(fire_ms(1)), Some(("failed".into(), 3)));
    assert_eq!(state_of(fire_ms(2)), Some(("succeeded".into(), 1)));
    assert_eq!(state_of(fire_ms(3)), Some(("succeeded".into(), 0)));
    assert_eq!(state_of(fire_ms(4)), Some(("skipped".into(), 0)));
    assert!(
        trace.iter().any(|r| r.contains("stale resource")),
        "{trace:#?}"
    );
    let message: String = sqlx::query_scalar("SELECT message FROM runs WHERE run_id = ?")
        .bind(record("ads.nightly", fire_ms(7)))
        .fetch_one(&one.pool)
        .await
        .unwrap();
    assert_eq!(message, "before\0after");
    let cursor: i64 =
        sqlx::query_scalar("SELECT fire_ms FROM schedule_cursors WHERE schedule_id = 'ads.early'")
            .fetch_one(&one.pool)
            .await
            .unwrap();
    assert_eq!(cursor, -60_000);
}

#[tokio::test]
async fn a_second_agents_start_is_counted_once_however_often_it_is_sent() {
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    m.balanced(T0, "a", "b", "nj-main").await;
    let lease = m.lease("nj-main", p).await;
    let holder = lease.holder.clone().unwrap();
    let other = if holder == "a" { "b" } else { "a" };
    m.report_ok(
        &holder,
        "nj-main",
        vec![event(
            p,
            lease.epoch,
            fire_ms(0),
            RunState::Started,
            fire_ms(0),
        )],
    )
    .await;
    let o = m.beat(T0 + 4 + LEASE_MS, other, "nj-main").await;
    let new_epoch = o.leases.iter().find(|l| l.partition == p).unwrap().epoch;
    let second_start = event(p, new_epoch, fire_ms(0), RunState::Started, fire_ms(0) + 5);
    m.report_ok(other, "nj-main", vec![second_start.clone()])
        .await;
    assert_eq!(m.run(&record("ads.nightly", fire_ms(0))).await.starts, 2);
    // The other agent's outbox re-sends the same entry (its acknowledgement was lost).
    m.report_ok(other, "nj-main", vec![second_start]).await;
    assert_eq!(
        m.run(&record("ads.nightly", fire_ms(0))).await.starts,
        2,
        "`starts` counts agents that started the record, not deliveries of one report"
    );
}

#[tokio::test]
async fn the_backup_cluster_takes_over_only_when_every_agent_is_gone() {
    let mut m = Model::new().await;
    // sg-main backs up nj-main. `ads` is granted an environment on both; `web` only on nj.
    for dc in ["nj", "sg"] {
        m.ok(Command::CreateDataCenter(DataCenter {
            name: n(dc),
            description: String::new(),
        }))
        .await;
    }
    m.ok(Command::CreateCluster(cluster("sg-main", "sg", None)))
        .await;
    m.ok(Command::CreateCluster(cluster(
        "nj-main",
        "nj",
        Some("sg-main"),
    )))
    .await;
    for (e, c) in [("prod-nj", "nj-main"), ("prod-sg", "sg-main")] {
        m.ok(Command::CreateEnvironment(env(e, c))).await;
    }
    for (tenant, environments) in [("ads", &["prod-nj", "prod-sg"][..]), ("web", &["prod-nj"])] {
        m.ok(Command::CreateTenant(Tenant {
            name: n(tenant),
            description: String::new(),
            log_retention_days: None,
            history_retention_days: None,
        }))
        .await;
        for e in environments {
            m.ok(Command::CreateGrant(Grant {
                tenant: n(tenant),
                environment: n(e),
                max_concurrent_runs: 2,
            }))
            .await;
        }
        m.ok(Command::ApplyWorkflow(workflow(tenant, "etl", "true")))
            .await;
        m.ok(Command::CreateSchedule(schedule(
            tenant,
            "nightly",
            "etl",
            "prod-nj",
            "0 0 2 * * ?",
        )))
        .await;
    }
    let nj_claims = |leases: &[HeldLease]| -> Vec<ClaimedLease> {
        leases
            .iter()
            .filter(|l| l.cluster == "nj-main")
            .map(|l| ClaimedLease {
                cluster: l.cluster.clone(),
                partition: l.partition,
                epoch: l.epoch,
            })
            .collect()
    };

    // nj has two agents, sg one. While any nj agent heartbeats, sg's gets none of nj's
    // partitions, even after the other nj agent's leases ran out.
    m.balanced(T0, "nj1", "nj2", "nj-main").await;
    let s = m.beat(T0 + 5, "sg1", "sg-main").await;
    assert!(s.leases.iter().all(|l| l.cluster == "sg-main"));
    assert_eq!(s.leases.len(), 16);
    let mut nj2_last = T0 + 4;
    for at in [T0 + 20_000, T0 + 40_000, T0 + 60_000] {
        m.beat(at, "nj2", "nj-main").await;
        nj2_last = at;
        let s = m.beat(at + 1, "sg1", "sg-main").await;
        assert!(
            s.leases.iter().all(|l| l.cluster == "sg-main"),
            "{:?}",
            s.leases
        );
    }
    // nj1 went silent at T0 + 3: nj2 has everything now.
    assert!(
        m.leases_of("nj-main")
            .await
            .iter()
            .all(|l| l.holder.as_deref() == Some("nj2"))
    );
    let nj2_claims = nj_claims(&m.beat(nj2_last + 2, "nj2", "nj-main").await.leases);
    nj2_last += 2;
    assert_eq!(nj2_claims.len(), 16);

    // nj2 goes silent too. Just before its leases run out, sg1 still gets nothing of nj.
    let s = m.beat(nj2_last + LEASE_MS - 1, "sg1", "sg-main").await;
    assert!(s.leases.iter().all(|l| l.cluster == "sg-main"));
    let at = nj2_last + LEASE_MS;
    let s = m.beat(at, "sg1", "sg-main").await;
    let taken = nj_claims(&s.leases);
    assert_eq!(taken.len(), 16, "{:?}", s.leases);
    for (took, had) in taken.iter().zip(&nj2_claims) {
        assert!(took.epoch > had.epoch, "{had:?} -> {took:?}");
    }

    // sg1 runs only the schedules of tenants granted an environment of its own cluster, in
    // that environment.
    let assigned = query::assignments(&m.pool, "sg1", "sg-main", &taken, None, 0)
        .await
        .unwrap()
        .0;
    let assigned: Vec<(String, String)> = assigned
        .iter()
        .map(|a| (a.schedule.to_string(), a.job.environment.clone()))
        .collect();
    assert_eq!(
        assigned,
        [("ads.nightly".to_string(), "prod-sg".to_string())]
    );
    // nj2, with its old epochs, fetches nothing any more.
    assert!(
        query::assignments(&m.pool, "nj2", "nj-main", &nj2_claims, None, 0)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    // A record fired by sg1 for nj's partition is accepted: it backs nj up.
    let p = partition_of(&ScheduleId::new("ads.nightly").unwrap(), 16);
    let epoch = taken.iter().find(|c| c.partition == p).unwrap().epoch;
    let mut started = event(p, epoch, fire_ms(0), RunState::Started, fire_ms(0));
    if let Report::V1 {
        item: ReportItem::Run(e),
        ..
    } = &mut started
    {
        e.environment = "prod-sg".into();
    }
    m.report_ok("sg1", "sg-main", vec![started]).await;
    let run = m.run(&record("ads.nightly", fire_ms(0))).await;
    assert_eq!(
        (run.cluster.as_str(), run.dc.as_str(), run.agent.as_deref()),
        ("sg-main", "sg", Some("sg1"))
    );

    // nj1 comes back: nothing is taken from sg1 early; sg1 is asked to hand everything back
    // and, once it does, nj1 has it.
    let back = m.beat(at + 10, "nj1", "nj-main").await;
    assert!(back.leases.is_empty(), "{:?}", back.leases);
    let s = m.beat(at + 11, "sg1", "sg-main").await;
    assert_eq!(nj_claims(&s.release).len(), 16);
    m.heartbeat(at + 12, released("sg1", "sg-main", &s.release))
        .await;
    let back = m.beat(at + 13, "nj1", "nj-main").await;
    assert_eq!(nj_claims(&back.leases).len(), 16);
}

#[tokio::test]
async fn run_history_keeps_lateness_attempts_and_logs() {
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    let a = m.beat(T0, "a", "nj-main").await;
    let epoch = a.leases.iter().find(|l| l.partition == p).unwrap().epoch;
    let fire = fire_ms(0);
    let run_id = record("ads.nightly", fire);
    let attempt = |n: u32, outcome: AttemptOutcome, at_ms: i64, exit_code: Option<i32>| {
        about_run(
            p,
            epoch,
            ReportItem::Attempt(AttemptEvent {
                run_id: run_id.clone(),
                task: "main".into(),
                attempt: n,
                outcome,
                at_ms,
                exit_code,
                message: String::new(),
                warning: String::new(),
            }),
        )
    };
    let log = |n: u32, offset: u64, data: &str| {
        about_run(
            p,
            epoch,
            ReportItem::Log(LogChunk {
                run_id: run_id.clone(),
                task: "main".into(),
                attempt: n,
                offset,
                data: data.into(),
            }),
        )
    };

    // Attempts and logs of a run the plane has not heard of are refused.
    m.report_refused("a", "nj-main", vec![log(1, 0, "early\n")])
        .await;

    m.report_ok(
        "a",
        "nj-main",
        vec![
            event(p, epoch, fire, RunState::Queued, fire + 100),
            event(p, epoch, fire, RunState::Started, fire + 2_500),
            attempt(1, AttemptOutcome::Started, fire + 2_600, None),
            // Chunks may arrive out of order; the offset puts them in place.
            log(1, 6, "world\n"),
            log(1, 0, "hello "),
            attempt(1, AttemptOutcome::Failed, fire + 3_000, Some(2)),
            attempt(2, AttemptOutcome::Started, fire + 4_000, None),
            log(2, 0, "retry\n"),
            attempt(2, AttemptOutcome::Succeeded, fire + 5_000, Some(0)),
            event(p, epoch, fire, RunState::Succeeded, fire + 5_100),
        ],
    )
    .await;
    // Re-sent (a lost acknowledgement), and a chunk at a known offset with other bytes: the
    // first copy stands.
    let history = m.history().await;
    m.report_ok(
        "a",
        "nj-main",
        vec![
            log(1, 0, "hello "),
            log(1, 6, "WORLD\n"),
            attempt(1, AttemptOutcome::Failed, fire + 3_000, Some(2)),
        ],
    )
    .await;
    assert_eq!(m.history().await, history);

    let run = m.run(&run_id).await;
    assert_eq!(run.state, "succeeded");
    assert_eq!(run.fire_ms, Some(fire));
    assert_eq!(
        (run.queued_ms, run.started_ms, run.finished_ms),
        (Some(fire + 100), Some(fire + 2_500), Some(fire + 5_100))
    );
    assert_eq!(run.lateness_ms, Some(2_500));
    assert_eq!((run.cluster.as_str(), run.dc.as_str()), ("nj-main", "nj"));

    let attempts: Vec<_> = query::attempts_in(&m.pool, &run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.attempt,
                a.outcome,
                a.started_ms,
                a.finished_ms,
                a.exit_code,
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (
                1,
                "failed".into(),
                Some(fire + 2_600),
                Some(fire + 3_000),
                Some(2)
            ),
            (
                2,
                "succeeded".into(),
                Some(fire + 4_000),
                Some(fire + 5_000),
                Some(0)
            ),
        ]
    );
    let logs: Vec<_> = query::logs(&m.pool, &run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.attempt, l.text))
        .collect();
    assert_eq!(
        logs,
        [(1, "hello world\n".to_string()), (2, "retry\n".to_string())]
    );

    // The runs list finds it by its data center and state, and not by another state.
    let by = |dc: &str, state: &str| RunFilter {
        dc: Some(dc.into()),
        state: Some(state.into()),
        ..RunFilter::default()
    };
    let found = query::runs(&m.pool, &by("nj", "succeeded")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].lateness_ms, Some(2_500));
    assert!(
        query::runs(&m.pool, &by("nj", "failed"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        query::runs(&m.pool, &by("sg", "succeeded"))
            .await
            .unwrap()
            .is_empty()
    );
    // `since` compares times as numbers: the run fired at `fire` is found from `fire` on,
    // not from a millisecond later.
    let since = |ms: i64| RunFilter {
        since_ms: Some(ms),
        ..RunFilter::default()
    };
    assert_eq!(query::runs(&m.pool, &since(fire)).await.unwrap().len(), 1);
    assert!(
        query::runs(&m.pool, &since(fire + 1))
            .await
            .unwrap()
            .is_empty()
    );
}

// ---- Access: the policy again at apply time, users, sessions ----

use meridian_plane::model::{ApiToken, Author, Binding, Session, User};

/// A PHC string shaped like the API node's (the model checks the shape, not the password).
const PHC: &str =
    "$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

fn token_with(name: &str, bindings: &[&str], expires_ms: Option<i64>) -> ApiToken {
    ApiToken {
        name: n(name),
        bindings: bindings.iter().map(|b| b.parse().unwrap()).collect(),
        expires_ms,
        created_by: "test".into(),
        created_ms: 0,
        hash: format!("{:064x}", name.len() as u64 * 7919 + bindings.len() as u64),
    }
}

fn user_with(name: &str, bindings: &[&str]) -> Command {
    Command::CreateUser {
        user: User {
            name: n(name),
            bindings: bindings.iter().map(|b| b.parse().unwrap()).collect(),
            created_by: "test".into(),
            created_ms: 0,
        },
        password: PHC.into(),
    }
}

impl Model {
    /// Applies `command` as proposed by `author` (at the usual stamped time).
    async fn apply_by(
        &mut self,
        author: Author,
        command: Command,
    ) -> Result<processor::Applied, ApplyError> {
        self.index += 1;
        let proposal = Proposal::by(author, 1_700_000_000_000 + self.index as i64, command);
        let mut conn = self.pool.acquire().await.unwrap();
        processor::apply(&mut conn, self.index, &proposal).await
    }

    /// Two tenants on one environment each: `ads` on prod-nj, `bi` on test-nj.
    async fn two_tenants(&mut self) {
        self.federation().await;
        self.ok(Command::CreateEnvironment(env("test-nj", "nj-main")))
            .await;
        self.ok(Command::CreateTenant(Tenant {
            name: n("bi"),
            description: String::new(),
            log_retention_days: None,
            history_retention_days: None,
        }))
        .await;
        self.ok(Command::CreateGrant(Grant {
            tenant: n("bi"),
            environment: n("test-nj"),
            max_concurrent_runs: 5,
        }))
        .await;
    }
}

#[tokio::test]
async fn the_plane_asks_the_policy_again_with_the_authors_bindings_at_apply_time() {
    let mut m = Model::new().await;
    m.two_tenants().await;
    let ci_token = token_with("ci", &["developer@ads"], None);
    m.ok(Command::CreateToken(ci_token.clone())).await;
    let ci = Author::Token {
        name: n("ci"),
        token: ci_token.hash.clone(),
    };
    // Its own tenant: fine.
    m.apply_by(
        ci.clone(),
        Command::ApplyWorkflow(workflow("ads", "etl", "true")),
    )
    .await
    .unwrap();
    // Another tenant: as if it did not exist, and nothing is stored.
    let before = without_refusals(m.dump().await);
    let err = m
        .apply_by(
            ci.clone(),
            Command::ApplyWorkflow(workflow("bi", "etl", "true")),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "applying workflow `etl` of tenant `bi`: tenant `bi` does not exist"
    );
    // Infrastructure: refused, naming who may.
    let err = m
        .apply_by(
            ci.clone(),
            Command::CreateDataCenter(DataCenter {
                name: n("sg"),
                description: String::new(),
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::Refused(Refusal::Forbidden { .. })),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "creating data center `sg`: token:ci may not do this; it needs admin"
    );
    // A token cannot mint a token with more than it holds.
    let err = m
        .apply_by(
            ci.clone(),
            Command::CreateToken(token_with("root", &["admin"], None)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Refused(Refusal::Forbidden { .. })),
        "{err}"
    );
    assert_eq!(without_refusals(m.dump().await), before);
    // Refusals are in the audit trail with who was refused, for the tenant they concern.
    let refused = query::audit(
        &m.pool,
        &query::AuditFilter {
            outcome: Some("refused".into()),
            ..query::AuditFilter::recent(10)
        },
    )
    .await
    .unwrap();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|e| e.actor == "token:ci"));
    assert_eq!(refused[2].tenant.as_deref(), Some("bi"));

    // Deleted between the API's check and the commit: the write does not slip through, nor
    // when a token of the same name (another secret, an owner's roles) was made meanwhile.
    m.ok(Command::DeleteToken { name: n("ci") }).await;
    let err = m
        .apply_by(
            ci.clone(),
            Command::ApplyWorkflow(workflow("ads", "etl", "v2")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Refused(Refusal::Unauthenticated { .. })),
        "{err}"
    );
    let mut again = token_with("ci", &["owner@ads"], None);
    again.hash = "f".repeat(64);
    m.ok(Command::CreateToken(again)).await;
    let err = m
        .apply_by(ci, Command::ApplyWorkflow(workflow("ads", "etl", "v2")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Refused(Refusal::Unauthenticated { .. })),
        "{err}"
    );
    // An expired token is refused at its expiry, by the proposal's stamped time.
    let short_token = token_with(
        "short",
        &["owner@ads"],
        Some(1_700_000_000_000 + m.index as i64 + 3),
    );
    m.ok(Command::CreateToken(short_token.clone())).await;
    let short = Author::Token {
        name: n("short"),
        token: short_token.hash.clone(),
    };
    m.apply_by(
        short.clone(),
        Command::ApplyWorkflow(workflow("ads", "a", "true")),
    )
    .await
    .unwrap();
    let err = m
        .apply_by(short, Command::ApplyWorkflow(workflow("ads", "b", "true")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("token `short` has expired"),
        "{err}"
    );
}

#[tokio::test]
async fn a_binding_revoked_before_the_commit_refuses_a_sessions_write() {
    let mut m = Model::new().await;
    m.two_tenants().await;
    m.ok(user_with("alice", &["developer@ads", "viewer@bi"]))
        .await;
    let session = Session {
        hash: "a".repeat(64),
        user: n("alice"),
        created_ms: 0,
        expires_ms: i64::MAX,
        source: "test".into(),
    };
    m.ok(Command::CreateSession(session.clone())).await;
    let alice = Author::Session {
        user: n("alice"),
        session: session.hash.clone(),
    };
    m.apply_by(
        alice.clone(),
        Command::ApplyWorkflow(workflow("ads", "etl", "true")),
    )
    .await
    .unwrap();
    // Viewer of bi: sees bi, may not write there.
    let err = m
        .apply_by(
            alice.clone(),
            Command::ApplyWorkflow(workflow("bi", "etl", "true")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Refused(Refusal::Forbidden { .. })),
        "{err}"
    );
    m.ok(Command::UnbindUser {
        user: n("alice"),
        binding: "developer@ads".parse().unwrap(),
    })
    .await;
    let err = m
        .apply_by(
            alice.clone(),
            Command::ApplyWorkflow(workflow("ads", "etl", "v2")),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "applying workflow `etl` of tenant `ads`: tenant `ads` does not exist"
    );
    // Signing out ends the session: its next write is refused as unauthenticated.
    m.ok(Command::DeleteSession {
        hash: session.hash.clone(),
    })
    .await;
    let err = m
        .apply_by(alice, Command::ApplyWorkflow(workflow("bi", "x", "true")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Refused(Refusal::Unauthenticated { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn users_bindings_passwords_and_sessions() {
    let mut m = Model::new().await;
    m.two_tenants().await;
    m.ok(user_with("alice", &["developer@ads"])).await;
    assert!(
        m.refused(user_with("alice", &["viewer@bi"]))
            .await
            .contains("already exists")
    );
    assert!(
        m.refused(user_with("bob", &["viewer@nobody"]))
            .await
            .contains("tenant `nobody` does not exist")
    );
    let bad_role: Binding = serde_json::from_str(r#"{"role": "owner"}"#).unwrap();
    assert!(
        m.refused(Command::BindUser {
            user: n("alice"),
            binding: bad_role
        })
        .await
        .contains("binding: role `owner` is held for a tenant")
    );
    assert!(
        m.refused(Command::CreateUser {
            user: User {
                name: n("carol"),
                bindings: vec![],
                created_by: String::new(),
                created_ms: 0
            },
            password: "plain text".into()
        })
        .await
        .contains("password: must be an Argon2id PHC hash")
    );
    m.ok(Command::BindUser {
        user: n("alice"),
        binding: "viewer@bi".parse().unwrap(),
    })
    .await;
    assert!(
        m.refused(Command::BindUser {
            user: n("alice"),
            binding: "viewer@bi".parse().unwrap(),
        })
        .await
        .contains("binding `viewer@bi` already exists")
    );
    let user = query::user(&m.pool, &n("alice")).await.unwrap().unwrap();
    assert_eq!(
        user.bindings,
        vec![
            "developer@ads".parse().unwrap(),
            "viewer@bi".parse().unwrap()
        ]
    );
    let session = |hash: char| Session {
        hash: hash.to_string().repeat(64),
        user: n("alice"),
        created_ms: 0,
        expires_ms: i64::MAX,
        source: String::new(),
    };
    m.ok(Command::CreateSession(session('a'))).await;
    // A new password ends every session.
    m.ok(Command::SetPassword {
        user: n("alice"),
        password: PHC.into(),
    })
    .await;
    assert!(
        query::session_by_hash(&m.pool, &"a".repeat(64), 0)
            .await
            .unwrap()
            .is_none()
    );
    // So does deleting the user.
    m.ok(Command::CreateSession(session('b'))).await;
    assert!(
        query::session_by_hash(&m.pool, &"b".repeat(64), 0)
            .await
            .unwrap()
            .is_some()
    );
    m.ok(Command::DeleteUser { name: n("alice") }).await;
    assert!(
        query::session_by_hash(&m.pool, &"b".repeat(64), 0)
            .await
            .unwrap()
            .is_none()
    );
    // The audit trail names the user for a sign-in and never holds a secret's hash.
    let audit = query::audit(&m.pool, &query::AuditFilter::recent(100))
        .await
        .unwrap();
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains(&"b".repeat(64)) && !text.contains("c2FsdHNhbHRzYWx0"),
        "{text}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.op == "sign_in" && e.actor == "user:alice")
    );
}

#[tokio::test]
async fn deleting_a_tenant_takes_its_roles_away_from_users_and_tokens() {
    let mut m = Model::new().await;
    m.two_tenants().await;
    m.ok(Command::CreateTenant(Tenant {
        name: n("gone"),
        description: String::new(),
        log_retention_days: None,
        history_retention_days: None,
    }))
    .await;
    m.ok(user_with("alice", &["developer@gone", "viewer@bi"]))
        .await;
    m.ok(Command::CreateToken(token_with(
        "only-gone",
        &["owner@gone"],
        None,
    )))
    .await;
    m.ok(Command::CreateToken(token_with(
        "both",
        &["owner@gone", "viewer@ads"],
        None,
    )))
    .await;
    m.ok(Command::DeleteTenant { name: n("gone") }).await;
    // Re-created under the same name, it inherits nobody's roles.
    m.ok(Command::CreateTenant(Tenant {
        name: n("gone"),
        description: String::new(),
        log_retention_days: None,
        history_retention_days: None,
    }))
    .await;
    let alice = query::user(&m.pool, &n("alice")).await.unwrap().unwrap();
    assert_eq!(alice.bindings, vec!["viewer@bi".parse().unwrap()]);
    let tokens: Vec<(String, Vec<Binding>)> = query::tokens(&m.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name.to_string(), t.bindings))
        .collect();
    assert_eq!(
        tokens,
        vec![("both".to_owned(), vec!["viewer@ads".parse().unwrap()])]
    );
}

#[tokio::test]
async fn an_environment_is_updated_in_place_but_never_moves_cluster() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::CreateCluster(cluster("nj-edge", "nj", None)))
        .await;
    let mut changed = env("prod-nj", "nj-main");
    changed.vars.insert("REGION".into(), "us-east".into());
    changed.run_as.allow_agent_user = true;
    m.ok(Command::UpdateEnvironment(changed.clone())).await;
    assert_eq!(
        query::environment(&m.pool, &n("prod-nj")).await.unwrap(),
        Some(changed.clone())
    );
    assert!(
        m.refused(Command::UpdateEnvironment(env("prod-nj", "nj-edge")))
            .await
            .contains("cluster: an environment stays on its cluster (`nj-main`)")
    );
    assert!(
        m.refused(Command::UpdateEnvironment(env("nowhere", "nj-main")))
            .await
            .contains("environment `nowhere` does not exist")
    );
    let mut bad = changed;
    bad.vars.insert("1BAD".into(), "x".into());
    assert!(
        m.refused(Command::UpdateEnvironment(bad))
            .await
            .contains("vars: `1BAD` is not a valid environment variable name")
    );
}

#[tokio::test]
async fn runs_are_paged_by_keyset_and_counted_per_state() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    // Seven runs asked for, one per log entry (so each its own time); two of them killed.
    let mut ids = Vec::new();
    for _ in 0..7 {
        let applied = m
            .ok(Command::RequestRun(RunRequest {
                tenant: n("ads"),
                workflow: n("etl"),
                environment: Some(n("prod-nj")),
            }))
            .await;
        let detail: serde_json::Value = serde_json::from_str(&applied.detail.unwrap()).unwrap();
        ids.push(detail["run_id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..2] {
        m.ok(Command::KillRun { run_id: id.clone() }).await;
    }
    // Pages of three, newest first, each from the last one's cursor: every run once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = query::runs(
            &m.pool,
            &RunFilter {
                limit: Some(3),
                after: after.clone(),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().cursor());
        seen.extend(page.into_iter().map(|r| r.run_id));
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    // Counts per state for the filter, whatever state the filter asks for.
    let counts = query::run_counts(
        &m.pool,
        &RunFilter {
            state: Some("killed".into()),
            ..RunFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![("killed".to_owned(), 2), ("requested".to_owned(), 5)]
    );
    // A scope limited to other tenants sees nothing, and counts nothing.
    let others = RunFilter {
        within: Some(vec!["bi".into()]),
        ..RunFilter::default()
    };
    assert!(query::runs(&m.pool, &others).await.unwrap().is_empty());
    assert!(
        query::run_counts(&m.pool, &others)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Issue #18, defect 1: a schedule deleted and created again under the same name is a new
/// identity. Its versions go on from the old one's (an agent that missed the delete sees a new
/// version and drops the old calendar's records), and it fires from its own creation, not from
/// the old schedule's cursor — even when a late report about the old one arrives after.
#[tokio::test]
async fn a_re_created_schedule_starts_afresh_with_a_new_version() {
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    assert_eq!(m.beat(T0, "a", "nj-main").await.leases.len(), 16);
    let epoch = m.lease("nj-main", p).await.epoch;
    let claims = vec![ClaimedLease {
        cluster: "nj-main".into(),
        partition: p,
        epoch,
    }];
    let assigned = |pool: SqlitePool| {
        let claims = claims.clone();
        async move {
            let mut all = query::assignments(&pool, "a", "nj-main", &claims, None, 0)
                .await
                .unwrap()
                .0;
            assert_eq!(all.len(), 1, "{all:?}");
            all.remove(0)
        }
    };
    // The old schedule fired at 02:00 (its cursor), and was changed once (version 2).
    m.report_ok(
        "a",
        "nj-main",
        vec![event(p, epoch, fire_ms(0), RunState::Started, fire_ms(0))],
    )
    .await;
    let mut changed = schedule("ads", "nightly", "etl", "prod-nj", "0 0 3 * * ?");
    assert_eq!(
        m.ok(Command::UpdateSchedule(changed.clone())).await.version,
        Some(2)
    );
    let old = assigned(m.pool.clone()).await;
    assert_eq!((old.version >> 32, old.after_ms), (2, fire_ms(0)));

    m.ok(Command::DeleteSchedule {
        tenant: n("ads"),
        name: n("nightly"),
    })
    .await;
    let created_ms = fire_ms(5);
    changed.spec = ScheduleSpec::cron("0 30 * * * ?");
    let again = m
        .apply_at(created_ms, Command::CreateSchedule(changed))
        .await
        .unwrap();
    assert_eq!(again.version, Some(3), "versions go on across the delete");
    let new = assigned(m.pool.clone()).await;
    assert_eq!((new.version >> 32, new.after_ms), (3, created_ms));
    // A report about the old schedule's 02:00 record, late, moves nothing back.
    m.report_ok(
        "a",
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(1),
            RunState::Queued,
            created_ms + 1,
        )],
    )
    .await;
    assert_eq!(assigned(m.pool.clone()).await.after_ms, created_ms);
}

/// Issue #21: an agent fetches its schedules a page at a time. Every schedule of every held
/// partition comes exactly once, whatever the page size, in the order the marks say; the
/// schedules of one workflow share one job.
#[tokio::test]
async fn an_agent_fetches_its_schedules_a_page_at_a_time() {
    let mut m = Model::new().await;
    m.scheduled().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "gone", "true")))
        .await;
    for i in 0..60 {
        m.ok(Command::CreateSchedule(schedule(
            "ads",
            &format!("s-{i}"),
            "etl",
            "prod-nj",
            "0 0 * * * ?",
        )))
        .await;
        // Runs of schedules the agent is not sent, longer than a page: their workflow is
        // gone from under them (as a plane that left them behind would have it).
        m.ok(Command::CreateSchedule(schedule(
            "ads",
            &format!("t-{i}"),
            "gone",
            "prod-nj",
            "0 0 * * * ?",
        )))
        .await;
    }
    sqlx::query("UPDATE workflows SET deleted = 1 WHERE name = 'gone'")
        .execute(&m.pool)
        .await
        .unwrap();
    let claims = claims_of(&m.beat(T0, "a", "nj-main").await.leases);
    let (all, next) = query::assignments(&m.pool, "a", "nj-main", &claims, None, 0)
        .await
        .unwrap();
    assert_eq!((all.len(), next), (61, None));
    let mut marks: Vec<(u32, String)> = all
        .iter()
        .map(|a| (a.partition, a.schedule.to_string()))
        .collect();
    marks.sort();
    for limit in [1, 2, 7, 60, 61, 121, 1000] {
        let mut pages = Vec::new();
        let mut after: Option<PageMark> = None;
        let mut asked = 0;
        loop {
            let (page, next) =
                query::assignments(&m.pool, "a", "nj-main", &claims, after.as_ref(), limit)
                    .await
                    .unwrap();
            asked += 1;
            assert!(page.len() <= limit, "a page of {limit} held {}", page.len());
            pages.extend(
                page.into_iter()
                    .map(|a| (a.partition, a.schedule.to_string())),
            );
            assert!(
                pages.len() <= marks.len(),
                "pages of {limit} repeat schedules"
            );
            assert!(asked <= 121, "pages of {limit} never end");
            match next {
                Some(mark) => after = Some(mark),
                None => break,
            }
        }
        assert_eq!(pages, marks, "pages of {limit}");
    }
    let first = &all[0].job;
    assert!(all.iter().all(|a| std::sync::Arc::ptr_eq(&a.job, first)));
    // A partition claimed under another epoch gives nothing, on any page.
    let stale: Vec<ClaimedLease> = claims
        .iter()
        .map(|c| ClaimedLease {
            epoch: c.epoch + 1,
            ..c.clone()
        })
        .collect();
    let (none, next) = query::assignments(&m.pool, "a", "nj-main", &stale, None, 5)
        .await
        .unwrap();
    assert_eq!((none.len(), next), (0, None));
}

/// Issue #18, defect 2: a workflow's versions never repeat, even across deleting its tenant
/// (which removes the tenant's deleted workflows' rows) and creating the tenant again.
#[tokio::test]
async fn workflow_versions_never_repeat_across_a_tenants_deletion() {
    let mut m = Model::new().await;
    m.federation().await;
    for v in 1..=2 {
        let applied = m
            .ok(Command::ApplyWorkflow(workflow(
                "ads",
                "etl",
                &format!("exit {v}"),
            )))
            .await;
        assert_eq!(applied.version, Some(v));
    }
    m.ok(Command::DeleteWorkflow {
        tenant: n("ads"),
        name: n("etl"),
    })
    .await;
    m.ok(Command::DeleteGrant {
        tenant: n("ads"),
        environment: n("prod-nj"),
    })
    .await;
    m.ok(Command::DeleteTenant { name: n("ads") }).await;
    m.ok(Command::CreateTenant(Tenant {
        name: n("ads"),
        description: String::new(),
        log_retention_days: None,
        history_retention_days: None,
    }))
    .await;
    let applied = m
        .ok(Command::ApplyWorkflow(workflow("ads", "etl", "false")))
        .await;
    assert_eq!(applied.version, Some(3));
}

/// Issue #18: a run-now order the plane stored before versions (the bare job) is still sent
/// to the agent after an upgrade; what it stores now carries its version.
#[tokio::test]
async fn a_run_now_order_stored_before_versions_still_reads() {
    let mut m = Model::new().await;
    m.federation().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    m.ok(Command::RequestRun(RunRequest {
        tenant: n("ads"),
        workflow: n("etl"),
        environment: Some(n("prod-nj")),
    }))
    .await;
    let stored: String = sqlx::query_scalar("SELECT job FROM agent_commands")
        .fetch_one(&m.pool)
        .await
        .unwrap();
    assert!(stored.starts_with(r#"{"v":"1","doc":"#), "{stored}");
    let job: Job = meridian_domain::stored::read(&stored).unwrap();
    // As the plane wrote it before versions.
    sqlx::query("UPDATE agent_commands SET job = ?")
        .bind(serde_json::to_string(&job).unwrap())
        .execute(&m.pool)
        .await
        .unwrap();
    let beat = m.beat(T0, "a", "nj-main").await;
    let sent: Vec<&Job> = beat
        .commands
        .iter()
        .filter_map(|c| match c {
            AgentOrder::RunNow { job, .. } => Some(job.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [&job]);
}

/// Issue #18: every entity's `doc` column carries the version of its shape, and what a plane
/// stored before versions (the bare document) still reads after the upgrade: the lists, an
/// agent's assignments, and commands that read a stored document to apply (a cluster's
/// update, a new schedule's placement).
#[tokio::test]
async fn entity_documents_stored_before_versions_still_read() {
    let mut m = Model::new().await;
    let partition = m.scheduled().await;
    m.ok(user_with("ann", &["developer@ads"])).await;
    m.ok(Command::CreateSession(Session {
        hash: "ab".repeat(32),
        user: n("ann"),
        created_ms: 0,
        expires_ms: i64::MAX,
        source: "127.0.0.1".into(),
    }))
    .await;
    let tables = [
        "data_centers",
        "clusters",
        "environments",
        "tenants",
        "grants",
        "workflows",
        "schedules",
        "sessions",
    ];
    let docs = async |m: &Model| {
        let mut docs = vec![];
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT doc FROM {table}"))
                .fetch_all(&m.pool)
                .await
                .unwrap();
            assert!(!rows.is_empty(), "{table}");
            docs.extend(rows.into_iter().map(|d| (table, d)));
        }
        docs
    };
    for (table, doc) in docs(&m).await {
        assert!(doc.starts_with(r#"{"v":"1","doc":"#), "{table}: {doc}");
    }
    let read = async |m: &Model| {
        let p = &m.pool;
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            query::data_centers(p).await.unwrap(),
            query::clusters(p).await.unwrap(),
            query::environments(p).await.unwrap(),
            query::tenants(p).await.unwrap(),
            query::grants(p, None).await.unwrap(),
            query::workflows(p, &query::Page::all()).await.unwrap(),
            query::schedules(p, &query::Page::all()).await.unwrap(),
            query::session_by_hash(p, &"ab".repeat(32), T0)
                .await
                .unwrap(),
        )
    };
    let before = read(&m).await;
    let beat = m.beat(T0, "a", "nj-main").await;
    let claims: Vec<ClaimedLease> = beat
        .leases
        .iter()
        .filter(|l| l.partition == partition)
        .map(|l| ClaimedLease {
            cluster: l.cluster.clone(),
            partition: l.partition,
            epoch: l.epoch,
        })
        .collect();
    let assigned = query::assignments(&m.pool, "a", "nj-main", &claims, None, 0)
        .await
        .unwrap()
        .0;
    assert_eq!(assigned.len(), 1);

    // As a plane wrote them before versions.
    for table in tables {
        sqlx::query(&format!(
            "UPDATE {table} SET doc = json_extract(doc, '$.doc')"
        ))
        .execute(&m.pool)
        .await
        .unwrap();
    }
    for (table, doc) in docs(&m).await {
        assert!(!doc.starts_with(r#"{"v":"#), "{table}: {doc}");
    }
    assert_eq!(read(&m).await, before);
    assert_eq!(
        query::assignments(&m.pool, "a", "nj-main", &claims, None, 0)
            .await
            .unwrap()
            .0,
        assigned
    );
    m.ok(Command::UpdateCluster(Cluster {
        lease_seconds: 90,
        ..cluster("nj-main", "nj", None)
    }))
    .await;
    m.ok(Command::CreateSchedule(schedule(
        "ads",
        "hourly",
        "etl",
        "prod-nj",
        "0 0 * * * ?",
    )))
    .await;
    // What they wrote carries its version again.
    let clusters: String = sqlx::query_scalar("SELECT doc FROM clusters")
        .fetch_one(&m.pool)
        .await
        .unwrap();
    assert!(clusters.starts_with(r#"{"v":"1","doc":"#), "{clusters}");
    assert_eq!(
        query::schedules(&m.pool, &query::Page::all())
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A document a newer plane wrote (a shape version this build does not know) is refused by
/// name rather than misread.
#[tokio::test]
async fn an_entity_document_of_a_newer_shape_is_refused_by_name() {
    let mut m = Model::new().await;
    m.federation().await;
    sqlx::query(r#"UPDATE tenants SET doc = '{"v":"2","doc":{"name":"ads"}}'"#)
        .execute(&m.pool)
        .await
        .unwrap();
    let e = query::tenants(&m.pool).await.unwrap_err().to_string();
    assert!(e.contains("newer version (shape v2)"), "{e}");
}

/// What `agent` of `nj-main` holding `leases` is assigned of `ads/nightly`: its `returned`.
async fn returned_to(m: &Model, agent: &str, leases: &[HeldLease]) -> Vec<i64> {
    assignment_of(m, agent, leases, "ads.nightly")
        .await
        .map(|a| a.returned)
        .unwrap_or_default()
}

/// What `agent` of `nj-main`, claiming `leases`, is assigned of `schedule` (`<tenant>.<name>`).
async fn assignment_of(
    m: &Model,
    agent: &str,
    leases: &[HeldLease],
    schedule: &str,
) -> Option<Assignment> {
    let claims: Vec<ClaimedLease> = leases
        .iter()
        .map(|l| ClaimedLease {
            cluster: l.cluster.clone(),
            partition: l.partition,
            epoch: l.epoch,
        })
        .collect();
    query::assignments(&m.pool, agent, "nj-main", &claims, None, 0)
        .await
        .unwrap()
        .0
        .into_iter()
        .find(|a| a.schedule.as_str() == schedule)
}

#[tokio::test]
async fn a_start_outside_the_takers_tenure_is_refused_whatever_was_accepted_before() {
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    m.balanced(T0, "a", "b", "nj-main").await;
    let lease = m.lease("nj-main", p).await;
    let holder = lease.holder.clone().unwrap();
    let other = if holder == "a" { "b" } else { "a" };
    let epoch = lease.epoch;
    // The holder takes two records (queued: waiting for a slot, or to catch up).
    m.report_ok(
        &holder,
        "nj-main",
        vec![
            event(p, epoch, fire_ms(0), RunState::Queued, T0 + 5),
            event(p, epoch, fire_ms(1), RunState::Queued, T0 + 5),
        ],
    )
    .await;
    // It goes silent; at its lease's end the other agent takes the partition.
    m.beat(T0 + 10, &holder, "nj-main").await;
    m.beat(T0 + 10, other, "nj-main").await;
    let ended = T0 + 10 + LEASE_MS;
    m.beat(ended, other, "nj-main").await;
    assert_eq!(m.lease("nj-main", p).await.holder.as_deref(), Some(other));

    // A start it made within its lease, reported late (the cut healed): accepted.
    m.report_ok(
        &holder,
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(0),
            RunState::Started,
            ended - 1_000,
        )],
    )
    .await;
    let run = m.run(&record("ads.nightly", fire_ms(0))).await;
    assert_eq!((run.state.as_str(), run.starts), ("started", 1));
    // A start after its lease ran out (it was frozen between taking and starting): refused
    // although the plane accepted its taking of the record; kept as evidence that it ran
    // there, and the run ends failed saying why.
    let second = record("ads.nightly", fire_ms(1));
    let refused = m
        .report(
            &holder,
            "nj-main",
            vec![event(
                p,
                epoch,
                fire_ms(1),
                RunState::Started,
                ended + 2_000,
            )],
        )
        .await;
    assert!(refused[0].1.contains("stale lease"), "{refused:?}");
    assert_eq!(m.fenced_starts().await, [(second.clone(), holder.clone())]);
    let run = m.run(&second).await;
    assert_eq!((run.state.as_str(), run.starts), ("failed", 1));
    assert!(
        run.message.contains("after its holder's lease ran out"),
        "{}",
        run.message
    );
    // What it says of the run afterwards does not make it a success.
    m.report_ok(
        &holder,
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(1),
            RunState::Succeeded,
            ended + 3_000,
        )],
    )
    .await;
    assert_eq!(m.run(&second).await.state, "failed");
}

#[tokio::test]
async fn a_record_given_back_unstarted_is_handed_to_whoever_holds_the_partition() {
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    let a = m.beat(T0, "a", "nj-main").await;
    let epoch = a.leases.iter().find(|l| l.partition == p).unwrap().epoch;
    let first = record("ads.nightly", fire_ms(0));
    // Taken with a free slot (reported started at once), then its lease ran out before the
    // process started: given back.
    m.report_ok(
        "a",
        "nj-main",
        vec![event(p, epoch, fire_ms(0), RunState::Started, T0 + 1)],
    )
    .await;
    let definitions = m.beat(T0 + 2, "a", "nj-main").await.definitions;
    let mut back = event(p, epoch, fire_ms(0), RunState::Returned, T0 + 3);
    let Report::V1 {
        item: ReportItem::Run(e),
        ..
    } = &mut back
    else {
        unreachable!()
    };
    e.message = "not started: the lease ran out first".into();
    // Sent twice (a lost acknowledgement): the same.
    m.report_ok("a", "nj-main", vec![back.clone(), back]).await;
    let run = m.run(&first).await;
    assert_eq!(
        (run.state.as_str(), run.starts, run.started_ms),
        ("returned", 0, None)
    );
    // The holder is told to fetch again, and is handed the record.
    let a = m.beat(T0 + 4, "a", "nj-main").await;
    assert!(a.definitions > definitions);
    assert_eq!(returned_to(&m, "a", &a.leases).await, [fire_ms(0)]);
    // The cursor did not move past anything it should not: the record is still the last taken.
    // `a` goes silent; `b` takes the partition over and is handed the record.
    m.beat(T0 + 5, "b", "nj-main").await;
    let b = m.beat(T0 + 4 + LEASE_MS, "b", "nj-main").await;
    let new_epoch = b.leases.iter().find(|l| l.partition == p).unwrap().epoch;
    assert_eq!(returned_to(&m, "b", &b.leases).await, [fire_ms(0)]);
    // `a` cannot give back what is no longer its own, nor take it under its old tenure.
    let refused = m
        .report(
            "a",
            "nj-main",
            vec![event(p, epoch, fire_ms(0), RunState::Queued, T0 + 6)],
        )
        .await;
    assert!(refused[0].1.contains("stale lease"), "{refused:?}");
    // `b` takes it (under the catch-up policy): it is `b`'s run, and handed to nobody now.
    m.report_ok(
        "b",
        "nj-main",
        vec![
            event(
                p,
                new_epoch,
                fire_ms(0),
                RunState::Queued,
                T0 + 5 + LEASE_MS,
            ),
            event(
                p,
                new_epoch,
                fire_ms(0),
                RunState::Started,
                T0 + 6 + LEASE_MS,
            ),
        ],
    )
    .await;
    let run = m.run(&first).await;
    assert_eq!(
        (run.state.as_str(), run.agent.as_deref(), run.starts),
        ("started", Some("b"), 1)
    );
    assert!(returned_to(&m, "b", &b.leases).await.is_empty());
    let refused = m
        .report(
            "a",
            "nj-main",
            vec![event(p, epoch, fire_ms(0), RunState::Returned, T0 + 7)],
        )
        .await;
    assert!(refused[0].1.contains("nothing to give back"), "{refused:?}");
}

#[tokio::test]
async fn a_partition_is_granted_only_to_an_agent_heard_within_two_heartbeats() {
    let mut m = Model::new().await;
    m.scheduled().await;
    let every_second = |agent: &str| Heartbeat {
        heartbeat_ms: 1_000,
        ..heartbeat(agent, "nj-main")
    };
    // a holds everything; b joins, and is not heard again for 2.5 s (two and a half of its
    // heartbeats): connected, since a lease would still run, but not heard lately enough to be
    // granted anything. a is not asked to give partitions up for it.
    assert_eq!(m.heartbeat(T0, every_second("a")).await.leases.len(), 16);
    assert!(
        m.heartbeat(T0 + 1, every_second("b"))
            .await
            .leases
            .is_empty()
    );
    let a = m.heartbeat(T0 + 2_500, every_second("a")).await;
    assert_eq!(a.leases.len(), 16);
    assert!(a.release.is_empty(), "{a:?}");
    // b is heard again: now a is asked to share.
    m.heartbeat(T0 + 3_000, every_second("b")).await;
    let a = m.heartbeat(T0 + 3_500, every_second("a")).await;
    assert_eq!(a.release.len(), 8, "{a:?}");
    // An agent that does not say how often it heartbeats is fresh for two thirds of a lease.
    m.beat(T0 + 4_000, "c", "nj-main").await;
    let b = m
        .heartbeat(T0 + 4_000 + LEASE_MS * 2 / 3 + 1, every_second("b"))
        .await;
    let granted_to_c = m
        .leases_of("nj-main")
        .await
        .into_iter()
        .filter(|l| l.holder.as_deref() == Some("c"))
        .count();
    assert_eq!(granted_to_c, 0, "{b:?}");
}

/// Tenant `ads`'s schedules `often` and `also` (every 10 s) on `prod-nj`, and `a` holding
/// every partition of `nj-main` from `T0`, having taken (and started) both schedules' records
/// at `T0 + 10 s`; then `b` takes everything over when `a`'s leases run out (`T0 + 30 s`).
/// Returns `a`'s epoch of each schedule's partition.
async fn taken_over(m: &mut Model) -> (u64, u64) {
    m.federation().await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    for name in ["often", "also"] {
        m.ok(Command::CreateSchedule(schedule(
            "ads",
            name,
            "etl",
            "prod-nj",
            "0/10 * * * * ?",
        )))
        .await;
    }
    let a = m.beat(T0, "a", "nj-main").await;
    let epoch_of = |name: &str| {
        let p = partition_of(&ScheduleId::new(format!("ads.{name}")).unwrap(), 16);
        a.leases.iter().find(|l| l.partition == p).unwrap().epoch
    };
    let epochs = (epoch_of("often"), epoch_of("also"));
    for (name, epoch) in [("often", epochs.0), ("also", epochs.1)] {
        m.report_ok(
            "a",
            "nj-main",
            vec![
                often_event(name, epoch, T0 + 10_000, RunState::Queued, T0 + 10_000),
                often_event(name, epoch, T0 + 10_000, RunState::Started, T0 + 10_100),
            ],
        )
        .await;
    }
    m.beat(T0 + 20_000, "b", "nj-main").await;
    let b = m.beat(T0 + LEASE_MS, "b", "nj-main").await;
    assert_eq!(b.leases.len(), 16, "b took every partition over");
    epochs
}

/// `ads/<name>`'s record at `fire` reaching `state` at `at_ms`, under `epoch`.
fn often_event(name: &str, epoch: u64, fire: i64, state: RunState, at_ms: i64) -> Report {
    let id = ScheduleId::new(format!("ads.{name}")).unwrap();
    Report::V1 {
        cluster: "nj-main".into(),
        partition: Some(partition_of(&id, 16)),
        epoch,
        item: ReportItem::Run(RunEvent {
            run_id: record(id.as_str(), fire),
            schedule: Some(id),
            fire_ms: Some(fire),
            tenant: "ads".into(),
            workflow: "etl".into(),
            workflow_version: 1,
            environment: "prod-nj".into(),
            state,
            at_ms,
            message: String::new(),
        }),
    }
}

async fn in_doubt(m: &Model) -> Vec<meridian_plane::model::doubt::InDoubt> {
    let mut conn = m.pool.acquire().await.unwrap();
    meridian_plane::model::doubt::list(&mut conn, None)
        .await
        .unwrap()
}

/// What `agent`, holding every partition it was granted at `at`, is assigned of `ads/<name>`.
async fn assigned(m: &mut Model, agent: &str, at: i64, name: &str) -> Assignment {
    let held = m.beat(at, agent, "nj-main").await.leases;
    assignment_of(m, agent, &held, &format!("ads.{name}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_takeover_puts_what_the_old_holder_may_have_fired_in_doubt_until_it_says() {
    let mut m = Model::new().await;
    let (epoch, _) = taken_over(&mut m).await;
    // a's lease ran out at T0 + 30 s; the plane had a's report up to T0 + 10 s: 20 s and 30 s
    // are in doubt, held by b now.
    let doubts = in_doubt(&m).await;
    let often = doubts.iter().find(|d| d.schedule == "ads.often").unwrap();
    assert_eq!(
        (often.holder.as_str(), often.current_holder.as_deref()),
        ("a", Some("b"))
    );
    assert_eq!(often.records, [T0 + 20_000, T0 + 30_000]);
    assert_eq!(often.holder_last_heard_ms, Some(T0));
    // b fires after the range, and is handed nothing yet.
    let a = assigned(&mut m, "b", T0 + LEASE_MS + 1, "often").await;
    assert_eq!((a.after_ms, a.returned.clone()), (T0 + 30_000, vec![]));

    // The cut heals: a's report of what it ran in the range is accepted (it settles it) …
    m.report_ok(
        "a",
        "nj-main",
        vec![
            often_event("often", epoch, T0 + 20_000, RunState::Queued, T0 + 20_000),
            often_event("often", epoch, T0 + 20_000, RunState::Started, T0 + 20_100),
        ],
    )
    .await;
    let run = m.run(&record("ads.often", T0 + 20_000)).await;
    assert_eq!((run.agent.as_deref(), run.starts), (Some("a"), 1));
    assert_eq!(in_doubt(&m).await[1].records, [T0 + 30_000]);
    // … a start stamped after its lease's end is not (kept as evidence it ran there).
    m.report_refused(
        "a",
        "nj-main",
        vec![often_event(
            "often",
            epoch,
            T0 + 30_000,
            RunState::Started,
            T0 + 30_500,
        )],
    )
    .await;
    assert_eq!(
        m.fenced_starts().await,
        [(record("ads.often", T0 + 30_000), "a".to_string())]
    );
    // a says it has reported everything of the partition: what it never reported it never
    // ran, and goes to b.
    let p = partition_of(&ScheduleId::new("ads.often").unwrap(), 16);
    m.heartbeat(
        T0 + LEASE_MS + 2,
        Heartbeat {
            relinquished: vec![Relinquished {
                cluster: n("nj-main"),
                partition: p,
                epoch,
            }],
            ..heartbeat("a", "nj-main")
        },
    )
    .await;
    assert!(
        in_doubt(&m).await.iter().all(|d| d.schedule != "ads.often"),
        "settled"
    );
    let a = assigned(&mut m, "b", T0 + LEASE_MS + 3, "often").await;
    assert_eq!(a.returned, [T0 + 30_000]);
    // b takes it: handed to nobody any more.
    let b_epoch = a.epoch;
    m.report_ok(
        "b",
        "nj-main",
        vec![often_event(
            "often",
            b_epoch,
            T0 + 30_000,
            RunState::Queued,
            T0 + LEASE_MS + 4,
        )],
    )
    .await;
    assert!(
        assigned(&mut m, "b", T0 + LEASE_MS + 5, "often")
            .await
            .returned
            .is_empty()
    );
}

#[tokio::test]
async fn an_operator_settles_records_in_doubt_per_schedule_or_per_tenant() {
    let mut m = Model::new().await;
    taken_over(&mut m).await;
    assert_eq!(in_doubt(&m).await.len(), 2);
    let resolve = |tenant: &str, schedule: Option<&str>, resolution: Resolution| {
        Command::ResolveDoubts(ResolveDoubts {
            tenant: n(tenant),
            schedule: schedule.map(n),
            resolution,
        })
    };
    // Nothing that does not exist, and nothing changes.
    let before = (m.history().await, in_doubt(&m).await);
    let e = m.refused(resolve("nope", None, Resolution::Run)).await;
    assert!(e.contains("tenant `nope`"), "{e}");
    let e = m
        .refused(resolve("ads", Some("nope"), Resolution::Run))
        .await;
    assert!(e.contains("schedule `ads/nope`"), "{e}");
    assert_eq!((m.history().await, in_doubt(&m).await), before);

    // One schedule marked done: its records are recorded skipped, saying so.
    let done = m
        .ok(resolve("ads", Some("often"), Resolution::MarkDone))
        .await;
    assert!(done.detail.unwrap().contains("\"settled\":2"));
    for fire in [T0 + 20_000, T0 + 30_000] {
        let run = m.run(&record("ads.often", fire)).await;
        assert_eq!(run.state, "skipped");
        assert!(run.message.contains("marked done"), "{}", run.message);
    }
    assert_eq!(in_doubt(&m).await.len(), 1);
    // The rest of the tenant's: run by the partition's holder.
    m.ok(resolve("ads", None, Resolution::Run)).await;
    assert!(in_doubt(&m).await.is_empty());
    let also = assigned(&mut m, "b", T0 + LEASE_MS + 1, "also").await;
    assert_eq!(also.returned, [T0 + 20_000, T0 + 30_000]);
    assert_eq!(also.after_ms, T0 + 10_000);
}

/// Issue #20: a merge patch changes only the fields it names, against the schedule as it is
/// when applied; bad patches name the field and change nothing; the same document again
/// (a workflow re-applied, a schedule updated to what it is) makes no new version.
#[tokio::test]
async fn a_patch_changes_only_what_it_names_and_the_same_document_is_no_change() {
    let mut m = Model::new().await;
    m.federation().await;
    let first = m
        .ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo hi")))
        .await;
    let again = m
        .ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo hi")))
        .await;
    assert_eq!((first.version, again.version), (Some(1), Some(1)));
    assert_eq!(again.detail.as_deref(), Some(r#"{"unchanged":true}"#));
    let mut nightly = schedule("ads", "nightly", "etl", "prod-nj", "0 0 2 * * ?");
    nightly.spec.catch_up = meridian_domain::CatchUpPolicy::default();
    nightly.spec.start = Some("2026-01-01T00:00:00Z".parse().unwrap());
    m.ok(Command::CreateSchedule(nightly.clone())).await;
    let patch = |text: &str| {
        Command::PatchSchedule(meridian_plane::model::SchedulePatch {
            tenant: n("ads"),
            name: n("nightly"),
            patch: text.into(),
        })
    };
    let applied = m
        .ok(patch(
            r#"{"spec": {"cron": "0 0 3 * * ?", "start": null, "catch_up": {"policy": "none"}}}"#,
        ))
        .await;
    assert_eq!(applied.version, Some(2));
    let now = query::schedule(&m.pool, &n("ads"), &n("nightly"))
        .await
        .unwrap()
        .unwrap();
    let mut expected = nightly.clone();
    expected.spec.cron = "0 0 3 * * ?".into();
    expected.spec.start = None;
    expected.spec.catch_up = meridian_domain::CatchUpPolicy::None;
    assert_eq!(now, expected, "only the named fields changed");
    for (bad, says) in [
        (r#"{"spec": {"cron": "nope"}}"#, "spec.cron"),
        (
            r#"{"spec": {"crn": "0 0 1 * * ?"}}"#,
            "spec.crn: unknown field `crn`",
        ),
        (r#"{"name": "other"}"#, "name: names the schedule"),
        (r#"{"overlap": "sometimes"}"#, "overlap: unknown variant"),
        (r#"[1]"#, "patch: must be a JSON object"),
        (r#"{"environment": "nowhere"}"#, "nowhere"),
    ] {
        let refused = m.refused(patch(bad)).await;
        assert!(refused.contains(says), "{bad}: {refused}");
    }
    // The same fields again: applied, no new version.
    let same = m.ok(patch(r#"{"spec": {"cron": "0 0 3 * * ?"}}"#)).await;
    assert_eq!(same.version, Some(2));
    let same = m.ok(Command::UpdateSchedule(expected)).await;
    assert_eq!(same.version, Some(2));
    m.refused(Command::PatchSchedule(
        meridian_plane::model::SchedulePatch {
            tenant: n("ads"),
            name: n("missing"),
            patch: "{}".into(),
        },
    ))
    .await;
}

/// Issue #20: a pause of a schedule, its workflow, tenant or environment sends the schedule
/// paused; resuming what is not paused itself is refused naming what holds it; a resume with
/// catch-up hands the holder the records the pause skipped that the catch-up policy runs
/// (their history moves from skipped to returned), and the holder's report of them is taken.
#[tokio::test]
async fn a_pause_holds_a_schedule_still_and_a_resume_catches_up_by_its_policy() {
    use meridian_plane::model::{Pause, PauseScope, Resume};
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    assert_eq!(m.beat(T0, "a", "nj-main").await.leases.len(), 16);
    let epoch = m.lease("nj-main", p).await.epoch;
    let claims = vec![ClaimedLease {
        cluster: "nj-main".into(),
        partition: p,
        epoch,
    }];
    let assigned = |pool: SqlitePool| {
        let claims = claims.clone();
        async move {
            let mut all = query::assignments(&pool, "a", "nj-main", &claims, None, 0)
                .await
                .unwrap()
                .0;
            all.remove(0)
        }
    };
    let schedule = PauseScope::Schedule {
        tenant: n("ads"),
        name: n("nightly"),
    };
    let tenant = PauseScope::Tenant { name: n("ads") };
    let pause = |scope: &PauseScope| {
        Command::Pause(Pause {
            scope: scope.clone(),
            reason: "release 4.2".into(),
        })
    };
    let resume = |scope: &PauseScope, catch_up: bool| {
        Command::Resume(Resume {
            scope: scope.clone(),
            catch_up,
        })
    };
    assert!(!assigned(m.pool.clone()).await.paused);
    m.apply_at(fire_ms(0) - 1, pause(&schedule)).await.unwrap();
    assert!(assigned(m.pool.clone()).await.paused);
    // Pausing again changes nothing (its start stays the first).
    let again = m.apply_at(fire_ms(5), pause(&schedule)).await.unwrap();
    assert_eq!(again.detail.as_deref(), Some(r#"{"unchanged":true}"#));
    let held = meridian_plane::model::pauses::of(&m.pool, &schedule)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (held.since_ms, held.reason.as_str()),
        (fire_ms(0) - 1, "release 4.2")
    );
    // The tenant paused too: resuming the schedule leaves it held by the tenant's pause.
    m.apply_at(fire_ms(0), pause(&tenant)).await.unwrap();
    m.ok(resume(&schedule, false)).await;
    assert!(
        assigned(m.pool.clone()).await.paused,
        "the tenant's pause holds it"
    );
    let refused = m.refused(resume(&schedule, false)).await;
    assert!(
        refused.contains(
            "schedule ads/nightly is not paused itself; it is held by the pause of tenant ads"
        ),
        "{refused}"
    );
    let refused = m
        .refused(pause(&PauseScope::Workflow {
            tenant: n("ads"),
            name: n("nope"),
        }))
        .await;
    assert!(
        refused.contains("workflow `ads/nope` does not exist"),
        "{refused}"
    );
    // The holder recorded three records skipped while paused.
    let skipped = |fire: i64| {
        let mut report = event(p, epoch, fire, RunState::Skipped, fire + 5);
        let Report::V1 {
            item: ReportItem::Run(e),
            ..
        } = &mut report
        else {
            unreachable!()
        };
        e.message = meridian_domain::run::PAUSED.into();
        report
    };
    m.report_ok(
        "a",
        "nj-main",
        vec![
            skipped(fire_ms(0)),
            skipped(fire_ms(1)),
            skipped(fire_ms(2)),
        ],
    )
    .await;
    // Resumed with catch-up ten minutes after the third: the default policy runs what fell
    // due in the last hour, so only the third is handed back.
    let resumed = m
        .apply_at(fire_ms(2) + 600_000, resume(&tenant, true))
        .await
        .unwrap();
    assert_eq!(resumed.detail.as_deref(), Some(r#"{"caught_up":1}"#));
    let a = assigned(m.pool.clone()).await;
    assert!(!a.paused);
    assert_eq!(a.returned, [fire_ms(2)]);
    let states: Vec<(i64, String)> = sqlx::query_as(
        "SELECT fire_ms, state FROM runs WHERE schedule = 'ads.nightly' ORDER BY fire_ms",
    )
    .fetch_all(&m.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            (fire_ms(0), "skipped".to_owned()),
            (fire_ms(1), "skipped".to_owned()),
            (fire_ms(2), "returned".to_owned()),
        ]
    );
    // Its skip sent again (an acknowledgement lost) does not undo the hand-back.
    m.report_ok("a", "nj-main", vec![skipped(fire_ms(2))]).await;
    assert_eq!(assigned(m.pool.clone()).await.returned, [fire_ms(2)]);
    assert_eq!(
        m.run(&record("ads.nightly", fire_ms(2))).await.state,
        "returned"
    );
    // The holder takes it: it runs, and is handed to nobody any more.
    m.report_ok(
        "a",
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(2),
            RunState::Started,
            fire_ms(2) + 700_000,
        )],
    )
    .await;
    assert!(assigned(m.pool.clone()).await.returned.is_empty());
    // A deleted schedule's pause goes with it.
    m.ok(pause(&schedule)).await;
    m.ok(Command::DeleteSchedule {
        tenant: n("ads"),
        name: n("nightly"),
    })
    .await;
    assert!(
        meridian_plane::model::pauses::list(&m.pool, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Issue #20: a finished run is run again as a new generation of the same record — the
/// record's fire time and the workflow version it ran, `<first>~<n>`, whoever asked named — and
/// a recovery keeps the tasks that succeeded; what is not finished, or not failed for a
/// recovery, is refused and changes nothing.
#[tokio::test]
async fn a_finished_run_runs_again_one_generation_further() {
    use meridian_plane::model::Rerun;
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    assert_eq!(m.beat(T0, "a", "nj-main").await.leases.len(), 16);
    let epoch = m.lease("nj-main", p).await.epoch;
    let first = record("ads.nightly", fire_ms(0));
    m.report_ok(
        "a",
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(0),
            RunState::Started,
            fire_ms(0) + 5,
        )],
    )
    .await;
    let rerun = |run_id: &str, recover: bool| {
        Command::Rerun(Rerun {
            run_id: run_id.into(),
            recover,
            retired: None,
        })
    };
    let refused = m.refused(rerun(&first, false)).await;
    assert!(
        refused.contains("the run is started: only a finished run"),
        "{refused}"
    );
    // It fails: task `main` failed (a later workflow version changes nothing of a re-run).
    m.report_ok(
        "a",
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(0),
            RunState::Failed,
            fire_ms(0) + 9,
        )],
    )
    .await;
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "echo v2")))
        .await;
    let applied = m.ok(rerun(&first, false)).await;
    let second = format!("{first}~2");
    assert_eq!(applied.detail, Some(format!(r#"{{"run_id":"{second}"}}"#)),);
    let run = m.run(&second).await;
    assert_eq!(
        (
            run.state.as_str(),
            run.generation,
            run.rerun_of.as_deref(),
            run.workflow_version,
            run.schedule.as_deref(),
            run.fire_ms,
            run.requested_by.as_deref()
        ),
        (
            "requested",
            2,
            Some(first.as_str()),
            1,
            Some("ads.nightly"),
            None,
            Some("alice")
        )
    );
    // What the agent is sent: the record's fire time, generation 2, nothing kept.
    let job: String = sqlx::query_scalar("SELECT job FROM agent_commands WHERE run_id = ?")
        .bind(&second)
        .fetch_one(&m.pool)
        .await
        .unwrap();
    let job: meridian_domain::run::Job = meridian_domain::stored::read(&job).unwrap();
    let again = job.rerun.unwrap();
    assert_eq!(
        (
            again.fire_ms,
            again.generation,
            again.done.len(),
            job.workflow_version
        ),
        (Some(fire_ms(0)), 2, 0, 1)
    );
    // The re-run and the kill are in the tenant's part of the audit trail (its members see
    // them), though neither names the tenant but through the run id.
    m.ok(Command::KillRun {
        run_id: second.clone(),
    })
    .await;
    let tenants: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT op, tenant FROM audit WHERE op IN ('rerun', 'kill_run') AND outcome = 'applied' \
         ORDER BY log_index",
    )
    .fetch_all(&m.pool)
    .await
    .unwrap();
    assert_eq!(
        tenants,
        [
            ("rerun".to_owned(), Some("ads".to_owned())),
            ("kill_run".to_owned(), Some("ads".to_owned()))
        ]
    );
    // The second was killed before any agent took it. A recovery of the first, whose task
    // `main` succeeded before a second task failed: the third generation keeps `main`.
    sqlx::query(
        "INSERT INTO task_attempts (run_id, task, attempt, outcome) VALUES (?, 'main', 1, 'succeeded')",
    )
    .bind(&first)
    .execute(&m.pool)
    .await
    .unwrap();
    m.ok(rerun(&first, true)).await;
    let third = m.run(&format!("{first}~3")).await;
    assert_eq!(
        (third.generation, third.kept.clone()),
        (3, vec!["main".to_owned()])
    );
    // Generations count from the first whichever one is run again; what is not finished, or
    // a recovery of what did not fail, is refused.
    let refused = m.refused(rerun(&third.run_id, false)).await;
    assert!(refused.contains("the run is requested"), "{refused}");
    // Nor is the first run again while a later generation of it goes.
    let refused = m.refused(rerun(&first, false)).await;
    assert!(
        refused.contains(&format!(
            "`{first}~3`, a generation of the same run, has not finished"
        )),
        "{refused}"
    );
    m.ok(Command::KillRun {
        run_id: third.run_id.clone(),
    })
    .await;
    m.ok(rerun(&third.run_id, true)).await;
    let fourth = m.run(&format!("{first}~4")).await;
    assert_eq!(
        (fourth.rerun_of.as_deref(), fourth.kept.clone()),
        (Some(first.as_str()), vec!["main".to_owned()]),
        "a recovery of a recovery keeps what the earlier one kept"
    );
    m.report_ok(
        "a",
        "nj-main",
        vec![event(
            p,
            epoch,
            fire_ms(1),
            RunState::Skipped,
            fire_ms(1) + 1,
        )],
    )
    .await;
    let refused = m
        .refused(rerun(&record("ads.nightly", fire_ms(1)), true))
        .await;
    assert!(refused.contains("recover: the run skipped"), "{refused}");
    let refused = m.refused(rerun("ads.nightly@nope", false)).await;
    assert!(
        refused.contains("run `ads.nightly@nope` does not exist"),
        "{refused}"
    );
}

/// Issue #20: a backfill hands the holder a range's records at most `parallel` at a time —
/// listed as the backfill's, so they run whatever the catch-up policy says — and hands the
/// next as each run ends; paused it hands nothing, resumed it goes on, cancelled it drops the
/// rest; `all` runs a record that ran again one generation further; bad requests are refused
/// naming the field, and change nothing.
#[tokio::test]
async fn a_backfill_hands_its_records_at_most_parallel_at_a_time() {
    use meridian_plane::model::backfills::{self, BackfillState, Created};
    use meridian_plane::model::{Backfill, BackfillAction, BackfillControl, BackfillOrder};
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    assert_eq!(m.beat(T0, "a", "nj-main").await.leases.len(), 16);
    let epoch = m.lease("nj-main", p).await.epoch;
    let claims = vec![ClaimedLease {
        cluster: "nj-main".into(),
        partition: p,
        epoch,
    }];
    let assigned = |pool: SqlitePool| {
        let claims = claims.clone();
        async move {
            let mut all = query::assignments(&pool, "a", "nj-main", &claims, None, 0)
                .await
                .unwrap()
                .0;
            all.remove(0)
        }
    };
    // `ads/nightly` fires daily at 02:00 and was created on 2023-11-14: ten fire times from
    // 1 to 10 November are before it.
    let day = |d: i64| 1_698_804_000_000 + (d - 1) * 86_400_000; // 2023-11-0d 02:00Z
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let backfill = |from: i64, to: i64, parallel: u32, all: bool| {
        Command::CreateBackfill(Backfill {
            tenant: n("ads"),
            schedule: n("nightly"),
            from: at(from),
            to: at(to),
            parallel,
            order: BackfillOrder::Asc,
            all,
        })
    };
    for (bad, says) in [
        (
            backfill(day(1), day(10), 0, false),
            "parallel: must be 1 to 256, not 0",
        ),
        (backfill(day(10), day(1), 1, false), "to: 2023-11-01"),
        (
            backfill(day(1) + 1, day(1) + 2, 1, false),
            "from: no fire time of the schedule",
        ),
        (
            backfill(T0, T0 + 86_400_000, 1, false),
            "from: the schedule fires its records from",
        ),
    ] {
        let refused = m.refused(bad).await;
        assert!(refused.contains(says), "{refused}");
    }
    let created = m.ok(backfill(day(1) - 1, day(10), 3, false)).await;
    let created: Created = serde_json::from_str(&created.detail.unwrap()).unwrap();
    assert_eq!(created.total, 10);
    assert!(
        created.id.starts_with("ads.nightly@backfill-"),
        "{}",
        created.id
    );
    let a = assigned(m.pool.clone()).await;
    assert_eq!(
        a.backfill,
        [day(1), day(2), day(3)],
        "three at once, oldest first"
    );
    assert!(a.returned.is_empty(), "not left to the catch-up policy");
    let run = |d: i64, state: RunState| event(p, epoch, day(d), state, T0 + d);
    // The holder takes two and finishes the first: the fourth is handed.
    m.report_ok(
        "a",
        "nj-main",
        vec![run(1, RunState::Started), run(2, RunState::Started)],
    )
    .await;
    assert_eq!(assigned(m.pool.clone()).await.backfill, [day(3)]);
    m.report_ok("a", "nj-main", vec![run(1, RunState::Succeeded)])
        .await;
    assert_eq!(assigned(m.pool.clone()).await.backfill, [day(3), day(4)]);
    let progress = |pool: SqlitePool, id: String| async move {
        backfills::get(&pool, &id).await.unwrap().unwrap()
    };
    let b = progress(m.pool.clone(), created.id.clone()).await;
    assert_eq!(
        (
            b.state,
            b.progress.succeeded,
            b.progress.running,
            b.progress.remaining
        ),
        (BackfillState::Running, 1, 3, 6)
    );
    assert_eq!(b.requested_by.as_deref(), Some("alice"));
    // Paused: the second ends and nothing is handed; resumed: the fifth is.
    let control = |action| {
        Command::ControlBackfill(BackfillControl {
            id: created.id.clone(),
            action,
        })
    };
    m.ok(control(BackfillAction::Pause)).await;
    m.report_ok("a", "nj-main", vec![run(2, RunState::Failed)])
        .await;
    assert_eq!(assigned(m.pool.clone()).await.backfill, [day(3), day(4)]);
    m.ok(control(BackfillAction::Resume)).await;
    assert_eq!(
        assigned(m.pool.clone()).await.backfill,
        [day(3), day(4), day(5)]
    );
    // Cancelled: the rest is dropped; what was handed still runs, and ends it.
    m.ok(control(BackfillAction::Cancel)).await;
    let b = progress(m.pool.clone(), created.id.clone()).await;
    assert_eq!(
        (
            b.state,
            b.progress.failed,
            b.progress.dropped,
            b.progress.remaining
        ),
        (BackfillState::Cancelled, 1, 5, 0)
    );
    let refused = m.refused(control(BackfillAction::Resume)).await;
    assert!(
        refused.contains("the backfill is cancelled already"),
        "{refused}"
    );
    for d in 3..=5 {
        m.report_ok(
            "a",
            "nj-main",
            vec![run(d, RunState::Started), run(d, RunState::Succeeded)],
        )
        .await;
    }
    let b = progress(m.pool.clone(), created.id.clone()).await;
    assert_eq!((b.progress.succeeded, b.progress.running), (4, 0));
    assert!(b.finished_ms.is_some());
    assert!(assigned(m.pool.clone()).await.backfill.is_empty());
    // Only the missing: the first five ran, so only the rest would; `all` runs the first two
    // again as their second generation.
    let refused = m.refused(backfill(day(1), day(2), 1, false)).await;
    assert!(refused.contains("nothing to fill"), "{refused}");
    let again = m.ok(backfill(day(1), day(2), 2, true)).await;
    let again: Created = serde_json::from_str(&again.detail.unwrap()).unwrap();
    assert_eq!(again.total, 2);
    let generations: Vec<(String, String)> =
        sqlx::query_as("SELECT run_id, state FROM runs WHERE rerun_of IS NOT NULL ORDER BY run_id")
            .fetch_all(&m.pool)
            .await
            .unwrap();
    assert_eq!(
        generations,
        [
            (
                format!("{}~2", record("ads.nightly", day(1))),
                "requested".into()
            ),
            (
                format!("{}~2", record("ads.nightly", day(2))),
                "requested".into()
            ),
        ]
    );
    let rest = m.ok(backfill(day(1), day(10), 8, false)).await;
    let rest: Created = serde_json::from_str(&rest.detail.unwrap()).unwrap();
    assert_eq!((rest.total, rest.left_out.ran), (5, 5));
    // A deleted schedule's backfills end.
    m.ok(Command::DeleteSchedule {
        tenant: n("ads"),
        name: n("nightly"),
    })
    .await;
    let b = progress(m.pool.clone(), rest.id.clone()).await;
    assert_eq!(b.state, BackfillState::Cancelled);
}

/// Issue #20: a grant's `max_concurrent_runs` is split into shares through the heartbeats:
/// an idle agent holds its fair part, one with runs waiting gets what the other gives up once
/// that one says it keeps to less, and what others may be using is never granted again.
#[tokio::test]
async fn a_grant_is_shared_among_the_agents_and_never_granted_twice() {
    use meridian_plane::model::QuotaUsage;
    let mut m = Model::new().await;
    m.federation().await;
    let usage = |going: u32, waiting: u32, share: u32| QuotaUsage {
        tenant: "ads".into(),
        environment: "prod-nj".into(),
        going,
        waiting,
        share,
    };
    let share = |o: &HeartbeatOutcome| {
        o.shares
            .iter()
            .find(|s| s.tenant == "ads" && s.environment == "prod-nj")
            .map(|s| s.share)
    };
    // Alone, `a` holds the grant's 5.
    let a = m.beat(T0, "a", "nj-main").await;
    assert_eq!((share(&a), a.shares_valid_ms), (Some(5), LEASE_MS as u64));
    let beat = |agent: &str, u: QuotaUsage| Heartbeat {
        usage: vec![u],
        ..heartbeat(agent, "nj-main")
    };
    // `b` joins with runs waiting: nothing is free while `a` may use 5.
    assert_eq!(
        share(&m.heartbeat(T0 + 1, beat("b", usage(0, 4, 0))).await),
        Some(0)
    );
    // `a`, idle, shrinks to what it uses (someone is waiting) …
    assert_eq!(
        share(&m.heartbeat(T0 + 2, beat("a", usage(0, 0, 5))).await),
        Some(0)
    );
    // … but counts at the 5 it said it keeps to until it says less.
    assert_eq!(
        share(&m.heartbeat(T0 + 3, beat("b", usage(0, 4, 0))).await),
        Some(0)
    );
    // Now at 0 — with one run still going (it started before), which it keeps a share for.
    assert_eq!(
        share(&m.heartbeat(T0 + 4, beat("a", usage(1, 0, 0))).await),
        Some(1)
    );
    // `b` gets the other four.
    assert_eq!(
        share(&m.heartbeat(T0 + 5, beat("b", usage(0, 4, 0))).await),
        Some(4)
    );
    // An agent of another cluster says nothing of this grant.
    m.ok(Command::CreateCluster(cluster("nj-spare", "nj", None)))
        .await;
    let x = Heartbeat {
        usage: vec![usage(5, 0, 5)],
        ..heartbeat("x", "nj-spare")
    };
    m.heartbeat(T0 + 6, x).await;
    assert_eq!(
        share(&m.heartbeat(T0 + 7, beat("b", usage(4, 0, 4))).await),
        Some(4)
    );
    // `a` silent for two leases: its part (the one run it said it had) is no longer counted.
    let later = T0 + 5 + 2 * LEASE_MS + 1;
    assert_eq!(
        share(&m.heartbeat(later, beat("b", usage(4, 1, 4))).await),
        Some(5)
    );
    // Lowered below what `b` runs: nothing more for anyone until it is under.
    m.ok(Command::UpdateGrant(Grant {
        tenant: n("ads"),
        environment: n("prod-nj"),
        max_concurrent_runs: 2,
    }))
    .await;
    assert_eq!(
        share(&m.heartbeat(later + 1, beat("b", usage(5, 0, 5))).await),
        Some(2)
    );
    assert_eq!(
        share(&m.heartbeat(later + 2, beat("c", usage(0, 3, 0))).await),
        Some(0)
    );
}

/// Issue #21: a retirement moves out the runs finished before its cut-off that nothing still
/// points at, counts them on in `run_hours`, and a late copy of a retired run's report is
/// refused instead of making the run anew.
#[tokio::test]
async fn finished_runs_retire_and_a_late_report_of_one_is_refused() {
    use meridian_plane::model::retire::{self, RetireRuns};
    let mut m = Model::new().await;
    let p = m.scheduled().await;
    let a = m.beat(T0, "a", "nj-main").await;
    let epoch = a.leases.iter().find(|l| l.partition == p).unwrap().epoch;
    let fire = fire_ms(0);
    let attempt = |outcome: AttemptOutcome, at_ms: i64, exit_code: Option<i32>| {
        about_run(
            p,
            epoch,
            ReportItem::Attempt(AttemptEvent {
                run_id: record("ads.nightly", fire),
                task: "main".into(),
                attempt: 1,
                outcome,
                at_ms,
                exit_code,
                message: "done".into(),
                warning: String::new(),
            }),
        )
    };
    let done = vec![
        event(p, epoch, fire, RunState::Started, fire + 1_000),
        attempt(AttemptOutcome::Started, fire + 1_100, None),
        attempt(AttemptOutcome::Succeeded, fire + 1_900, Some(0)),
        event(p, epoch, fire, RunState::Succeeded, fire + 2_000),
    ];
    m.report_ok("a", "nj-main", done.clone()).await;
    let nightly_before = m.run(&record("ads.nightly", fire)).await;
    let attempts_before = query::attempts_in(&m.pool, &record("ads.nightly", fire))
        .await
        .unwrap();
    assert_eq!(attempts_before.len(), 1);
    // Another record still running: not final, so it stays.
    let going = fire_ms(1);
    m.report_ok(
        "a",
        "nj-main",
        vec![event(p, epoch, going, RunState::Started, going + 1_000)],
    )
    .await;
    // A run-now killed before any agent took it.
    m.ok(Command::ApplyWorkflow(workflow("ads", "etl", "true")))
        .await;
    let applied = m
        .ok(Command::RequestRun(RunRequest {
            tenant: n("ads"),
            workflow: n("etl"),
            environment: Some(n("prod-nj")),
        }))
        .await;
    let detail: serde_json::Value = serde_json::from_str(&applied.detail.unwrap()).unwrap();
    let asked = detail["run_id"].as_str().unwrap().to_owned();
    m.ok(Command::KillRun {
        run_id: asked.clone(),
    })
    .await;
    let hours = m.dump_tables(&["run_hours"]).await;
    let retire = |before_ms| {
        Command::RetireRuns(RetireRuns {
            before_ms,
            limit: 100,
            await_archive: false,
        })
    };

    // Before the cut-off nothing finished: nothing goes.
    let pool = m.pool.clone();
    let early = 1_700_000_000_000;
    let cut = RetireRuns {
        before_ms: early,
        limit: 100,
        await_archive: false,
    };
    assert_eq!(retire::due(&pool, &cut).await.unwrap(), 0);
    m.ok(retire(early)).await;
    assert!(
        retire::retiring(&mut pool.acquire().await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    let later = i64::MAX / 2;
    let cut = RetireRuns {
        before_ms: later,
        ..cut
    };
    assert_eq!(retire::due(&pool, &cut).await.unwrap(), 2);
    let index_before = m.index;
    m.ok(retire(later)).await;
    let mut conn = pool.acquire().await.unwrap();
    let gone = retire::retiring(&mut conn).await.unwrap();
    let mut ids: Vec<&str> = gone.iter().map(|(_, r)| r.run.run_id.as_str()).collect();
    ids.sort();
    let mut expected = [record("ads.nightly", fire), asked.clone()];
    expected.sort();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(gone.iter().all(|(index, _)| *index == index_before + 1));
    let nightly = &gone
        .iter()
        .find(|(_, r)| r.run.run_id == record("ads.nightly", fire))
        .unwrap()
        .1;
    // What leaves is what the model held: the row as read, the attempts as read.
    assert_eq!(nightly.run, nightly_before);
    assert_eq!(nightly.attempts, attempts_before);
    assert_eq!(
        retire::retired_through(&mut conn).await.unwrap(),
        index_before + 1
    );
    drop(conn);
    // Out of the model, the running one stays; the hourly counts are as they were.
    let left: Vec<String> = sqlx::query_scalar("SELECT run_id FROM runs ORDER BY run_id")
        .fetch_all(&m.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![record("ads.nightly", going)]);
    assert_eq!(m.dump_tables(&["run_hours"]).await, hours);
    // (The state machine empties `retiring` once the history store has the rows.)
    retire::retired(&mut m.pool.acquire().await.unwrap())
        .await
        .unwrap();

    // The retired run's reports sent again (a lost acknowledgement, an old outbox): refused,
    // the run not made anew.
    let refused = m.report("a", "nj-main", done).await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused[0].1.contains("already in the history store"),
        "{refused:?}"
    );
    assert!(
        query::run_in(&m.pool, &record("ads.nightly", fire))
            .await
            .unwrap()
            .is_none()
    );
    // Nor does a backfill hand the record again: it is left out, saying so.
    use meridian_plane::model::backfills::{Backfill, BackfillOrder};
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let refused = m
        .refused(Command::CreateBackfill(Backfill {
            tenant: n("ads"),
            schedule: n("nightly"),
            from: at(fire),
            to: at(fire),
            parallel: 1,
            order: BackfillOrder::Asc,
            all: true,
        }))
        .await;
    assert!(
        refused.contains("left the model for the history store (1"),
        "{refused}"
    );
}
