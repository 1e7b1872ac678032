//! The host's load: sampled before each heartbeat (CPU busy since the previous sample, memory
//! in use, the one-minute load average per core, from `/proc`), sent to the plane, and held
//! against the agent's thresholds (`[load]` in agent.toml). Above any of them the agent starts
//! nothing new — runs wait, queued, saying why — and the plane moves its partitions to an
//! agent that is not; it counts as under them again only once every figure is below 90 % of
//! its threshold, so a host hovering at a threshold does not flap.

use std::sync::Mutex;

use meridian_proto::pb;
use serde::Deserialize;
use tokio::sync::Notify;

/// `[load]` in agent.toml: above any of these the agent starts nothing new (none: no limit).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadLimits {
    /// The one-minute load average per core (`2.0`: twice as many runnable as cores).
    #[serde(default)]
    pub max_load_per_core: Option<f64>,
    /// Memory in use, percent of total.
    #[serde(default)]
    pub max_memory_percent: Option<f64>,
    /// CPU busy since the previous heartbeat, percent of all cores.
    #[serde(default)]
    pub max_cpu_percent: Option<f64>,
}

impl LoadLimits {
    /// A threshold that is not a number above zero (or is not finite) names the field.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        for (field, v) in [
            ("load.max_load_per_core", self.max_load_per_core),
            ("load.max_memory_percent", self.max_memory_percent),
            ("load.max_cpu_percent", self.max_cpu_percent),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Some((field, "must be a number of at least 0"));
            }
        }
        None
    }
}

/// One reading of the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub load1: f64,
    pub cores: u32,
}

/// Whether `s` is over `limits`, and which figure: over once any reaches its threshold; when
/// it `was` over, until every figure is under 90 % of its threshold.
pub fn over(limits: &LoadLimits, s: &Sample, was: bool) -> Option<String> {
    let margin = if was { 0.9 } else { 1.0 };
    let per_core = s.load1 / f64::from(s.cores.max(1));
    let figures = [
        (limits.max_load_per_core, per_core, "load per core"),
        (limits.max_memory_percent, s.memory_percent, "memory %"),
        (limits.max_cpu_percent, s.cpu_percent, "cpu %"),
    ];
    figures.iter().find_map(|(max, value, what)| {
        let max = (*max)?;
        (*value >= max * margin).then(|| format!("{what} {value:.2} ≥ {:.2}", max * margin))
    })
}

/// CPU time counters from `/proc/stat`: (busy, total) jiffies.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait are the 4th and 5th.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn memory_percent() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    (total > 0.0).then(|| 100.0 * (total - available) / total)
}

fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The host's load as this agent sees it, and whether it is over its thresholds.
pub struct Load {
    limits: LoadLimits,
    state: Mutex<State>,
    /// Woken when the agent comes under its thresholds again.
    cleared: Notify,
}

#[derive(Default)]
struct State {
    last_cpu: Option<(u64, u64)>,
    sample: Sample,
    over: Option<String>,
}

impl Load {
    pub fn new(limits: LoadLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
            cleared: Notify::new(),
        }
    }

    /// Reads the host (before a heartbeat) and decides whether the agent is over its
    /// thresholds; returns what the heartbeat says.
    pub fn sample(&self) -> pb::AgentLoad {
        let cpu = cpu_times();
        let mut st = self.state.lock().expect("load");
        let cpu_percent = match (st.last_cpu, cpu) {
            (Some((busy0, total0)), Some((busy, total))) if total > total0 => {
                100.0 * (busy.saturating_sub(busy0)) as f64 / (total - total0) as f64
            }
            _ => 0.0,
        };
        st.last_cpu = cpu;
        let sample = Sample {
            cpu_percent,
            memory_percent: memory_percent().unwrap_or(0.0),
            load1: load1().unwrap_or(0.0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        };
        self.judge(&mut st, sample);
        pb::AgentLoad {
            cpu_percent: sample.cpu_percent.round() as u32,
            memory_percent: sample.memory_percent.round() as u32,
            load1_hundredths: (sample.load1 * 100.0).round() as u32,
            cores: sample.cores,
            overloaded: st.over.clone().unwrap_or_default(),
        }
    }

    fn judge(&self, st: &mut State, sample: Sample) {
        let was = st.over.is_some();
        st.sample = sample;
        st.over = over(&self.limits, &sample, was);
        if was && st.over.is_none() {
            self.cleared.notify_waiters();
        }
    }

    /// Why the agent starts nothing new now (none: it may).
    pub fn over(&self) -> Option<String> {
        self.state.lock().expect("load").over.clone()
    }

    /// Resolves once the agent is under its thresholds (at once if it is).
    pub async fn under(&self) {
        loop {
            let cleared = self.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if self.over().is_none() {
                return;
            }
            cleared.await;
        }
    }

    #[cfg(test)]
    fn judge_for_test(&self, sample: Sample) {
        let mut st = self.state.lock().expect("load");
        self.judge(&mut st, sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(load1: f64, memory_percent: f64) -> Sample {
        Sample {
            cpu_percent: 10.0,
            memory_percent,
            load1,
            cores: 2,
        }
    }

    #[test]
    fn over_a_threshold_until_well_under_it() {
        let limits = LoadLimits {
            max_load_per_core: Some(2.0),
            max_memory_percent: Some(90.0),
            max_cpu_percent: None,
        };
        assert_eq!(over(&limits, &at(3.9, 50.0), false), None);
        let why = over(&limits, &at(4.0, 50.0), false).unwrap();
        assert!(why.starts_with("load per core 2.00"), "{why}");
        // Once over: still over just under the threshold, under below 90 % of it.
        assert!(over(&limits, &at(3.8, 50.0), true).is_some());
        assert_eq!(over(&limits, &at(3.5, 50.0), true), None);
        assert!(
            over(&limits, &at(1.0, 95.0), false)
                .unwrap()
                .starts_with("memory %")
        );
        assert_eq!(over(&LoadLimits::default(), &at(100.0, 100.0), false), None);
        let bad = LoadLimits {
            max_cpu_percent: Some(f64::NAN),
            ..LoadLimits::default()
        };
        assert_eq!(bad.problem().map(|p| p.0), Some("load.max_cpu_percent"));
    }

    #[tokio::test]
    async fn runs_held_while_over_go_once_under() {
        let load = std::sync::Arc::new(Load::new(LoadLimits {
            max_load_per_core: Some(1.0),
            ..LoadLimits::default()
        }));
        load.judge_for_test(at(4.0, 10.0));
        assert!(load.over().is_some());
        let waiting = tokio::spawn({
            let load = load.clone();
            async move { load.under().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        load.judge_for_test(at(0.5, 10.0));
        waiting.await.unwrap();
        // A real reading of this host says something.
        let said = load.sample();
        assert!(said.cores >= 1);
    }
}
