//! Who a shell task runs as: the OS user its tenant maps to in its environment (`run_as`,
//! resolved by the plane into [`Job::os_user`]), looked up on this host, and whether the agent
//! may start it as that user at all.
//!
//! - [`decide`] is the pure part: from the target's and the agent's ids and the environment's
//!   `allow_agent_user`, run as the agent, switch to the target, or refuse. A task never runs
//!   as root or as the agent's own user unless the environment says so: such a task could read
//!   the agent's key, database and credentials and every tenant's files.
//! - [`task_user`] does the lookups (`getpwnam_r`, `getgrnam_r`, `getgrouplist`; blocking, so
//!   callers run it off the async runtime) and turns a refusal into an [`IdentityError`] that
//!   says which user, why, and what to set.
//! - [`become_user`] is what the child runs between fork and exec when the agent switches:
//!   supplementary groups, then the gid, then the uid, prepared before the fork.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use meridian_domain::run::{Job, OsUser};

/// A user as this host knows it, ready to start a task as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name (its uid in decimal when the host has no entry for it): `USER` and
    /// `LOGNAME` of the task.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the task is in: the run's group and those the host lists the user in.
    pub groups: Vec<u32>,
    /// The user's home directory, if the host names one that exists: the task's `HOME`.
    pub home: Option<PathBuf>,
}

/// Who a run's shell tasks run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub identity: Identity,
    /// The agent (root) sets the child's groups, gid and uid to `identity`'s; false when the
    /// task runs as the agent itself (allowed by the environment).
    pub switch: bool,
}

impl TaskUser {
    /// The agent's own user, unswitched: for tests and callers that run tasks as themselves.
    pub fn agent() -> io::Result<Self> {
        Ok(Self {
            identity: agent_identity()?,
            switch: false,
        })
    }

    /// The owner to give the run's files: the task's user when the agent switches to it,
    /// none when the task runs as the agent (its files are the agent's already).
    pub fn owner(&self) -> Option<Owner> {
        self.switch.then_some(Owner {
            uid: self.identity.uid,
            gid: self.identity.gid,
        })
    }
}

/// A uid and gid to chown to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A uid and primary gid, of a task's target user or of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// How a task may be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// As the agent itself, no switch (the environment allows the agent's user).
    AsAgent,
    /// As the target: the agent is root and sets groups, gid and uid in the child.
    Switch,
    Refuse(Refusal),
}

/// Why a task may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The environment maps no user for the tenant, so it would run as the agent.
    NoMapping,
    /// The mapped user is root.
    Root,
    /// The mapped user's group is root's (gid 0): it could read what root's group may.
    RootGroup,
    /// The mapped user is the agent's own.
    AgentUser,
    /// The mapped user is another, and only root can start a process as another user.
    NotRoot,
}

/// Decides how a task whose tenant maps to `target` (none: maps nothing) may start, on an
/// agent running as `agent`. Root and the agent's own user are refused unless
/// `allow_agent_user`; with no mapping the task would run as the agent, so it is refused
/// likewise.
pub fn decide(target: Option<Ids>, agent: Ids, allow_agent_user: bool) -> Decision {
    let Some(target) = target else {
        return if allow_agent_user {
            Decision::AsAgent
        } else {
            Decision::Refuse(Refusal::NoMapping)
        };
    };
    if !allow_agent_user && target.uid == 0 {
        return Decision::Refuse(Refusal::Root);
    }
    if !allow_agent_user && target.gid == 0 {
        return Decision::Refuse(Refusal::RootGroup);
    }
    if !allow_agent_user && target.uid == agent.uid {
        return Decision::Refuse(Refusal::AgentUser);
    }
    if agent.uid == 0 {
        // Even as root itself (allowed): the run's group and supplementary groups still apply.
        Decision::Switch
    } else if target == agent {
        Decision::AsAgent
    } else {
        Decision::Refuse(Refusal::NotRoot)
    }
}

/// Why a run's shell tasks cannot start as anyone. Each message names the user, why, and what
/// to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "refusing to run tenant `{tenant}`'s task as the agent's own user `{agent}`: environment \
         `{environment}` maps no OS user for the tenant; set run_as.tenants.{tenant} or \
         run_as.default on the environment (or run_as.allow_agent_user = true to let tasks run \
         as the agent's user)"
    )]
    NoMapping {
        tenant: String,
        environment: String,
        agent: String,
    },
    #[error(
        "refusing to run tenant `{tenant}`'s task as `{user}` (uid {uid}): it is {what}, which \
         could read the agent's key, database and every tenant's files; map the tenant to an \
         unprivileged user with run_as.tenants.{tenant} or run_as.default on environment \
         `{environment}` (or set run_as.allow_agent_user = true to allow it)"
    )]
    Privileged {
        tenant: String,
        environment: String,
        user: String,
        uid: u32,
        /// `root` or `the agent's own user`.
        what: &'static str,
    },
    #[error(
        "cannot run tenant `{tenant}`'s task as `{user}` (environment `{environment}`): the agent \
         runs as `{agent}`, not root, and must run as root to start tasks as another user"
    )]
    NotRoot {
        tenant: String,
        environment: String,
        user: String,
        agent: String,
    },
    #[error(
        "user `{user}` of environment `{environment}` does not exist on host `{host}`: create \
         it there (useradd) or change the environment's run_as"
    )]
    NoSuchUser {
        user: String,
        environment: String,
        host: String,
    },
    #[error(
        "group `{group}` of environment `{environment}` does not exist on host `{host}`: create \
         it there (groupadd) or change the environment's run_as"
    )]
    NoSuchGroup {
        group: String,
        environment: String,
        host: String,
    },
    #[error(
        "user {user} of environment `{environment}` has no entry on host `{host}`, so it has no \
         primary group: give it a group in the environment's run_as"
    )]
    NoPrimaryGroup {
        user: String,
        environment: String,
        host: String,
    },
    #[error("looking up {what} on host `{host}`: {message}")]
    Lookup {
        what: String,
        host: String,
        message: String,
    },
}

/// Who `job`'s shell tasks run as on this host (`host` is its name, for messages), or why
/// none may start. Blocking (user database lookups may go to the network): call it off the
/// async runtime.
pub fn task_user(job: &Job, host: &str) -> Result<TaskUser, IdentityError> {
    let lookup = |what: String| {
        let host = host.to_owned();
        move |e: io::Error| IdentityError::Lookup {
            what,
            host,
            message: e.to_string(),
        }
    };
    let agent = agent_identity().map_err(lookup("the agent's own user".into()))?;
    let target = job
        .os_user
        .as_ref()
        .map(|os_user| resolve(os_user, &job.environment, host))
        .transpose()?;
    let ids = |i: &Identity| Ids {
        uid: i.uid,
        gid: i.gid,
    };
    // Root's group among the supplementary ones counts as much as the primary.
    if !job.allow_agent_user
        && let Some(t) = target
            .as_ref()
            .filter(|t| t.gid != 0 && t.groups.contains(&0))
    {
        return Err(IdentityError::Privileged {
            tenant: job.tenant.clone(),
            environment: job.environment.clone(),
            user: t.name.clone(),
            uid: t.uid,
            what: "a member of group root (gid 0)",
        });
    }
    match decide(target.as_ref().map(ids), ids(&agent), job.allow_agent_user) {
        Decision::AsAgent => Ok(TaskUser {
            identity: agent,
            switch: false,
        }),
        Decision::Switch => Ok(TaskUser {
            identity: target.expect("a switch has a target"),
            switch: true,
        }),
        Decision::Refuse(refusal) => {
            let tenant = job.tenant.clone();
            let environment = job.environment.clone();
            let user = target.as_ref().map(|t| t.name.clone()).unwrap_or_default();
            let uid = target.as_ref().map(|t| t.uid).unwrap_or_default();
            Err(match refusal {
                Refusal::NoMapping => IdentityError::NoMapping {
                    tenant,
                    environment,
                    agent: agent.name,
                },
                Refusal::Root => IdentityError::Privileged {
                    tenant,
                    environment,
                    user,
                    uid,
                    what: "root",
                },
                Refusal::RootGroup => IdentityError::Privileged {
                    tenant,
                    environment,
                    user,
                    uid,
                    what: "in group root (gid 0)",
                },
                Refusal::AgentUser => IdentityError::Privileged {
                    tenant,
                    environment,
                    user,
                    uid,
                    what: "the agent's own user",
                },
                Refusal::NotRoot => IdentityError::NotRoot {
                    tenant,
                    environment,
                    user,
                    agent: agent.name,
                },
            })
        }
    }
}

/// Looks `os_user` up on this host: its uid, the group (its own or the user's primary one),
/// the groups the host lists it in, its home.
fn resolve(os_user: &OsUser, environment: &str, host: &str) -> Result<Identity, IdentityError> {
    let lookup = |what: String| {
        move |e: io::Error| IdentityError::Lookup {
            what,
            host: host.to_owned(),
            message: e.to_string(),
        }
    };
    let numeric = os_user.user.parse::<u32>().ok();
    let mut entry =
        user_by_name(&os_user.user).map_err(lookup(format!("user `{}`", os_user.user)))?;
    if entry.is_none()
        && let Some(uid) = numeric
    {
        entry = user_by_uid(uid).map_err(lookup(format!("uid {uid}")))?;
    }
    let group = match &os_user.group {
        None => None,
        Some(group) => {
            let gid = match group_by_name(group).map_err(lookup(format!("group `{group}`")))? {
                Some(gid) => gid,
                None => group
                    .parse::<u32>()
                    .map_err(|_| IdentityError::NoSuchGroup {
                        group: group.clone(),
                        environment: environment.to_owned(),
                        host: host.to_owned(),
                    })?,
            };
            Some(gid)
        }
    };
    match (entry, numeric) {
        (Some(entry), _) => {
            let gid = group.unwrap_or(entry.gid);
            let groups = group_list(&entry.name, gid);
            Ok(Identity {
                name: String::from_utf8_lossy(entry.name.as_bytes()).into_owned(),
                uid: entry.uid,
                gid,
                groups,
                home: entry.home,
            })
        }
        // A uid the host has no entry for (containers, images with ids only): it has no
        // name, home or primary group of its own.
        (None, Some(uid)) => {
            let gid = group.ok_or_else(|| IdentityError::NoPrimaryGroup {
                user: os_user.user.clone(),
                environment: environment.to_owned(),
                host: host.to_owned(),
            })?;
            Ok(Identity {
                name: uid.to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: None,
            })
        }
        (None, None) => Err(IdentityError::NoSuchUser {
            user: os_user.user.clone(),
            environment: environment.to_owned(),
            host: host.to_owned(),
        }),
    }
}

/// The agent's effective user, as the host knows it.
fn agent_identity() -> io::Result<Identity> {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    Ok(match user_by_uid(uid)? {
        Some(entry) => Identity {
            name: String::from_utf8_lossy(entry.name.as_bytes()).into_owned(),
            uid,
            gid,
            groups: group_list(&entry.name, gid),
            home: entry.home,
        },
        None => Identity {
            name: uid.to_string(),
            uid,
            gid,
            groups: vec![gid],
            home: None,
        },
    })
}

/// A user database entry.
struct Entry {
    name: CString,
    uid: u32,
    gid: u32,
    home: Option<PathBuf>,
}

fn user_by_name(name: &str) -> io::Result<Option<Entry>> {
    let Ok(name) = CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `pwd`, `buf`
    // and `result` are ours and `buf.len()` is its length.
    with_passwd(|pwd, buf, result| unsafe {
        libc::getpwnam_r(name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result)
    })
}

fn user_by_uid(uid: u32) -> io::Result<Option<Entry>> {
    // SAFETY: as in `user_by_name`.
    with_passwd(|pwd, buf, result| unsafe {
        libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result)
    })
}

/// Calls a `getpw*_r` function with a buffer that grows until the entry fits.
fn with_passwd(
    mut call: impl FnMut(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> i32,
) -> io::Result<Option<Entry>> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain data; all-zero is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success the strings point into `buf`, NUL-terminated, alive here.
                let (name, dir) =
                    unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
                // A home the host names but never made (system users) would break tools
                // that write under it; the task gets its working directory instead.
                let home = Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
                    .filter(|home| !dir.is_empty() && home.is_dir());
                return Ok(Some(Entry {
                    name: name.to_owned(),
                    uid: pwd.pw_uid,
                    gid: pwd.pw_gid,
                    home,
                }));
            }
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            // Some systems say "not found" with an error rather than a null result.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let Ok(name) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: group is plain data; all-zero is a valid value to be overwritten.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf.len()` is the buffer's length.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(grp.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// `gid` and every group the host lists `user` in.
fn group_list(user: &CStr, gid: u32) -> Vec<u32> {
    let mut size: libc::c_int = 32;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; size as usize];
        let mut count = size;
        // SAFETY: `groups` has room for `count` entries; `user` is NUL-terminated.
        let rc = unsafe { libc::getgrouplist(user.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        // Too small: glibc says how many there are in `count`.
        if size >= 65_536 {
            return vec![gid];
        }
        size = count.max(size * 2);
    }
}

/// Runs in the child between fork and exec when the agent switches users: the groups, then the
/// gid (while still root), then the uid, which gives up root for good. Only async-signal-safe
/// calls and no allocation: everything was prepared before the fork.
///
/// std's own `uid()`/`gid()` run before `pre_exec` closures and clear the supplementary groups
/// instead of setting them, so the whole switch is done here.
pub fn become_user(groups: &[libc::gid_t], gid: libc::gid_t, uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: plain system calls on values we own; `groups` is valid for its length.
    unsafe {
        if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Ids = Ids { uid: 0, gid: 0 };
    const AGENT: Ids = Ids { uid: 990, gid: 990 };
    const ADS: Ids = Ids {
        uid: 1001,
        gid: 1001,
    };

    #[test]
    fn a_task_runs_as_root_or_the_agents_user_only_when_the_environment_allows_it() {
        use Decision::*;
        use Refusal::*;
        // (target, agent, allow) → decision
        let cases = [
            // No mapping: it would run as the agent.
            (None, ROOT, false, Refuse(NoMapping)),
            (None, AGENT, false, Refuse(NoMapping)),
            (None, ROOT, true, AsAgent),
            (None, AGENT, true, AsAgent),
            // Mapped to root, or to the agent's own user.
            (Some(ROOT), ROOT, false, Refuse(Root)),
            (Some(ROOT), AGENT, false, Refuse(Root)),
            // An ordinary uid in root's group: as good as root for what that group may read.
            (
                Some(Ids { uid: 1000, gid: 0 }),
                ROOT,
                false,
                Refuse(RootGroup),
            ),
            (Some(Ids { uid: 1000, gid: 0 }), ROOT, true, Switch),
            (Some(AGENT), AGENT, false, Refuse(AgentUser)),
            (Some(ROOT), ROOT, true, Switch),
            (Some(AGENT), AGENT, true, AsAgent),
            // Mapped to another user: only root can become it.
            (Some(ADS), ROOT, false, Switch),
            (Some(ADS), ROOT, true, Switch),
            (Some(ADS), AGENT, false, Refuse(NotRoot)),
            (Some(ADS), AGENT, true, Refuse(NotRoot)),
            // The agent's uid in another group: only root can change groups.
            (
                Some(Ids {
                    uid: AGENT.uid,
                    gid: 5,
                }),
                AGENT,
                true,
                Refuse(NotRoot),
            ),
        ];
        for (target, agent, allow, decision) in cases {
            assert_eq!(
                decide(target, agent, allow),
                decision,
                "target {target:?}, agent {agent:?}, allow {allow}"
            );
        }
    }

    fn job(os_user: Option<OsUser>, allow_agent_user: bool) -> Job {
        Job {
            tenant: "ads".into(),
            workflow: "etl".into(),
            workflow_version: 1,
            definition: meridian_domain::workflow::WorkflowDefinition { tasks: vec![] },
            environment: "prod".into(),
            vars: Default::default(),
            work_dir: None,
            os_user,
            allow_agent_user,
            rerun: None,
            backfill: false,
        }
    }

    fn user(name: &str, group: Option<&str>) -> Option<OsUser> {
        Some(OsUser {
            user: name.into(),
            group: group.map(Into::into),
        })
    }

    #[test]
    fn refusals_say_which_user_why_and_what_to_set() {
        let me = agent_identity().unwrap();
        let err = task_user(&job(None, false), "agent-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to run tenant `ads`'s task as the agent's own user `{}`: environment \
                 `prod` maps no OS user for the tenant; set run_as.tenants.ads or \
                 run_as.default on the environment (or run_as.allow_agent_user = true to let \
                 tasks run as the agent's user)",
                me.name
            )
        );
        let err = task_user(&job(user(&me.name, None), false), "agent-1").unwrap_err();
        let what = if me.uid == 0 {
            "root"
        } else {
            "the agent's own user"
        };
        assert!(
            err.to_string().starts_with(&format!(
                "refusing to run tenant `ads`'s task as `{}` (uid {}): it is {what}",
                me.name, me.uid
            )),
            "{err}"
        );
        assert!(err.to_string().contains("run_as.tenants.ads"), "{err}");
        let err = task_user(&job(user("mrd-no-such-user", None), true), "agent-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "user `mrd-no-such-user` of environment `prod` does not exist on host `agent-1`: \
             create it there (useradd) or change the environment's run_as"
        );
        let err = task_user(&job(user("4000000", None), true), "agent-1").unwrap_err();
        assert!(matches!(err, IdentityError::NoPrimaryGroup { .. }), "{err}");
        let err = task_user(
            &job(user(&me.name, Some("mrd-no-such-group")), true),
            "agent-1",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("group `mrd-no-such-group` of environment `prod` does not exist"),
            "{err}"
        );
    }

    #[test]
    fn allowed_the_agent_runs_tasks_as_itself_with_its_own_name_and_home() {
        let me = agent_identity().unwrap();
        let allowed = task_user(&job(None, true), "agent-1").unwrap();
        assert_eq!(allowed.identity, me);
        assert!(!allowed.switch);
        assert_eq!(allowed.owner(), None);
        assert!(me.groups.contains(&me.gid), "{me:?}");
        // Looked up by uid, the same entry.
        if me.uid == 0 {
            let by_id = task_user(&job(user("0", Some("0")), true), "agent-1").unwrap();
            assert_eq!(by_id.identity.name, "root");
            assert!(by_id.switch);
        }
    }
}
