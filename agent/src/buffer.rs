//! The fire-record buffer: for every schedule of the partitions this agent holds, the next
//! [`WINDOW`](meridian_domain::WINDOW) fire records, pre-generated from the calendar and kept in SQLite so firing goes
//! on while the plane is unreachable.
//!
//! - [`Buffer::sync`] takes the plane's assignments: a new schedule, or a new version of one,
//!   gets its records (re)generated after `max(plane's acknowledged fire, own cursor)`; a
//!   schedule no longer assigned is dropped with its records. A change therefore takes effect
//!   from the next record, and a record already taken is never generated again.
//! - [`Buffer::take_all`] consumes records: one durable row says what a firing pass took and
//!   how ([`Took`]); the records' deletion, the schedules' cursors, the runs and the outbox
//!   entries are written from it afterwards, off the way to starting runs (see
//!   [`crate::store`]). Until then the firing loop reads past what it took.
//! - [`Buffer::refill`] tops schedules up to [`WINDOW`](meridian_domain::WINDOW) records again
//!   (the firing loop does it once nothing more is due, off the way to starting runs).
//!
//! The assignments are also kept in memory (parsed once, shared), so finding what is due reads
//! only the records table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::DateTime;
use meridian_domain::run::{Assignment, Jobs, Report, RunState};
use meridian_domain::{FireRecord, ScheduleId, stored};
use sqlx::{Row, SqlitePool};

use crate::store::{NewEntry, StoreError, Write, Writer};
use crate::take::{LocalRun, Take, TakeItem, Took};

/// What a [`Buffer::sync`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// New or changed assignments whose calendar this agent cannot read.
    pub unreadable: Vec<Unreadable>,
}

/// An assignment whose spec this agent cannot make a calendar of: it generates no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub schedule: ScheduleId,
    pub version: u64,
    pub why: String,
}

#[derive(Clone)]
pub struct Buffer {
    pool: SqlitePool,
    writer: Writer,
    assignments: Arc<RwLock<HashMap<String, Arc<Assignment>>>>,
    /// A firing pass holds it shared from reading the assignments until its take is durable;
    /// a sync holds it alone. So every take names assignments the database holds, which is
    /// what a restart expands an unexpanded take from.
    gate: Arc<tokio::sync::RwLock<()>>,
}

/// Due records as [`Buffer::due`] read them.
pub struct Due {
    pub records: Vec<(Arc<Assignment>, FireRecord)>,
    pub reached: Option<DueKey>,
    pub full: bool,
}

/// Where a firing pass's read of due records got to: `(fire_ms, schedule_id)` of the last
/// record read.
pub type DueKey = (i64, String);

impl Buffer {
    /// The buffer in the database behind `pool`, written through `writer`. Takes a previous
    /// process wrote and did not finish expanding are expanded before this returns.
    pub async fn open(pool: SqlitePool, writer: Writer) -> Result<Self, StoreError> {
        let mut assignments = HashMap::new();
        let mut jobs = Jobs::default();
        // A page at a time, each job read once: 100,000 documents at once would be the
        // largest thing the agent ever holds.
        let mut after = String::new();
        loop {
            let rows = sqlx::query(
                "SELECT schedule_id, doc FROM assignments WHERE schedule_id > ? \
                 ORDER BY schedule_id LIMIT 5000",
            )
            .bind(&after)
            .fetch_all(&pool)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.get("schedule_id");
            for row in rows {
                let mut a: Assignment = stored::read(&row.get::<String, _>("doc"))
                    .map_err(|e| StoreError::corrupt("assignment", e))?;
                a.job = jobs.share(a.job);
                assignments.insert(row.get("schedule_id"), Arc::new(a));
            }
        }
        let mut unfinished = Vec::new();
        for row in sqlx::query("SELECT id, at_ms, items, expanded FROM takes ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let items: Vec<(String, i64, u64, Took)> = stored::read(&row.get::<String, _>("items"))
                .map_err(|e| StoreError::corrupt("take", e))?;
            let items = items
                .into_iter()
                .map(|(schedule, fire_ms, epoch, took)| {
                    // A sync waits for every take to be expanded, so the schedules a take
                    // names are still assigned.
                    let assignment = assignments.get(&schedule).cloned().ok_or_else(|| {
                        StoreError::corrupt("take", format!("schedule {schedule} is not assigned"))
                    })?;
                    Ok(TakeItem {
                        assignment,
                        fire_ms,
                        epoch,
                        took,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let take = Take {
                at_ms: row.get("at_ms"),
                items,
            };
            unfinished.push((row.get("id"), take, row.get::<i64, _>("expanded") as usize));
        }
        if !unfinished.is_empty() {
            tracing::info!(
                takes = unfinished.len(),
                "expanding takes a previous run left"
            );
            writer.write(Write::Resume(unfinished)).await?;
            writer.write(Write::Settle).await?;
        }
        Ok(Self {
            pool,
            writer,
            assignments: Arc::new(RwLock::new(assignments)),
            gate: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// Replaces the assignments with `assignments` (every schedule of every held partition).
    /// Says which new or changed ones this agent cannot read the calendar of (a newer plane's
    /// spec): they are kept, and fire nothing here until a version it can read arrives.
    pub async fn sync(&self, assignments: Vec<Assignment>) -> Result<Synced, StoreError> {
        let shared: Vec<Arc<Assignment>> = assignments.into_iter().map(Arc::new).collect();
        let unreadable = {
            let held = self.assignments.read().expect("assignments");
            shared
                .iter()
                .filter(|a| {
                    held.get(a.schedule.as_str())
                        .is_none_or(|h| h.version != a.version)
                })
                .filter_map(|a| {
                    a.spec.calendar().err().map(|e| Unreadable {
                        schedule: a.schedule.clone(),
                        version: a.version,
                        why: e.to_string(),
                    })
                })
                .collect()
        };
        let _alone = self.gate.write().await;
        self.writer.write(Write::Sync(shared.clone())).await?;
        *self.assignments.write().expect("assignments") = shared
            .into_iter()
            .map(|a| (a.schedule.to_string(), a))
            .collect();
        Ok(Synced { unreadable })
    }

    /// The partitions the assignments are of, with the epoch each was assigned under (after
    /// a restart: what the agent held before).
    pub fn assigned_partitions(&self) -> Vec<((String, u32), u64)> {
        let mut out: Vec<((String, u32), u64)> = self
            .assignments
            .read()
            .expect("assignments")
            .values()
            .map(|a| ((a.cluster.clone(), a.partition), a.epoch))
            .collect();
        // The newest epoch of each partition.
        out.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        out.dedup_by(|later, kept| later.0 == kept.0);
        out
    }

    /// The assignment of `schedule` as last synced, if it is still assigned.
    pub fn assigned(&self, schedule: &str) -> Option<Arc<Assignment>> {
        self.assignments
            .read()
            .expect("assignments")
            .get(schedule)
            .cloned()
    }

    /// Held by a firing pass from reading due records until its take is durable.
    pub async fn firing(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Records due at or before `now_ms`, oldest first, after `after` when given, with their
    /// schedule's assignment; and where the read got to (the last record read, assigned or
    /// not), and whether it stopped at `limit`.
    pub async fn due(
        &self,
        now_ms: i64,
        after: Option<&DueKey>,
        limit: u32,
    ) -> Result<Due, StoreError> {
        let (after_ms, after_id) = after.map_or((i64::MIN, ""), |(f, s)| (*f, s.as_str()));
        // One row of JSON rather than a row per record: a pass reads tens of thousands, and
        // each row costs more in the driver than in SQLite.
        let json: Option<String> = sqlx::query_scalar(
            "SELECT json_group_array(json_array(schedule_id, fire_ms)) FROM \
             (SELECT schedule_id, fire_ms FROM records \
              WHERE fire_ms <= ? AND (fire_ms, schedule_id) > (?, ?) \
              ORDER BY fire_ms, schedule_id LIMIT ?)",
        )
        .bind(now_ms)
        .bind(after_ms)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await?;
        let mut rows: Vec<(String, i64)> = match json {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| StoreError::corrupt("records", e))?
            }
            None => Vec::new(),
        };
        // (An aggregate's input order is SQLite's to choose.)
        rows.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let full = rows.len() == limit as usize;
        let reached = rows.last().map(|(id, fire_ms)| (*fire_ms, id.clone()));
        let assignments = self.assignments.read().expect("assignments");
        let mut records = Vec::with_capacity(rows.len());
        for (id, fire_ms) in rows {
            // Records of a schedule dropped a moment ago: nothing to fire.
            let Some(a) = assignments.get(&id) else {
                continue;
            };
            let at = DateTime::from_timestamp_millis(fire_ms)
                .ok_or_else(|| StoreError::corrupt("fire time", "out of range"))?;
            records.push((a.clone(), FireRecord::new(a.schedule.clone(), at)));
        }
        Ok(Due {
            records,
            reached,
            full,
        })
    }

    /// The earliest buffered fire time after `now_ms`.
    pub async fn next_fire_ms(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(fire_ms) FROM records WHERE fire_ms > ?")
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Takes records: durable once this returns; their rows follow (see [`Take`]).
    pub async fn take_all(&self, take: Take) -> Result<(), StoreError> {
        if take.items.is_empty() {
            return Ok(());
        }
        self.writer.write(Write::Take(take)).await?;
        Ok(())
    }

    /// Whether a take is not yet wholly expanded (its records may still be buffered).
    pub fn expanding(&self) -> bool {
        self.writer.progress().expanding()
    }

    /// How far takes are written and expanded.
    pub fn progress(&self) -> &crate::store::Progress {
        self.writer.progress()
    }

    /// Waits until every take written so far is expanded.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.writer.write(Write::Settle).await?;
        Ok(())
    }

    /// Tops the schedules of `assignments` up to [`WINDOW`](meridian_domain::WINDOW) records.
    pub async fn refill(&self, assignments: Vec<Arc<Assignment>>) -> Result<(), StoreError> {
        if assignments.is_empty() {
            return Ok(());
        }
        self.writer.write(Write::Refill(assignments)).await?;
        Ok(())
    }

    /// Takes one record, stamped `at_ms`, and waits until its rows are written.
    pub async fn take(
        &self,
        a: &Arc<Assignment>,
        fire_ms: i64,
        took: Took,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.take_all(Take {
            at_ms,
            items: vec![TakeItem {
                assignment: a.clone(),
                fire_ms,
                epoch: a.epoch,
                took,
            }],
        })
        .await?;
        self.settle().await
    }

    /// Takes a "run now" run (recognising one already taken: returns false).
    pub async fn take_manual(&self, run: &LocalRun, report: &Report) -> Result<bool, StoreError> {
        let taken = self
            .writer
            .write(Write::TakeManual {
                run: Box::new(run.clone()),
                entry: NewEntry::of(report),
            })
            .await?;
        Ok(taken == 1)
    }

    /// Moves a taken run to `state` and writes `report`; a final state forgets the run.
    pub async fn advance(
        &self,
        run_id: &str,
        state: RunState,
        report: &Report,
    ) -> Result<(), StoreError> {
        self.writer
            .write(Write::Advance {
                run_id: run_id.to_owned(),
                state,
                entry: NewEntry::of(report),
            })
            .await?;
        Ok(())
    }

    /// Runs taken and not finished (after a restart: what was going when the agent stopped).
    pub async fn runs(&self) -> Result<Vec<LocalRun>, StoreError> {
        sqlx::query(
            "SELECT run_id, schedule_id, fire_ms, cluster, partition, epoch, state, job FROM runs \
             ORDER BY fire_ms, run_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(LocalRun {
                run_id: row.get("run_id"),
                schedule: row
                    .get::<Option<String>, _>("schedule_id")
                    .map(ScheduleId::new)
                    .transpose()
                    .map_err(|e| StoreError::corrupt("schedule id", e))?,
                fire_ms: row.get("fire_ms"),
                cluster: row.get("cluster"),
                partition: row.get::<Option<i64>, _>("partition").map(|p| p as u32),
                epoch: row.get::<i64, _>("epoch") as u64,
                state: {
                    let state: String = row.get("state");
                    RunState::parse(&state).ok_or_else(|| {
                        StoreError::corrupt("run", format!("state `{state}` is not a run state"))
                    })?
                },
                job: stored::read(&row.get::<String, _>("job"))
                    .map_err(|e| StoreError::corrupt("job", e))?,
            })
        })
        .collect()
    }

    /// How many records are buffered for `schedule`.
    pub async fn count(&self, schedule: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records WHERE schedule_id = ?")
            .bind(schedule)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// How many records are buffered in all.
    pub async fn total(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// The buffered fire times of `schedule`, in order.
    pub async fn records(&self, schedule: &str) -> Result<Vec<i64>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT fire_ms FROM records WHERE schedule_id = ? ORDER BY fire_ms",
            )
            .bind(schedule)
            .fetch_all(&self.pool)
            .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::take::event;
    use meridian_domain::run::Job;
    use meridian_domain::workflow::WorkflowDefinition;
    use meridian_domain::{OverlapPolicy, ScheduleSpec, WINDOW};
    use serde_json::json;

    fn assignment(version: u64, cron: &str) -> Assignment {
        Assignment {
            schedule: ScheduleId::new("ads.s").unwrap(),
            cluster: "main".into(),
            partition: 3,
            epoch: 1,
            version,
            spec: ScheduleSpec::cron(cron),
            overlap: OverlapPolicy::Skip,
            after_ms: 1_800_000_000_000,
            returned: Vec::new(),
            paused: false,
            backfill: Vec::new(),
            job: std::sync::Arc::new(Job {
                tenant: "ads".into(),
                workflow: "w".into(),
                workflow_version: 1,
                definition: WorkflowDefinition::shell("t", "true"),
                environment: "prod".into(),
                vars: Default::default(),
                work_dir: None,
                os_user: None,
                allow_agent_user: false,
                rerun: None,
                backfill: false,
            }),
        }
    }

    /// Issue #18: what the agent keeps in its database is versioned, and what an agent wrote
    /// before versions (the bare documents: an assignment, a run's job, a take's items) still
    /// reads after an upgrade — here a take left unexpanded by the older agent is finished.
    #[tokio::test]
    async fn what_an_older_agent_wrote_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = assignment(1, "0/10 * * * * ?");
        let run = TakeItem {
            assignment: Arc::new(a.clone()),
            fire_ms: a.after_ms + 10_000,
            epoch: 1,
            took: Took::Started,
        }
        .local_run();
        {
            let pool = crate::store::open(&path).await.unwrap();
            // Exactly as the agent wrote them before versions: `serde_json::to_string`.
            sqlx::query(
                "INSERT INTO assignments (schedule_id, cluster, partition, version, doc) \
                 VALUES ('ads.s', 'main', 3, 1, ?)",
            )
            .bind(serde_json::to_string(&a).unwrap())
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO runs (run_id, schedule_id, fire_ms, cluster, partition, epoch, \
                 state, job) VALUES (?, 'ads.s', ?, 'main', 3, 1, 'started', ?)",
            )
            .bind(&run.run_id)
            .bind(run.fire_ms)
            .bind(serde_json::to_string(&run.job).unwrap())
            .execute(&pool)
            .await
            .unwrap();
            let items = vec![("ads.s", a.after_ms + 20_000, 1u64, Took::Queued)];
            sqlx::query("INSERT INTO takes (at_ms, items) VALUES (1, ?)")
                .bind(serde_json::to_string(&items).unwrap())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let pool = crate::store::open(&path).await.unwrap();
        let writer = crate::store::Writer::start(pool.clone());
        let buffer = Buffer::open(pool.clone(), writer).await.unwrap();
        assert_eq!(buffer.assigned("ads.s").as_deref(), Some(&a));
        let runs = buffer.runs().await.unwrap();
        assert_eq!(runs.len(), 2, "the old run and the one the old take queued");
        assert_eq!(runs[0], run);
        assert_eq!(runs[1].state, RunState::Queued);
        // What this agent writes now carries its version.
        let doc: String = sqlx::query_scalar("SELECT job FROM runs WHERE state = 'queued'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(doc.starts_with(r#"{"v":"1","doc":{"#), "{doc}");
    }

    /// Issue #18, defect 6: a calendar this agent cannot read generates nothing, and the
    /// sync says so, once per version (not on every sync that repeats it).
    #[tokio::test]
    async fn a_calendar_this_agent_cannot_read_is_named_not_silently_empty() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(&dir.path().join("a.db")).await.unwrap();
        let writer = crate::store::Writer::start(pool.clone());
        let buffer = Buffer::open(pool, writer).await.unwrap();
        let good = assignment(1, "0/10 * * * * ?");
        let unreadable = assignment(2, "0 0 25 * * ?");
        assert_eq!(
            buffer.sync(vec![good.clone()]).await.unwrap(),
            Synced::default()
        );
        let said = buffer
            .sync(vec![unreadable.clone()])
            .await
            .unwrap()
            .unreadable;
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!((said[0].schedule.as_str(), said[0].version), ("ads.s", 2));
        assert!(said[0].why.contains("hour"), "{}", said[0].why);
        assert_eq!(buffer.count("ads.s").await.unwrap(), 0);
        assert_eq!(
            buffer.sync(vec![unreadable.clone()]).await.unwrap(),
            Synced::default(),
            "the same version again is not news"
        );
    }

    #[tokio::test]
    async fn the_window_is_kept_full_and_a_change_applies_from_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(&dir.path().join("a.db")).await.unwrap();
        let writer = crate::store::Writer::start(pool.clone());
        let buffer = Buffer::open(pool, writer).await.unwrap();
        let a = assignment(1, "0/10 * * * * ?");
        buffer.sync(vec![a.clone()]).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), WINDOW as u64);
        let first = buffer.records("ads.s").await.unwrap();
        assert_eq!(first[0], a.after_ms + 10_000);

        // Take three records: topped up to 50 again, continuing after the last buffered one.
        let due = buffer
            .due(a.after_ms + 30_000, None, 100)
            .await
            .unwrap()
            .records;
        assert_eq!(due.len(), 3);
        for (a, r) in &due {
            let fire_ms = r.fire_at.timestamp_millis();
            buffer.take(a, fire_ms, Took::Overlapping, 0).await.unwrap();
        }
        assert_eq!(buffer.count("ads.s").await.unwrap(), WINDOW as u64 - 3);
        buffer.refill(vec![due[0].0.clone()]).await.unwrap();
        let now = buffer.records("ads.s").await.unwrap();
        assert_eq!(now.len(), WINDOW);
        assert_eq!(now[0], a.after_ms + 40_000);
        assert_eq!(*now.last().unwrap(), a.after_ms + 530_000);

        // A new version (every 20 s) takes effect after the last record taken.
        buffer
            .sync(vec![assignment(2, "0/20 * * * * ?")])
            .await
            .unwrap();
        let changed = buffer.records("ads.s").await.unwrap();
        assert_eq!(changed.len(), WINDOW);
        assert_eq!(changed[0], a.after_ms + 40_000);
        assert_eq!(changed[1], a.after_ms + 60_000);

        // A refill decided before that change (with the old version) adds nothing; one with
        // the new version tops up on the new calendar.
        let next = buffer
            .due(a.after_ms + 40_000, None, 100)
            .await
            .unwrap()
            .records;
        assert_eq!(next.len(), 1);
        let fire_ms = next[0].1.fire_at.timestamp_millis();
        buffer
            .take(&next[0].0, fire_ms, Took::Overlapping, 0)
            .await
            .unwrap();
        buffer.refill(vec![due[0].0.clone()]).await.unwrap();
        assert_eq!(buffer.records("ads.s").await.unwrap(), changed[1..]);
        buffer.refill(vec![next[0].0.clone()]).await.unwrap();
        let topped = buffer.records("ads.s").await.unwrap();
        assert_eq!(topped.len(), WINDOW);
        assert_eq!(topped[WINDOW - 1] - topped[WINDOW - 2], 20_000);

        // No longer assigned: gone, and a late refill does not bring it back.
        buffer.sync(vec![]).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), 0);
        buffer.refill(vec![due[0].0.clone()]).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), 0);
    }

    /// Issue #19: records the plane hands back (a holder gave them back unstarted) go into the
    /// buffer once each while the plane lists them, and again only if this agent gives one
    /// back itself.
    #[tokio::test]
    async fn a_record_handed_back_is_buffered_once_until_given_back_again() {
        let dir = tempfile::tempdir().unwrap();
        let (buffer, _outbox, _pool) = open(&dir.path().join("a.db")).await;
        let plain = assignment(1, "0/10 * * * * ?");
        let back = plain.after_ms - 50_000;
        let handing = Assignment {
            returned: vec![back],
            ..plain.clone()
        };
        buffer.sync(vec![handing.clone()]).await.unwrap();
        let records = buffer.records("ads.s").await.unwrap();
        assert_eq!(
            records[0], back,
            "before the window, to fire under catch-up"
        );
        assert_eq!(records.len(), WINDOW + 1);
        // Taken (and run); the plane has not heard yet and still lists it: not again.
        let taken = Arc::new(handing.clone());
        buffer.take(&taken, back, Took::Started, 0).await.unwrap();
        buffer.sync(vec![handing.clone()]).await.unwrap();
        assert_eq!(
            buffer.records("ads.s").await.unwrap()[0],
            plain.after_ms + 10_000
        );
        // This agent gives it back (its lease lapsed before the run started): handed again,
        // it is buffered again.
        let run = TakeItem {
            assignment: taken,
            fire_ms: back,
            epoch: 1,
            took: Took::Started,
        }
        .local_run();
        let report = crate::take::event(&run, RunState::Returned, 1, "given back");
        buffer
            .advance(&run.run_id, RunState::Returned, &report)
            .await
            .unwrap();
        assert!(buffer.runs().await.unwrap().is_empty(), "forgotten");
        buffer.sync(vec![handing.clone()]).await.unwrap();
        assert_eq!(buffer.records("ads.s").await.unwrap()[0], back);
        // Listed no more: forgotten, so a later hand-back is buffered again too.
        buffer.sync(vec![plain.clone()]).await.unwrap();
        buffer
            .take(&Arc::new(plain.clone()), back, Took::Started, 0)
            .await
            .unwrap();
        buffer.sync(vec![handing.clone()]).await.unwrap();
        assert_eq!(buffer.records("ads.s").await.unwrap()[0], back);
    }

    async fn open(path: &std::path::Path) -> (Buffer, crate::outbox::Outbox, SqlitePool) {
        let pool = crate::store::open(path).await.unwrap();
        let outbox = crate::outbox::Outbox::new(pool.clone());
        let buffer = Buffer::open(pool.clone(), outbox.writer()).await.unwrap();
        (buffer, outbox, pool)
    }

    fn keys(entries: &[crate::outbox::Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e.key.rsplit_once('/').unwrap().1.to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_take_a_crash_left_unexpanded_is_expanded_on_open_from_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = assignment(1, "0/10 * * * * ?");
        let t = |n: i64| a.after_ms + n * 10_000;
        {
            let (buffer, outbox, pool) = open(&path).await;
            buffer.sync(vec![a.clone()]).await.unwrap();
            // What a firing pass writes before its runs start, and then nothing more (the
            // process died): two takes, the second with its first item already expanded.
            let rows = [
                (
                    0,
                    json!([["ads.s", t(1), 4, "started"], ["ads.s", t(2), 4, "missed"]]),
                ),
                (
                    1,
                    json!([
                        ["ads.s", t(3), 4, "catching_up"],
                        ["ads.s", t(4), 4, "waiting"]
                    ]),
                ),
            ];
            for (expanded, items) in rows {
                sqlx::query("INSERT INTO takes (at_ms, items, expanded) VALUES (7, ?, ?)")
                    .bind(items.to_string())
                    .bind(expanded)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            // (The first item's own rows, as its chunk left them: its record gone.)
            sqlx::query("DELETE FROM records WHERE fire_ms = ?")
                .bind(t(3))
                .execute(&pool)
                .await
                .unwrap();
            assert!(outbox.is_empty().await.unwrap());
            outbox.close().await;
        }
        let (buffer, outbox, pool) = open(&path).await;
        // Every item not yet expanded is, once, in take order: its record gone, its report
        // waiting (stamped when taken, with the take's epoch), its run remembered unless it
        // was skipped. The item already expanded is not written twice.
        let entries = outbox.pending(100).await.unwrap();
        assert_eq!(keys(&entries), ["started", "skipped", "queued"]);
        assert!(entries.iter().all(|e| e.at_ms == 7));
        assert!(entries.iter().all(|e| e.payload.contains(r#""epoch":4"#)));
        let records = buffer.records("ads.s").await.unwrap();
        assert_eq!(records[0], t(5));
        assert_eq!(records.len(), WINDOW - 4);
        let runs: Vec<(i64, RunState)> = buffer
            .runs()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.fire_ms.unwrap(), r.state))
            .collect();
        assert_eq!(runs, [(t(1), RunState::Started), (t(4), RunState::Queued)]);
        let cursor: i64 =
            sqlx::query_scalar("SELECT fired_ms FROM cursors WHERE schedule_id = 'ads.s'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(cursor, t(4));
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM takes")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
        assert!(!buffer.expanding());
    }

    #[tokio::test]
    async fn a_runs_end_is_written_after_its_take_is_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let (buffer, outbox, _pool) = open(&dir.path().join("a.db")).await;
        let a = Arc::new(assignment(1, "0/10 * * * * ?"));
        buffer.sync(vec![(*a).clone()]).await.unwrap();
        // Enough items for several chunks: the end arrives while the take is being expanded.
        let n = 3 * crate::store::EXPAND_CHUNK as i64;
        let items: Vec<TakeItem> = (1..=n)
            .map(|n| TakeItem {
                assignment: a.clone(),
                fire_ms: a.after_ms + n * 10_000,
                epoch: 1,
                took: Took::Started,
            })
            .collect();
        let first = items[0].run().unwrap();
        // The take is durable when answered; the run starts and ends at once.
        buffer
            .take_all(Take {
                at_ms: 1,
                items: items.clone(),
            })
            .await
            .unwrap();
        let end = event(&first, RunState::Succeeded, 2, "");
        buffer
            .advance(&first.run_id, RunState::Succeeded, &end)
            .await
            .unwrap();
        // The end waited for the take's rows: it follows the starts in the outbox, and the
        // finished run is not left behind as one going.
        let entries = outbox.pending(n as u32 + 10).await.unwrap();
        let keys = keys(&entries);
        assert_eq!(keys.len(), n as usize + 1);
        assert_eq!(
            keys.iter().position(|k| k == "succeeded"),
            Some(n as usize),
            "the end is written after every start of its take"
        );
        let going: Vec<String> = buffer
            .runs()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(going.len(), n as usize - 1);
        assert!(!going.contains(&first.run_id));
    }
}
