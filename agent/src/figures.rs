//! The agent's figures for `/metrics`: what is counted as runs start and end (fires, their
//! lateness, ends by state), runs waiting by reason, and what is read when scraped (leases
//! held, runs going, the outbox's backlog and its oldest entry, records buffered), beside the
//! resource cache's. Names `meridian_agent_…`, OpenMetrics text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use meridian_domain::run::RunState;

type Labels = Vec<(&'static str, &'static str)>;

/// Why a run is waiting to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// For a slot (`slots` in agent.toml).
    Slot,
    /// For its grant's share (`max_concurrent_runs`).
    Quota,
    /// For the host to be under the agent's load thresholds.
    Load,
}

impl Waiting {
    fn as_str(self) -> &'static str {
        match self {
            Self::Slot => "slot",
            Self::Quota => "quota",
            Self::Load => "load",
        }
    }
}

/// Counted as the agent works; cheap to share (every metric is a handle to shared atomics).
#[derive(Debug, Clone)]
pub struct Figures {
    starts: Counter,
    lateness: Histogram,
    ended: Family<Labels, Counter>,
    waiting: Family<Labels, Gauge>,
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            starts: Counter::default(),
            lateness: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            ended: Family::default(),
            waiting: {
                // Every reason shows, at 0 while nothing waits for it: a series that appears
                // only once something waits cannot be graphed or alerted on.
                let waiting = Family::<Labels, Gauge>::default();
                for why in [Waiting::Slot, Waiting::Quota, Waiting::Load] {
                    drop(waiting.get_or_create(&vec![("reason", why.as_str())]));
                }
                waiting
            },
        }
    }
}

/// Figures read when scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub leases_held: u64,
    pub runs_going: u64,
    /// Fires waiting behind their schedule's run going (the overlap policy).
    pub waiting_overlap: u64,
    pub outbox_entries: u64,
    /// Age of the oldest outbox entry, in seconds (0: none).
    pub outbox_oldest_seconds: f64,
    pub buffered_records: u64,
    /// Schedule fetches completed (a counter kept by the lease keeper).
    pub schedule_fetches: u64,
}

/// Holds a run's wait in the `waiting` gauge until dropped.
pub struct WaitGuard {
    gauge: Gauge,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Figures {
    /// A run started; `lateness_ms`: how long after its fire time (a scheduled run's).
    pub fn started(&self, lateness_ms: Option<i64>) {
        self.starts.inc();
        if let Some(ms) = lateness_ms {
            self.lateness.observe(ms.max(0) as f64 / 1000.0);
        }
    }

    /// A run ended (or was given back, or skipped) in `state`.
    pub fn ended(&self, state: RunState) {
        self.ended
            .get_or_create(&vec![("state", state.as_str())])
            .inc();
    }

    /// A run waits for `why` until the guard is dropped.
    pub fn waiting(&self, why: Waiting) -> WaitGuard {
        let gauge = self
            .waiting
            .get_or_create(&vec![("reason", why.as_str())])
            .clone();
        gauge.inc();
        WaitGuard { gauge }
    }

    /// The whole exposition: these figures, `live`, and the resource cache's.
    pub fn encode(&self, live: Live, resources: &crate::resources::Metrics) -> String {
        let mut registry = Registry::with_prefix("meridian");
        resources.register(&mut registry);
        let agent = registry.sub_registry_with_prefix("agent");
        agent.register(
            "starts",
            "Runs started (fired, run now, re-run, backfilled)",
            self.starts.clone(),
        );
        agent.register(
            "start_lateness_seconds",
            "How long after its fire time a scheduled run started",
            self.lateness.clone(),
        );
        agent.register(
            "runs_ended",
            "Runs ended here, by state",
            self.ended.clone(),
        );
        agent.register(
            "runs_waiting",
            "Runs waiting to start, by reason (slot, quota, load)",
            self.waiting.clone(),
        );
        let gauges = [
            (
                "leases_held",
                "Partitions this agent holds a lease on",
                live.leases_held,
            ),
            ("runs_going", "Runs going on this agent", live.runs_going),
            (
                "runs_waiting_overlap",
                "Fires waiting behind their schedule's run going (overlap policy)",
                live.waiting_overlap,
            ),
            (
                "outbox_entries",
                "Run events and log chunks not yet committed by the plane",
                live.outbox_entries,
            ),
            (
                "buffered_records",
                "Fire records generated ahead (the 50-record buffer of each schedule)",
                live.buffered_records,
            ),
        ];
        for (name, help, value) in gauges {
            let g = Gauge::<i64>::default();
            g.set(value as i64);
            agent.register(name, help, g);
        }
        let fetches = Counter::<u64>::default();
        fetches.inc_by(live.schedule_fetches);
        agent.register(
            "schedule_fetches",
            "Fetches of the held partitions' schedules from the plane, completed and applied",
            fetches,
        );
        let oldest = Gauge::<f64, AtomicU64>::default();
        oldest.set(live.outbox_oldest_seconds);
        agent.register(
            "outbox_oldest_seconds",
            "Age of the oldest outbox entry (0: the outbox is empty)",
            oldest,
        );
        let mut out = String::new();
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_counted_while_they_last_and_starts_with_their_lateness() {
        let f = Figures::default();
        let slot = f.waiting(Waiting::Slot);
        let quota = f.waiting(Waiting::Quota);
        let text = f.encode(Live::default(), &Default::default());
        assert!(
            text.contains("meridian_agent_runs_waiting{reason=\"slot\"} 1\n"),
            "{text}"
        );
        drop(slot);
        drop(quota);
        f.started(Some(1_500));
        f.started(None);
        f.ended(RunState::Succeeded);
        let text = f.encode(
            Live {
                outbox_entries: 3,
                ..Default::default()
            },
            &Default::default(),
        );
        assert!(
            text.contains("meridian_agent_runs_waiting{reason=\"slot\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("meridian_agent_starts_total 2\n"), "{text}");
        assert!(
            text.contains("meridian_agent_start_lateness_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_agent_start_lateness_seconds_bucket{le=\"2.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_agent_start_lateness_seconds_bucket{le=\"1.0\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("meridian_agent_runs_ended_total{state=\"succeeded\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("meridian_agent_outbox_entries 3\n"), "{text}");
        assert!(
            text.contains("meridian_resource_cache_hits_total 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
