//! The command processor over a real SQLite file: validation, refusals that change nothing,
//! versions, the audit trail.

use meridian_plane::model::processor::{self, ApplyError, Refusal};
use meridian_plane::model::{
    Cluster, ClusterRole, Command, DataCenter, Environment, Grant, Name, Proposal, Schedule,
    Tenant, Workflow, query,
};
use meridian_proto::ScheduleSpec;
use meridian_proto::workflow::WorkflowDefinition;
use sqlx::{Row, SqlitePool};

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
        self.index += 1;
        let proposal = Proposal::new("alice", 1_700_000_000_000 + self.index as i64, command);
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
        assert_eq!(self.dump().await, before, "a refused command changed state");
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
            without_batches(self.dump().await),
            without_batches(before),
            "a refused command in a batch changed state"
        );
        err
    }

    /// Every row of every table, to prove a refusal left no trace.
    async fn dump(&self) -> Vec<String> {
        let mut out = vec![];
        for table in [
            "data_centers",
            "clusters",
            "environments",
            "tenants",
            "grants",
            "workflows",
            "schedules",
            "audit",
        ] {
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

    let audit = query::audit(&m.pool, 0, 100).await.unwrap();
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
    assert_eq!(query::workflows(&m.pool, None).await.unwrap().len(), 1);

    // Deleted and re-applied: versions keep counting up, never reused.
    m.ok(Command::DeleteWorkflow {
        tenant: n("ads"),
        name: n("etl"),
    })
    .await;
    assert!(query::workflows(&m.pool, None).await.unwrap().is_empty());
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
    assert_eq!(query::audit(&m.pool, 0, 10).await.unwrap().len(), 1);
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
    let audit = query::audit(&m.pool, 0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].op, "batch");
    assert_eq!(audit[0].command["batch"].as_array().unwrap().len(), 4);
}
