//! The intake: the agents' reports a node accepts, proposed together.
//!
//! A report proposed on its own is one Raft entry, and every node applies an entry in one
//! SQLite transaction; openraft hands the state machine one entry per `apply` however many
//! wait, so the only place to put reports together is before they are proposed: here. (Built
//! on session 25's reading that commits bound ingest; session 26 found most of a commit's cost
//! was SQLite's inline checkpoint, now moved off the apply (`model::wal`), and with the ingest
//! bench's four agents batching showed no gain: BENCHMARKS, session 26. It is for many agents
//! reporting at once.)
//!
//! Each node runs one [`Intake`] for the reports its agents' calls bring. Its worker takes the
//! first report waiting and everything else waiting at that moment (up to [`MAX_ENTRIES`]
//! report entries) and proposes them as one entry, at most [`IN_FLIGHT`] proposals at a time.
//! Nothing ever waits for company: a report that finds the intake idle goes at once, alone and
//! as the agent's own command (`Author::Agent`, checked again at apply time as before); reports
//! that arrive while earlier ones commit go together, as a `Command::Batch` of the reports
//! proposed by the plane (`Author::System`). The batch's items are applied one by one, each
//! with its own outcome, and each caller gets its own ([`answers`]).
//!
//! A batch is the plane's own command, so the apply-time "an agent's own reports only" check
//! does not run for its items: what it compared (the report's agent and cluster against the
//! proposal's author) are both set by this node from the caller's verified certificate
//! (`agents::agent_of`) before the report reaches the intake, so the check compared two values
//! the same code had set. An agent still cannot report as another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_domain::Clock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::model::{AgentReport, Author, Command, Proposal};
use crate::raft::Outcome;
use crate::raft::node::{AskError, Core};

/// Proposals of reports committing at once, at most. One commits while the next is
/// gathered and sent, so the state machine always has the next entry waiting; more would only
/// make each batch smaller.
pub const IN_FLIGHT: usize = 2;
/// Report entries (events; log pieces never reach the intake) in one proposal, at most: keeps
/// an entry a few MiB, well under the peer message limit, and one apply's transaction short
/// enough not to hold up a heartbeat for long.
pub const MAX_ENTRIES: usize = 20_000;
/// Reports waiting, at most; a call finding it full waits (the agents' calls are the only
/// producers, so this is only a bound, not a policy).
const QUEUE: usize = 4096;
/// The name the audit trail and errors give a batch's author.
const AUTHOR: &str = "intake";

/// What one report's caller gets back: what [`Core::write`] returns for a proposal of its own.
pub type Answer = Result<Outcome, AskError>;

/// A node's intake of reports (see the module's doc). Dropping it stops its worker once the
/// reports already taken are answered.
pub struct Intake {
    queue: mpsc::Sender<Waiting>,
    gate: Arc<Semaphore>,
    /// Reports accepted and not yet proposed.
    queued: Arc<AtomicUsize>,
}

struct Waiting {
    report: AgentReport,
    answer: oneshot::Sender<Answer>,
}

impl Intake {
    /// Starts the intake of `core`'s node; proposals wait at most `timeout` for the plane.
    pub fn start(core: Arc<Core>, clock: Arc<dyn Clock>, timeout: Duration) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let gate = Arc::new(Semaphore::new(IN_FLIGHT));
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            core,
            clock,
            timeout,
            waiting,
            gate: gate.clone(),
            queued: queued.clone(),
        };
        tokio::spawn(worker.run());
        Self {
            queue,
            gate,
            queued,
        }
    }

    /// Proposes `report`, alone or with others waiting, and returns its own outcome.
    pub async fn write(&self, report: AgentReport) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(Waiting { report, answer }).await.is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(AskError::Stopped);
        }
        answered.await.map_err(|_| AskError::Stopped)?
    }

    /// Holds every proposal back until the returned guard is dropped (reports queue up
    /// meanwhile), as if [`IN_FLIGHT`] proposals were committing: for tests that need reports
    /// to be gathered, without timing.
    pub async fn hold(&self) -> OwnedSemaphorePermit {
        self.gate
            .clone()
            .acquire_many_owned(IN_FLIGHT as u32)
            .await
            .expect("the intake's gate is never closed")
    }

    /// Reports accepted and not yet proposed.
    pub fn waiting(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The intake's one worker: gathers what is waiting, proposes it, hands the outcomes back.
struct Worker {
    core: Arc<Core>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    waiting: mpsc::Receiver<Waiting>,
    gate: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    async fn run(mut self) {
        // The first report, then a free slot, then whatever else is waiting: reports that
        // arrive while every slot is busy go out together in the next proposal.
        while let Some(first) = self.waiting.recv().await {
            let Ok(slot) = self.gate.clone().acquire_owned().await else {
                return;
            };
            let mut entries = first.report.entries.len();
            let mut taken = vec![first];
            while entries < MAX_ENTRIES {
                let Ok(next) = self.waiting.try_recv() else {
                    break;
                };
                entries += next.report.entries.len();
                taken.push(next);
            }
            self.queued.fetch_sub(taken.len(), Ordering::Relaxed);
            let core = self.core.clone();
            core.tally.report_proposals.fetch_add(1, Ordering::Relaxed);
            let at_ms = self.clock.now_ms();
            let timeout = self.timeout;
            tokio::spawn(async move {
                let (reports, callers): (Vec<_>, Vec<_>) =
                    taken.into_iter().map(|w| (w.report, w.answer)).unzip();
                let count = reports.len();
                let written = core.write(proposal(at_ms, reports), timeout).await;
                drop(slot);
                for (caller, answer) in callers.into_iter().zip(answers(written, count)) {
                    // A caller that gave up (its call timed out) has nothing to hear.
                    let _ = caller.send(answer);
                }
            });
        }
    }
}

/// The proposal of `reports` (at least one): a lone report as its agent's own command, more as
/// one batch of the plane's.
pub fn proposal(at_ms: i64, mut reports: Vec<AgentReport>) -> Proposal {
    if reports.len() == 1 {
        let report = reports.pop().expect("one report");
        let author = Author::Agent {
            hostname: report.agent.clone(),
            cluster: report.cluster.clone(),
        };
        return Proposal::by(author, at_ms, Command::AgentReport(report));
    }
    let items = reports.into_iter().map(Command::AgentReport).collect();
    Proposal::by(
        Author::System {
            name: AUTHOR.into(),
        },
        at_ms,
        Command::Batch(items),
    )
}

/// Each of `count` callers' outcome, in the order their reports were proposed, from what
/// writing the [`proposal`] of them returned: a batch's item outcomes one each; anything else
/// (a lone report's outcome, a refusal or failure of the whole) the same for all.
pub fn answers(written: Answer, count: usize) -> Vec<Answer> {
    match written {
        Ok(Outcome::Applied(applied)) if count > 1 => {
            if applied.items.len() != count {
                let odd = AskError::Failed(format!(
                    "the plane answered a batch of {count} reports with {} outcomes",
                    applied.items.len()
                ));
                return vec![Err(odd); count];
            }
            applied
                .items
                .into_iter()
                .map(|item| {
                    Ok(match item {
                        Ok(applied) => Outcome::Applied(applied),
                        Err(rejection) => Outcome::Refused(rejection),
                    })
                })
                .collect()
        }
        other => vec![other; count],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;
    use crate::model::processor::{Applied, RefusalKind, Rejection};

    fn report(agent: &str) -> AgentReport {
        AgentReport {
            agent: agent.into(),
            cluster: Name::new("main").unwrap(),
            entries: vec![],
        }
    }

    fn applied(subject: &str) -> Applied {
        Applied {
            subject: subject.into(),
            version: None,
            items: vec![],
            detail: None,
        }
    }

    #[test]
    fn a_lone_report_is_its_agents_own_command_and_more_are_the_planes_batch() {
        let lone = proposal(7, vec![report("a1")]);
        assert_eq!(
            lone.author(),
            Author::Agent {
                hostname: "a1".into(),
                cluster: Name::new("main").unwrap()
            }
        );
        assert_eq!(lone.command(), &Command::AgentReport(report("a1")));
        let two = proposal(7, vec![report("a1"), report("a2")]);
        assert_eq!(
            two.author(),
            Author::System {
                name: AUTHOR.into()
            }
        );
        assert_eq!(
            two.command(),
            &Command::Batch(vec![
                Command::AgentReport(report("a1")),
                Command::AgentReport(report("a2"))
            ])
        );
        assert!(
            !two.command().audited(),
            "reports are not audited, together or not"
        );
    }

    #[test]
    fn each_caller_gets_its_own_items_outcome_in_order() {
        let refused = Rejection {
            kind: RefusalKind::Invalid,
            message: "no".into(),
        };
        let batch = Applied {
            items: vec![
                Ok(applied("first")),
                Err(refused.clone()),
                Ok(applied("third")),
            ],
            ..applied("batch")
        };
        let each = answers(Ok(Outcome::Applied(batch)), 3);
        assert_eq!(
            each,
            vec![
                Ok(Outcome::Applied(applied("first"))),
                Ok(Outcome::Refused(refused.clone())),
                Ok(Outcome::Applied(applied("third"))),
            ]
        );
        // A lone report's outcome is its own, items or not.
        let lone = answers(Ok(Outcome::Applied(applied("lone"))), 1);
        assert_eq!(lone, vec![Ok(Outcome::Applied(applied("lone")))]);
        // What befalls the whole befalls each.
        let timed_out = AskError::Timeout(Duration::from_secs(1));
        assert_eq!(
            answers(Err(timed_out.clone()), 2),
            vec![Err(timed_out.clone()), Err(timed_out)]
        );
        assert_eq!(
            answers(Ok(Outcome::Refused(refused.clone())), 2),
            vec![Ok(Outcome::Refused(refused.clone())); 2]
        );
        // A batch answered with the wrong number of outcomes is nobody's outcome.
        let short = Applied {
            items: vec![Ok(applied("first"))],
            ..applied("batch")
        };
        assert!(
            answers(Ok(Outcome::Applied(short)), 2)
                .iter()
                .all(|a| matches!(a, Err(AskError::Failed(_))))
        );
    }
}
