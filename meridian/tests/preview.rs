//! `meridian schedule preview` as a user runs it: the real binary, its stdout, stderr and exit
//! code.

use std::process::{Command, Output};

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("run the meridian binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_documented_example_prints_three_fire_times_in_the_zone() {
    let out = meridian(&[
        "schedule",
        "preview",
        "--cron",
        "0/5 * * * * ?",
        "--tz",
        "Asia/Shanghai",
        "--from",
        "2017-08-30T17:22:28+08:00",
        "--count",
        "3",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "2017-08-30T17:22:30+08:00\n2017-08-30T17:22:35+08:00\n2017-08-30T17:22:40+08:00\n"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn count_defaults_to_ten() {
    let out = meridian(&["schedule", "preview", "--cron", "*/15 9-17 * * MON-FRI"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 10);
}

#[test]
fn invalid_input_exits_2_with_the_field_on_stderr_and_nothing_on_stdout() {
    let cases: [(&[&str], &str); 5] = [
        (&["--cron", "0 61 * * * ?"], "minute field `61`"),
        (
            &["--cron", "0 * * * *", "--tz", "Mars/Base"],
            "time_zone: `Mars/Base`",
        ),
        (&["--cron", "0 * * * *", "--from", "yesterday"], "--from"),
        (&["--cron", "0 * * * *", "--count", "0"], "--count"),
        (&["--cron", "* * *"], "has 3 fields"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["schedule", "preview"];
        all.extend_from_slice(args);
        let out = meridian(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
