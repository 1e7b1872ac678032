//! Runs a runbook (`runbooks/*.md`) in the lab, so that a runbook that drifts from the product
//! fails CI.
//!
//! A runbook's fenced blocks say where they run:
//!
//! - ```` ```sh on=plane-1 ```` — on that node: in its namespace and directory (its
//!   `plane.toml`/`agent.toml`, `certs/` and `data/` are there), as an operator logged in on it;
//! - ```` ```sh on=operator ```` — on the operator's workstation: in the lab directory (the CA
//!   is in `ca/`), with `MERIDIAN_ADDR`, `MERIDIAN_CA`, `MERIDIAN_RESOLVE` and `MERIDIAN_TOKEN`
//!   set (`infra/lab env`);
//! - ```` ```sh lab ```` — what the lab does in place of an operator's hands (`systemctl`,
//!   copying files to a machine, a machine dying): run in the lab directory with `lab` meaning
//!   `infra/lab`;
//! - ```` ```text expect ```` — what the block before must print: each line's words must appear,
//!   in order, on one line of its output (a line starting `= ` must equal a whole output line).
//!   The block before is re-run until it succeeds and they do (for up to 90 s), as an operator
//!   would watch a status until it settles.
//!
//! Every `sh` block runs under `bash -euo pipefail`; the release `meridian` is first on `PATH`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lab::{LAB_DIR, release_dir, repo};

/// One fenced block of a runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    On { node: String, script: String },
    Operator(String),
    Lab(String),
    Expect(Vec<String>),
}

/// The runbook's blocks, in order; panics on a block whose info string it does not know (a
/// typo would otherwise silently skip a step).
pub fn parse(markdown: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        let body = body.join("\n");
        let words: Vec<&str> = info.split_whitespace().collect();
        steps.push(match words.as_slice() {
            ["sh", "lab"] => Step::Lab(body),
            ["sh", "on=operator"] => Step::Operator(body),
            ["sh", on] if on.starts_with("on=") => Step::On {
                node: on["on=".len()..].to_owned(),
                script: body,
            },
            ["text", "expect"] => Step::Expect(
                body.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            ["text"] | ["toml"] | [] => continue,
            other => panic!("runbook block with unknown info string {other:?}:\n{body}"),
        });
    }
    steps
}

/// Runs `script` under `bash -euo pipefail` in `cwd`, through `wrapper` (e.g. `infra/lab exec
/// NODE`) when one is given.
fn bash(script: &str, cwd: &Path, wrapper: &[&str]) -> (bool, String) {
    let path = format!(
        "{}:{}",
        release_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let full = format!("set -euo pipefail\n{script}");
    let argv: Vec<&str> = wrapper
        .iter()
        .copied()
        .chain(["bash", "-c", full.as_str()])
        .collect();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    let out = cmd
        .current_dir(cwd)
        .env("PATH", path)
        .env("MERIDIAN_LAB_DIR", LAB_DIR)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .expect("running bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn run(step: &Step) -> (bool, String) {
    let lab_dir = Path::new(LAB_DIR);
    let infra_lab = repo().join("infra/lab");
    let infra_lab = infra_lab.to_str().unwrap();
    match step {
        Step::On { node, script } => bash(script, lab_dir, &[infra_lab, "exec", node]),
        Step::Operator(script) => bash(
            &format!("eval \"$({infra_lab} env)\"\n{script}"),
            lab_dir,
            &[],
        ),
        Step::Lab(script) => bash(
            &format!("lab() {{ {infra_lab} \"$@\"; }}\n{script}"),
            lab_dir,
            &[],
        ),
        Step::Expect(_) => unreachable!("expectations are checked, not run"),
    }
}

/// Whether every expected line's words appear, in order, on one line of `output` (or, for a
/// line starting `= `, the rest is a whole line of `output`).
pub fn shows(output: &str, expected: &[String]) -> bool {
    expected.iter().all(|want| {
        if let Some(exact) = want.strip_prefix("= ") {
            return output.lines().any(|line| line.trim() == exact.trim());
        }
        let words: Vec<&str> = want.split_whitespace().collect();
        output.lines().any(|line| {
            let mut rest = line;
            words.iter().all(|w| match rest.find(w) {
                Some(i) => {
                    rest = &rest[i + w.len()..];
                    true
                }
                None => false,
            })
        })
    })
}

/// Executes `runbooks/<name>` in the lab that is up, step by step, printing each.
pub fn execute(name: &str) {
    let path = repo().join("runbooks").join(name);
    let markdown = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let steps = parse(&markdown);
    assert!(
        steps.iter().any(|s| !matches!(s, Step::Expect(_))),
        "{name} has no steps"
    );
    let mut i = 0;
    while i < steps.len() {
        let step = &steps[i];
        assert!(
            !matches!(step, Step::Expect(_)),
            "{name}: an expect block must follow a command block"
        );
        println!("{name}: {step:?}");
        let expected = match steps.get(i + 1) {
            Some(Step::Expect(expected)) => Some(expected),
            _ => None,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (ok, output) = run(step);
            match expected {
                None => {
                    println!("{output}");
                    assert!(ok, "{name}: step failed: {step:?}\n{output}");
                    break;
                }
                Some(expected) if ok && shows(&output, expected) => {
                    println!("{output}\n{name}: shows {expected:?}");
                    break;
                }
                Some(expected) => assert!(
                    Instant::now() < deadline,
                    "{name}: {step:?} never showed {expected:?} (exit ok: {ok}); last output:\n{output}"
                ),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        i += if expected.is_some() { 2 } else { 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_steps_and_unknown_ones_are_refused() {
        let md = "# T\n```sh on=plane-1\nmeridian plane status\n```\ntext\n```text expect\nplane-1 leader\n\n```\n```sh lab\nlab kill plane-3\n```\n```sh on=operator\nmeridian agents\n```\n```toml\nx = 1\n```\n";
        assert_eq!(
            parse(md),
            [
                Step::On {
                    node: "plane-1".into(),
                    script: "meridian plane status".into()
                },
                Step::Expect(vec!["plane-1 leader".into()]),
                Step::Lab("lab kill plane-3".into()),
                Step::Operator("meridian agents".into()),
            ]
        );
        let typo = std::panic::catch_unwind(|| parse("```sh on_plane-1\nx\n```\n"));
        assert!(typo.is_err());
    }

    #[test]
    fn expectations_match_words_in_order_on_one_line() {
        let out = "NODE  ROLE\nplane-1.dc-a.example:7443  leader    yes\nplane-2  follower  no\n";
        assert!(shows(out, &["plane-1.dc-a.example leader yes".into()]));
        assert!(!shows(out, &["plane-2 follower yes".into()]));
        assert!(!shows(out, &["leader plane-1".into()]), "order matters");
        assert!(shows("3\n0\n", &["= 0".into()]));
        assert!(!shows("10\n", &["= 0".into()]), "a whole line");
    }
}
