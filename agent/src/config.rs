//! The agent's config file. One serde struct, strict (`deny_unknown_fields`), with a doc on
//! every field; defaults suit a local `meridian dev`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
        field: &'static str,
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
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let invalid = |field, problem: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field,
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
        Ok(config)
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
            "#,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("meridian-agent-data"));
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
               plane = ["plane-1"]"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            no_port.contains("field `plane`: `plane-1` is not"),
            "{no_port}"
        );
    }
}
