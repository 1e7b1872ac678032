//! The plane as a replicated service: three nodes over mutual TLS on loopback.

use std::time::{Duration, Instant};

use meridian_plane::certs;
use meridian_plane::model::processor::{RefusalKind, Rejection};
use meridian_plane::model::{Command, DataCenter, Name, Proposal, query};
use meridian_plane::raft::Outcome;
use meridian_plane::raft::ask::AskError;
use meridian_plane::raft::node::Timing;
use meridian_proto::pb::RaftPayload;
use meridian_proto::pb::plane_peer_client::PlanePeerClient;
use meridian_tests::cluster::{Cluster, hostname};
use meridian_transport::{Role, TlsMaterial, dial};

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn create_dc(name: &str) -> Proposal {
    Proposal::new(
        "test",
        0,
        Command::CreateDataCenter(DataCenter {
            name: Name::new(name).unwrap(),
            description: String::new(),
        }),
    )
}

/// Creates data centers `dc-000` … through node `i`, each write acknowledged.
async fn write_dcs(cluster: &Cluster, i: usize, how_many: usize) {
    for n in 0..how_many {
        cluster
            .node(i)
            .write(create_dc(&format!("dc-{n:03}")), WRITE_TIMEOUT)
            .await
            .unwrap();
    }
}

async fn dc_names(cluster: &Cluster, i: usize) -> Vec<String> {
    query::data_centers(cluster.node(i).state.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_follower_reaches_every_node() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let outcome = cluster
        .node(follower)
        .write(create_dc("nj"), WRITE_TIMEOUT)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Applied(ref a) if a.subject == "data center nj"));
    cluster.wait_converged().await;
    for i in 0..3 {
        assert_eq!(dc_names(&cluster, i).await, ["nj"], "{}", hostname(i));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_leaves_no_trace_on_any_node() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let outcome = cluster
        .node(leader)
        .write(
            Proposal::new(
                "test",
                0,
                Command::DeleteDataCenter {
                    name: Name::new("nowhere").unwrap(),
                },
            ),
            WRITE_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Refused(Rejection {
            kind: RefusalKind::Missing,
            message: "deleting data center `nowhere`: data center `nowhere` does not exist".into()
        })
    );
    cluster.wait_converged().await;
    for i in 0..3 {
        let pool = cluster.node(i).state.pool();
        assert!(query::data_centers(pool).await.unwrap().is_empty());
        assert!(
            query::audit(pool, &query::AuditFilter::applied(10))
                .await
                .unwrap()
                .is_empty()
        );
        // The refusal itself is recorded, the same on every node.
        let all = query::audit(pool, &query::AuditFilter::recent(10))
            .await
            .unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].outcome, "refused");
    }
    cluster.shutdown().await;
}

/// Writes keep coming from a follower while the leader is killed: every write that was
/// acknowledged is on every surviving node afterwards, and a new leader takes writes quickly.
/// One forwarded as the leader died may break mid-call: it is unconfirmed (never "failed"),
/// and may or may not be there afterwards — the same on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_leader_being_killed() {
    let mut cluster = Cluster::start(3).await;
    let old_leader = cluster.leader().await;
    let writer = (old_leader + 1) % 3;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        cluster
            .node(writer)
            .write(create_dc(&name), WRITE_TIMEOUT)
            .await
            .unwrap();
        acknowledged.push(name);
    }
    cluster.kill(old_leader).await;
    let killed_at = Instant::now();
    let mut first_after: Option<Duration> = None;
    let mut unconfirmed = Vec::new();
    for i in 0..20 {
        let name = format!("after-{i}");
        match cluster
            .node(writer)
            .write(create_dc(&name), WRITE_TIMEOUT)
            .await
        {
            Ok(outcome) => {
                assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
                first_after.get_or_insert(killed_at.elapsed());
                acknowledged.push(name);
            }
            Err(AskError::Unconfirmed(why)) => {
                println!("{name}: unconfirmed ({why})");
                unconfirmed.push(name);
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let failover = first_after.unwrap();
    println!(
        "leader killed -> first write committed by the new leader: {failover:?}; \
         {} unconfirmed",
        unconfirmed.len()
    );
    assert_ne!(cluster.leader().await, old_leader);
    cluster.wait_converged().await;
    acknowledged.sort();
    let first = cluster.running().next().unwrap();
    let on_first = dc_names(&cluster, first).await;
    for i in cluster.running().collect::<Vec<_>>() {
        let names = dc_names(&cluster, i).await;
        assert_eq!(names, on_first, "{}", hostname(i));
        let (confirmed, other): (Vec<_>, Vec<_>) =
            names.into_iter().partition(|n| acknowledged.contains(n));
        assert_eq!(confirmed, acknowledged, "{}", hostname(i));
        assert!(
            other.iter().all(|n| unconfirmed.contains(n)),
            "{}: {other:?}",
            hostname(i)
        );
    }
    cluster.shutdown().await;
}

/// A node down while many entries commit, and while the leader compacts its log behind a
/// snapshot, catches up when it returns; a crash-restarted node serves the same state. (That
/// the catch-up took the snapshot path is not asserted yet: see the issue #3 note.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_compacted_entries_catches_up() {
    let timing = Timing {
        snapshot_every: 20,
        keep_after_snapshot: 0,
        ..Timing::default()
    };
    let mut cluster = Cluster::start_with(3, timing).await;
    let leader = cluster.leader().await;
    let down = (leader + 1) % 3;
    cluster.kill(down).await;
    write_dcs(&cluster, leader, 80).await;
    // Make sure the leader compacted its log past what the down node has.
    cluster
        .node(leader)
        .raft
        .trigger()
        .snapshot()
        .await
        .unwrap();
    cluster
        .node(leader)
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 80),
            "leader snapshot",
        )
        .await
        .unwrap();
    cluster
        .node(leader)
        .raft
        .trigger()
        .purge_log(80)
        .await
        .unwrap();
    // The trigger only queues the purge; restart the node once it has happened, or the node
    // could still be fed from the log.
    cluster
        .node(leader)
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= 80), "leader purge")
        .await
        .unwrap();

    cluster.restart(down).await;
    cluster.wait_converged().await;
    let expected = dc_names(&cluster, leader).await;
    assert_eq!(expected.len(), 80);
    assert_eq!(dc_names(&cluster, down).await, expected);
    // The entries it missed were purged on the leader: it can only have them from a snapshot.
    // (Metrics trail the state machine, so wait for them rather than read them once.)
    let installed = cluster
        .node(down)
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 80),
            "snapshot installed",
        )
        .await;
    assert!(
        installed.is_ok(),
        "no snapshot installed on the restarted node: {installed:?}"
    );

    // And after a crash-restart it serves exactly the same state, from its own disk.
    cluster.kill(down).await;
    cluster.restart(down).await;
    cluster.wait_converged().await;
    assert_eq!(dc_names(&cluster, down).await, expected);
    cluster.shutdown().await;
}

/// Every node snapshots on its own once `snapshot_every` entries have been applied since its
/// last (openraft's own policy is off: `raft::compaction` decides; when, its unit tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_snapshots_on_its_own_after_snapshot_every_entries() {
    let timing = Timing {
        snapshot_every: 30,
        ..Timing::default()
    };
    let cluster = Cluster::start_with(3, timing).await;
    let leader = cluster.leader().await;
    write_dcs(&cluster, leader, 40).await;
    for i in cluster.running().collect::<Vec<_>>() {
        let snapshotted = cluster
            .node(i)
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= 30), "snapshot")
            .await;
        assert!(snapshotted.is_ok(), "{}: {snapshotted:?}", hostname(i));
    }
    cluster.shutdown().await;
}

async fn call_vote(
    cluster: &Cluster,
    tls: &TlsMaterial,
    server: usize,
) -> Result<(), tonic::Status> {
    let endpoint = format!("{}:{}", hostname(server), cluster.node(server).node.port);
    let channel = dial(
        &endpoint,
        tls,
        std::sync::Arc::new(cluster.hosts()),
        Duration::from_secs(3),
    )
    .unwrap();
    PlanePeerClient::new(channel)
        .vote(RaftPayload {
            version: 1,
            data: vec![],
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_federation_plane_certificate_are_refused() {
    let cluster = Cluster::start(1).await;

    // A certificate from another CA: the TLS handshake fails.
    let other_ca = certs::new_ca("someone else").unwrap();
    let stranger = certs::issue(&other_ca, "plane-9.test", Role::Plane, None).unwrap();
    let tls = TlsMaterial {
        ca: cluster.ca.cert.clone().into_bytes(),
        cert: stranger.cert.into_bytes(),
        key: stranger.key.into_bytes(),
    };
    let err = call_vote(&cluster, &tls, 0).await.unwrap_err();
    assert!(
        !matches!(err.code(), tonic::Code::Ok | tonic::Code::InvalidArgument),
        "a stranger's certificate got through: {err:?}"
    );

    // An agent certificate from the right CA: TLS passes, PlanePeer refuses.
    let agent = certs::issue(&cluster.ca, "agent-1.test", Role::Agent, Some("c")).unwrap();
    let tls = TlsMaterial {
        ca: cluster.ca.cert.clone().into_bytes(),
        cert: agent.cert.into_bytes(),
        key: agent.key.into_bytes(),
    };
    let err = call_vote(&cluster, &tls, 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // A real plane certificate gets as far as decoding the (empty) payload.
    let err = call_vote(&cluster, &cluster.tls(0), 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_hostname_is_refused_by_the_client() {
    let cluster = Cluster::start(1).await;
    // Dial plane-1's port under the name plane-2.test: the certificate it presents says
    // plane-1.test, so verification against the dialled hostname fails.
    let mut hosts = cluster.hosts();
    hosts.0.insert("plane-2.test".into(), "127.0.0.1".into());
    let endpoint = format!("plane-2.test:{}", cluster.node(0).node.port);
    let channel = dial(
        &endpoint,
        &cluster.tls(0),
        std::sync::Arc::new(hosts),
        Duration::from_secs(3),
    )
    .unwrap();
    let err = PlanePeerClient::new(channel)
        .vote(RaftPayload {
            version: 1,
            data: vec![],
        })
        .await
        .unwrap_err();
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(" <- {s}"));
        source = s.source();
    }
    assert!(chain.contains("not valid for name"), "{chain}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_catches_up_when_healed() {
    let mut cluster = Cluster::start(3).await;
    let old = cluster.leader().await;
    cluster.isolate(old);
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = cluster.wait_for_leader_among(&majority).await;
    assert_ne!(new, old);
    cluster
        .node(new)
        .write(create_dc("during-partition"), WRITE_TIMEOUT)
        .await
        .unwrap();
    // The cut-off node cannot commit anything: a write through it finds no reachable leader.
    let cut_off = cluster
        .node(old)
        .write(create_dc("minority"), Duration::from_millis(1500))
        .await;
    assert!(cut_off.is_err(), "a minority node committed {cut_off:?}");
    assert!(
        !dc_names(&cluster, old)
            .await
            .contains(&"during-partition".to_string())
    );

    cluster.heal();
    cluster.wait_converged().await;
    for i in 0..3 {
        assert_eq!(
            dc_names(&cluster, i).await,
            ["during-partition"],
            "{}",
            hostname(i)
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_barrier_on_a_lagging_follower_waits_for_the_leaders_writes() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let lagging = (leader + 1) % 3;
    // The follower hears nothing from the leader, but the leader still has a quorum.
    cluster.partition(leader, lagging);
    cluster
        .node(leader)
        .write(create_dc("fresh"), WRITE_TIMEOUT)
        .await
        .unwrap();
    assert!(dc_names(&cluster, lagging).await.is_empty(), "not lagging");
    // The barrier must fail while the follower cannot learn the read index...
    let blocked = cluster
        .node(lagging)
        .read_barrier(Duration::from_millis(300))
        .await;
    assert!(blocked.is_err(), "{blocked:?}");
    // ...and once it can, it returns only after the write is applied locally.
    cluster.heal();
    cluster
        .node(lagging)
        .read_barrier(WRITE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(dc_names(&cluster, lagging).await, ["fresh"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_member_and_marks_a_dead_one_unreachable() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let dead = (leader + 1) % 3;
    let asker = (leader + 2) % 3;
    cluster.kill(dead).await;
    let status = cluster
        .node(asker)
        .plane_status(Duration::from_secs(2))
        .await;
    assert_eq!(status.len(), 3);
    for s in &status {
        let i = (0..3).find(|i| hostname(*i) == s.hostname).unwrap();
        assert!(s.voter, "{s:?}");
        if i == dead {
            assert!(!s.reachable && s.role == "unknown", "{s:?}");
        } else {
            assert!(s.reachable, "{s:?}");
            assert_eq!(s.leader.as_deref(), Some(hostname(leader).as_str()));
            assert_eq!(s.role, if i == leader { "leader" } else { "follower" });
            assert!(s.term >= 1 && s.applied_index.is_some(), "{s:?}");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_through_a_follower_leaves_the_membership() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let removed = (leader + 2) % 3;
    cluster
        .node(follower)
        .remove(&hostname(removed), WRITE_TIMEOUT)
        .await
        .unwrap();
    let members: Vec<String> = cluster
        .node(leader)
        .status()
        .members
        .into_iter()
        .map(|n| n.hostname)
        .collect();
    assert!(!members.contains(&hostname(removed)), "{members:?}");
    assert_eq!(members.len(), 2);
    let again = cluster
        .node(follower)
        .remove(&hostname(removed), WRITE_TIMEOUT)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("not a member"), "{again}");
    cluster.shutdown().await;
}

/// Issue #18, rolling upgrades: a follower of an older version is sent an entry it cannot
/// read (here a data center with a field it does not know, as a newer leader would write).
/// It refuses the whole AppendEntries, naming the field, and neither logs nor applies
/// anything of it, so it never diverges; the leader keeps retrying it until the node is
/// upgraded. The same request without the unknown field decodes (and is answered as Raft
/// answers a stale term).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_follower_refuses_an_entry_it_cannot_read_and_changes_nothing() {
    use meridian_plane::raft::{Entry, Request, TypeConfig, encode};
    use openraft::raft::AppendEntriesRequest;

    let cluster = Cluster::start(1).await;
    cluster
        .node(0)
        .write(create_dc("nj"), WRITE_TIMEOUT)
        .await
        .unwrap();
    // The metrics catch up with the write a moment after it is answered: wait for them, or
    // `after` below would see the write's own apply.
    let before = loop {
        let m = cluster.node(0).raft.metrics().borrow().clone();
        if m.last_applied.map(|l| l.index) == m.last_log_index {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let stale = before.current_term.saturating_sub(1);
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(stale, 7),
        prev_log_id: before
            .last_log_index
            .map(|i| openraft::testing::log_id(stale, 7, i)),
        entries: vec![Entry {
            log_id: openraft::testing::log_id(stale, 7, before.last_log_index.unwrap_or(0) + 1),
            payload: openraft::EntryPayload::Normal(Request(create_dc("sg"))),
        }],
        leader_commit: None,
    };
    let readable = encode(&rpc).unwrap();
    // Same length, so the binary framing around the proposal's JSON stays valid.
    let newer = {
        let text = b"\"description\"";
        let at = readable
            .windows(text.len())
            .position(|w| w == text)
            .expect("the proposal's JSON is in the payload");
        let mut bytes = readable.clone();
        bytes[at..at + text.len()].copy_from_slice(b"\"descriptiox\"");
        bytes
    };
    let endpoint = format!("{}:{}", hostname(0), cluster.node(0).node.port);
    let channel = dial(
        &endpoint,
        &cluster.tls(0),
        std::sync::Arc::new(cluster.hosts()),
        Duration::from_secs(3),
    )
    .unwrap();
    let mut client = PlanePeerClient::new(channel);
    let err = client
        .append_entries(RaftPayload {
            version: 1,
            data: newer,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("unknown field `descriptiox`"),
        "{}",
        err.message()
    );
    let after = cluster.node(0).raft.metrics().borrow().clone();
    assert_eq!(after.last_log_index, before.last_log_index);
    assert_eq!(after.last_applied, before.last_applied);
    assert_eq!(dc_names(&cluster, 0).await, ["nj"]);
    // The control: the same request, readable, is decoded and answered (its term is stale,
    // so Raft refuses it without touching the log).
    client
        .append_entries(RaftPayload {
            version: 1,
            data: readable,
        })
        .await
        .expect("a readable request is answered");
    assert_eq!(
        cluster.node(0).raft.metrics().borrow().last_log_index,
        before.last_log_index
    );
    assert_eq!(dc_names(&cluster, 0).await, ["nj"]);
    cluster.shutdown().await;
}

/// Issue #21: finished runs leave the replicated model for every node's history store; a node
/// that catches up by a snapshot taken after they left copies them from a peer, and then every
/// node lists the same runs. Each node with its own SQLite store here, all three sharing one
/// PostgreSQL database below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_runs_leave_the_snapshot_and_a_node_that_missed_them_copies_them_in() {
    let cluster = Cluster::start_with(3, retiring_timing()).await;
    retired_runs_leave_the_snapshot(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_runs_go_to_one_postgresql_database_the_nodes_share() {
    let pg = meridian_tests::postgres::Postgres::start().expect("PostgreSQL");
    let url = pg.database("plane_history").await.unwrap();
    let cluster = Cluster::start_with_history(3, retiring_timing(), |_| {
        meridian_plane::history_store::HistoryConfig {
            url: Some(url.clone()),
            ..Default::default()
        }
    })
    .await;
    retired_runs_leave_the_snapshot(cluster).await;
}

fn retiring_timing() -> Timing {
    Timing {
        snapshot_every: 50,
        keep_after_snapshot: 0,
        ..Timing::default()
    }
}

async fn retired_runs_leave_the_snapshot(mut cluster: Cluster) {
    use meridian_domain::workflow::WorkflowDefinition;
    use meridian_plane::model::query::RunFilter;
    use meridian_plane::model::{
        Cluster as PlaneCluster, ClusterRole, Environment, Grant, RunRequest, Tenant, Workflow,
    };
    use meridian_plane::retirement::Retirer;
    let leader = cluster.leader().await;
    let n = |s: &str| Name::new(s).unwrap();
    let write = async |cluster: &Cluster, command: Command| {
        let outcome = cluster
            .node(leader)
            .write(
                // Stamped now: the retention sweep of a node starting later keeps the runs.
                Proposal::new(
                    "test",
                    meridian_domain::Clock::now_ms(&meridian_domain::SystemClock),
                    command,
                ),
                WRITE_TIMEOUT,
            )
            .await
            .unwrap();
        match outcome {
            Outcome::Applied(a) => a,
            other => panic!("{other:?}"),
        }
    };
    write(&cluster, create_dc("nj").command().clone()).await;
    for command in [
        Command::CreateCluster(PlaneCluster {
            name: n("nj-main"),
            dc: n("nj"),
            role: ClusterRole::Active,
            backup: None,
            partitions: 4,
            lease_seconds: 30,
        }),
        Command::CreateEnvironment(Environment {
            name: n("prod-nj"),
            cluster: n("nj-main"),
            vars: Default::default(),
            work_dir: None,
            queue: None,
            run_as: Default::default(),
        }),
        Command::CreateTenant(Tenant {
            name: n("ads"),
            description: String::new(),
            log_retention_days: None,
            history_retention_days: None,
        }),
        Command::CreateGrant(Grant {
            tenant: n("ads"),
            environment: n("prod-nj"),
            max_concurrent_runs: 5,
        }),
        Command::ApplyWorkflow(Workflow {
            tenant: n("ads"),
            name: n("etl"),
            environment: None,
            definition: WorkflowDefinition::shell("main", "true"),
        }),
    ] {
        write(&cluster, command).await;
    }
    let ask = Command::RequestRun(RunRequest {
        tenant: n("ads"),
        workflow: n("etl"),
        environment: Some(n("prod-nj")),
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        let applied = write(&cluster, Command::Batch(vec![ask.clone(); 100])).await;
        for item in applied.items {
            let detail = item.unwrap().detail.unwrap();
            let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
            ids.push(detail["run_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), 300);
    // All but each tenth killed: 270 final runs, 30 still asked for.
    let kills: Vec<Command> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, id)| Command::KillRun { run_id: id.clone() })
        .collect();
    write(&cluster, Command::Batch(kills)).await;
    cluster.wait_converged().await;
    let all = RunFilter {
        limit: Some(10_000),
        ..RunFilter::default()
    };
    let before = cluster.node(leader).state.runs().runs(&all).await.unwrap();
    assert_eq!(before.len(), 300);
    let model_runs = async |cluster: &Cluster, i: usize| -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM runs")
            .fetch_one(cluster.node(i).state.pool())
            .await
            .unwrap()
    };

    // One node down; the leader's retirer moves the final runs out (kept 0 h), then the log is
    // compacted past the retirement, so the down node can only catch up by a snapshot.
    let down = (leader + 1) % 3;
    cluster.kill(down).await;
    let retirer = Retirer {
        core: cluster.node(leader).core(),
        clock: std::sync::Arc::new(meridian_domain::SystemClock),
        keep_ms: 0,
        archiving: false,
    };
    while retirer.round().await.unwrap() {}
    assert_eq!(model_runs(&cluster, leader).await, 30);
    assert_eq!(
        cluster.node(leader).state.history().count().await.unwrap(),
        270
    );
    assert_eq!(
        cluster.node(leader).state.runs().runs(&all).await.unwrap(),
        before,
        "the leader lists other runs after the retirement"
    );
    for _ in 0..60 {
        write(&cluster, create_dc("filler").command().clone()).await;
        write(&cluster, Command::DeleteDataCenter { name: n("filler") }).await;
    }
    let raft = &cluster.node(leader).raft;
    raft.trigger().snapshot().await.unwrap();
    let last = cluster.node(leader).status().applied_index.unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last), "snapshot")
        .await
        .unwrap();
    raft.trigger().purge_log(last).await.unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "purge")
        .await
        .unwrap();

    cluster.restart(down).await;
    cluster.wait_converged().await;
    assert_eq!(model_runs(&cluster, down).await, 30);
    // Its filler copies the 270 retired runs from a peer.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = cluster.node(down).state.history();
        if history.gaps().await.unwrap().is_empty() && history.count().await.unwrap() == 270 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gap was not filled in 30 s: gaps {:?}, {} runs",
            history.gaps().await.unwrap(),
            history.count().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        assert_eq!(
            cluster.node(i).state.runs().runs(&all).await.unwrap(),
            before,
            "{} lists other runs",
            hostname(i)
        );
    }
    cluster.shutdown().await;
}

/// Issue #21: reports that wait together go to the plane as one entry (one transaction on
/// every node instead of one each), and each caller still hears its own report's outcome.
/// The intake is held while they queue, so they are gathered without any timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_waiting_together_are_one_entry_and_each_caller_hears_its_own_outcome() {
    use meridian_domain::run::{Report, ReportItem, RunEvent, RunState};
    use meridian_plane::intake::Intake;
    use meridian_plane::model::{AgentReport, ReportEntry};

    let cluster = Cluster::start(1).await;
    let node = cluster.node(0);
    let intake = std::sync::Arc::new(Intake::start(
        node.core(),
        std::sync::Arc::new(meridian_domain::SystemClock),
        WRITE_TIMEOUT,
    ));
    // Each agent reports a run of a cluster that does not exist: refused, naming the agent,
    // so an outcome handed to the wrong caller shows.
    let report = |i: u64| AgentReport {
        agent: format!("agent-{i}.test"),
        cluster: Name::new(format!("gone-{i}")).unwrap(),
        entries: vec![ReportEntry {
            seq: 100 + i,
            report: Report::V1 {
                cluster: format!("gone-{i}"),
                partition: None,
                epoch: 0,
                item: ReportItem::Run(RunEvent {
                    run_id: format!("ads.etl@{i}"),
                    schedule: None,
                    fire_ms: None,
                    tenant: "ads".into(),
                    workflow: "etl".into(),
                    workflow_version: 1,
                    environment: "prod".into(),
                    state: RunState::Started,
                    at_ms: 0,
                    message: String::new(),
                }),
            },
        }],
    };
    const AGENTS: u64 = 8;
    let held = intake.hold().await;
    let calls: Vec<_> = (0..AGENTS)
        .map(|i| {
            let intake = intake.clone();
            tokio::spawn(async move { intake.write(report(i)).await })
        })
        .collect();
    let deadline = Instant::now() + WRITE_TIMEOUT;
    while intake.waiting() < AGENTS as usize {
        assert!(Instant::now() < deadline, "the reports never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    drop(held);
    for (i, call) in calls.into_iter().enumerate() {
        let Ok(Outcome::Applied(applied)) = call.await.unwrap() else {
            panic!("report {i} was not applied");
        };
        let outcome: meridian_plane::model::history::ReportOutcome =
            serde_json::from_str(applied.detail.as_deref().unwrap()).unwrap();
        assert_eq!(outcome.refused.len(), 1, "{outcome:?}");
        let (seq, reason) = &outcome.refused[0];
        assert_eq!(*seq, 100 + i as u64);
        assert_eq!(
            reason,
            &format!("agent `agent-{i}.test`: its cluster `gone-{i}` does not exist")
        );
    }
    let after = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    assert_eq!(
        after - before,
        1,
        "{AGENTS} reports waiting together are one entry"
    );
    // Nothing waits for company: a lone report goes at once, as its agent's own command.
    let Ok(Outcome::Applied(lone)) = intake.write(report(AGENTS)).await else {
        panic!("the lone report was not applied");
    };
    assert!(lone.items.is_empty(), "not a batch: {lone:?}");
    cluster.shutdown().await;
}
