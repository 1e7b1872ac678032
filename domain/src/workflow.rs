//! Workflow definitions: a DAG of tasks. Both the plane (validating what users apply) and the
//! agent (running it) read this shape, so it lives in the contract crate. Stored and
//! replicated, hence serde with stable names and `deny_unknown_fields`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::resource::{self, ResourceKey};

/// A workflow's tasks. A single task is a workflow of one; `depends_on` makes it a DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    pub tasks: Vec<TaskSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the workflow; other tasks name it in `depends_on`.
    pub name: String,
    /// What the task does: `{"shell": {...}}`, `{"http": {...}}` or `{"noop": {}}`.
    pub kind: TaskKind,
    /// Tasks that must succeed before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Kill the attempt after this many seconds (none: no limit).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Attempts after the first failure.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry; doubles with each further retry.
    #[serde(default = "one_second")]
    pub retry_delay_seconds: u64,
    /// No retry starts after this long since the first attempt started (none: no limit).
    #[serde(default)]
    pub retry_max_seconds: Option<u64>,
    /// Resources the task needs, from the tenant's part of the S3 bucket: resource key → name
    /// in the run's working directory (`{"etl/load.sql": "load.sql"}`). The agent links each
    /// into place from its cache before the first attempt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<ResourceKey, String>,
    /// HTTP calls on this task's attempts' state changes, through a webhook or chat channel of
    /// the tenant (`meridian alert channel`), delivered by the plane with the alerts' durable
    /// retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<TaskCallback>,
}

/// A task's callback: which attempt outcomes call which channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCallback {
    /// An alert channel of the workflow's tenant (webhook or chat).
    pub channel: String,
    /// The attempt outcomes that call it (`started`, `succeeded`, `failed`, `timed_out`,
    /// `killed`, `upstream_failed`, `not_started`).
    pub on: Vec<AttemptOutcome>,
}

fn one_second() -> u64 {
    1
}

/// How one attempt of one task went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Started,
    Succeeded,
    Failed,
    TimedOut,
    Killed,
    /// Never started because a task it depends on (directly or through others) failed for
    /// good; reported as attempt 0, the message naming that task.
    UpstreamFailed,
    /// Never started because the run ended first (another branch failed, or it was killed);
    /// reported as attempt 0, the message saying which.
    NotStarted,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Killed => "killed",
            Self::UpstreamFailed => "upstream_failed",
            Self::NotStarted => "not_started",
        }
    }
}

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskKind {
    /// A shell script run with `sh -c` in its own process group, in the run's directory.
    Shell { script: String },
    /// An HTTP request; succeeds when the response has the expected status.
    Http {
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<String>,
        #[serde(default = "ok_status")]
        expect_status: u16,
    },
    /// Does nothing and succeeds: a join point or placeholder in a DAG (Airflow's
    /// `EmptyOperator`), and the task the scheduling benchmarks run. `{"noop": {}}`.
    Noop {},
}

fn ok_status() -> u16 {
    200
}

/// Why a workflow definition is invalid; each names the task and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("tasks: a workflow needs at least one task")]
    NoTasks,
    #[error("tasks[{index}].name: must not be empty")]
    EmptyName { index: usize },
    #[error("tasks[{index}].name: `{name}` is used by another task")]
    DuplicateName { index: usize, name: String },
    #[error("tasks.{task}.depends_on: `{missing}` is not a task of this workflow")]
    UnknownDependency { task: String, missing: String },
    #[error("tasks: the dependencies form a cycle through {0}")]
    Cycle(String),
    #[error("tasks.{task}.{field}: {problem}")]
    Field {
        task: String,
        field: &'static str,
        problem: String,
    },
}

impl WorkflowDefinition {
    /// A workflow of one shell task.
    pub fn shell(name: &str, script: &str) -> Self {
        Self {
            tasks: vec![TaskSpec {
                name: name.into(),
                kind: TaskKind::Shell {
                    script: script.into(),
                },
                depends_on: vec![],
                timeout_seconds: None,
                retries: 0,
                retry_delay_seconds: 1,
                retry_max_seconds: None,
                resources: BTreeMap::new(),
                callbacks: Vec::new(),
            }],
        }
    }

    /// Checks names, dependencies (they exist, no cycle) and each task's fields.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        if self.tasks.is_empty() {
            return Err(WorkflowError::NoTasks);
        }
        let mut names = BTreeSet::new();
        for (index, task) in self.tasks.iter().enumerate() {
            if task.name.trim().is_empty() {
                return Err(WorkflowError::EmptyName { index });
            }
            if !names.insert(task.name.as_str()) {
                return Err(WorkflowError::DuplicateName {
                    index,
                    name: task.name.clone(),
                });
            }
        }
        for task in &self.tasks {
            if let Some(missing) = task.depends_on.iter().find(|d| !names.contains(d.as_str())) {
                return Err(WorkflowError::UnknownDependency {
                    task: task.name.clone(),
                    missing: missing.clone(),
                });
            }
            task.validate_fields()?;
        }
        // Tasks of a run share its working directory: one name, one resource.
        let mut linked: BTreeMap<&str, (&ResourceKey, &str)> = BTreeMap::new();
        for task in &self.tasks {
            for (key, name) in &task.resources {
                match linked.get(name.as_str()) {
                    Some((other, by)) if *other != key => {
                        return Err(WorkflowError::Field {
                            task: task.name.clone(),
                            field: "resources",
                            problem: format!(
                                "key `{key}`: the name `{name}` is already `{other}` in task \
                                 `{by}` (a run's tasks share one working directory)"
                            ),
                        });
                    }
                    _ => {
                        linked.insert(name, (key, &task.name));
                    }
                }
            }
        }
        self.topological_order().map(|_| ())
    }

    /// Task names in an order where every task comes after its dependencies (Kahn's
    /// algorithm; ties broken by definition order so every node computes the same order).
    pub fn topological_order(&self) -> Result<Vec<&str>, WorkflowError> {
        let mut pending: Vec<&TaskSpec> = self.tasks.iter().collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut order = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|t| t.depends_on.iter().all(|d| done.contains(d.as_str())));
            match ready {
                Some(i) => {
                    let task = pending.remove(i);
                    done.insert(&task.name);
                    order.push(task.name.as_str());
                }
                None => {
                    let stuck: Vec<&str> = pending.iter().map(|t| t.name.as_str()).collect();
                    return Err(WorkflowError::Cycle(stuck.join(", ")));
                }
            }
        }
        Ok(order)
    }
}

impl TaskSpec {
    fn validate_fields(&self) -> Result<(), WorkflowError> {
        let field = |field, problem: &str| WorkflowError::Field {
            task: self.name.clone(),
            field,
            problem: problem.into(),
        };
        if self.timeout_seconds == Some(0) {
            return Err(field(
                "timeout_seconds",
                "must be at least 1 (omit it for no limit)",
            ));
        }
        if let Some(i) = self.callbacks.iter().position(|c| c.on.is_empty()) {
            return Err(field(
                "callbacks",
                &format!("[{i}].on: name at least one attempt outcome"),
            ));
        }
        let mut names = BTreeSet::new();
        for (key, name) in &self.resources {
            if let Err(e) = resource::check_relative(name) {
                return Err(field("resources", &format!("key `{key}`: the name {e}")));
            }
            if !names.insert(name.as_str()) {
                return Err(field(
                    "resources",
                    &format!("key `{key}`: the name `{name}` is given to another resource too"),
                ));
            }
        }
        match &self.kind {
            TaskKind::Shell { script } if script.trim().is_empty() => {
                Err(field("script", "must not be empty"))
            }
            TaskKind::Http { url, .. }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                Err(field("url", "must start with http:// or https://"))
            }
            TaskKind::Http { method, .. }
                if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) =>
            {
                Err(field(
                    "method",
                    "must be an upper-case HTTP method such as GET or POST",
                ))
            }
            TaskKind::Http { expect_status, .. } if !(100..=599).contains(expect_status) => {
                Err(field(
                    "expect_status",
                    "must be an HTTP status between 100 and 599",
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..WorkflowDefinition::shell(name, "true").tasks.remove(0)
        }
    }

    #[test]
    fn a_dag_orders_tasks_after_their_dependencies() {
        let wf = WorkflowDefinition {
            tasks: vec![
                task("load", &["extract", "clean"]),
                task("extract", &[]),
                task("clean", &["extract"]),
            ],
        };
        wf.validate().unwrap();
        assert_eq!(
            wf.topological_order().unwrap(),
            ["extract", "clean", "load"]
        );
    }

    #[test]
    fn cycles_unknown_dependencies_and_duplicates_are_named() {
        let cycle = WorkflowDefinition {
            tasks: vec![task("a", &["b"]), task("b", &["a"]), task("c", &[])],
        };
        assert_eq!(cycle.validate(), Err(WorkflowError::Cycle("a, b".into())));
        let unknown = WorkflowDefinition {
            tasks: vec![task("a", &["ghost"])],
        };
        assert_eq!(
            unknown.validate().unwrap_err().to_string(),
            "tasks.a.depends_on: `ghost` is not a task of this workflow"
        );
        let dup = WorkflowDefinition {
            tasks: vec![task("a", &[]), task("a", &[])],
        };
        assert_eq!(
            dup.validate().unwrap_err().to_string(),
            "tasks[1].name: `a` is used by another task"
        );
        assert_eq!(
            WorkflowDefinition { tasks: vec![] }.validate(),
            Err(WorkflowError::NoTasks)
        );
    }

    #[test]
    fn task_fields_are_checked_and_read_from_json() {
        let http: WorkflowDefinition = serde_json::from_str(
            r#"{"tasks":[{"name":"ping","kind":{"http":{"method":"get","url":"http://x"}}}]}"#,
        )
        .unwrap();
        assert_eq!(
            http.validate().unwrap_err().to_string(),
            "tasks.ping.method: must be an upper-case HTTP method such as GET or POST"
        );
        let err = serde_json::from_str::<WorkflowDefinition>(
            r#"{"tasks":[{"name":"a","kind":{"shell":{"script":"true"}},"retry":3}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retry"), "{err}");
        let noop: WorkflowDefinition =
            serde_json::from_str(r#"{"tasks":[{"name":"join","kind":{"noop":{}}}]}"#).unwrap();
        assert_eq!(noop.tasks[0].kind, TaskKind::Noop {});
        assert_eq!(noop.validate(), Ok(()));
    }

    #[test]
    fn resources_map_keys_to_names_inside_the_working_directory() {
        let parse = |resources: &str| {
            serde_json::from_str::<WorkflowDefinition>(&format!(
                r#"{{"tasks":[{{"name":"load","kind":{{"shell":{{"script":"sh run.sh"}}}},"resources":{resources}}}]}}"#
            ))
        };
        let ok = parse(r#"{"etl/run.sh": "run.sh", "jars/app.jar": "lib/app.jar"}"#).unwrap();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.tasks[0].resources.len(), 2);
        let bad_key = parse(r#"{"../other/x": "x"}"#).unwrap_err().to_string();
        assert!(bad_key.contains("`..` segment"), "{bad_key}");
        assert_eq!(
            parse(r#"{"a": "../../etc/cron.d/x"}"#)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string(),
            "tasks.load.resources: key `a`: the name `../../etc/cron.d/x` has an empty, `.` or `..` segment"
        );
        assert_eq!(
            parse(r#"{"a": "x", "b": "x"}"#)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string(),
            "tasks.load.resources: key `b`: the name `x` is given to another resource too"
        );
        let two_tasks = |second: &str| {
            serde_json::from_str::<WorkflowDefinition>(&format!(
                r#"{{"tasks":[
                    {{"name":"a","kind":{{"noop":{{}}}},"resources":{{"etl/x.sh":"x.sh"}}}},
                    {{"name":"b","kind":{{"noop":{{}}}},"resources":{second}}}]}}"#
            ))
            .unwrap()
            .validate()
        };
        assert_eq!(
            two_tasks(r#"{"etl/x.sh": "x.sh"}"#),
            Ok(()),
            "same key, same name"
        );
        assert_eq!(
            two_tasks(r#"{"etl/y.sh": "x.sh"}"#)
                .unwrap_err()
                .to_string(),
            "tasks.b.resources: key `etl/y.sh`: the name `x.sh` is already `etl/x.sh` in task \
             `a` (a run's tasks share one working directory)"
        );
    }
}
