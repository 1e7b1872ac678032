//! Meridian's scheduling domain: what plane and agents must compute alike, with no I/O, no
//! clock of its own and no wire format.
//!
//! # Layout
//!
//! - [`schedule`]: a schedule's id and spec (cron, time zone, start, end, catch-up policy),
//!   its overlap policy, and [`WINDOW`], the records kept ahead per schedule.
//! - [`calendar`]: the pure fire-time calendar: `expression` parses Quartz and Unix cron (with
//!   croner), `zone` maps wall-clock time to instants with the DST rules, and `Calendar`
//!   validates a spec and yields fire times and the 50-record window.
//! - [`fire_record`]: a fire record and its id, derived only from (schedule, fire instant).
//! - [`catch_up`]: deciding which missed records run after downtime.
//! - [`clock`]: the time as an argument ([`Clock`]): the system clock, or a manual one in tests.
//! - [`workflow`]: workflow definitions (a DAG of shell, HTTP and no-op tasks) and their
//!   validation.
//! - [`run`]: jobs and assignments an agent is given, and the reports (run events, task
//!   attempts, log chunks) it sends back.
//! - [`resource`]: resource keys in the shared S3 bucket, each under its tenant's prefix.
//! - [`stored`]: the versioned envelope of what an agent or plane node keeps in its own
//!   database, and the rule for changing a shape.
//!
//! Modules depend one way: `schedule` ← `fire_record` ← `catch_up`, `calendar`; `resource` ←
//! `workflow` ← `run`. Data moves the same way: a `ScheduleSpec` is validated into a
//! `Calendar`; the calendar turns "after this instant" into `FireRecord`s; after downtime,
//! `CatchUpPolicy::decide` picks which of the missed records run. Plane and agents both link
//! this crate, so they compute the same fire times and the same ids.

pub mod calendar;
pub mod catch_up;
pub mod clock;
pub mod fire_record;
pub mod resource;
pub mod run;
pub mod schedule;
pub mod stored;
pub mod workflow;

pub use calendar::{Calendar, CalendarError};
pub use catch_up::CatchUpPlan;
pub use clock::{Clock, ManualClock, SystemClock};
pub use fire_record::{FireId, FireRecord};
pub use schedule::{
    CatchUpPolicy, OverlapPolicy, ScheduleId, ScheduleSpec, TakeoverPolicy, WINDOW,
};
