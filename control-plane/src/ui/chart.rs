//! Charts drawn as SVG on the server (no chart runtime in the page). Pure: each function
//! decides where things go; the templates draw them.
//!
//! - [`gantt`]: a run's task attempts on a time axis, one row each.

use crate::model::query::TaskAttempt;

/// Width of the plot area, and the room for labels to its left.
const PLOT: u32 = 720;
const LABEL: u32 = 150;
const ROW: u32 = 26;
const BAR: u32 = 16;
const TOP: u32 = 8;
const AXIS: u32 = 24;

/// One attempt's bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// `load #2`.
    pub label: String,
    pub outcome: String,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    /// Centre of the row, for the label's baseline.
    pub text_y: u32,
    /// What a hover shows: `load #2: failed after 3.2 s`.
    pub title: String,
}

/// A tick on the time axis: where, and the time since the first start (`+12 s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub x: u32,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gantt {
    pub width: u32,
    pub height: u32,
    pub label_width: u32,
    pub bar_height: u32,
    pub axis_y: u32,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
}

/// `1.5 s`, `2 min 5 s`, `1 h 3 min`.
pub fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match ms {
        ms if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 60_000 => format!("{s} s"),
        ms if ms < 3_600_000 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The attempts that started, on one axis from the first start to the last finish (`now_ms`
/// for one still going).
pub fn gantt(attempts: &[TaskAttempt], now_ms: i64) -> Gantt {
    let started: Vec<&TaskAttempt> = attempts.iter().filter(|a| a.started_ms.is_some()).collect();
    let start = started
        .iter()
        .filter_map(|a| a.started_ms)
        .min()
        .unwrap_or(now_ms);
    let end = started
        .iter()
        .map(|a| a.finished_ms.unwrap_or(now_ms))
        .max()
        .unwrap_or(now_ms)
        .max(start + 1);
    let span = (end - start) as f64;
    let x_of = |ms: i64| LABEL + (((ms - start) as f64 / span) * f64::from(PLOT)).round() as u32;
    let bars = started
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let from = a.started_ms.unwrap_or(start);
            let to = a.finished_ms.unwrap_or(now_ms).max(from);
            let y = TOP + i as u32 * ROW;
            let x = x_of(from);
            let label = format!("{} #{}", a.task, a.attempt);
            Bar {
                title: format!("{label}: {} after {}", a.outcome, duration(to - from)),
                label,
                outcome: a.outcome.clone(),
                x,
                y,
                width: (x_of(to) - x).max(2),
                text_y: y + BAR / 2 + 4,
            }
        })
        .collect::<Vec<_>>();
    let ticks = (0..=4)
        .map(|i| {
            let ms = (span * f64::from(i) / 4.0).round() as i64;
            Tick {
                x: LABEL + PLOT * i / 4,
                label: format!("+{}", duration(ms)),
            }
        })
        .collect();
    let axis_y = TOP + bars.len() as u32 * ROW + 4;
    Gantt {
        width: LABEL + PLOT + 40,
        height: axis_y + AXIS,
        label_width: LABEL,
        bar_height: BAR,
        axis_y,
        bars,
        ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(
        task: &str,
        n: u32,
        from: Option<i64>,
        to: Option<i64>,
        outcome: &str,
    ) -> TaskAttempt {
        TaskAttempt {
            task: task.into(),
            attempt: n,
            outcome: outcome.into(),
            started_ms: from,
            finished_ms: to,
            exit_code: None,
            message: String::new(),
            warning: String::new(),
        }
    }

    #[test]
    fn bars_sit_on_one_axis_from_the_first_start_to_the_last_end() {
        let g = gantt(
            &[
                attempt("extract", 1, Some(1_000), Some(3_000), "succeeded"),
                attempt("load", 1, Some(3_000), Some(4_000), "failed"),
                attempt("load", 2, Some(5_000), None, "started"),
                attempt("report", 1, None, None, "started"),
            ],
            9_000,
        );
        // The one that never started has no bar; the one going runs to now.
        assert_eq!(g.bars.len(), 3);
        assert_eq!((g.bars[0].x, g.bars[0].width), (LABEL, PLOT / 4));
        assert_eq!((g.bars[1].x, g.bars[1].width), (LABEL + PLOT / 4, PLOT / 8));
        assert_eq!(g.bars[2].x + g.bars[2].width, LABEL + PLOT);
        assert_eq!(g.bars[1].title, "load #1: failed after 1.0 s");
        assert_eq!(g.bars[2].y - g.bars[1].y, ROW);
        assert_eq!(g.ticks.last().unwrap().label, "+8.0 s");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(3_780_000), "1 h 3 min");
    }
}
