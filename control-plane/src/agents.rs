//! The server side of `AgentLink`: what agents call, on any plane node.
//!
//! Who the agent is comes from its verified client certificate only: the hostname and the one
//! cluster it may act for. A request naming another agent or cluster is refused before anything
//! is written. Heartbeats and reports become replicated commands (forwarded to the leader like
//! any write); schedule fetches are answered from this node's copy after a read barrier, so an
//! agent never sees less than the heartbeat that granted its leases.

use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use meridian_proto::pb;
use meridian_proto::pb::agent_link_server::{AgentLink, AgentLinkServer};
use meridian_transport::{PeerIdentity, Role};
use tonic::{Request, Response, Status};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use meridian_domain::run::{Report, ReportItem};

use crate::intake::Intake;
use crate::model::history::ReportOutcome;
use crate::model::leasing::{AgentOrder, HeartbeatOutcome, HeldLease};
use crate::model::query::{self, ClaimedLease, PageMark};
use crate::model::{
    AgentReport, Author, Command, Heartbeat, Name, PartitionRef, Proposal, Relinquished,
    ReportEntry,
};
use crate::raft::Outcome;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::raft::node::{AskError, Core};

/// How long an agent's call may wait for the plane (a leader election included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The agents' service for a node, to serve beside its peer service
/// ([`PlaneNode::start`](crate::raft::node::PlaneNode::start)).
pub fn beside(clock: Arc<dyn Clock>) -> crate::raft::node::Beside {
    Box::new(move |core| {
        tonic::service::Routes::new(
            AgentLinkServer::new(AgentService::new(core, clock))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    })
}

pub struct AgentService {
    core: Arc<Core>,
    clock: Arc<dyn Clock>,
    /// Where reports go to be proposed, together when several wait.
    intake: Intake,
}

impl AgentService {
    pub fn new(core: Arc<Core>, clock: Arc<dyn Clock>) -> Self {
        let intake = Intake::start(core.clone(), clock.clone(), CALL_TIMEOUT);
        Self {
            core,
            clock,
            intake,
        }
    }

    /// Proposes `command` as the agent its certificate names (the processor checks again that
    /// an agent's command is its own heartbeat or report).
    async fn write(
        &self,
        agent: &str,
        cluster: &Name,
        command: Command,
    ) -> Result<crate::model::processor::Applied, Status> {
        let author = Author::Agent {
            hostname: agent.to_owned(),
            cluster: cluster.clone(),
        };
        let proposal = Proposal::by(author, self.clock.now_ms(), command);
        applied(self.core.write(proposal, CALL_TIMEOUT).await)
    }
}

/// What a caller hears of a write of its command.
fn applied(written: Result<Outcome, AskError>) -> Result<crate::model::processor::Applied, Status> {
    match written {
        Ok(Outcome::Applied(applied)) => Ok(applied),
        Ok(Outcome::Refused(rejection)) => Err(Status::failed_precondition(rejection.message)),
        Ok(Outcome::Internal) => Err(Status::internal("the write was not applied")),
        Err(e) => Err(unavailable(e)),
    }
}

fn unavailable(e: AskError) -> Status {
    match e {
        AskError::Missing(m) => Status::not_found(m),
        AskError::Failed(m) => Status::internal(m),
        other => Status::unavailable(other.to_string()),
    }
}

/// The calling agent's hostname and cluster, from its certificate; `claimed` (the hostname
/// and cluster in the request) must match.
fn agent_of<T>(
    request: &Request<T>,
    claimed: (&str, Option<&str>),
) -> Result<(String, Name), Status> {
    let who = PeerIdentity::of_request(request)?;
    if who.role != Role::Agent {
        return Err(Status::permission_denied(format!(
            "{} holds a {:?} certificate; only agents may call AgentLink",
            who.hostname, who.role
        )));
    }
    let Some(cluster) = who.cluster else {
        return Err(Status::permission_denied(format!(
            "the certificate of agent {} names no cluster",
            who.hostname
        )));
    };
    if claimed.0 != who.hostname {
        return Err(Status::permission_denied(format!(
            "agent: the request says `{}` but the certificate is for `{}`",
            claimed.0, who.hostname
        )));
    }
    if let Some(c) = claimed.1
        && c != cluster
    {
        return Err(Status::permission_denied(format!(
            "cluster: agent {} may only act for cluster `{cluster}` (its certificate), not `{c}`",
            who.hostname
        )));
    }
    let cluster = Name::new(cluster).map_err(|e| Status::permission_denied(e.to_string()))?;
    Ok((who.hostname, cluster))
}

fn lease_pb(l: &HeldLease) -> pb::Lease {
    pb::Lease {
        partition: l.partition,
        epoch: l.epoch,
        expires_at_ms: l.expires_ms,
        cluster: l.cluster.clone(),
    }
}

fn detail<T: serde::de::DeserializeOwned>(detail: Option<String>) -> Result<T, Status> {
    serde_json::from_str(&detail.unwrap_or_default())
        .map_err(|e| Status::internal(format!("reading the command's outcome: {e}")))
}

#[tonic::async_trait]
impl AgentLink for AgentService {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let (agent, cluster) = {
            let r = request.get_ref();
            agent_of(&request, (&r.agent, Some(&r.cluster)))?
        };
        let r = request.into_inner();
        let mut released = Vec::new();
        for l in &r.released {
            let cluster = Name::new(l.cluster.clone())
                .map_err(|e| Status::invalid_argument(format!("released.cluster: {e}")))?;
            released.push(PartitionRef {
                cluster,
                partition: l.partition,
            });
        }
        let mut relinquished = Vec::new();
        for l in &r.relinquished {
            let cluster = Name::new(l.cluster.clone())
                .map_err(|e| Status::invalid_argument(format!("relinquished.cluster: {e}")))?;
            relinquished.push(Relinquished {
                cluster,
                partition: l.partition,
                epoch: l.epoch,
            });
        }
        let applied = self
            .write(
                &agent,
                &cluster.clone(),
                Command::AgentHeartbeat(Heartbeat {
                    agent: agent.clone(),
                    cluster,
                    free_slots: r.free_slots,
                    releasing: r.releasing,
                    released,
                    heartbeat_ms: r.heartbeat_ms,
                    relinquished,
                    usage: r
                        .usage
                        .iter()
                        .map(|u| crate::model::QuotaUsage {
                            tenant: u.tenant.clone(),
                            environment: u.environment.clone(),
                            going: u.going,
                            waiting: u.waiting,
                            share: u.share,
                        })
                        .collect(),
                    load: r.load.as_ref().map(|l| crate::model::AgentLoad {
                        cpu_percent: l.cpu_percent,
                        memory_percent: l.memory_percent,
                        load1_hundredths: l.load1_hundredths,
                        cores: l.cores,
                        overloaded: (!l.overloaded.is_empty()).then(|| l.overloaded.clone()),
                    }),
                }),
            )
            .await?;
        let outcome: HeartbeatOutcome = detail(applied.detail)?;
        let leader = self.core.status().leader.unwrap_or_default();
        Ok(Response::new(pb::HeartbeatReply {
            leases: outcome.leases.iter().map(lease_pb).collect(),
            leader,
            now_ms: outcome.now_ms,
            release: outcome.release.iter().map(lease_pb).collect(),
            commands: outcome
                .commands
                .iter()
                .map(|order| pb::AgentCommand {
                    command: Some(match order {
                        AgentOrder::RunNow { run_id, job } => {
                            pb::agent_command::Command::RunNow(pb::RunNow::new(run_id, job))
                        }
                        AgentOrder::Kill { run_id } => pb::agent_command::Command::Kill(pb::Kill {
                            run_id: run_id.clone(),
                        }),
                    }),
                })
                .collect(),
            definitions: outcome.definitions,
            shares: outcome
                .shares
                .iter()
                .map(|s| pb::QuotaShare {
                    tenant: s.tenant.clone(),
                    environment: s.environment.clone(),
                    share: s.share,
                })
                .collect(),
            shares_valid_ms: outcome.shares_valid_ms,
        }))
    }

    async fn fetch_schedules(
        &self,
        request: Request<pb::FetchSchedulesRequest>,
    ) -> Result<Response<pb::FetchSchedulesReply>, Status> {
        let (agent, cluster) = {
            let r = request.get_ref();
            agent_of(&request, (&r.agent, None))?
        };
        let request = request.into_inner();
        let after = request.after.map(|m| PageMark {
            cluster: m.cluster,
            partition: m.partition,
            schedule: m.schedule_id,
        });
        let claims: Vec<ClaimedLease> = request
            .leases
            .into_iter()
            .map(|l| ClaimedLease {
                cluster: l.cluster,
                partition: l.partition,
                epoch: l.epoch,
            })
            .collect();
        self.core
            .read_barrier(CALL_TIMEOUT)
            .await
            .map_err(unavailable)?;
        let (assignments, next) = query::assignments(
            self.core.state.pool(),
            &agent,
            cluster.as_str(),
            &claims,
            after.as_ref(),
            request.limit as usize,
        )
        .await
        .map_err(|e| Status::internal(format!("reading schedules: {e}")))?;
        Ok(Response::new(pb::FetchSchedulesReply {
            schedules: assignments
                .iter()
                .map(pb::ScheduleAssignment::from)
                .collect(),
            more: next.is_some(),
            next: next.map(|m| pb::PageMark {
                cluster: m.cluster,
                partition: m.partition,
                schedule_id: m.schedule,
            }),
        }))
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportReply>, Status> {
        let (agent, cluster) = {
            let r = request.get_ref();
            agent_of(&request, (&r.agent, None))?
        };
        let r = request.into_inner();
        // Read in order up to the first entry this plane cannot read (a newer agent's shape,
        // during a rolling upgrade): that one and everything after it stay in the agent's
        // outbox, in order, until a plane that can read them is up. Committing past it would
        // drop what the agent ran for good.
        let mut sorted = r.entries;
        sorted.sort_by_key(|e| e.seq);
        let mut entries = Vec::with_capacity(sorted.len());
        let mut unreadable = None;
        for e in sorted {
            match e.report() {
                Ok(report) => entries.push(ReportEntry { seq: e.seq, report }),
                Err(err) => {
                    tracing::error!(
                        agent = %agent,
                        seq = e.seq,
                        key = %e.key,
                        "this plane cannot read the agent's report ({err}): it and the agent's \
                         later reports wait in its outbox until the plane is upgraded"
                    );
                    unreadable = Some(pb::Refused {
                        seq: e.seq,
                        reason: format!(
                            "entry `{}`: this plane cannot read it ({err}); upgrade the plane",
                            e.key
                        ),
                    });
                    break;
                }
            }
        }
        let Some(last) = entries.iter().map(|e| e.seq).max() else {
            return Ok(Response::new(pb::ReportReply {
                committed_seq: 0,
                refused: vec![],
                unreadable,
                definitions: 0,
            }));
        };
        // Log pieces never go through Raft: they land in this node's logbook, before the
        // events of the batch are committed, so a run is never seen ended with its last
        // pieces still to come.
        let (logs, events): (Vec<ReportEntry>, Vec<ReportEntry>) = entries
            .into_iter()
            .partition(|e| matches!(e.report.item(), ReportItem::Log(_)));
        let (stored, mut refused) = self.store_logs(&agent, &cluster, &logs, &events).await?;
        let mut outcome = ReportOutcome::default();
        if !events.is_empty() {
            // Through the intake, with whatever other agents' reports wait beside it; the
            // agent and cluster are the certificate's (`agent_of`), never the request's.
            let report = AgentReport {
                agent: agent.clone(),
                cluster: cluster.clone(),
                entries: events.clone(),
            };
            let applied = applied(self.intake.write(report).await)?;
            outcome = detail(applied.detail)?;
        }
        // Pieces stored for a run whose start this batch carried but the plane refused, or
        // found another agent had taken: not this agent's run, so not its log.
        let refused_runs = outcome.refused.iter().filter_map(|(seq, _)| {
            events
                .iter()
                .find(|e| e.seq == *seq)
                .and_then(|e| match e.report.item() {
                    ReportItem::Run(event) => Some(event.run_id.clone()),
                    _ => None,
                })
        });
        let not_ours: HashSet<String> = refused_runs.chain(outcome.others.clone()).collect();
        for run_id in not_ours.iter().filter(|r| stored.contains(*r)) {
            self.core
                .logbook
                .forget(run_id, &agent)
                .await
                .map_err(|e| Status::internal(format!("forgetting log pieces: {e}")))?;
        }
        let tally = &self.core.tally;
        tally.reports.fetch_add(1, Ordering::Relaxed);
        tally.events_applied.fetch_add(
            events.len().saturating_sub(outcome.refused.len()) as u64,
            Ordering::Relaxed,
        );
        refused.append(&mut outcome.refused);
        outcome.refused = refused;
        tally
            .entries_refused
            .fetch_add(outcome.refused.len() as u64, Ordering::Relaxed);
        let refused = outcome
            .refused
            .into_iter()
            .map(|(seq, reason)| pb::Refused { seq, reason })
            .collect();
        Ok(Response::new(pb::ReportReply {
            committed_seq: last,
            refused,
            unreadable,
            definitions: outcome.definitions,
        }))
    }
}

impl AgentService {
    /// Stores the log pieces `agent` sent in this node's logbook, on disk when this returns,
    /// but those of runs it is not running (refused for good, with why). A run whose start
    /// is among this batch's `events` counts as running; returns those runs it stored pieces
    /// of, and the refusals.
    async fn store_logs(
        &self,
        agent: &str,
        cluster: &Name,
        logs: &[ReportEntry],
        events: &[ReportEntry],
    ) -> Result<(HashSet<String>, Vec<(u64, String)>), Status> {
        if logs.is_empty() {
            return Ok(Default::default());
        }
        let starting: HashSet<&str> = events
            .iter()
            .filter_map(|e| match e.report.item() {
                ReportItem::Run(event) => Some(event.run_id.as_str()),
                _ => None,
            })
            .collect();
        let mut verdicts = admit_logs(&self.core, agent, cluster, logs, &starting).await?;
        if verdicts.iter().any(Result::is_err) {
            // This node may not have applied the start yet (the leader committed it): read
            // again once it holds everything committed so far.
            self.core
                .read_barrier(CALL_TIMEOUT)
                .await
                .map_err(unavailable)?;
            verdicts = admit_logs(&self.core, agent, cluster, logs, &starting).await?;
        }
        let mut admitted = Vec::new();
        let mut by_batch = HashSet::new();
        let mut refused = Vec::new();
        for (entry, verdict) in logs.iter().zip(verdicts) {
            match (verdict, entry.report.item()) {
                (Ok(()), ReportItem::Log(chunk)) => {
                    if starting.contains(chunk.run_id.as_str()) {
                        by_batch.insert(chunk.run_id.clone());
                    }
                    admitted.push(chunk);
                }
                (Err(reason), _) => refused.push((entry.seq, reason)),
                (Ok(()), _) => {}
            }
        }
        self.core
            .logbook
            .store(agent, &admitted, self.clock.now_ms())
            .await
            .map_err(|e| Status::unavailable(format!("storing log pieces: {e}")))?;
        let tally = &self.core.tally;
        tally
            .log_pieces
            .fetch_add(admitted.len() as u64, Ordering::Relaxed);
        tally.log_bytes.fetch_add(
            admitted.iter().map(|c| c.data.len() as u64).sum(),
            Ordering::Relaxed,
        );
        Ok((by_batch, refused))
    }
}

/// Whether each log entry may be stored: it is for the agent's cluster (or one it backs up)
/// and for a run this node knows is running on the agent, or one `starting` in its batch.
async fn admit_logs(
    core: &Core,
    agent: &str,
    cluster: &Name,
    logs: &[ReportEntry],
    starting: &HashSet<&str>,
) -> Result<Vec<Result<(), String>>, Status> {
    let failed = |e: sqlx::Error| Status::internal(format!("reading the model: {e}"));
    let mut conn = core.state.pool().acquire().await.map_err(failed)?;
    // Whether the agent may report for each cluster its entries name (its own, or one it
    // backs up), then the runs of those it may: a statement each, not one per entry.
    let mut may_report: HashMap<&str, bool> = HashMap::from([(cluster.as_str(), true)]);
    for entry in logs {
        let Report::V1 {
            cluster: theirs, ..
        } = &entry.report;
        if !may_report.contains_key(theirs.as_str()) {
            let backs = query::backs_up(&mut conn, cluster.as_str(), theirs)
                .await
                .map_err(failed)?;
            may_report.insert(theirs.as_str(), backs);
        }
    }
    let mut ids: Vec<&str> = logs.iter().map(|e| e.report.item().run_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    let runs = query::run_holders(&mut conn, &ids).await.map_err(failed)?;
    let mut verdicts = Vec::with_capacity(logs.len());
    for entry in logs {
        let Report::V1 {
            cluster: theirs,
            item,
            ..
        } = &entry.report;
        if !may_report[theirs.as_str()] {
            verdicts.push(Err(format!(
                "agent `{agent}` of cluster `{cluster}` may not report for cluster `{theirs}`"
            )));
            continue;
        }
        let run_id = item.run_id();
        // Its own run; or one this batch starts that nobody holds (new, or given back).
        let admitted = match runs.get(run_id) {
            Some((_, Some(holder))) if holder == agent => true,
            Some((state, _)) if state == "returned" => starting.contains(run_id),
            Some((_, Some(_))) => false,
            _ => starting.contains(run_id),
        };
        if admitted {
            verdicts.push(Ok(()));
        } else {
            verdicts.push(Err(format!(
                "run `{run_id}` is not running on agent `{agent}`"
            )));
        }
    }
    Ok(verdicts)
}
