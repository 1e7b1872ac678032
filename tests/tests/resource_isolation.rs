//! A task's resources as another user than the agent sees them, against a real S3 server
//! (moto) and real OS users: linked in readable by the task (a hard link, or a copy of its own
//! across file systems, never a symlink into the agent's cache, which it cannot enter), not
//! writable, and another tenant's cached or linked copies out of its reach.
//!
//! Needs root and `useradd` (throw-away users, removed on drop), and fails saying so rather
//! than skip. The rest of where tasks run is tested in `agent/tests/isolation.rs`.

// Shared with the agent's isolation test, which uses all of it.
#[allow(dead_code)]
#[path = "../../agent/tests/common/os_users.rs"]
mod os_users;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_agent::outbox::Outbox;
use meridian_agent::resources::ResourceCache;
use meridian_agent::run_dir;
use meridian_agent::runner::Runner;
use meridian_agent::supervisor::{Supervision, Supervisor};
use meridian_agent::take::LocalRun;
use meridian_bucket::{Bucket, BucketConfig};
use meridian_domain::SystemClock;
use meridian_domain::resource::ResourceKey;
use meridian_domain::run::{Job, OsUser, Report, ReportItem, RunState};
use meridian_domain::workflow::{TaskSpec, WorkflowDefinition};
use meridian_tests::s3::S3Server;
use os_users::OsUsers;
use tokio::sync::{Notify, watch};

const BUCKET: &str = "meridian";
const PATIENCE: Duration = Duration::from_secs(60);

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The client the agent sends HTTP tasks with.
fn http_client() -> reqwest::Client {
    meridian_agent::agent::http_client().expect("an HTTP client")
}

/// A run of `tenant` as `user`, one shell task needing `resources` (key → name).
fn run(
    run_id: &str,
    tenant: &str,
    user: &str,
    work_dir: Option<&Path>,
    script: &str,
    resources: &[(&str, &str)],
    vars: BTreeMap<String, String>,
) -> LocalRun {
    let task = TaskSpec {
        resources: resources
            .iter()
            .map(|(k, n)| (ResourceKey::new(*k).unwrap(), (*n).to_owned()))
            .collect(),
        ..WorkflowDefinition::shell("main", script).tasks.remove(0)
    };
    LocalRun {
        run_id: run_id.into(),
        schedule: None,
        fire_ms: None,
        cluster: "main".into(),
        partition: None,
        epoch: 0,
        state: RunState::Started,
        job: Job {
            tenant: tenant.into(),
            workflow: "etl".into(),
            workflow_version: 1,
            definition: WorkflowDefinition { tasks: vec![task] },
            environment: "prod".into(),
            vars,
            work_dir: work_dir.map(|w| w.display().to_string()),
            os_user: Some(OsUser {
                user: user.into(),
                group: None,
            }),
            allow_agent_user: false,
            rerun: None,
            backfill: false,
        },
    }
}

async fn go(runner: &Runner, run: &LocalRun) -> (RunState, String, String) {
    let (_kill, killed) = watch::channel(false);
    let (state, message) = tokio::time::timeout(PATIENCE, runner.run(run, killed, None))
        .await
        .expect("the run ends");
    let entries = runner.outbox.pending(10_000).await.unwrap();
    let mut chunks: Vec<_> = entries
        .iter()
        .filter_map(|e| {
            let Report::V1 { item, .. } = serde_json::from_str(&e.payload).unwrap();
            match item {
                ReportItem::Log(l) if l.run_id == run.run_id => Some(l),
                _ => None,
            }
        })
        .collect();
    chunks.sort_by_key(|c| (c.attempt, c.offset));
    let log = chunks.into_iter().map(|c| c.data).collect();
    (state, message, log)
}

/// The cached file holding `content` (the cache names files by hash, not by key).
fn cached_file(objects: &Path, content: &[u8]) -> PathBuf {
    std::fs::read_dir(objects)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_none_or(|e| e != "json")
                && std::fs::read(p).is_ok_and(|c| c == content)
        })
        .unwrap_or_else(|| panic!("no cached file holds {content:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_its_own_resources_and_none_of_another_tenants() {
    let mut users = OsUsers::new();
    let a = users.user("a", &[]);
    let b = users.user("b", &[]);
    let server = S3Server::start().await.expect("an S3 server for the test");
    server.create_bucket(BUCKET).await.unwrap();
    server
        .put(BUCKET, "tenants/ads/etl/conf.txt", b"ads-conf\n".to_vec())
        .await
        .unwrap();
    server
        .put(BUCKET, "tenants/bee/secret.txt", b"bee-secret\n".to_vec())
        .await
        .unwrap();

    // An agent's data directory where anyone may pass through to it (like /var/lib).
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let bucket = BucketConfig {
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        attempts: 1,
        ..BucketConfig::new(server.endpoint.clone(), BUCKET)
    };
    let runner = Runner {
        outbox: Outbox::open(&data.join("agent.db")).await.unwrap(),
        clock: Arc::new(SystemClock),
        work_dir: data.join("runs"),
        grace: Duration::from_secs(2),
        http: http_client(),
        reported: Arc::new(Notify::new()),
        // The default link is a symlink, which a task of another user could not follow.
        resources: ResourceCache::open(
            &data.join("resources"),
            Some(Bucket::new(&bucket).unwrap()),
            Default::default(),
            Arc::new(SystemClock),
        )
        .unwrap(),
        hostname: "agent-1".into(),
        supervisor: Supervisor::start(data.join("supervisor"), Supervision::InProcess)
            .await
            .expect("a supervisor"),
    };
    run_dir::secure(&data, &runner.work_dir, &root.path().join("no.key")).unwrap();
    let objects = data.join("resources").join("objects");

    // Tenant B's run reads its resource as B.
    let b_run = run(
        "bee.etl@1",
        "bee",
        &b.name,
        None,
        "cat secret.txt",
        &[("secret.txt", "secret.txt")],
        BTreeMap::new(),
    );
    let (state, message, log) = go(&runner, &b_run).await;
    assert_eq!(
        (state, message.as_str(), log.as_str()),
        (RunState::Succeeded, "", "bee-secret\n")
    );
    let b_dir = runner.work_dir.join(&b_run.run_id);
    let b_cached = cached_file(&objects, b"bee-secret\n");

    let probe = r#"cat conf.txt
[ -L conf.txt ] && echo "a symlink" || echo "not a symlink"
(echo more >> conf.txt) 2>/dev/null && echo "wrote its resource" || echo "resource: read-only"
cat "$B_CACHED" >/dev/null 2>&1 && echo "read B's cached resource" || echo "B's cached resource: denied"
cat "$B_RUN/secret.txt" >/dev/null 2>&1 && echo "read B's linked resource" || echo "B's linked resource: denied"
ls "$CACHE" >/dev/null 2>&1 && echo "listed the cache" || echo "cache: denied"
"#;
    let vars = BTreeMap::from([
        ("B_CACHED".to_owned(), b_cached.display().to_string()),
        ("B_RUN".to_owned(), b_dir.display().to_string()),
        ("CACHE".to_owned(), objects.display().to_string()),
    ]);
    let expected = "ads-conf\nnot a symlink\nresource: read-only\nB's cached resource: denied\n\
                    B's linked resource: denied\ncache: denied\n";

    // On the cache's file system: a hard link to the cached file, which stays the agent's.
    let a_run = run(
        "ads.etl@1",
        "ads",
        &a.name,
        None,
        probe,
        &[("etl/conf.txt", "conf.txt")],
        vars.clone(),
    );
    let (state, message, log) = go(&runner, &a_run).await;
    assert_eq!(
        (state, message.as_str(), log.as_str()),
        (RunState::Succeeded, "", expected)
    );
    let a_cached = cached_file(&objects, b"ads-conf\n");
    let linked = std::fs::symlink_metadata(runner.work_dir.join("ads.etl@1/conf.txt")).unwrap();
    let cached = std::fs::metadata(&a_cached).unwrap();
    assert_eq!(linked.ino(), cached.ino(), "a hard link to the cached file");
    assert_eq!(
        (cached.mode() & 0o7777, cached.uid()),
        (0o444, 0),
        "the cached file is still read-only and the agent's"
    );

    // On another file system (a tmpfs): a copy of its own, read-only.
    let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_ne!(
        std::fs::metadata(elsewhere.path()).unwrap().dev(),
        std::fs::metadata(&data).unwrap().dev(),
        "this test needs /dev/shm on another file system than {} to check the copy",
        data.display()
    );
    set_mode(elsewhere.path(), 0o755);
    let shm_runs = elsewhere.path().join("runs");
    let a_run = run(
        "ads.etl@2",
        "ads",
        &a.name,
        Some(&shm_runs),
        probe,
        &[("etl/conf.txt", "conf.txt")],
        vars,
    );
    let (state, message, log) = go(&runner, &a_run).await;
    assert_eq!(
        (state, message.as_str(), log.as_str()),
        (RunState::Succeeded, "", expected)
    );
    let copied = std::fs::symlink_metadata(shm_runs.join("ads.etl@2/conf.txt")).unwrap();
    assert_eq!(
        (copied.mode() & 0o7777, copied.uid(), copied.gid()),
        (0o400, a.uid, a.gid),
        "a copy of its own, read-only"
    );

    // A task plants a symlink in its own run directory pointing at a place only root may
    // write; the run's next task needs a resource placed through it. Root places resources,
    // so following it would make root's directory and file there: it must fail instead.
    let target = tempfile::tempdir().unwrap();
    set_mode(target.path(), 0o755);
    let planted = TaskSpec {
        name: "plant".into(),
        ..WorkflowDefinition::shell(
            "plant",
            &format!("ln -s {} escape && echo planted", target.path().display()),
        )
        .tasks
        .remove(0)
    };
    let mut through = run(
        "ads.etl@3",
        "ads",
        &a.name,
        None,
        "cat escape/drop-in.d/o.conf",
        &[("etl/conf.txt", "escape/drop-in.d/o.conf")],
        BTreeMap::new(),
    );
    through.job.definition.tasks[0].depends_on = vec!["plant".into()];
    through.job.definition.tasks.insert(0, planted);
    let (state, message, log) = go(&runner, &through).await;
    assert_eq!(state, RunState::Failed, "{message}: {log}");
    assert!(log.contains("planted"), "{log}");
    assert_eq!(
        std::fs::read_dir(target.path()).unwrap().count(),
        0,
        "nothing was made through the planted symlink"
    );
    // The attempt that needed the resource failed saying why.
    let reported: Vec<String> = runner
        .outbox
        .pending(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .filter(|p| p.contains("ads.etl@3"))
        .collect();
    assert!(
        reported.iter().any(|p| p.contains("`escape` is a symlink")),
        "{reported:?}"
    );
}
