//! The fire-record buffer: for every schedule of the partitions this agent holds, the next
//! [`WINDOW`](meridian_proto::WINDOW) fire records, pre-generated from the calendar and kept in SQLite so firing goes
//! on while the plane is unreachable.
//!
//! - [`Buffer::sync`] takes the plane's assignments: a new schedule, or a new version of one,
//!   gets its records (re)generated after `max(plane's acknowledged fire, own cursor)`; a
//!   schedule no longer assigned is dropped with its records. A change therefore takes effect
//!   from the next record, and a record already taken is never generated again.
//! - [`Buffer::take_all`] consumes records: deletes them, moves their schedules' cursors,
//!   remembers the runs and writes the outbox entries, in one transaction.
//! - [`Buffer::refill`] tops schedules up to [`WINDOW`](meridian_proto::WINDOW) records again
//!   (the firing loop does it once nothing more is due, off the way to starting runs).
//!
//! The assignments are also kept in memory (parsed once, shared), so finding what is due reads
//! only the records table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::DateTime;
use meridian_proto::run::{Assignment, Job, Report, ReportItem};
use meridian_proto::{FireRecord, ScheduleId};
use sqlx::{Row, SqlitePool};

use crate::store::{NewEntry, StoreError, Taken, Write, Writer};

#[derive(Clone)]
pub struct Buffer {
    pool: SqlitePool,
    writer: Writer,
    assignments: Arc<RwLock<HashMap<String, Arc<Assignment>>>>,
}

/// A run this agent has taken and not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRun {
    pub run_id: String,
    pub schedule: Option<ScheduleId>,
    pub fire_ms: Option<i64>,
    pub cluster: String,
    pub partition: Option<u32>,
    pub epoch: u64,
    pub state: String,
    pub job: Job,
}

/// The outbox entry of `report`.
pub fn entry(report: &Report) -> NewEntry {
    let Report::V1 { item, .. } = report;
    let at_ms = match item {
        ReportItem::Run(e) => e.at_ms,
        ReportItem::Attempt(a) => a.at_ms,
        ReportItem::Log(_) => 0,
    };
    NewEntry {
        key: item.key(),
        at_ms,
        payload: serde_json::to_string(report).expect("reports serialise"),
    }
}

impl Buffer {
    /// The buffer in the database behind `pool`, written through `writer`.
    pub async fn open(pool: SqlitePool, writer: Writer) -> Result<Self, StoreError> {
        let mut assignments = HashMap::new();
        for row in sqlx::query("SELECT schedule_id, doc FROM assignments")
            .fetch_all(&pool)
            .await?
        {
            let a: Assignment = serde_json::from_str(&row.get::<String, _>("doc"))
                .map_err(|e| StoreError::corrupt("assignment", e))?;
            assignments.insert(row.get("schedule_id"), Arc::new(a));
        }
        Ok(Self {
            pool,
            writer,
            assignments: Arc::new(RwLock::new(assignments)),
        })
    }

    /// Replaces the assignments with `assignments` (every schedule of every held partition).
    pub async fn sync(&self, assignments: &[Assignment]) -> Result<(), StoreError> {
        let shared: Vec<Arc<Assignment>> = assignments.iter().cloned().map(Arc::new).collect();
        self.writer.write(Write::Sync(shared.clone())).await?;
        *self.assignments.write().expect("assignments") = shared
            .into_iter()
            .map(|a| (a.schedule.to_string(), a))
            .collect();
        Ok(())
    }

    /// Records due at or before `now_ms`, oldest first, with their schedule's assignment.
    pub async fn due(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(Arc<Assignment>, FireRecord)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT schedule_id, fire_ms FROM records WHERE fire_ms <= ? \
             ORDER BY fire_ms, schedule_id LIMIT ?",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let assignments = self.assignments.read().expect("assignments");
        let mut out = Vec::with_capacity(rows.len());
        for (id, fire_ms) in rows {
            // Records of a schedule dropped a moment ago: nothing to fire.
            let Some(a) = assignments.get(&id) else {
                continue;
            };
            let at = DateTime::from_timestamp_millis(fire_ms)
                .ok_or_else(|| StoreError::corrupt("fire time", "out of range"))?;
            out.push((a.clone(), FireRecord::new(a.schedule.clone(), at)));
        }
        Ok(out)
    }

    /// The earliest buffered fire time.
    pub async fn next_fire_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(fire_ms) FROM records")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Takes records (see [`Taken`]) in one transaction, and tops their schedules up.
    pub async fn take_all(&self, taken: Vec<Taken>) -> Result<(), StoreError> {
        if taken.is_empty() {
            return Ok(());
        }
        self.writer.write(Write::Take(taken)).await?;
        Ok(())
    }

    /// Tops the schedules of `assignments` up to [`WINDOW`](meridian_proto::WINDOW) records.
    pub async fn refill(&self, assignments: Vec<Arc<Assignment>>) -> Result<(), StoreError> {
        if assignments.is_empty() {
            return Ok(());
        }
        self.writer.write(Write::Refill(assignments)).await?;
        Ok(())
    }

    /// Takes one record: `run` is the run it starts or queues (none when skipped).
    pub async fn take(
        &self,
        a: &Arc<Assignment>,
        record: &FireRecord,
        run: Option<LocalRun>,
        report: &Report,
    ) -> Result<(), StoreError> {
        self.take_all(vec![Taken {
            assignment: a.clone(),
            fire_ms: record.fire_at.timestamp_millis(),
            run,
            entry: entry(report),
        }])
        .await
    }

    /// Takes a "run now" run (recognising one already taken: returns false).
    pub async fn take_manual(&self, run: &LocalRun, report: &Report) -> Result<bool, StoreError> {
        let taken = self
            .writer
            .write(Write::TakeManual {
                run: Box::new(run.clone()),
                entry: entry(report),
            })
            .await?;
        Ok(taken == 1)
    }

    /// Moves a taken run to `state` and writes `report`; a final state forgets the run.
    pub async fn advance(
        &self,
        run_id: &str,
        state: &str,
        is_final: bool,
        report: &Report,
    ) -> Result<(), StoreError> {
        self.writer
            .write(Write::Advance {
                run_id: run_id.to_owned(),
                state: state.to_owned(),
                is_final,
                entry: entry(report),
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
                state: row.get("state"),
                job: serde_json::from_str(&row.get::<String, _>("job"))
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
    use meridian_proto::run::{ReportItem, RunEvent, RunState};
    use meridian_proto::workflow::WorkflowDefinition;
    use meridian_proto::{OverlapPolicy, ScheduleSpec, WINDOW};

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
            job: Job {
                tenant: "ads".into(),
                workflow: "w".into(),
                workflow_version: 1,
                definition: WorkflowDefinition::shell("t", "true"),
                environment: "prod".into(),
                vars: Default::default(),
                work_dir: None,
            },
        }
    }

    fn skipped(a: &Assignment, r: &FireRecord) -> Report {
        Report::V1 {
            cluster: a.cluster.clone(),
            partition: Some(a.partition),
            epoch: a.epoch,
            item: ReportItem::Run(RunEvent {
                run_id: r.id.to_string(),
                schedule: Some(a.schedule.clone()),
                fire_ms: Some(r.fire_at.timestamp_millis()),
                tenant: "ads".into(),
                workflow: "w".into(),
                workflow_version: 1,
                environment: "prod".into(),
                state: RunState::Skipped,
                at_ms: 0,
                message: String::new(),
            }),
        }
    }

    #[tokio::test]
    async fn the_window_is_kept_full_and_a_change_applies_from_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(&dir.path().join("a.db")).await.unwrap();
        let writer = crate::store::Writer::start(pool.clone());
        let buffer = Buffer::open(pool, writer).await.unwrap();
        let a = assignment(1, "0/10 * * * * ?");
        buffer.sync(std::slice::from_ref(&a)).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), WINDOW as u64);
        let first = buffer.records("ads.s").await.unwrap();
        assert_eq!(first[0], a.after_ms + 10_000);

        // Take three records: topped up to 50 again, continuing after the last buffered one.
        let due = buffer.due(a.after_ms + 30_000, 100).await.unwrap();
        assert_eq!(due.len(), 3);
        for (a, r) in &due {
            buffer.take(a, r, None, &skipped(a, r)).await.unwrap();
        }
        assert_eq!(buffer.count("ads.s").await.unwrap(), WINDOW as u64 - 3);
        buffer.refill(vec![due[0].0.clone()]).await.unwrap();
        let now = buffer.records("ads.s").await.unwrap();
        assert_eq!(now.len(), WINDOW);
        assert_eq!(now[0], a.after_ms + 40_000);
        assert_eq!(*now.last().unwrap(), a.after_ms + 530_000);

        // A new version (every 20 s) takes effect after the last record taken.
        buffer
            .sync(&[assignment(2, "0/20 * * * * ?")])
            .await
            .unwrap();
        let changed = buffer.records("ads.s").await.unwrap();
        assert_eq!(changed.len(), WINDOW);
        assert_eq!(changed[0], a.after_ms + 40_000);
        assert_eq!(changed[1], a.after_ms + 60_000);

        // A refill decided before that change (with the old version) adds nothing; one with
        // the new version tops up on the new calendar.
        let next = buffer.due(a.after_ms + 40_000, 100).await.unwrap();
        assert_eq!(next.len(), 1);
        buffer
            .take(
                &next[0].0,
                &next[0].1,
                None,
                &skipped(&next[0].0, &next[0].1),
            )
            .await
            .unwrap();
        buffer.refill(vec![due[0].0.clone()]).await.unwrap();
        assert_eq!(buffer.records("ads.s").await.unwrap(), changed[1..]);
        buffer.refill(vec![next[0].0.clone()]).await.unwrap();
        let topped = buffer.records("ads.s").await.unwrap();
        assert_eq!(topped.len(), WINDOW);
        assert_eq!(topped[WINDOW - 1] - topped[WINDOW - 2], 20_000);

        // No longer assigned: gone, and a late refill does not bring it back.
        buffer.sync(&[]).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), 0);
        buffer.refill(vec![due[0].0.clone()]).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), 0);
    }
}
