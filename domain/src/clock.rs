//! The time, as something passed in: runtimes take a [`Clock`] so tests set the time instead
//! of sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Milliseconds on a clock that never jumps (setting the wall clock does not move it):
    /// what deadlines such as a lease's are counted on. Comparable only with itself.
    fn monotonic_ms(&self) -> i64 {
        self.now_ms()
    }
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Counted from the first call in this process on the OS's monotonic clock.
    fn monotonic_ms(&self) -> i64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let origin = ORIGIN.get_or_init(std::time::Instant::now);
        origin.elapsed().as_millis() as i64
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn at(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = to;
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// A duration for people: `1.5 s`, `2 min 5 s`, `1 h 3 min`.
pub fn spoken(ms: i64) -> String {
    let s = ms / 1000;
    match ms {
        ms if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 60_000 => format!("{s} s"),
        ms if ms < 3_600_000 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-08T06:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::at(t0);
        let other = clock.clone();
        assert_eq!(clock.now(), t0);
        other.advance(Duration::minutes(2));
        assert_eq!(clock.now(), t0 + Duration::minutes(2));
        assert_eq!(clock.now_ms(), t0.timestamp_millis() + 120_000);
    }
}
