//! The fire-record buffer: for every schedule of the partitions this agent holds, the next
//! [`WINDOW`] fire records, pre-generated from the calendar and kept in SQLite so firing goes
//! on while the plane is unreachable.
//!
//! - [`Buffer::sync`] takes the plane's assignments: a new schedule, or a new version of one,
//!   gets its records (re)generated after `max(plane's acknowledged fire, own cursor)`; a
//!   schedule no longer assigned is dropped with its records. A change therefore takes effect
//!   from the next record, and a record already taken is never generated again.
//! - [`Buffer::take`] consumes a record: deletes it, moves the schedule's cursor, remembers
//!   the run and writes the outbox entry, in one transaction.
//! - [`Buffer::refill`] tops a schedule up to [`WINDOW`] records after the last one buffered.

use std::collections::BTreeMap;

use chrono::DateTime;
use meridian_proto::run::{Assignment, Job, Report};
use meridian_proto::{FireRecord, ScheduleId, WINDOW};
use sqlx::{Row, SqlitePool};

use crate::outbox::Outbox;
use crate::store::StoreError;

#[derive(Clone)]
pub struct Buffer {
    pool: SqlitePool,
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

fn corrupt(what: &'static str, e: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        problem: e.to_string(),
    }
}

impl Buffer {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// A write transaction that takes the write lock at once. A deferred one that reads first
    /// cannot upgrade once another connection has written (SQLite answers "busy" without
    /// waiting), which silently failed refills while runs were reporting.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Replaces the assignments with `assignments` (every schedule of every held partition).
    pub async fn sync(&self, assignments: &[Assignment]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let current: BTreeMap<String, i64> =
            sqlx::query("SELECT schedule_id, version FROM assignments")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (r.get("schedule_id"), r.get("version")))
                .collect();
        for gone in current.keys().filter(|id| {
            !assignments
                .iter()
                .any(|a| a.schedule.as_str() == id.as_str())
        }) {
            sqlx::query("DELETE FROM assignments WHERE schedule_id = ?")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM records WHERE schedule_id = ?")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
        }
        for a in assignments {
            let id = a.schedule.as_str();
            let doc = serde_json::to_string(a).expect("assignments serialise");
            let same_version = current.get(id) == Some(&(a.version as i64));
            sqlx::query(
                "INSERT INTO assignments (schedule_id, cluster, partition, version, doc) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (schedule_id) DO UPDATE SET \
                 cluster = ?2, partition = ?3, version = ?4, doc = ?5",
            )
            .bind(id)
            .bind(&a.cluster)
            .bind(i64::from(a.partition))
            .bind(a.version as i64)
            .bind(&doc)
            .execute(&mut *tx)
            .await?;
            if same_version {
                continue;
            }
            // New or changed: regenerate from the later of the plane's and our own cursor.
            let fired: Option<i64> =
                sqlx::query_scalar("SELECT fired_ms FROM cursors WHERE schedule_id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let after = fired.map_or(a.after_ms, |f| f.max(a.after_ms));
            sqlx::query("DELETE FROM records WHERE schedule_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert_window(&mut tx, a, after, WINDOW).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Tops `schedule` up to [`WINDOW`] records.
    pub async fn refill(&self, schedule: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let Some(a) = assignment_in(&mut tx, schedule).await? else {
            return Ok(());
        };
        let (count, last): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MAX(fire_ms) FROM records WHERE schedule_id = ?")
                .bind(schedule)
                .fetch_one(&mut *tx)
                .await?;
        if count as usize >= WINDOW {
            return Ok(());
        }
        let fired: Option<i64> =
            sqlx::query_scalar("SELECT fired_ms FROM cursors WHERE schedule_id = ?")
                .bind(schedule)
                .fetch_optional(&mut *tx)
                .await?;
        let after = [Some(a.after_ms), fired, last]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(a.after_ms);
        insert_window(&mut tx, &a, after, WINDOW - count as usize).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records due at or before `now_ms`, oldest first, with their schedule's assignment.
    pub async fn due(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(Assignment, FireRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.schedule_id, r.fire_ms, a.doc FROM records r \
             JOIN assignments a ON a.schedule_id = r.schedule_id \
             WHERE r.fire_ms <= ? ORDER BY r.fire_ms, r.schedule_id LIMIT ?",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut docs: BTreeMap<String, Assignment> = BTreeMap::new();
        for row in rows {
            let id: String = row.get("schedule_id");
            let a = match docs.get(&id) {
                Some(a) => a.clone(),
                None => {
                    let a: Assignment = serde_json::from_str(&row.get::<String, _>("doc"))
                        .map_err(|e| corrupt("assignment", e))?;
                    docs.insert(id.clone(), a.clone());
                    a
                }
            };
            let at = DateTime::from_timestamp_millis(row.get("fire_ms"))
                .ok_or_else(|| corrupt("fire time", "out of range"))?;
            let record = FireRecord::new(a.schedule.clone(), at);
            out.push((a, record));
        }
        Ok(out)
    }

    /// The earliest buffered fire time.
    pub async fn next_fire_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(fire_ms) FROM records")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Takes `record`: removes it from the buffer, moves the cursor, remembers the run (unless
    /// it ends here, skipped) and writes `report` to the outbox — one transaction.
    pub async fn take(
        &self,
        a: &Assignment,
        record: &FireRecord,
        state: &str,
        report: &Report,
    ) -> Result<(), StoreError> {
        let fire_ms = record.fire_at.timestamp_millis();
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM records WHERE schedule_id = ? AND fire_ms = ?")
            .bind(a.schedule.as_str())
            .bind(fire_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO cursors (schedule_id, fired_ms) VALUES (?, ?) ON CONFLICT (schedule_id) \
             DO UPDATE SET fired_ms = MAX(fired_ms, excluded.fired_ms)",
        )
        .bind(a.schedule.as_str())
        .bind(fire_ms)
        .execute(&mut *tx)
        .await?;
        if state != "skipped" {
            insert_run(
                &mut tx,
                &LocalRun {
                    run_id: record.id.to_string(),
                    schedule: Some(a.schedule.clone()),
                    fire_ms: Some(fire_ms),
                    cluster: a.cluster.clone(),
                    partition: Some(a.partition),
                    epoch: a.epoch,
                    state: state.to_owned(),
                    job: a.job.clone(),
                },
            )
            .await?;
        }
        record_report(&mut tx, report).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a "run now" run (recognising one already taken: returns false).
    pub async fn take_manual(&self, run: &LocalRun, report: &Report) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = ?)")
            .bind(&run.run_id)
            .fetch_one(&mut *tx)
            .await?;
        if known {
            return Ok(false);
        }
        insert_run(&mut tx, run).await?;
        record_report(&mut tx, report).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a taken run to `state` and writes `report`; a final state forgets the run.
    pub async fn advance(
        &self,
        run_id: &str,
        state: &str,
        is_final: bool,
        report: &Report,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        if is_final {
            sqlx::query("DELETE FROM runs WHERE run_id = ?")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE runs SET state = ? WHERE run_id = ?")
                .bind(state)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        record_report(&mut tx, report).await?;
        tx.commit().await?;
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
                    .map_err(|e| corrupt("schedule id", e))?,
                fire_ms: row.get("fire_ms"),
                cluster: row.get("cluster"),
                partition: row.get::<Option<i64>, _>("partition").map(|p| p as u32),
                epoch: row.get::<i64, _>("epoch") as u64,
                state: row.get("state"),
                job: serde_json::from_str(&row.get::<String, _>("job"))
                    .map_err(|e| corrupt("job", e))?,
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

async fn assignment_in(
    tx: &mut sqlx::SqliteConnection,
    schedule: &str,
) -> Result<Option<Assignment>, StoreError> {
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc FROM assignments WHERE schedule_id = ?")
            .bind(schedule)
            .fetch_optional(&mut *tx)
            .await?;
    doc.map(|d| serde_json::from_str(&d).map_err(|e| corrupt("assignment", e)))
        .transpose()
}

async fn insert_window(
    tx: &mut sqlx::SqliteConnection,
    a: &Assignment,
    after_ms: i64,
    n: usize,
) -> Result<(), StoreError> {
    let calendar = a.spec.calendar();
    let Ok(calendar) = calendar else {
        // The plane validated it; a spec this agent cannot read (a newer version's) fires
        // nothing rather than something wrong.
        return Ok(());
    };
    let after = DateTime::from_timestamp_millis(after_ms)
        .ok_or_else(|| corrupt("fire time", "out of range"))?;
    for record in calendar.window(&a.schedule, after, n) {
        sqlx::query(
            "INSERT INTO records (schedule_id, fire_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(a.schedule.as_str())
        .bind(record.fire_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn insert_run(tx: &mut sqlx::SqliteConnection, run: &LocalRun) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO runs (run_id, schedule_id, fire_ms, cluster, partition, epoch, state, job) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(&run.run_id)
    .bind(run.schedule.as_ref().map(|s| s.as_str()))
    .bind(run.fire_ms)
    .bind(&run.cluster)
    .bind(run.partition.map(i64::from))
    .bind(run.epoch as i64)
    .bind(&run.state)
    .bind(serde_json::to_string(&run.job).expect("jobs serialise"))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes `report` to the outbox inside `tx`.
pub async fn record_report(
    tx: &mut sqlx::SqliteConnection,
    report: &Report,
) -> Result<(), StoreError> {
    let Report::V1 { item, .. } = report;
    let at_ms = match item {
        meridian_proto::run::ReportItem::Run(e) => e.at_ms,
        meridian_proto::run::ReportItem::Attempt(a) => a.at_ms,
        meridian_proto::run::ReportItem::Log(_) => 0,
    };
    let payload = serde_json::to_string(report).expect("reports serialise");
    Outbox::record_in(tx, &item.key(), at_ms, &payload).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::run::{ReportItem, RunEvent, RunState};
    use meridian_proto::workflow::WorkflowDefinition;
    use meridian_proto::{OverlapPolicy, ScheduleSpec};

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
        let buffer = Buffer::new(crate::store::open(&dir.path().join("a.db")).await.unwrap());
        let a = assignment(1, "0/10 * * * * ?");
        buffer.sync(std::slice::from_ref(&a)).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), WINDOW as u64);
        let first = buffer.records("ads.s").await.unwrap();
        assert_eq!(first[0], a.after_ms + 10_000);

        // Take three records, refill: still 50, continuing after the last buffered one.
        let due = buffer.due(a.after_ms + 30_000, 100).await.unwrap();
        assert_eq!(due.len(), 3);
        for (a, r) in &due {
            buffer.take(a, r, "skipped", &skipped(a, r)).await.unwrap();
        }
        buffer.refill("ads.s").await.unwrap();
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

        // No longer assigned: gone.
        buffer.sync(&[]).await.unwrap();
        assert_eq!(buffer.count("ads.s").await.unwrap(), 0);
    }
}
