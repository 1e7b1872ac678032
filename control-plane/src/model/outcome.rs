//! What applying a command comes to: [`Applied`] (what changed), a [`Refusal`] (a
//! deterministic "no", with what was attempted and what is wrong), or an [`ApplyError`] (the
//! storage failed: not acknowledged). And the [`Context`] every command is applied in.

/// Why a command was refused. Messages say what was being attempted and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{doing}: {kind} `{name}` does not exist")]
    Missing {
        doing: String,
        kind: &'static str,
        name: String,
    },
    #[error("{doing}: {kind} `{name}` already exists")]
    Exists {
        doing: String,
        kind: &'static str,
        name: String,
    },
    #[error("{doing}: it is still used by {users}; delete or move those first")]
    InUse { doing: String, users: String },
    #[error("{doing}: environment `{environment}` is not granted to tenant `{tenant}`")]
    NotGranted {
        doing: String,
        environment: String,
        tenant: String,
    },
    #[error("{doing}: {field}: {problem}")]
    Invalid {
        doing: String,
        field: String,
        problem: String,
    },
    /// The access policy refused: the principal may see the object but not do this.
    #[error("{doing}: {actor} may not do this; it needs {needs}")]
    Forbidden {
        doing: String,
        actor: String,
        needs: String,
    },
    /// The author's credential was gone by the time the command was applied.
    #[error("{doing}: {why}")]
    Unauthenticated { doing: String, why: String },
}

/// What sort of refusal, so callers can answer with the right status without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    Missing,
    Exists,
    InUse,
    NotGranted,
    Invalid,
    Forbidden,
    Unauthenticated,
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::Missing { .. } => RefusalKind::Missing,
            Self::Exists { .. } => RefusalKind::Exists,
            Self::InUse { .. } => RefusalKind::InUse,
            Self::NotGranted { .. } => RefusalKind::NotGranted,
            Self::Invalid { .. } => RefusalKind::Invalid,
            Self::Forbidden { .. } => RefusalKind::Forbidden,
            Self::Unauthenticated { .. } => RefusalKind::Unauthenticated,
        }
    }
}

/// A refusal as it travels back to the client: its kind and its message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub kind: RefusalKind,
    pub message: String,
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        Self {
            kind: refusal.kind(),
            message: refusal.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed; the command's effect is unknown to the caller and must not be
    /// acknowledged. (Distinct from a refusal, which is a deterministic outcome.)
    #[error("model storage: {0}")]
    Storage(#[from] sqlx::Error),
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// What was changed, e.g. `cluster nj-main` or `workflow ads/etl`.
    pub subject: String,
    /// The new version, for versioned things (workflows, schedules).
    pub version: Option<u64>,
    /// For a batch: each command's own outcome, in order (empty otherwise).
    pub items: Vec<Result<Applied, Rejection>>,
    /// What the command's caller needs back beyond the subject (an agent's leases after a
    /// heartbeat, which report entries were refused, a requested run's id), as JSON text:
    /// outcomes cross the peer link in a binary codec that cannot carry a free-form value.
    pub detail: Option<String>,
}

/// The log entry being applied: its index and the proposal's stamped time, for commands that
/// decide with the time (leases) or derive ids from the position in the log (run-now ids).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub index: u64,
    pub at_ms: i64,
    /// Inside a batch, the command's place in it (ids derived from the log position must
    /// tell a batch's commands apart).
    pub item: Option<usize>,
}

impl Context {
    /// A unique, replica-independent name for this command's place in the log: the entry's
    /// index, and its place in a batch (`42`, `42.1`).
    pub fn position(&self) -> String {
        match self.item {
            None => self.index.to_string(),
            Some(i) => format!("{}.{i}", self.index),
        }
    }
}
