//! Meridian's contract between the control plane and its agents.
//!
//! # Layout
//!
//! - [`pb`]: the gRPC messages and services generated from `proto/meridian/v1/*.proto` by
//!   `build.rs` (tonic + prost; `protoc` is vendored).
//! - [`convert`]: conversions between `pb` messages and the domain types below, with errors
//!   that name the field.
//! - [`schedule`]: a schedule's id and spec (cron, time zone, start, end, catch-up).
//! - [`calendar`]: the pure fire-time calendar: `expression` parses Quartz and Unix cron (with
//!   croner), `zone` maps wall-clock time to instants with the DST rules, and `Calendar` yields
//!   fire times and the 50-record window.
//! - [`fire_record`]: a fire record and its id, derived only from (schedule, fire instant).
//! - [`clock`]: the time as an argument ([`Clock`]): the system clock, or a manual one in tests.
//! - [`catch_up`]: the catch-up policy, deciding which missed records to run.
//! - [`transport`]: hosts maps, mutual-TLS material, dialling by hostname, peer identities.
//! - [`run`]: jobs and assignments an agent is given, and the reports (run events, task
//!   attempts, log chunks) it sends back, as the JSON its outbox and the plane's log hold.
//! - [`resource`]: resource keys in the shared S3 bucket, each under its tenant's prefix.
//! - [`workflow`]: workflow definitions (a DAG of shell, HTTP and no-op tasks) and their
//!   validation.
//! - [`stored`]: the versioned envelope of what an agent or plane node keeps in its own
//!   database, and the rule for changing a shape.
//!
//! Data moves one way: a `ScheduleSpec` is validated into a `Calendar`; the calendar turns
//! "after this instant" into `FireRecord`s; after downtime, `CatchUpPolicy::decide` picks which
//! of the missed records run. Both sides of the wire link this crate, so the plane and the
//! agents compute the same fire times and the same ids.

pub mod calendar;
pub mod catch_up;
pub mod clock;
pub mod convert;
pub mod fire_record;
pub mod resource;
pub mod run;
pub mod schedule;
pub mod stored;
pub mod transport;
pub mod workflow;

/// Generated gRPC code for package `meridian.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("meridian.v1");
}

pub use calendar::{Calendar, CalendarError, WINDOW};
pub use catch_up::{CatchUpPlan, CatchUpPolicy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use fire_record::{FireId, FireRecord};
pub use schedule::{OverlapPolicy, ScheduleId, ScheduleSpec};
