//! The agent's config file. One serde struct, strict (`deny_unknown_fields`), with a doc on
//! every field; defaults suit a local `meridian dev`.

use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use meridian_transport::{HostsMap, TlsFiles};
use serde::Deserialize;

use crate::load::LoadLimits;
use crate::resources::CacheConfig;
use crate::supervisor::Supervision;
use meridian_bucket::BucketConfig;

/// `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's hostname. It is the agent's identity: its certificate is issued for it.
    pub hostname: String,
    /// The compute cluster this agent runs work for. The plane only lets an agent act for the
    /// cluster its certificate names.
    pub cluster: String,
    /// Plane nodes to dial, as `hostname:port`. Any one will do; the agent moves to another
    /// when one is unreachable.
    pub plane: Vec<String>,
    /// Where the agent keeps its fire-record buffer, outbox and resource cache.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The federation CA, and this agent's certificate and key (issued with
    /// `meridian certs issue --role agent --cluster <cluster>`): the certificate's cluster is
    /// the only one the plane lets the agent act for.
    pub tls: TlsFiles,
    /// Plane hostname → address as seen from this data center: a plane node in the same data
    /// center by its internal address, others by their public one. Unlisted names use DNS.
    #[serde(default)]
    pub hosts: HostsMap,
    /// How many runs may go at once; fires beyond it wait.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// How fast missed fire records are started after downtime (runs per second), so recovery
    /// does not start a storm.
    #[serde(default = "default_catch_up_rate")]
    pub catch_up_rate: f64,
    /// How long a killed or timed-out task gets between TERM and KILL.
    #[serde(default = "default_kill_grace_seconds")]
    pub kill_grace_seconds: u64,
    /// How often the agent heartbeats (renewing its leases). Keep it well under the clusters'
    /// `lease_seconds`.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Base directory for runs' working directories when the environment names none
    /// (default: `<data_dir>/runs`).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The S3 bucket tasks' resources come from (none: tasks that declare resources fail,
    /// saying so).
    #[serde(default)]
    pub bucket: Option<BucketConfig>,
    /// The resource cache in `<data_dir>/resources`.
    #[serde(default)]
    pub resources: CacheConfig,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this address.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Who starts shell tasks: `process` (the default) is a supervisor process of its own
    /// (`meridian-agent supervise`, started by the agent in `<data_dir>/supervisor`) that keeps
    /// tasks going through an agent restart, so the restarted agent re-attaches to them;
    /// `in-process` runs it inside the agent, and tasks die with it.
    #[serde(default)]
    pub supervisor: Supervision,
    /// Load thresholds: above any of them the agent starts nothing new (runs wait, queued,
    /// saying why) and the plane moves its partitions to an agent that is not (none: no limit).
    #[serde(default)]
    pub load: LoadLimits,
}

fn default_slots() -> u32 {
    64
}

fn default_catch_up_rate() -> f64 {
    10.0
}

fn default_kill_grace_seconds() -> u64 {
    10
}

fn default_heartbeat_ms() -> u64 {
    1000
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("meridian-agent-data")
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading agent config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("agent config {path}: field `{field}`: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, read from `path` (used in messages only).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        // Relative paths are relative to the config file, wherever the agent is started from.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(w) = &mut config.work_dir
            && w.is_relative()
        {
            *w = base.join(&*w);
        }
        let invalid = |field: &str, problem: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        if config.hostname.trim().is_empty() {
            return Err(invalid("hostname", "must not be empty"));
        }
        if config.cluster.trim().is_empty() {
            return Err(invalid("cluster", "must not be empty"));
        }
        if config.plane.is_empty() {
            return Err(invalid(
                "plane",
                "list at least one plane node as \"hostname:port\"",
            ));
        }
        if let Some(bad) = config.plane.iter().find(|p| !has_port(p)) {
            return Err(invalid(
                "plane",
                &format!(
                    "`{bad}` is not \"hostname:port\" (for example \"plane-1.dc-a.example:7443\")"
                ),
            ));
        }
        if config.slots == 0 {
            return Err(invalid("slots", "must be at least 1"));
        }
        if !(config.catch_up_rate > 0.0 && config.catch_up_rate.is_finite()) {
            return Err(invalid(
                "catch_up_rate",
                "must be a positive number of runs per second",
            ));
        }
        if config.heartbeat_ms < 50 {
            return Err(invalid("heartbeat_ms", "must be at least 50"));
        }
        if let Some(bucket) = &config.bucket
            && let Err((field, problem)) = bucket.check()
        {
            return Err(invalid(&format!("bucket.{field}"), &problem));
        }
        if config.resources.disk_limit_mb == 0 {
            return Err(invalid("resources.disk_limit_mb", "must be at least 1"));
        }
        if let Some((field, problem)) = config.load.problem() {
            return Err(invalid(field, problem));
        }
        Ok(config)
    }

    /// Where runs' working directories go when their environment names none.
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("runs"))
    }
}

fn has_port(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(Path::new("agent.toml"), text)
    }

    #[test]
    fn a_minimal_config_gets_the_default_data_dir() {
        let c = parse(
            r#"
            hostname = "agent-1.dc-a.example"
            cluster = "dc-a-main"
            plane = ["plane-1.dc-a.example:7443"]
            tls = { ca = "ca.pem", cert = "agent.pem", key = "agent.key" }
            "#,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("meridian-agent-data"));
        assert_eq!(
            c.tls.ca,
            PathBuf::from("ca.pem"),
            "relative to the config's directory"
        );
        assert_eq!(c.slots, 64);
    }

    #[test]
    fn unknown_missing_and_bad_fields_are_named() {
        let unknown = parse(
            r#"hostname = "a"
               cluster = "c"
               plane = ["p:1"]
               planes = []"#,
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("unknown field `planes`"), "{unknown}");

        let missing = parse(r#"hostname = "a""#).unwrap_err().to_string();
        assert!(missing.contains("missing field `cluster`"), "{missing}");

        let no_port = parse(
            r#"hostname = "a"
               cluster = "c"
               plane = ["plane-1"]
               tls = { ca = "a", cert = "b", key = "c" }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            no_port.contains("field `plane`: `plane-1` is not"),
            "{no_port}"
        );

        let bad_endpoint = parse(
            r#"hostname = "a"
               cluster = "c"
               plane = ["p:1"]
               tls = { ca = "a", cert = "b", key = "c" }
               [bucket]
               endpoint = "minio:9000"
               bucket = "meridian""#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad_endpoint.contains("field `bucket.endpoint`: `minio:9000` must start with http"),
            "{bad_endpoint}"
        );
    }

    #[test]
    fn bucket_and_cache_settings_are_read() {
        let c = parse(
            r#"
            hostname = "a"
            cluster = "c"
            plane = ["p:1"]
            tls = { ca = "a", cert = "b", key = "c" }
            metrics_listen = "127.0.0.1:9464"
            [bucket]
            endpoint = "http://minio.dc-a:9000"
            bucket = "meridian"
            access_key_id = "id"
            secret_access_key = "secret"
            [resources]
            disk_limit_mb = 512
            stale_if_error = false
            link = "hardlink"
            "#,
        )
        .unwrap();
        let bucket = c.bucket.unwrap();
        assert!(bucket.path_style && bucket.region == "us-east-1");
        assert_eq!(c.resources.disk_limit_mb, 512);
        assert!(!c.resources.stale_if_error);
        assert_eq!(c.resources.link, crate::resources::LinkKind::Hardlink);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    }
}
