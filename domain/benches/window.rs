//! How fast the calendar generates fire records.
//!
//! `cargo bench -p meridian-domain --bench window`. Two figures matter (see BENCHMARKS.md):
//! fire times per second for `window(…, 50)` on a few expressions, and the time to regenerate
//! 50 records for 100,000 schedules, which an agent does after taking over a cluster.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_domain::{Calendar, ScheduleId, ScheduleSpec, WINDOW};

const EXPRESSIONS: [(&str, &str); 5] = [
    ("every 5 s (Quartz)", "0/5 * * * * ?"),
    ("every 5 min (Quartz, 7 fields)", "0 0/5 * * * ? *"),
    ("weekday work hours (Unix)", "*/15 9-17 * * MON-FRI"),
    ("daily 02:30 (Quartz)", "0 30 2 * * ?"),
    ("last Friday (Quartz)", "0 15 10 ? * 6L"),
];

fn calendar(cron: &str) -> Calendar {
    ScheduleSpec {
        time_zone: "America/New_York".into(),
        ..ScheduleSpec::cron(cron)
    }
    .calendar()
    .expect("benchmark expressions are valid")
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .to_utc()
}

fn window_of_50(c: &mut Criterion) {
    let mut group = c.benchmark_group("window_50");
    group.throughput(Throughput::Elements(WINDOW as u64));
    let id = ScheduleId::new("bench-schedule").unwrap();
    for (name, cron) in EXPRESSIONS {
        let cal = calendar(cron);
        group.bench_function(name, |b| {
            b.iter(|| black_box(cal.window(&id, black_box(start()), WINDOW)))
        });
    }
    group.finish();
}

fn regenerate_100k_schedules(c: &mut Criterion) {
    const SCHEDULES: usize = 100_000;
    let calendars: Vec<Calendar> = EXPRESSIONS.iter().map(|(_, cron)| calendar(cron)).collect();
    let ids: Vec<ScheduleId> = (0..SCHEDULES)
        .map(|i| ScheduleId::new(format!("schedule-{i:06}")).unwrap())
        .collect();
    let mut group = c.benchmark_group("regenerate");
    group.sample_size(10);
    group.throughput(Throughput::Elements((SCHEDULES * WINDOW) as u64));
    group.bench_function("100k schedules x 50 records", |b| {
        b.iter(|| {
            let mut records = 0;
            for (i, id) in ids.iter().enumerate() {
                records += calendars[i % calendars.len()]
                    .window(id, start(), WINDOW)
                    .len();
            }
            black_box(records)
        })
    });
    group.finish();
}

criterion_group!(benches, window_of_50, regenerate_100k_schedules);
criterion_main!(benches);
