//! The retirer: the leader's worker that moves finished runs out of the replicated model into
//! every node's history store (`model::retire`, `history_store`), so snapshots and a new
//! node's catch-up stay the size of the open work.
//!
//! Every serving node runs one ([`start`]); only the leader's works. Each round it asks its
//! own model whether any run finished more than `[history] keep_hours` ago may go and, if so,
//! proposes `RetireRuns` with that cut-off; a full batch is followed by the next at once.
//!
//! Beside it every node runs a [`Filler`]: runs retired by entries the node never applied
//! (it installed a snapshot past them, was restored, lost its `history.db`) are a gap in its
//! history store (`history_store::gaps`), which the filler copies in from another member, a
//! page at a time, from one whose own store has the whole range.

use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use tokio_util::sync::CancellationToken;

use crate::history_store::gaps::{Gap, PAGE, Page};
use crate::model::retire::{self, RetireRuns};
use crate::model::{Command, Proposal};
use crate::raft::ask::{Answer, Ask};
use crate::raft::node::{Core, PlaneNode};

/// How often the retirer looks when it has caught up.
const POLL: Duration = Duration::from_secs(30);
/// Runs retired per proposal at most. 10,000 (session 26) retired more than twice as fast on
/// one node (a run's rows are keyed by schedule, so more runs share pages) but took in no more
/// on three nodes over 10 minutes, and each retirement became an apply of seconds that
/// heartbeats and reports waited behind (BENCHMARKS, session 26): kept at 2,000.
const BATCH: u32 = 2000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `node`'s retirer; it stops with the node. `archiving`: whether the plane copies
/// logs to a bucket (runs then wait for their copies).
pub fn start(node: &PlaneNode, clock: Arc<dyn Clock>, keep_hours: u32, archiving: bool) {
    let retirer = Retirer {
        core: node.core(),
        clock,
        keep_ms: i64::from(keep_hours) * 3_600_000,
        archiving,
    };
    tokio::spawn(retirer.run(node.stopping()));
    tokio::spawn(Filler::new(node.core()).run(node.stopping()));
}

pub struct Retirer {
    pub core: Arc<Core>,
    pub clock: Arc<dyn Clock>,
    /// How long a finished run stays in the model.
    pub keep_ms: i64,
    pub archiving: bool,
}

impl Retirer {
    pub async fn run(self, stop: CancellationToken) {
        let mut behind = false;
        loop {
            if !behind {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            behind = false;
            if self.core.raft.metrics().borrow().current_leader != Some(self.core.id()) {
                continue;
            }
            let round = tokio::select! {
                () = stop.cancelled() => return,
                r = self.round() => r,
            };
            match round {
                Ok(full) => behind = full,
                Err(e) => tracing::warn!("retiring finished runs: {e}"),
            }
        }
    }

    /// One round: proposes a retirement if any run is due. True when a whole batch was due
    /// (more likely is).
    pub async fn round(&self) -> Result<bool, String> {
        let retire = RetireRuns {
            before_ms: self.clock.now_ms() - self.keep_ms,
            limit: BATCH,
            await_archive: self.archiving,
        };
        let due = retire::due(self.core.state.pool(), &retire)
            .await
            .map_err(|e| e.to_string())?;
        if due == 0 {
            return Ok(false);
        }
        let proposal = Proposal::new("history", self.clock.now_ms(), Command::RetireRuns(retire));
        self.core
            .write(proposal, WRITE_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok(due >= u64::from(BATCH))
    }
}

/// How often a filler looks for gaps, and waits after a round that could not finish.
const FILL_POLL: Duration = Duration::from_secs(5);
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Fills this node's history store's gaps from other members.
pub struct Filler {
    pub core: Arc<Core>,
    /// The member the last page came from: asked first for the next.
    source: std::sync::Mutex<Option<String>>,
}

impl Filler {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            source: std::sync::Mutex::new(None),
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            let round = tokio::select! {
                () = stop.cancelled() => return,
                r = self.round() => r,
            };
            match round {
                Ok(0) => {}
                Ok(n) => tracing::info!("history store: copied {n} retired runs from peers"),
                Err(e) => tracing::warn!("filling the history store's gaps: {e}"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(FILL_POLL) => {}
            }
        }
    }

    /// Fills every gap as far as the members allow; returns how many runs it copied.
    pub async fn round(&self) -> Result<u64, String> {
        let history = self.core.state.history();
        let mut copied = 0;
        for mut gap in history.gaps().await.map_err(|e| e.to_string())? {
            loop {
                let page = self.page(&gap).await?;
                let last = (page.rows.len() as u32) < PAGE;
                history
                    .fill(&gap, &page.rows, last)
                    .await
                    .map_err(|e| e.to_string())?;
                copied += page.rows.len() as u64;
                match page.rows.last() {
                    _ if last => break,
                    Some((index, r)) => {
                        gap = Gap {
                            after_index: *index,
                            after_run: r.run.run_id.clone(),
                            ..gap
                        };
                    }
                    None => break,
                }
            }
        }
        Ok(copied)
    }

    /// The next page of `gap` from a member whose store has the whole range, asking one
    /// member at a time (the last page's first).
    async fn page(&self, gap: &Gap) -> Result<Page, String> {
        let ask = Ask::HistoryPage {
            gap: gap.clone(),
            limit: PAGE,
        };
        let mut members = self.core.others();
        if members.is_empty() {
            // The only member (a plane restored from a snapshot file, which holds no
            // history store): nobody has these runs. Said once, and the gap closed, so the
            // node does not stay unready for good.
            tracing::warn!(
                "the runs retired after entry {} through {} are in no history store of this \
                 plane (restored from a snapshot, with no other member): they are gone",
                gap.after_index,
                gap.through_index
            );
            return Ok(Page {
                rows: Vec::new(),
                whole: true,
            });
        }
        let last = self.source.lock().expect("not poisoned").clone();
        members.sort_by_key(|m| Some(&m.hostname) != last.as_ref());
        let mut why = Vec::new();
        for member in members {
            match self.core.ask_member(&member, &ask, ASK_TIMEOUT).await {
                Ok(Answer::HistoryPage(json)) => match serde_json::from_str::<Page>(&json) {
                    Ok(page) if page.whole => {
                        *self.source.lock().expect("not poisoned") = Some(member.hostname);
                        return Ok(page);
                    }
                    Ok(_) => why.push(format!("{}: has a gap there too", member.hostname)),
                    Err(e) => why.push(format!("{}: {e}", member.hostname)),
                },
                Ok(other) => why.push(format!("{}: answered {other:?}", member.hostname)),
                Err(e) => why.push(format!("{}: {e}", member.hostname)),
            }
        }
        Err(format!(
            "runs retired after entry {} through {}: no member has them all ({})",
            gap.after_index,
            gap.through_index,
            why.join("; ")
        ))
    }
}
