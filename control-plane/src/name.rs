//! Names of data centers, clusters, environments, tenants, workflows and schedules: the one
//! pattern every entity's name follows, checked where a name is made.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A name of a data center, cluster, environment, tenant, workflow or schedule: 1–63 ASCII
/// letters, digits, `_` or `-`, starting with a letter or digit. No `.` or `@`, so
/// `<tenant>.<schedule>` is an unambiguous schedule id and fire-record ids stay parseable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// A name is a string with the pattern [`Name::new`] checks.
impl schemars::JsonSchema for Name {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Name".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name `{name}`: {problem}")]
pub struct NameError {
    pub name: String,
    pub problem: &'static str,
}

impl Name {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let problem = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > 63 {
            Some("must be at most 63 characters")
        } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            Some("must start with a letter or digit")
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("may only contain letters, digits, `_` and `-`")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(NameError { name, problem }),
            None => Ok(Self(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Name::new("prod-nj_2").is_ok());
        assert_eq!(
            Name::new("a.b").unwrap_err().to_string(),
            "name `a.b`: may only contain letters, digits, `_` and `-`"
        );
        assert!(Name::new("-x").is_err());
        assert!(Name::new("").is_err());
        assert!(Name::new("x".repeat(64)).is_err());
    }
}
