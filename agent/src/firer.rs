//! Firing: the worker that takes due records from the buffer at their fire time, decides a
//! pass ([`crate::pass`]: start, queue, wait, catch up or skip each), writes it as one take,
//! then launches, queues or holds back the runs through the run registry; missed records are
//! let go at the catch-up rate (a token bucket); what a pass took is topped up once nothing
//! more is due.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_domain::Clock;
use meridian_domain::run::Assignment;
use tokio::sync::Notify;

use crate::buffer::{Buffer, DueKey};
use crate::lease::{Leases, Moment};
use crate::pass::{Pass, Then};
use crate::runs::RunRegistry;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::take::Take;

/// How many due records one pass takes.
const FIRE_BATCH: u32 = 100_000;
/// The worker looks at the clock at least this often (an injected clock may jump).
const FIRE_TICK: Duration = Duration::from_millis(100);

/// Where the worker's reads of due records got to.
#[derive(Default)]
struct Reading {
    reached: Option<DueKey>,
    /// The last read stopped at its batch.
    full: bool,
}

/// The firing worker.
pub struct Firer {
    pub clock: Arc<dyn Clock>,
    /// Missed records started per second.
    pub catch_up_rate: f64,
    pub buffer: Buffer,
    /// The leases the lease keeper renews: a record fires only under a valid one.
    pub leases: Arc<Mutex<Leases>>,
    /// Passes completed (the lease keeper reads it to know a release's last take).
    pub passes: Arc<AtomicU64>,
    pub registry: Arc<RunRegistry>,
    /// Woken by new schedules, a run's end, a drain.
    pub wake: Arc<Notify>,
    /// The reporting worker's wake-up.
    pub reported: Arc<Notify>,
    pub shutdown: Shutdown,
    /// What the firer keeps between passes (its own: `Default` to start).
    pub state: FirerState,
}

/// What the firer keeps between passes.
#[derive(Default)]
pub struct FirerState {
    /// Schedules whose records were taken and not yet topped up.
    refill: Mutex<HashMap<String, Arc<Assignment>>>,
}

impl Firer {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Fires until the agent stops; takes nothing new once it drains.
    pub async fn run(self: Arc<Self>) {
        let mut last_catch_up = tokio::time::Instant::now();
        let mut tokens = 1.0f64;
        let mut reading = Reading::default();
        loop {
            let mut more = false;
            if !self.shutdown.draining() {
                match self.fire_due(&mut reading).await {
                    Ok(full) => more = full,
                    Err(e) => tracing::error!("firing: {e}"),
                }
                // Catch-up: a token bucket at `catch_up_rate`, at most one second's worth saved.
                let elapsed = last_catch_up.elapsed().as_secs_f64();
                last_catch_up = tokio::time::Instant::now();
                tokens = (tokens + elapsed * self.catch_up_rate).min(self.catch_up_rate.max(1.0));
                while tokens >= 1.0 {
                    let next = self.registry.lock().next_catch_up();
                    let Some(run) = next else { break };
                    tokens -= 1.0;
                    self.registry.catch_up(run);
                }
            }
            self.passes.fetch_add(1, Ordering::SeqCst);
            if more {
                // The pass stopped at its batch: more is due now.
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.now();
            let next = self.buffer.next_fire_ms(now).await.ok().flatten();
            let mut wait = FIRE_TICK;
            if let Some(next) = next {
                wait = wait.min(Duration::from_millis((next - now).max(0) as u64));
            }
            if !self.registry.lock().catch_up.is_empty() {
                wait = wait.min(Duration::from_secs_f64(1.0 / self.catch_up_rate));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = self.shutdown.stopped() => return,
            }
        }
    }

    /// Takes the due records (up to [`FIRE_BATCH`]) as one take, as [`Pass::plan`] decides,
    /// then starts, queues or holds back the runs. Returns whether it stopped at the batch.
    async fn fire_due(self: &Arc<Self>, reading: &mut Reading) -> Result<bool, StoreError> {
        let now = self.now();
        let began = std::time::Instant::now();
        // Reads go on from where the last one got to while records it took may still be
        // buffered (their take is not expanded yet) or it stopped at its batch; otherwise from
        // the start, which also finds records a refill or sync put behind that point and ones
        // left because their partition was not held.
        if !reading.full && !self.buffer.expanding() {
            reading.reached = None;
        }
        let firing = self.buffer.firing().await;
        let due = self
            .buffer
            .due(now, reading.reached.as_ref(), FIRE_BATCH)
            .await?;
        reading.full = due.full;
        if due.reached.is_some() {
            reading.reached = due.reached;
        }
        if due.records.is_empty() {
            drop(firing);
            if !due.full {
                // Nothing (more) due: top up what the last passes took (it waits for their
                // takes to be expanded; firing does not wait for it).
                let refill: Vec<Arc<Assignment>> =
                    std::mem::take(&mut *self.state.refill.lock().expect("refill"))
                        .into_values()
                        .collect();
                if !refill.is_empty() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.buffer.refill(refill).await
                            && !this.shutdown.is_stopped()
                        {
                            tracing::error!("topping up the buffer: {e}");
                        }
                    });
                }
            }
            return Ok(due.full);
        }
        let records = due.records.len();
        let read = began.elapsed();
        let pass = {
            let leases = self.leases.lock().expect("leases");
            Pass::plan(
                due.records,
                &leases,
                Moment {
                    wall_ms: now,
                    mono_ms: self.clock.monotonic_ms(),
                },
                |schedule| self.registry.counts(schedule),
                |job| self.registry.try_permit(job),
            )
        };
        let decided = began.elapsed();
        {
            let mut refill = self.state.refill.lock().expect("refill");
            for item in &pass.items {
                let schedule = item.assignment.schedule.as_str();
                if !refill.contains_key(schedule) {
                    refill.insert(schedule.to_owned(), item.assignment.clone());
                }
            }
        }
        // Stamped now: the runs start as soon as the take is durable.
        let take = Take {
            at_ms: self.now(),
            items: pass.items,
        };
        self.buffer.take_all(take).await?;
        drop(firing);
        let written = began.elapsed();
        self.apply(pass.then);
        self.reported.notify_one();
        tracing::debug!(
            records,
            read_ms = read.as_millis() as u64,
            decided_ms = decided.as_millis() as u64,
            written_ms = written.as_millis() as u64,
            launched_ms = began.elapsed().as_millis() as u64,
            "firing pass"
        );
        Ok(due.full)
    }

    /// Does what a pass decided, once its take is durable.
    fn apply(&self, then: Vec<Then>) {
        for then in then {
            match then {
                Then::Launch {
                    run,
                    permit,
                    cancel_older,
                } => {
                    if cancel_older && let Some(schedule) = &run.schedule {
                        self.registry.lock().cancel_going(schedule.as_str());
                    }
                    self.registry.launch(run, permit);
                }
                Then::Wait(schedule, run) => self.registry.wait(schedule, run),
                Then::CatchUp(run) => self.registry.lock().queue_catch_up(run),
            }
        }
    }
}
