//! Charts drawn as SVG on the server (no chart runtime in the page). Pure: each function
//! decides where things go; the templates draw them.
//!
//! - [`gantt`]: a run's task attempts on a time axis, one row each.
//! - [`hourly`]: runs per hour over the last day, the failed part of each hour marked.
//! - [`lateness`]: lateness p50 and p99 per data center, side by side.

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

/// `1.5 s`, `2 min 5 s`, `1 h 3 min` (shared with the alerts' texts).
pub use meridian_domain::clock::spoken as duration;

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

/// One hour's column: its runs, the failed part drawn over it in another colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub failed_y: u32,
    pub failed_height: u32,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hourly {
    pub width: u32,
    pub height: u32,
    pub column_width: u32,
    pub base_y: u32,
    pub columns: Vec<Column>,
    /// The most runs in an hour (the scale's top), shown beside the chart.
    pub max: u64,
}

const HOUR_WIDTH: u32 = 12;
const HOURLY_HEIGHT: u32 = 48;

/// `hours` hours ending with the one holding `now_ms`: each hour's (start ms, runs, failed
/// runs) from `counts`, drawn on a scale whose top is `max` (shared by every data center so
/// they compare at a glance).
pub fn hourly(counts: &[(i64, u64, u64)], now_ms: i64, hours: u32, max: u64) -> Hourly {
    const HOUR: i64 = 3_600_000;
    let last = now_ms / HOUR * HOUR;
    let max = max.max(1);
    let scale = |n: u64| ((n as f64 / max as f64) * f64::from(HOURLY_HEIGHT)).round() as u32;
    let columns = (0..hours)
        .map(|i| {
            let start = last - i64::from(hours - 1 - i) * HOUR;
            let (total, failed) = counts
                .iter()
                .filter(|(h, _, _)| *h == start)
                .fold((0, 0), |(t, f), (_, n, k)| (t + n, f + k));
            let height = scale(total).max(u32::from(total > 0));
            let failed_height = scale(failed).max(u32::from(failed > 0)).min(height);
            let hour = chrono::DateTime::from_timestamp_millis(start)
                .map(|t| t.format("%H:00 UTC").to_string())
                .unwrap_or_default();
            Column {
                x: i * HOUR_WIDTH,
                y: HOURLY_HEIGHT - height,
                height,
                failed_y: HOURLY_HEIGHT - failed_height,
                failed_height,
                title: format!("{hour}: {total} runs, {failed} failed"),
            }
        })
        .collect();
    Hourly {
        width: hours * HOUR_WIDTH,
        height: HOURLY_HEIGHT + 1,
        column_width: HOUR_WIDTH - 2,
        base_y: HOURLY_HEIGHT,
        columns,
        max,
    }
}

/// One data center's lateness bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatenessRow {
    pub dc: String,
    pub y: u32,
    pub text_y: u32,
    pub p50_width: u32,
    pub p99_width: u32,
    pub p50: String,
    pub p99: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lateness {
    pub width: u32,
    pub height: u32,
    pub label_width: u32,
    pub bar_height: u32,
    pub rows: Vec<LatenessRow>,
}

/// The value at quantile `q` of `sorted` (nearest rank).
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Per data center, its (p50, p99) lateness in ms, as two bars on one scale.
pub fn lateness(rows: &[(String, i64, i64)]) -> Lateness {
    const BAR_AREA: u32 = 360;
    const LABEL_AREA: u32 = 110;
    const ROW_HEIGHT: u32 = 34;
    let max = rows.iter().map(|r| r.2.max(r.1)).max().unwrap_or(1).max(1);
    let scale = |ms: i64| ((ms.max(0) as f64 / max as f64) * f64::from(BAR_AREA)).round() as u32;
    Lateness {
        width: LABEL_AREA + BAR_AREA + 90,
        height: rows.len() as u32 * ROW_HEIGHT + 4,
        label_width: LABEL_AREA,
        bar_height: 12,
        rows: rows
            .iter()
            .enumerate()
            .map(|(i, (dc, p50, p99))| LatenessRow {
                dc: dc.clone(),
                y: 2 + i as u32 * ROW_HEIGHT,
                text_y: 2 + i as u32 * ROW_HEIGHT + 20,
                p50_width: scale(*p50).max(1),
                p99_width: scale(*p99).max(1),
                p50: duration(*p50),
                p99: duration(*p99),
            })
            .collect(),
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
    fn hours_share_one_scale_and_mark_what_failed() {
        let now = 10 * 3_600_000 + 1_234;
        let h = |n: i64| n * 3_600_000;
        let chart = hourly(&[(h(10), 8, 2), (h(8), 4, 0), (h(1), 99, 0)], now, 3, 8);
        // Hours 8, 9 and 10; hour 1 is outside the window.
        let heights: Vec<_> = chart.columns.iter().map(|c| c.height).collect();
        assert_eq!(heights, [24, 0, 48]);
        assert_eq!(chart.columns[2].failed_height, 12);
        assert_eq!(chart.columns[2].title, "10:00 UTC: 8 runs, 2 failed");
        assert_eq!(chart.columns[0].y + chart.columns[0].height, chart.base_y);
    }

    #[test]
    fn lateness_quantiles_by_nearest_rank() {
        let sorted: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50));
        assert_eq!(quantile(&sorted, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
        let chart = lateness(&[("nj".into(), 100, 400), ("sg".into(), 50, 200)]);
        assert_eq!(chart.rows[0].p99_width, 360);
        assert_eq!(chart.rows[1].p99_width, 180);
        assert_eq!(chart.rows[0].p50, "0.1 s");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(3_780_000), "1 h 3 min");
    }
}
