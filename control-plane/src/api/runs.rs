//! `/runs`: the run history (filtered, paged, each tenant's own), one run with its task
//! attempts, its logs, asking for a run now and killing one.

use axum::extract::{Path, State};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::principal::Caller;
use super::{Api, ApiResult, Params, ReadOptions, Reader, create, found, name};
use crate::history_store::reader::RunReader;
use crate::model::{Command, Name, query};
use crate::policy::{Action, Kind, Object, Scope};

/// `GET /runs` filters. Spelled out rather than flattening [`query::RunFilter`]: a flattened
/// struct makes the query-string decoder see every value as a string, and numbers fail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunOptions {
    pub stale: bool,
    pub dc: Option<String>,
    pub cluster: Option<String>,
    pub tenant: Option<String>,
    pub environment: Option<String>,
    pub workflow: Option<String>,
    pub schedule: Option<String>,
    pub agent: Option<String>,
    pub task: Option<String>,
    pub state: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub lateness_min_ms: Option<i64>,
    pub after: Option<String>,
    pub limit: Option<u32>,
}

impl RunOptions {
    pub fn filter(self) -> ApiResult<query::RunFilter> {
        if let Some(state) = &self.state
            && meridian_domain::run::RunState::parse(state).is_none()
        {
            let states: Vec<&str> = meridian_domain::run::RunState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect();
            return Err(ApiError::bad_input(format!(
                "query `state`: `{state}` is not one of {}",
                states.join(", ")
            )));
        }
        if let Some(after) = &self.after
            && !after.contains('~')
        {
            return Err(ApiError::bad_input(format!(
                "query `after`: `{after}` is not a cursor (take `next` from the previous page)"
            )));
        }
        Ok(query::RunFilter {
            within: None,
            dc: self.dc,
            cluster: self.cluster,
            tenant: self.tenant,
            environment: self.environment,
            workflow: self.workflow,
            schedule: self.schedule,
            agent: self.agent,
            task: self.task,
            state: self.state,
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            lateness_min_ms: self.lateness_min_ms,
            after: self.after,
            limit: self.limit,
        })
    }
}

/// A run with its task attempts.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: query::RunRecord,
    pub attempts: Vec<query::TaskAttempt>,
}

/// `GET /runs` (filtered to what the caller may read) and `POST /runs` (a run now).
pub fn list() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<RunOptions>|
               -> ApiResult<_> {
            let stale = o.stale;
            let mut filter = o.filter()?;
            let read = api.reader(&c, stale).await?;
            if let Scope::Tenants(tenants) = read.scope(Kind::Run, "runs")? {
                filter.within = Some(tenants.iter().map(Name::to_string).collect());
            }
            Ok(Json(read.runs.runs(&filter).await?))
        },
    )
    .merge(create(Command::RequestRun))
}

/// `GET /runs/{run_id}`: a run with its task attempts.
pub fn one() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(id): Path<String>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            let run = readable_run(&read, &id).await?;
            let attempts = read.runs.attempts(&id).await?;
            Ok(Json(RunDetail { run, attempts }))
        },
    )
}

/// `GET /runs/{run_id}/logs`.
pub fn logs() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(id): Path<String>,
               Params(o): Params<ReadOptions>|
               -> ApiResult<_> {
            let read = api.reader(&c, o.stale).await?;
            readable_run(&read, &id).await?;
            Ok(Json(crate::logs::across::logs(&api.node, &id).await?))
        },
    )
}

/// `GET /runs/{run_id}/logs/follow` options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FollowOptions {
    /// Where the caller got to: `seen` from the previous answer (none: from the start).
    pub seen: Option<String>,
    /// Wait up to this long (ms, at most 10,000) for something new before answering.
    pub wait_ms: Option<u64>,
}

/// What a follower has not seen yet of a run's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogFollow {
    /// New pieces, in order per attempt.
    pub pieces: Vec<FollowPiece>,
    /// The cursor to send back as `seen` next time.
    pub seen: String,
    /// The run's state when the pieces were read.
    pub state: String,
    /// The run is over and every piece of its logs has been given: stop following.
    pub finished: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FollowPiece {
    pub task: String,
    pub attempt: u32,
    /// Where the piece starts in the attempt's output (bytes).
    pub offset: i64,
    pub text: String,
}

/// How much a follow answer carries at most.
const FOLLOW_BYTES: u64 = 256 * 1024;
/// How often a waiting follow asks the other plane nodes (pieces sent to this node wake it).
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// `GET /runs/{run_id}/logs/follow?seen=&wait_ms=`: the pieces of a run's logs after `seen`,
/// as soon as there are any (or `wait_ms` passes), from every plane node's logbook; what
/// `meridian runs logs RUN --follow` polls. The caller never talks to an agent.
pub fn follow() -> MethodRouter<Api> {
    get(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Path(id): Path<String>,
               Params(o): Params<FollowOptions>|
               -> ApiResult<_> {
            let mut seen: Vec<(String, u32, i64)> = match &o.seen {
                None => Vec::new(),
                Some(s) => serde_json::from_str(s).map_err(|_| {
                    ApiError::bad_input(format!(
                        "query `seen`: `{s}` is not a cursor (take `seen` from the previous answer)"
                    ))
                })?,
            };
            let wait = std::time::Duration::from_millis(o.wait_ms.unwrap_or(0).min(10_000));
            let deadline = tokio::time::Instant::now() + wait;
            let read = api.reader(&c, true).await?;
            readable_run(&read, &id).await?;
            let mut stored = api.node.logbook.changed();
            loop {
                // The state before the pieces: once it is final, every piece is stored (the
                // plane stores a batch's pieces before committing its events).
                let state = found(&format!("run `{id}`"), read.runs.run(&id).await?)?.state;
                let (pieces, settled) = unseen(&api, &id, &mut seen).await?;
                let over =
                    meridian_domain::run::RunState::parse(&state).is_some_and(|s| s.is_final());
                let finished = over && pieces.is_empty() && settled;
                if !pieces.is_empty() || finished || tokio::time::Instant::now() >= deadline {
                    return Ok(Json(LogFollow {
                        pieces,
                        seen: serde_json::to_string(&seen).unwrap_or_default(),
                        state,
                        finished,
                    }));
                }
                tokio::select! {
                    _ = stored.changed() => {}
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
        },
    )
}

/// The pieces of `run_id`'s logs after `seen` (which it moves on), up to `FOLLOW_BYTES`, and
/// whether that is all there is now (false: more to read, or a plane node that holds pieces
/// did not answer).
async fn unseen(
    api: &Api,
    run_id: &str,
    seen: &mut Vec<(String, u32, i64)>,
) -> ApiResult<(Vec<FollowPiece>, bool)> {
    use crate::logs::across;
    let mut pieces = Vec::new();
    let mut budget = FOLLOW_BYTES;
    let mut settled = true;
    for (task, attempt) in across::attempts(&api.node, run_id).await? {
        let i = match seen
            .iter()
            .position(|(t, a, _)| *t == task && *a == attempt)
        {
            Some(i) => i,
            None => {
                seen.push((task.clone(), attempt, -1));
                seen.len() - 1
            }
        };
        if budget == 0 {
            settled = false;
            break;
        }
        let read = across::after(&api.node, run_id, &task, attempt, seen[i].2, budget).await?;
        settled &= !read.more;
        for piece in read.pieces {
            budget = budget.saturating_sub(piece.data.len() as u64);
            seen[i].2 = piece.offset;
            pieces.push(FollowPiece {
                task: task.clone(),
                attempt,
                offset: piece.offset,
                text: piece.data,
            });
        }
    }
    Ok((pieces, settled))
}

/// `POST /runs/{run_id}/kill`.
pub fn kill() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>, Extension(c): Extension<Caller>, Path(id): Path<String>| {
            api.propose(&c, Command::KillRun { run_id: id })
                .await
                .map(Json)
        },
    )
}

/// `POST /runs/{run_id}/rerun` and `/recover`: the run again, one generation further.
pub fn rerun(recover: bool) -> MethodRouter<Api> {
    post(
        async move |State(api): State<Api>,
                    Extension(c): Extension<Caller>,
                    Path(id): Path<String>| {
            let rerun = api.node.state.runs().rerun(&id, recover).await?;
            api.propose(&c, Command::Rerun(rerun)).await.map(Json)
        },
    )
}

/// The body of `POST /runs/rerun`.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BulkRerun {
    /// Recover (run only the tasks that did not succeed) rather than re-run whole.
    pub recover: bool,
    /// How many runs the caller was shown and confirmed; none: only count them.
    pub expect: Option<u64>,
    /// The runs the caller was shown (`runs` of the counting reply): when given, they must
    /// be exactly the runs the filter matches now, not only as many.
    pub expect_runs: Option<Vec<String>>,
}

/// What `POST /runs/rerun` or `POST /runs/kill` found, and what it asked for.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BulkReply {
    /// The runs the filter matches that can be run again (finished; failed or killed to be
    /// recovered) or killed (going), newest first.
    pub count: u64,
    pub runs: Vec<String>,
    /// The new runs (a re-run) or the runs told to stop (a kill), when `expect` confirmed the
    /// count (empty otherwise).
    pub requested: Vec<String>,
    /// Runs the plane refused to run again, with why (`run: why`).
    pub refused: Vec<String>,
}

/// At most this many runs are run again or killed by one call.
pub const BULK_MAX: usize = 1000;

/// The body of `POST /runs/kill`.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BulkKill {
    /// How many runs the caller was shown and confirmed; none: only count them.
    pub expect: Option<u64>,
    /// The runs the caller was shown: when given, exactly the runs the filter matches now.
    pub expect_runs: Option<Vec<String>>,
}

/// What a bulk call does to each run it matches.
#[derive(Debug, Clone, Copy)]
enum Bulk {
    Rerun { recover: bool },
    Kill,
}

impl Bulk {
    /// The states a run must be in to be matched, each read on its own so the limit counts
    /// only those.
    fn states(self) -> &'static [&'static str] {
        match self {
            Bulk::Rerun { recover: true } => &["failed", "killed"],
            Bulk::Rerun { recover: false } => &["succeeded", "failed", "killed", "skipped"],
            Bulk::Kill => &["requested", "queued", "started", "returned"],
        }
    }

    fn matched(self) -> &'static str {
        match self {
            Bulk::Rerun { .. } => "finished runs",
            Bulk::Kill => "runs going",
        }
    }

    async fn command(self, runs: &RunReader, run_id: &str) -> ApiResult<Command> {
        Ok(match self {
            Bulk::Rerun { recover } => Command::Rerun(runs.rerun(run_id, recover).await?),
            Bulk::Kill => Command::KillRun {
                run_id: run_id.to_owned(),
            },
        })
    }
}

/// `POST /runs/rerun?FILTER`: counts the finished runs the filter matches (the analysis page's
/// filters, `runs list`'s flags); with `expect` equal to that count, runs each again in one
/// replicated batch. A count that moved meanwhile is refused (409), so nothing happens that
/// was not confirmed.
pub fn bulk_rerun() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<RunOptions>,
               super::Body(b): super::Body<BulkRerun>|
               -> ApiResult<Json<BulkReply>> {
            let of = Bulk::Rerun { recover: b.recover };
            bulk(&api, &c, o, of, b.expect, b.expect_runs).await
        },
    )
}

/// `POST /runs/kill?FILTER`: as `POST /runs/rerun`, for the runs going the filter matches:
/// counted first, killed once the count is confirmed.
pub fn bulk_kill() -> MethodRouter<Api> {
    post(
        async |State(api): State<Api>,
               Extension(c): Extension<Caller>,
               Params(o): Params<RunOptions>,
               super::Body(b): super::Body<BulkKill>|
               -> ApiResult<Json<BulkReply>> {
            bulk(&api, &c, o, Bulk::Kill, b.expect, b.expect_runs).await
        },
    )
}

async fn bulk(
    api: &Api,
    c: &Caller,
    o: RunOptions,
    of: Bulk,
    expect: Option<u64>,
    expect_runs: Option<Vec<String>>,
) -> ApiResult<Json<BulkReply>> {
    let filter = o.filter()?;
    let mut runs = Vec::new();
    {
        let read = api.reader(c, false).await?;
        let mut within = filter.clone();
        if let Scope::Tenants(tenants) = read.scope(Kind::Run, "runs")? {
            within.within = Some(tenants.iter().map(Name::to_string).collect());
        }
        for state in of.states() {
            if within.state.as_deref().is_some_and(|s| s != *state) {
                continue;
            }
            let one = query::RunFilter {
                state: Some((*state).to_owned()),
                limit: Some(BULK_MAX as u32 + 1),
                ..within.clone()
            };
            runs.extend(read.runs.runs(&one).await?);
        }
    }
    if runs.len() > BULK_MAX {
        return Err(ApiError::bad_input(format!(
            "the filter matches more than {BULK_MAX} {}: narrow it (--since, --state, …)",
            of.matched()
        )));
    }
    // Only what the caller may control (a viewer of a tenant is shown none of its).
    runs.retain(|r| {
        name("tenant", r.tenant.clone()).is_ok_and(|t| {
            crate::policy::decide(&c.principal, Action::Control, &Object::Run(t))
                == crate::policy::Decision::Allow
        })
    });
    if let Bulk::Rerun { .. } = of {
        // Of a record's generations only the newest: one re-run per record.
        let mut newest: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for r in &runs {
            let first = r.rerun_of.clone().unwrap_or_else(|| r.run_id.clone());
            let g = newest.entry(first).or_default();
            *g = (*g).max(r.generation);
        }
        runs.retain(|r| {
            let first = r.rerun_of.as_ref().unwrap_or(&r.run_id);
            newest.get(first) == Some(&r.generation)
        });
    }
    runs.sort_by_key(|r| {
        std::cmp::Reverse((
            r.fire_ms.or(r.requested_ms).or(r.order_ms),
            r.run_id.clone(),
        ))
    });
    let eligible: Vec<String> = runs.into_iter().map(|r| r.run_id).collect();
    let count = eligible.len() as u64;
    let mut reply = BulkReply {
        count,
        runs: eligible,
        requested: vec![],
        refused: vec![],
    };
    let Some(expect) = expect else {
        return Ok(Json(reply));
    };
    if expect != count {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!(
                "expect: the filter matches {count} runs now, not {expect}; nothing was done \
                 (count them again)"
            ),
        ));
    }
    if let Some(mut shown) = expect_runs {
        let mut now = reply.runs.clone();
        shown.sort();
        now.sort();
        if shown != now {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                "expect_runs: the filter matches other runs now than those shown; nothing was \
                 done (count them again)",
            ));
        }
    }
    if count == 0 {
        return Ok(Json(reply));
    }
    let mut batch = Vec::with_capacity(reply.runs.len());
    for id in &reply.runs {
        batch.push(of.command(&api.node.state.runs(), id).await?);
    }
    let outcomes = api.propose_batch(c, batch).await?;
    for (id, item) in reply.runs.iter().zip(outcomes) {
        match (item, of) {
            (Ok(one), Bulk::Rerun { .. }) => reply.requested.extend(
                one.detail
                    .as_ref()
                    .and_then(|d| d["run_id"].as_str().map(str::to_owned)),
            ),
            (Ok(_), Bulk::Kill) => reply.requested.push(id.clone()),
            (Err(e), _) => reply.refused.push(format!("{id}: {}", e.message)),
        }
    }
    Ok(Json(reply))
}

/// A run the reader may see, or the answer a missing run gets.
async fn readable_run(read: &Reader<'_>, id: &str) -> ApiResult<query::RunRecord> {
    let what = format!("run `{id}`");
    let run = found(&what, read.runs.run(id).await?)?;
    let tenant = name("run_id", run.tenant.clone())?;
    read.allow(Action::Read, &Object::Run(tenant), &what)?;
    Ok(run)
}
