//! What to do with a due fire record: pure decisions, no I/O (the runtime in [`crate::agent`]
//! performs them).
//!
//! - [`classify`]: a record that fell due while the agent held its partition is fired on
//!   time; one that fell due before (the agent or the plane was down, the lease had lapsed) was
//!   missed, and the schedule's catch-up policy decides whether it runs (rate-limited, in fire
//!   order) or is recorded as skipped.
//! - [`on_fire`]: what the overlap policy does when the schedule's previous run is still going.

use chrono::{DateTime, Utc};
use meridian_domain::{CatchUpPolicy, FireRecord, OverlapPolicy};

/// The fate of one due record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Due while held: fire now (subject to the overlap policy).
    OnTime,
    /// Missed, and the catch-up policy runs it: queue it for the rate-limited catch-up.
    CatchUp,
    /// Missed, and the catch-up policy skips it.
    Skip,
    /// A backfill's record: runs once, whatever the policies say.
    Backfill,
}

/// Classifies `due` (one schedule's due records, any order) for a partition held since
/// `since_ms`; records the plane `handed` over (given back, settled out of a doubt, or skipped
/// while paused and caught up on resume) count as missed whenever they fell due; those a
/// backfill handed (`backfill`) run whatever the catch-up policy says. Returns every record
/// once, in fire order.
pub fn classify(
    due: &[FireRecord],
    since_ms: i64,
    handed: &[i64],
    backfill: &[i64],
    policy: &CatchUpPolicy,
    now: DateTime<Utc>,
) -> Vec<(FireRecord, Fate)> {
    let (filled, due): (Vec<FireRecord>, Vec<FireRecord>) = due
        .iter()
        .cloned()
        .partition(|r| backfill.contains(&r.fire_at.timestamp_millis()));
    let (missed, on_time): (Vec<FireRecord>, Vec<FireRecord>) = due.into_iter().partition(|r| {
        let fire_ms = r.fire_at.timestamp_millis();
        fire_ms < since_ms || handed.contains(&fire_ms)
    });
    let plan = policy.decide(&missed, now);
    let mut out: Vec<(FireRecord, Fate)> = plan
        .skip
        .into_iter()
        .map(|r| (r, Fate::Skip))
        .chain(plan.run.into_iter().map(|r| (r, Fate::CatchUp)))
        .chain(on_time.into_iter().map(|r| (r, Fate::OnTime)))
        .chain(filled.into_iter().map(|r| (r, Fate::Backfill)))
        .collect();
    out.sort_by_key(|(r, _)| r.fire_at);
    out
}

/// What the overlap policy does with a new fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    Start,
    /// Wait until the running one ends.
    Queue,
    Skip,
    /// Kill the running ones, then start.
    CancelThenStart,
}

/// Decides for a new fire of a schedule with `running` runs going and `waiting` queued.
pub fn on_fire(policy: OverlapPolicy, running: usize, waiting: usize) -> Overlap {
    if running == 0 && waiting == 0 {
        return Overlap::Start;
    }
    match policy {
        OverlapPolicy::AllowAll => Overlap::Start,
        OverlapPolicy::Skip if running > 0 => Overlap::Skip,
        OverlapPolicy::Skip => Overlap::Start,
        OverlapPolicy::BufferOne if waiting == 0 => Overlap::Queue,
        OverlapPolicy::BufferOne => Overlap::Skip,
        OverlapPolicy::BufferAll => Overlap::Queue,
        OverlapPolicy::CancelOlder => Overlap::CancelThenStart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use meridian_domain::ScheduleId;

    fn at(s: i64) -> FireRecord {
        FireRecord::new(
            ScheduleId::new("t.s").unwrap(),
            Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap(),
        )
    }

    fn ms(s: i64) -> i64 {
        (1_800_000_000 + s) * 1000
    }

    #[test]
    fn records_due_while_held_fire_and_older_ones_follow_the_catch_up_policy() {
        let due = [at(40), at(0), at(20), at(60)];
        let now = at(61).fire_at;
        let all = classify(&due, ms(50), &[], &[], &CatchUpPolicy::default(), now);
        let fates: Vec<Fate> = all.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(
            fates,
            [Fate::CatchUp, Fate::CatchUp, Fate::CatchUp, Fate::OnTime],
            "in fire order"
        );
        let latest = classify(&due, ms(50), &[], &[], &CatchUpPolicy::Latest, now);
        let fates: Vec<Fate> = latest.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(fates, [Fate::Skip, Fate::Skip, Fate::CatchUp, Fate::OnTime]);
        let none = classify(&due, ms(50), &[], &[], &CatchUpPolicy::None, now);
        assert_eq!(none.iter().filter(|(_, f)| *f == Fate::Skip).count(), 3);
    }

    #[test]
    fn a_backfills_records_run_whatever_the_catch_up_policy_says() {
        // Long before the partition was held, with a policy that skips every missed record.
        let due = [at(0), at(10), at(20)];
        let now = at(61).fire_at;
        let all = classify(
            &due,
            ms(50),
            &[ms(20)],
            &[ms(0), ms(10)],
            &CatchUpPolicy::None,
            now,
        );
        let fates: Vec<Fate> = all.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(fates, [Fate::Backfill, Fate::Backfill, Fate::Skip]);
    }

    #[test]
    fn overlap_policies() {
        use OverlapPolicy::*;
        assert_eq!(on_fire(Skip, 0, 0), Overlap::Start);
        assert_eq!(on_fire(Skip, 1, 0), Overlap::Skip);
        assert_eq!(on_fire(BufferOne, 1, 0), Overlap::Queue);
        assert_eq!(on_fire(BufferOne, 1, 1), Overlap::Skip);
        assert_eq!(on_fire(BufferAll, 1, 5), Overlap::Queue);
        assert_eq!(on_fire(CancelOlder, 1, 0), Overlap::CancelThenStart);
        assert_eq!(on_fire(AllowAll, 3, 0), Overlap::Start);
        assert_eq!(
            on_fire(BufferAll, 0, 1),
            Overlap::Queue,
            "behind the ones already waiting"
        );
    }
}
