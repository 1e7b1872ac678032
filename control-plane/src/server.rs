//! A plane node as a running service: the Raft node, its REST API, and the first-start
//! bootstrap (`meridian plane init`, `meridian dev`).
//!
//! Bootstrap is crash-safe: the admin secret is written to `admin.token.new` before the token
//! is proposed, and renamed to `admin.token` only once the plane has committed it; a restart
//! after a crash in between finds the pending file and finishes the job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::Clock;
use meridian_transport::TlsMaterial;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::api::session::SessionSettings;
use crate::api::{self, Api, password, token};
use crate::model::processor::RefusalKind;
use crate::model::{ApiToken, Binding, Command, Name, Proposal, Role, User, query};
use crate::raft::Outcome;
use crate::raft::node::{NodeConfig, PlaneNode};

/// The admin token's file name in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// How long a write through the API may wait for the plane.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("starting the plane node: {0}")]
    Node(#[from] crate::raft::node::NodeError),
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the REST API's listener: {0}")]
    Listener(std::io::Error),
    #[error("HTTPS certificate: {0}")]
    Tls(String),
    #[error("{doing}: {problem}")]
    Bootstrap { doing: String, problem: String },
}

fn bootstrap_error(doing: &str, problem: impl ToString) -> ServeError {
    ServeError::Bootstrap {
        doing: doing.to_owned(),
        problem: problem.to_string(),
    }
}

/// A running node with its API.
pub struct Server {
    pub node: Arc<PlaneNode>,
    pub http_addr: SocketAddr,
    http: axum_server::Handle,
    http_task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts the node on `peer_listener` and the API on `http_listener` (HTTPS with the
    /// node's certificate when `https`).
    pub async fn start(
        config: NodeConfig,
        peer_listener: TcpListener,
        http_listener: std::net::TcpListener,
        https: bool,
        bucket: Option<meridian_bucket::Bucket>,
        sessions: SessionSettings,
        mail: Option<crate::courier::MailConfig>,
    ) -> Result<Self, ServeError> {
        // The certificate is checked before anything starts, so a bad one changes nothing.
        let rustls = if https {
            Some(axum_server::tls_rustls::RustlsConfig::from_config(
                Arc::new(https_config(&config.tls)?),
            ))
        } else {
            None
        };
        let http_addr = http_listener.local_addr().map_err(ServeError::Listener)?;
        let clock = config.clock.clone();
        let agents = crate::agents::beside(clock.clone());
        let keep_hours = config.history.keep_hours;
        let node = Arc::new(PlaneNode::start(config, peer_listener, Some(agents)).await?);
        crate::retirement::start(&node, clock.clone(), keep_hours, bucket.is_some());
        crate::courier::start(&node, clock.clone(), mail);
        if let Some(bucket) = &bucket {
            crate::logs::archive::start(&node, clock.clone(), bucket.clone());
        }
        let app = app(Api::new(
            node.clone(),
            clock,
            WRITE_TIMEOUT,
            bucket,
            sessions,
        ));
        let handle = axum_server::Handle::new();
        // The client's address: failed sign-ins are limited per address.
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let http_task = if let Some(rustls) = rustls {
            let server = axum_server::from_tcp_rustls(http_listener, rustls).handle(handle.clone());
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!("REST API stopped: {e}");
                }
            })
        } else {
            let server = axum_server::from_tcp(http_listener).handle(handle.clone());
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!("REST API stopped: {e}");
                }
            })
        };
        Ok(Self {
            node,
            http_addr,
            http: handle,
            http_task,
        })
    }

    /// Stops the API (letting requests in flight finish) and then the node.
    pub async fn shutdown(self) {
        self.http.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.http_task.await;
        self.node.shutdown().await;
    }
}

/// Everything a node serves over HTTP: the JSON API under `/api/v1` and the web UI.
pub fn app(api: Api) -> axum::Router {
    api::router(api.clone()).merge(crate::ui::router(api))
}

/// HTTPS for the API: this node's certificate; clients are not asked for one (they bring a
/// bearer token instead).
fn https_config(tls: &TlsMaterial) -> Result<rustls::ServerConfig, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("reading the certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key)
        .map_err(|e| ServeError::Tls(format!("reading the private key: {e}")))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))
}

/// Binds a std listener for the API (std, so it can be handed to the HTTP server as is).
pub fn bind_http(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let bound = std::net::TcpListener::bind(addr);
    // The async server needs a non-blocking socket.
    bound
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind {
            what: "the REST API",
            addr,
            source,
        })
}

pub async fn bind_peer(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            what: "the peer and agent service",
            addr,
            source,
        })
}

/// Whether this node has ever been part of a plane (asks Raft itself: its metrics may not
/// have caught up with the stored state right after a start).
pub async fn is_initialized(node: &PlaneNode) -> bool {
    node.raft.is_initialized().await.unwrap_or(false)
}

/// What [`bootstrap`] did.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The new admin token's secret, when one was created now (print it once).
    pub admin_token: Option<String>,
    pub token_file: PathBuf,
    /// The `admin` user's new password, when the user was created now (print it once).
    pub admin_password: Option<String>,
    pub password_file: PathBuf,
}

/// The admin user's password file's name in the data directory.
pub const ADMIN_PASSWORD_FILE: &str = "admin.password";

/// Makes `node` a one-member plane if it is not part of one, and makes sure an admin token
/// exists with its secret in `<data_dir>/admin.token`, and an `admin` user with its password in
/// `<data_dir>/admin.password` (both mode 0600).
pub async fn bootstrap(
    node: &PlaneNode,
    data_dir: &Path,
    clock: &dyn Clock,
) -> Result<Bootstrapped, ServeError> {
    if !is_initialized(node).await {
        node.initialize()
            .await
            .map_err(|e| bootstrap_error("initialising the plane", e))?;
    }
    let (admin_token, token_file) = admin_token(node, data_dir, clock).await?;
    let (admin_password, password_file) = admin_user(node, data_dir, clock).await?;
    Ok(Bootstrapped {
        admin_token,
        token_file,
        admin_password,
        password_file,
    })
}

/// A bootstrap secret on its way to `<data_dir>/<name>`: written to `<name>.new` before the
/// plane is asked to hold it, renamed once it has committed.
struct Pending {
    secret: String,
    file: PathBuf,
    pending: PathBuf,
}

/// `None` when `<data_dir>/<name>` exists (done before); else the secret a crash left in
/// `<name>.new`, or a fresh one written there.
fn pending_secret(
    data_dir: &Path,
    name: &str,
    doing: &str,
    fresh: impl FnOnce() -> Result<String, String>,
) -> Result<Option<Pending>, ServeError> {
    let file = data_dir.join(name);
    let pending = data_dir.join(format!("{name}.new"));
    if file.exists() {
        return Ok(None);
    }
    let secret = match std::fs::read_to_string(&pending) {
        Ok(s) => s.trim().to_owned(),
        Err(_) => {
            let s = fresh().map_err(|e| bootstrap_error(doing, e))?;
            write_private(&pending, &s).map_err(|e| bootstrap_error(doing, e))?;
            s
        }
    };
    Ok(Some(Pending {
        secret,
        file,
        pending,
    }))
}

async fn admin_token(
    node: &PlaneNode,
    data_dir: &Path,
    clock: &dyn Clock,
) -> Result<(Option<String>, PathBuf), ServeError> {
    let doing = "creating the admin token";
    let Some(Pending {
        secret,
        file: token_file,
        pending,
    }) = pending_secret(data_dir, ADMIN_TOKEN_FILE, doing, token::generate)?
    else {
        return Ok((None, data_dir.join(ADMIN_TOKEN_FILE)));
    };
    let proposal = Proposal::new(
        "bootstrap",
        clock.now_ms(),
        Command::CreateToken(ApiToken {
            name: Name::new("admin").expect("valid name"),
            bindings: vec![Binding::global(Role::Admin)],
            expires_ms: None,
            created_by: "bootstrap".into(),
            created_ms: clock.now_ms(),
            hash: token::hash(&secret),
        }),
    );
    match node.write(proposal, WRITE_TIMEOUT).await {
        Ok(Outcome::Applied(_)) => {}
        Ok(Outcome::Refused(r)) if r.kind == RefusalKind::Exists => {
            // Committed before a crash, or another admin token exists: only adopt the pending
            // secret if it is the one the plane holds.
            node.read_barrier(WRITE_TIMEOUT)
                .await
                .map_err(|e| bootstrap_error(doing, e))?;
            let held = query::token_by_hash(node.state.pool(), &token::hash(&secret))
                .await
                .map_err(|e| bootstrap_error(doing, e))?;
            if held.is_none() {
                return Err(bootstrap_error(
                    doing,
                    "the plane already has an `admin` token and its secret is not in this data \
                     directory; use that token, or delete it with `meridian token delete admin`",
                ));
            }
        }
        Ok(other) => return Err(bootstrap_error(doing, format!("{other:?}"))),
        Err(e) => return Err(bootstrap_error(doing, e)),
    }
    std::fs::rename(&pending, &token_file).map_err(|e| bootstrap_error(doing, e))?;
    Ok((Some(secret), token_file))
}

async fn admin_user(
    node: &PlaneNode,
    data_dir: &Path,
    clock: &dyn Clock,
) -> Result<(Option<String>, PathBuf), ServeError> {
    let doing = "creating the admin user";
    let Some(Pending {
        secret,
        file: password_file,
        pending,
    }) = pending_secret(data_dir, ADMIN_PASSWORD_FILE, doing, password::generate)?
    else {
        return Ok((None, data_dir.join(ADMIN_PASSWORD_FILE)));
    };
    let name = Name::new("admin").expect("valid name");
    let phc = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || password::hash(&secret))
            .await
            .map_err(|e| bootstrap_error(doing, e))?
            .map_err(|e| bootstrap_error(doing, e))?
    };
    let proposal = Proposal::new(
        "bootstrap",
        clock.now_ms(),
        Command::CreateUser {
            user: User {
                name: name.clone(),
                bindings: vec![Binding::global(Role::Admin)],
                created_by: "bootstrap".into(),
                created_ms: clock.now_ms(),
            },
            password: phc,
        },
    );
    match node.write(proposal, WRITE_TIMEOUT).await {
        Ok(Outcome::Applied(_)) => {}
        Ok(Outcome::Refused(r)) if r.kind == RefusalKind::Exists => {
            // Committed before a crash (the pending file holds its password), or an `admin`
            // user someone made: keep the file only if it opens that user.
            node.read_barrier(WRITE_TIMEOUT)
                .await
                .map_err(|e| bootstrap_error(doing, e))?;
            let held = query::user_with_password(node.state.pool(), &name)
                .await
                .map_err(|e| bootstrap_error(doing, e))?
                .map(|(_, p)| p)
                .unwrap_or_default();
            let secret = secret.clone();
            let matches = tokio::task::spawn_blocking(move || password::verify(&secret, &held))
                .await
                .map_err(|e| bootstrap_error(doing, e))?;
            if !matches {
                let _ = std::fs::remove_file(&pending);
                return Ok((None, password_file));
            }
        }
        Ok(other) => return Err(bootstrap_error(doing, format!("{other:?}"))),
        Err(e) => return Err(bootstrap_error(doing, e)),
    }
    std::fs::rename(&pending, &password_file).map_err(|e| bootstrap_error(doing, e))?;
    Ok((Some(secret), password_file))
}

/// Writes `text` to a new file only its owner can read.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Proposes `command` unless the model already has it: refusals of kind "exists" are fine.
/// For seeding examples, where a restart after a partial seed must not fail.
pub async fn ensure(
    node: &PlaneNode,
    clock: &dyn Clock,
    command: Command,
) -> Result<(), ServeError> {
    let doing = format!("seeding {}", command.op());
    match node
        .write(
            Proposal::new("bootstrap", clock.now_ms(), command),
            WRITE_TIMEOUT,
        )
        .await
    {
        Ok(Outcome::Applied(_)) => Ok(()),
        Ok(Outcome::Refused(r)) if r.kind == RefusalKind::Exists => Ok(()),
        Ok(Outcome::Refused(r)) => Err(bootstrap_error(&doing, r)),
        Ok(Outcome::Internal) => Ok(()),
        Err(e) => Err(bootstrap_error(&doing, e)),
    }
}
