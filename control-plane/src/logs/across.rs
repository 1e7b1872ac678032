//! Reading a task log across the plane: its object in the bucket once the archiver copied it
//! there (`logs::archive`), else what this node's logbook holds and what every other
//! member's holds (asked over the peer links, all at once); with what the replicated model
//! held from before logs left Raft (`run_logs`), merged by offset. While a member does not
//! answer, a reader that goes on from a cursor ([`after`]: follow, live tail, download) gets
//! only the pieces that provably follow its cursor and is told there may be more, so it never
//! moves past a piece that member holds; a page's first view ([`tail`]) may show a gap. A
//! bucket that does not answer sends the read to the logbooks, which keep their pieces until
//! retention.

use std::time::Duration;

use crate::logbook::{LogPiece, PieceQuery, Pieces, merge};
use crate::model::archive;
use crate::model::query::{self, AttemptLog};
use crate::raft::node::{Answer, Ask, Core};

/// How long a read waits for a member.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The attempts of `run_id` anyone holds a log of, by task and attempt.
pub async fn attempts(core: &Core, run_id: &str) -> sqlx::Result<Vec<(String, u32)>> {
    let mut all = query::log_attempts(core.state.pool(), run_id).await?;
    all.extend(archive::archived_attempts(core.state.pool(), run_id).await?);
    all.extend(core.logbook.attempts(run_id).await?);
    for (member, answer) in core
        .ask_others(&Ask::LogAttempts(run_id.to_owned()), PEER_TIMEOUT)
        .await
    {
        match answer {
            Ok(Answer::LogAttempts(theirs)) => all.extend(theirs),
            other => unread(&member.hostname, other),
        }
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// The end of one attempt's log before `before` (none: its very end), about `budget` bytes
/// (at least one piece), oldest first; and whether anything comes before it.
pub async fn tail(
    core: &Core,
    run_id: &str,
    task: &str,
    attempt: u32,
    before: Option<i64>,
    budget: u64,
) -> sqlx::Result<Pieces> {
    let q = PieceQuery {
        run_id: run_id.to_owned(),
        task: task.to_owned(),
        attempt,
        after: -1,
        before: before.unwrap_or(i64::MAX),
        budget,
        newest_first: true,
    };
    let (legacy, more) = query::log_tail(
        core.state.pool(),
        run_id,
        task,
        attempt,
        before,
        budget as usize,
    )
    .await?;
    // A member not answering may leave a gap here; the page's tail and "load earlier" read
    // again when it is back.
    let (read, _) = read(
        core,
        q,
        Pieces {
            pieces: legacy,
            more,
        },
    )
    .await?;
    Ok(read)
}

/// One attempt's log after the piece that starts at `after` (-1: from its start), about
/// `budget` bytes (at least one piece), oldest first; and whether more follows.
pub async fn after(
    core: &Core,
    run_id: &str,
    task: &str,
    attempt: u32,
    after: i64,
    budget: u64,
) -> sqlx::Result<Pieces> {
    // From the piece at `after` itself, so its end is known: with a member not answering,
    // only what provably follows it is given (a piece only that member holds may lie
    // between), and `more` says to ask again.
    let from = if after >= 0 { after - 1 } else { after };
    let q = PieceQuery {
        run_id: run_id.to_owned(),
        task: task.to_owned(),
        attempt,
        after: from,
        before: i64::MAX,
        // Room for the piece at `after` too (an agent's pieces are at most 32 KiB), so a
        // small budget still moves on.
        budget: budget.saturating_add(64 * 1024),
        newest_first: false,
    };
    let legacy = query::log_after(core.state.pool(), run_id, task, attempt, from).await?;
    let (read, complete) = read(
        core,
        q,
        Pieces {
            pieces: legacy,
            more: false,
        },
    )
    .await?;
    Ok(vouched(read, after, complete))
}

/// What a reader at `after` may be given of `read` (which starts with the piece at `after`,
/// when anyone holds it): all of it after that piece when every member answered; else only
/// the pieces that follow on without a gap, and `more`.
fn vouched(read: Pieces, after: i64, complete: bool) -> Pieces {
    let mut end = (after < 0).then_some(0);
    let mut pieces = Vec::new();
    for p in read.pieces {
        if p.offset == after {
            end = Some(p.offset + p.data.len() as i64);
        } else {
            pieces.push(p);
        }
    }
    if complete {
        return Pieces {
            pieces,
            more: read.more,
        };
    }
    let mut kept = Vec::new();
    for p in pieces {
        if end != Some(p.offset) {
            break;
        }
        end = Some(p.offset + p.data.len() as i64);
        kept.push(p);
    }
    Pieces {
        pieces: kept,
        more: true,
    }
}

/// An ended attempt's whole log from the logbooks, for the archiver: every member must
/// answer (a copy without one node's pieces would be read instead of them for good).
pub async fn complete(
    core: &Core,
    run_id: &str,
    task: &str,
    attempt: u32,
) -> Result<Vec<LogPiece>, String> {
    const STEP: u64 = 4 * 1024 * 1024;
    let failed = |e: sqlx::Error| e.to_string();
    let mut all = query::log_after(core.state.pool(), run_id, task, attempt, -1)
        .await
        .map_err(failed)?;
    let mut from = -1;
    loop {
        let q = PieceQuery {
            run_id: run_id.to_owned(),
            task: task.to_owned(),
            attempt,
            after: from,
            before: i64::MAX,
            budget: STEP,
            newest_first: false,
        };
        let mut sources = vec![core.logbook.pieces(&q).await.map_err(failed)?];
        for (member, answer) in core.ask_others(&Ask::LogPieces(q), PEER_TIMEOUT).await {
            match answer {
                Ok(Answer::LogPieces(theirs)) => sources.push(theirs),
                Ok(other) => return Err(format!("{} answered {other:?}", member.hostname)),
                Err(e) => return Err(format!("{} holds pieces unread: {e}", member.hostname)),
            }
        }
        let read = merge(sources, STEP, false);
        let next = read.pieces.last().map(|p| p.offset);
        all.extend(read.pieces);
        match next {
            Some(last) if read.more => from = last,
            _ => break,
        }
    }
    let whole = Pieces {
        pieces: all,
        more: false,
    };
    Ok(merge(vec![whole], u64::MAX, false).pieces)
}

/// `q` from the attempt's object when it is archived and this node has the bucket, else from
/// every logbook; with `legacy`. False: a member did not answer.
async fn read(core: &Core, q: PieceQuery, legacy: Pieces) -> sqlx::Result<(Pieces, bool)> {
    let (budget, newest_first) = (q.budget, q.newest_first);
    if let Some(bucket) = core.archive.get() {
        match archive::archived(core.state.pool(), &q.run_id, &q.task, q.attempt).await? {
            Some(copy) if copy.key.is_empty() => {
                return Ok((merge(vec![legacy], budget, newest_first), true));
            }
            Some(copy) => match bucket.pieces(&copy, &q).await {
                Ok(theirs) => {
                    return Ok((merge(vec![legacy, theirs], budget, newest_first), true));
                }
                Err(e) => tracing::warn!("reading the log {}: {e}; reading the logbooks", copy.key),
            },
            None => {}
        }
    }
    let (sources, complete) = gather(core, q, legacy).await?;
    Ok((merge(sources, budget, newest_first), complete))
}

/// A whole attempt's log, however long, as one text.
pub async fn whole(core: &Core, run_id: &str, task: &str, attempt: u32) -> sqlx::Result<String> {
    let (mut text, mut from) = (String::new(), -1);
    loop {
        let read = after(core, run_id, task, attempt, from, 4 * 1024 * 1024).await?;
        for piece in &read.pieces {
            text.push_str(&piece.data);
            from = piece.offset;
        }
        if !read.more || read.pieces.is_empty() {
            return Ok(text);
        }
    }
}

/// Every attempt's whole log (`GET /runs/{id}/logs`).
pub async fn logs(core: &Core, run_id: &str) -> sqlx::Result<Vec<AttemptLog>> {
    let mut logs = Vec::new();
    for (task, attempt) in attempts(core, run_id).await? {
        let text = whole(core, run_id, &task, attempt).await?;
        logs.push(AttemptLog {
            task,
            attempt,
            text,
        });
    }
    Ok(logs)
}

/// `legacy`, this node's pieces and every other member's for `q`.
async fn gather(core: &Core, q: PieceQuery, legacy: Pieces) -> sqlx::Result<(Vec<Pieces>, bool)> {
    let mut sources = vec![legacy, core.logbook.pieces(&q).await?];
    let mut complete = true;
    for (member, answer) in core.ask_others(&Ask::LogPieces(q), PEER_TIMEOUT).await {
        match answer {
            Ok(Answer::LogPieces(theirs)) => sources.push(theirs),
            other => {
                complete = false;
                unread(&member.hostname, other);
            }
        }
    }
    Ok((sources, complete))
}

fn unread(member: &str, answer: Result<Answer, String>) {
    match answer {
        Err(e) => tracing::warn!("reading log pieces held by {member}: {e}"),
        Ok(other) => tracing::warn!("{member} answered a log read with {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offsets: &[(i64, &str)], more: bool) -> Pieces {
        Pieces {
            pieces: offsets
                .iter()
                .map(|(o, d)| LogPiece {
                    offset: *o,
                    data: (*d).to_owned(),
                })
                .collect(),
            more,
        }
    }

    #[test]
    fn pieces_from_several_nodes_merge_by_offset_once_each() {
        let merged = merge(
            vec![
                p(&[(0, "ab"), (2, "cd")], false),
                p(&[(2, "cd"), (4, "ef")], false),
            ],
            100,
            false,
        );
        let text: String = merged.pieces.iter().map(|p| p.data.as_str()).collect();
        assert_eq!(text, "abcdef");
        assert!(!merged.more);
    }

    #[test]
    fn a_source_cut_by_its_budget_bounds_the_merge() {
        // The first node read 0 and 2 and has more (4 and on); the second holds 6: showing 6
        // now would skip 4.
        let merged = merge(
            vec![p(&[(0, "ab"), (2, "cd")], true), p(&[(6, "gh")], false)],
            100,
            false,
        );
        let offsets: Vec<i64> = merged.pieces.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [0, 2]);
        assert!(merged.more);
        // Newest first: the first node read 4 and 6 and has more before; 2 from the other
        // node may not be shown ahead of what lies between.
        let merged = merge(
            vec![p(&[(4, "ef"), (6, "gh")], true), p(&[(2, "cd")], false)],
            100,
            true,
        );
        let offsets: Vec<i64> = merged.pieces.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [4, 6]);
        assert!(merged.more);
    }

    #[test]
    fn with_a_member_silent_a_reader_gets_only_what_follows_its_cursor() {
        // Seen up to the piece at 2 ("cd"); the silent member may hold 4.
        let read = || p(&[(2, "cd"), (6, "gh"), (8, "ij")], false);
        let offsets = |x: &Pieces| x.pieces.iter().map(|p| p.offset).collect::<Vec<_>>();
        let all = vouched(read(), 2, true);
        assert_eq!(offsets(&all), [6, 8]);
        assert!(!all.more);
        let partial = vouched(read(), 2, false);
        assert!(partial.pieces.is_empty(), "6 may not follow 4");
        assert!(partial.more);
        // What does follow on is given.
        let on = vouched(p(&[(2, "cd"), (4, "ef"), (8, "ij")], false), 2, false);
        assert_eq!(offsets(&on), [4]);
        assert!(on.more);
        // From the start: the first piece must be at 0.
        assert!(vouched(p(&[(2, "cd")], false), -1, false).pieces.is_empty());
        // The piece at the cursor held only by the silent member: nothing can be vouched for.
        assert!(vouched(p(&[(4, "ef")], false), 2, false).pieces.is_empty());
    }

    #[test]
    fn the_budget_keeps_the_newest_or_the_oldest() {
        let all = || vec![p(&[(0, "aaaa"), (4, "bbbb"), (8, "cccc")], false)];
        let newest = merge(all(), 8, true);
        assert_eq!(
            newest.pieces.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [4, 8]
        );
        assert!(newest.more);
        let oldest = merge(all(), 8, false);
        assert_eq!(
            oldest.pieces.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [0, 4]
        );
        assert!(oldest.more);
    }
}
