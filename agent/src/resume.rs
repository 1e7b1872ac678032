//! Deciding how a run a previous agent process had going goes on, from what the supervisor
//! knows of its attempts: each task either ended well before, or is re-attached to (its latest
//! attempt, still running or ended since), or has not started. Pure: the agent does what this
//! decides.
//!
//! The supervisor keeps every shell attempt of a run until the run's end is recorded, so a
//! shell task it does not know never started. A task some started task depends on (however
//! indirectly) had succeeded. What cannot be known is an HTTP request the agent itself was
//! making: a run that may have had one in flight is not resumed (it is recorded failed, as
//! before supervision). Nor is one whose attempts the supervisor lost (it stopped too).

use std::collections::{BTreeMap, BTreeSet};

use meridian_domain::workflow::{TaskKind, TaskSpec};

use crate::supervisor::{Exit, Known};

/// How one task of a resumed run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResume {
    /// It succeeded before the restart.
    Succeeded,
    /// Its latest attempt is re-attached to (running, or ended since: then its end is what is
    /// reported); retries, if it fails, go on from there.
    Reattach { attempt: u32, started_ms: i64 },
}

/// A run resumed: what each task that had started does; the rest start as their
/// dependencies allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub tasks: BTreeMap<String, TaskResume>,
}

/// Why a run cannot be resumed (it is recorded failed, its leftover processes killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotResumed {
    /// The supervisor lost one of its attempts (it stopped while the attempt ran).
    Lost { task: String },
    /// An HTTP task may have been in flight inside the agent.
    InFlight { task: String },
}

impl NotResumed {
    pub fn message(&self) -> String {
        match self {
            Self::Lost { task } => format!(
                "the agent and the supervisor stopped while the run was going (task `{task}`'s \
                 outcome is unknown)"
            ),
            Self::InFlight { task } => format!(
                "the agent stopped while the run was going (task `{task}`, a request the agent \
                 makes itself, may have been in flight: its outcome is unknown)"
            ),
        }
    }
}

/// How the run whose tasks are `tasks` goes on, given the supervisor's `known` attempts of it.
pub fn plan(tasks: &[TaskSpec], known: &[Known]) -> Result<Resume, NotResumed> {
    let mut latest: BTreeMap<&str, &Known> = BTreeMap::new();
    for k in known {
        if let Some(task) = tasks.iter().find(|t| t.name == k.key.task) {
            if k.exit == Some(Exit::Lost) {
                return Err(NotResumed::Lost {
                    task: task.name.clone(),
                });
            }
            let slot = latest.entry(task.name.as_str()).or_insert(k);
            if k.key.attempt > slot.key.attempt {
                *slot = k;
            }
        }
    }
    // Every task a started one depends on, however indirectly, had succeeded.
    let mut succeeded: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = latest.keys().copied().collect();
    while let Some(name) = stack.pop() {
        if let Some(task) = tasks.iter().find(|t| t.name == name) {
            for d in &task.depends_on {
                if succeeded.insert(d.as_str()) {
                    stack.push(d.as_str());
                }
            }
        }
    }
    let mut resume = Resume::default();
    for task in tasks {
        let name = task.name.as_str();
        if let Some(k) = latest.get(name) {
            resume.tasks.insert(
                name.to_owned(),
                TaskResume::Reattach {
                    attempt: k.key.attempt,
                    started_ms: k.started_ms,
                },
            );
        } else if succeeded.contains(name) {
            resume.tasks.insert(name.to_owned(), TaskResume::Succeeded);
        } else if matches!(task.kind, TaskKind::Http { .. })
            && task
                .depends_on
                .iter()
                .all(|d| succeeded.contains(d.as_str()))
        {
            return Err(NotResumed::InFlight {
                task: name.to_owned(),
            });
        }
    }
    Ok(resume)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::AttemptKey;

    fn shell(name: &str, deps: &[&str]) -> TaskSpec {
        let mut t: TaskSpec = serde_json::from_value(serde_json::json!({
            "name": name,
            "kind": {"shell": {"script": "true"}},
        }))
        .unwrap();
        t.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
        t
    }

    fn http(name: &str, deps: &[&str]) -> TaskSpec {
        let mut t = shell(name, deps);
        t.kind = serde_json::from_value(serde_json::json!({
            "http": {"method": "POST", "url": "http://x/", "headers": {}, "expect_status": 200}
        }))
        .unwrap();
        t
    }

    fn known(task: &str, attempt: u32, exit: Option<Exit>) -> Known {
        Known {
            key: AttemptKey {
                run_id: "r".into(),
                task: task.into(),
                attempt,
            },
            pid: 42,
            started_ms: i64::from(attempt) * 1000,
            exit,
        }
    }

    #[test]
    fn a_run_goes_on_from_its_latest_attempts_and_what_they_needed_had_succeeded() {
        // extract -> transform -> load; notify (http) after load.
        let tasks = [
            shell("extract", &[]),
            shell("transform", &["extract"]),
            shell("load", &["transform"]),
            http("notify", &["load"]),
        ];
        // transform's second attempt runs; extract, which it needs, had succeeded (even
        // without the supervisor's word for it).
        let plan = plan(
            &tasks,
            &[
                known("transform", 1, Some(Exit::Code { code: 1 })),
                known("transform", 2, None),
            ],
        )
        .unwrap();
        assert_eq!(
            plan.tasks,
            BTreeMap::from([
                ("extract".to_owned(), TaskResume::Succeeded),
                (
                    "transform".to_owned(),
                    TaskResume::Reattach {
                        attempt: 2,
                        started_ms: 2000
                    }
                ),
            ])
        );
        // Nothing known at all: nothing had started (a shell task always is known).
        assert_eq!(super::plan(&tasks, &[]).unwrap(), Resume::default());
    }

    #[test]
    fn a_run_is_not_resumed_when_an_attempt_was_lost_or_a_request_may_have_been_in_flight() {
        let tasks = [shell("load", &[]), http("notify", &["load"])];
        assert_eq!(
            plan(&tasks, &[known("load", 1, Some(Exit::Lost))]),
            Err(NotResumed::Lost {
                task: "load".into()
            })
        );
        // load is known (ended); notify (http) may have been going.
        assert_eq!(
            plan(
                &[
                    shell("load", &[]),
                    http("notify", &[]),
                    shell("after", &["notify", "load"])
                ],
                &[known("load", 1, Some(Exit::Code { code: 0 }))]
            ),
            Err(NotResumed::InFlight {
                task: "notify".into()
            })
        );
        // A request some started task depended on had been made and had succeeded.
        let plan = plan(
            &[http("fetch", &[]), shell("load", &["fetch"])],
            &[known("load", 1, None)],
        )
        .unwrap();
        assert_eq!(plan.tasks["fetch"], TaskResume::Succeeded);
    }
}
