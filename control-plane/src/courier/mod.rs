//! The courier: the leader's worker that empties the alert outbox.
//!
//! Every serving plane node runs one ([`start`], beside its API); only the leader's works. Each round it proposes `CheckAlerts`
//! when a timed alert is due (a run past its SLA, an agent lost, a data center unheard), sends
//! the deliveries due (webhook, chat, mail: [`send`]) and proposes their outcomes as one
//! `AlertAttempts`, so the outbox — what was tried, when it is tried again — is replicated: a
//! new leader carries on where the old one stopped, and a receiver that was down gets what it
//! missed with backoff. It wakes when this node applies something (a delivery is written in
//! the same log entry as its event, so it goes out at once) and otherwise polls.
//!
//! A delivery whose attempt was sent but not recorded (the leader crashed between the two) is
//! sent again by the next leader: at least once; receivers dedupe on `X-Meridian-Delivery`.

pub mod send;

use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use tokio_util::sync::CancellationToken;

use crate::model::alerts::outbox::{self, AlertAttempt};
use crate::model::alerts::raise;
use crate::model::{Command, Proposal};
use crate::raft::node::{Core, PlaneNode};
pub use send::{MailConfig, MailTls, Sender};

/// Starts `node`'s courier; it stops with the node.
pub fn start(node: &PlaneNode, clock: Arc<dyn Clock>, mail: Option<MailConfig>) {
    let courier = Courier::new(node.core(), clock, mail);
    tokio::spawn(courier.run(node.stopping()));
}

/// How often an idle courier looks again (timed alerts and backoffs need no event to wake).
const POLL: Duration = Duration::from_millis(500);
/// At most this many deliveries per round.
const ROUND: u32 = 32;
/// How long a round's proposals may wait for the plane.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Courier {
    core: Arc<Core>,
    clock: Arc<dyn Clock>,
    sender: Sender,
}

impl Courier {
    pub fn new(core: Arc<Core>, clock: Arc<dyn Clock>, mail: Option<MailConfig>) -> Self {
        let node = core.node.hostname.clone();
        Self {
            core,
            sender: Sender::new(node, clock.clone(), mail),
            clock,
        }
    }

    /// Runs until `stop` is cancelled. A round cut short by the stop sends its deliveries
    /// again on the next leader (at least once).
    pub async fn run(self, stop: CancellationToken) {
        let mut applied = self.core.raft.metrics();
        // The timed checks read every timed rule: at most once a poll, not at every apply.
        let mut checked = tokio::time::Instant::now() - POLL;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = applied.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            if !self.leads() {
                continue;
            }
            let timed = checked.elapsed() >= POLL;
            if timed {
                checked = tokio::time::Instant::now();
            }
            let round = tokio::select! {
                () = stop.cancelled() => return,
                r = self.round(timed) => r,
            };
            if let Err(e) = round {
                tracing::warn!("alert courier: {e}");
                // Whatever failed (the plane busy or cut off) is tried again, not in a loop.
                tokio::time::sleep(POLL).await;
            }
        }
    }

    fn leads(&self) -> bool {
        self.core.raft.metrics().borrow().current_leader == Some(self.core.id())
    }

    /// One round: raise what is due (when `timed`), send what is due, record how it went.
    async fn round(&self, timed: bool) -> Result<(), String> {
        let now = self.clock.now_ms();
        let (timed, due) = {
            let mut conn = self
                .core
                .state
                .pool()
                .acquire()
                .await
                .map_err(|e| e.to_string())?;
            let timed = if timed {
                raise::due(&mut conn, now)
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                0
            };
            let due = outbox::due(&mut conn, now, ROUND)
                .await
                .map_err(|e| e.to_string())?;
            (timed, due)
        };
        if timed > 0 {
            self.propose(Command::CheckAlerts).await?;
        }
        if due.is_empty() {
            return Ok(());
        }
        let mut sends = tokio::task::JoinSet::new();
        for (delivery, channel) in due {
            let sender = self.sender.clone();
            sends.spawn(async move { sender.send(&delivery, channel.as_ref()).await });
        }
        let mut attempts: Vec<AlertAttempt> = Vec::new();
        while let Some(done) = sends.join_next().await {
            attempts.push(done.map_err(|e| format!("a send panicked: {e}"))?);
        }
        attempts.sort_by(|a, b| a.delivery.cmp(&b.delivery));
        self.propose(Command::AlertAttempts(attempts)).await
    }

    async fn propose(&self, command: Command) -> Result<(), String> {
        let proposal = Proposal::new("alerts", self.clock.now_ms(), command);
        self.core
            .write(proposal, WRITE_TIMEOUT)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
