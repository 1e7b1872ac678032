//! `plane.toml`: one plane node's config. One serde struct, strict (`deny_unknown_fields`), a
//! doc on every field. Relative paths are read relative to the file's directory, so a config
//! and its certificates can move together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use meridian_transport::{HostsMap, TlsFiles};
use serde::Deserialize;

use crate::raft::node::Timing;

/// `plane.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneConfig {
    /// This node's hostname: its identity in the plane's membership and the name its
    /// certificate is issued for. Never an IP address.
    pub hostname: String,
    /// Where the node keeps its Raft log (`raft.redb`), model database (`model.db`),
    /// snapshots, and the admin token `meridian plane init` creates.
    pub data_dir: PathBuf,
    /// Address the gRPC service for peers and agents listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Port other nodes dial to reach this one, if it differs from `listen`'s (port
    /// forwarding, NAT). Recorded in the membership when the node is added.
    #[serde(default)]
    pub advertise_port: Option<u16>,
    /// The REST API.
    #[serde(default)]
    pub http: HttpConfig,
    /// The federation CA and this node's certificate and key (from `meridian certs`).
    pub tls: TlsFiles,
    /// How to reach other nodes from here: hostname → address (`ip`, `ip:port` or
    /// `name:port`). A peer in this data center by its internal address, one elsewhere by its
    /// public address. Hostnames not listed are resolved by DNS.
    #[serde(default)]
    pub hosts: HostsMap,
    /// Raft timings; the defaults suit one data center or a fast WAN.
    #[serde(default)]
    pub timing: Timing,
    /// The S3 bucket of the resource center (`meridian resources`); none: the resource API
    /// answers 503 saying so.
    #[serde(default)]
    pub bucket: Option<meridian_bucket::BucketConfig>,
    /// The SMTP relay email alert channels go through (none: their deliveries fail saying
    /// so, and are retried until one is set).
    #[serde(default)]
    pub mail: Option<crate::courier::MailConfig>,
    /// Task logs: the cap per attempt and how long they are kept.
    #[serde(default)]
    pub logs: crate::logbook::LogsConfig,
    /// Finished runs: how long they stay in the model, where they go, how long they are kept.
    #[serde(default)]
    pub history: crate::history_store::HistoryConfig,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the REST API listens on.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this node's certificate (clients verify it against the federation
    /// CA). Turn off only behind a TLS-terminating proxy on the same host.
    #[serde(default = "yes")]
    pub tls: bool,
    /// How long a web UI sign-in lasts, in hours (then the user signs in again).
    #[serde(default = "default_session_hours")]
    pub session_hours: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            tls: true,
            session_hours: default_session_hours(),
        }
    }
}

fn default_session_hours() -> u32 {
    12
}

impl HttpConfig {
    /// How the API makes sessions: their lifetime, and `Secure` cookies over HTTPS.
    pub fn sessions(&self) -> crate::api::session::SessionSettings {
        crate::api::session::SessionSettings {
            ttl: std::time::Duration::from_secs(u64::from(self.session_hours.max(1)) * 3600),
            secure: self.tls,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], crate::api::DEFAULT_PEER_PORT))
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading plane config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plane config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("plane config {path}: field `{field}`: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

impl PlaneConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, read from `path` (which also anchors relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let invalid = |field: &str, problem: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        let host = config.hostname.trim();
        if host.is_empty() {
            return Err(invalid("hostname", "must not be empty"));
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(
                "hostname",
                "is an IP address; nodes are named by hostname (map it to the address in [hosts])",
            ));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "hostname",
                "may only contain letters, digits, `-` and `.`",
            ));
        }
        config.hostname = host.to_ascii_lowercase();
        if config.advertise_port == Some(0) {
            return Err(invalid("advertise_port", "must not be 0"));
        }
        let t = config.timing;
        if t.heartbeat_ms == 0 || t.election_min_ms <= t.heartbeat_ms {
            return Err(invalid(
                "timing",
                "heartbeat_ms must be above 0 and below election_min_ms",
            ));
        }
        if t.election_max_ms <= t.election_min_ms {
            return Err(invalid(
                "timing.election_max_ms",
                "must be above election_min_ms",
            ));
        }
        if let Err((field, problem)) = config.logs.check() {
            return Err(invalid(&format!("logs.{field}"), &problem));
        }
        if let Err((field, problem)) = config.history.check() {
            return Err(invalid(&format!("history.{field}"), &problem));
        }
        if let Some(bucket) = &config.bucket
            && let Err((field, problem)) = bucket.check()
        {
            return Err(invalid(&format!("bucket.{field}"), &problem));
        }
        if let Some(mail) = &config.mail {
            if mail.host.trim().is_empty() {
                return Err(invalid("mail.host", "must not be empty"));
            }
            if let Err(e) = mail.from.parse::<lettre::message::Mailbox>() {
                return Err(invalid("mail.from", &format!("`{}`: {e}", mail.from)));
            }
            if mail.username.is_some() != mail.password_file.is_some() {
                return Err(invalid(
                    "mail.username",
                    "give both username and password_file, or neither",
                ));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        anchor(&mut config.data_dir);
        anchor(&mut config.tls.ca);
        anchor(&mut config.tls.cert);
        anchor(&mut config.tls.key);
        if let Some(file) = config.mail.as_mut().and_then(|m| m.password_file.as_mut()) {
            anchor(file);
        }
        Ok(config)
    }

    /// The port recorded in the membership.
    pub fn peer_port(&self) -> u16 {
        self.advertise_port.unwrap_or(self.listen.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
hostname = "Plane-1.dc-a.example"
data_dir = "data"
[tls]
ca = "certs/ca.pem"
cert = "certs/plane-1.pem"
key = "/etc/meridian/plane-1.key"
[hosts]
"plane-2.dc-b.example" = "203.0.113.7"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = PlaneConfig::parse(Path::new("/etc/meridian/plane.toml"), GOOD).unwrap();
        assert_eq!(c.hostname, "plane-1.dc-a.example");
        assert_eq!(c.data_dir, PathBuf::from("/etc/meridian/data"));
        assert_eq!(c.tls.ca, PathBuf::from("/etc/meridian/certs/ca.pem"));
        assert_eq!(c.tls.key, PathBuf::from("/etc/meridian/plane-1.key"));
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.peer_port(), 7443);
        assert_eq!(c.http.listen.port(), 8443);
        assert!(c.http.tls);
        assert_eq!(c.timing, Timing::default());
        assert_eq!(c.hosts.0["plane-2.dc-b.example"], "203.0.113.7");
    }

    fn error(text: &str) -> String {
        PlaneConfig::parse(Path::new("plane.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = error(&GOOD.replace("hostname = \"Plane-1.dc-a.example\"", ""));
        assert!(e.contains("missing field `hostname`"), "{e}");
        let e = error(&format!("{GOOD}\n[timing]\nheartbeat_ms = 600\n"));
        assert!(e.contains("field `timing`: heartbeat_ms must be"), "{e}");
        let e = error(&GOOD.replace("data_dir", "datadir"));
        assert!(e.contains("unknown field `datadir`"), "{e}");
        let e = error(&GOOD.replace("\"Plane-1.dc-a.example\"", "\"10.0.0.1\""));
        assert!(e.contains("field `hostname`: is an IP address"), "{e}");
        let e = error(&format!("listen = \"nowhere\"\n{GOOD}"));
        assert!(e.contains("listen"), "{e}");
        let e = error(&format!(
            "{GOOD}\n[bucket]\nendpoint = \"http://s3\"\nbucket = \"m\"\nroot = \"/x\"\n"
        ));
        assert!(
            e.contains("field `bucket.root`: `/x` must be empty or a relative prefix"),
            "{e}"
        );
        let e = error(&GOOD.replace("[tls]", "[http]\ntls = \"yes\"\n[tls]"));
        assert!(e.contains("tls") && e.contains("invalid type"), "{e}");
    }
}
