//! Resource keys: the names of scripts, jars and SQL files in the federation's one S3 bucket.
//!
//! A key is what users write (`etl/load.sql`); in the bucket it lives under its tenant's
//! prefix (`<root>tenants/<tenant>/etl/load.sql`), so a tenant can only ever name its own
//! objects. The same rules check the names a task gives its resources in the run's working
//! directory, so neither can climb out of where it belongs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest key accepted: S3 allows 1,024 bytes for the whole object key, and the tenant
/// prefix needs room.
pub const MAX_KEY_BYTES: usize = 900;

/// Why a key or a file name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes; at most {MAX_KEY_BYTES} are allowed")]
    TooLong(usize),
    #[error("`{0}` must be relative (no leading `/`)")]
    Absolute(String),
    #[error("`{0}` has an empty, `.` or `..` segment")]
    BadSegment(String),
    #[error("`{0}` contains a control character or a backslash")]
    BadCharacter(String),
}

/// Checks a slash-separated relative path: not empty, not absolute, no empty, `.` or `..`
/// segment, no control characters or backslashes, at most [`MAX_KEY_BYTES`].
pub fn check_relative(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_KEY_BYTES {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.into()));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::BadCharacter(path.escape_default().to_string()));
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(PathError::BadSegment(path.into()));
    }
    Ok(())
}

/// A tenant's resource key, checked by [`check_relative`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceKey(String);

/// A key is a relative path (`etl/load.sql`) as [`check_relative`] checks it.
impl schemars::JsonSchema for ResourceKey {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourceKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a relative path: no `..`, no empty segment, no leading `/`",
            "maxLength": MAX_KEY_BYTES
        })
    }
}

impl ResourceKey {
    pub fn new(key: impl Into<String>) -> Result<Self, PathError> {
        let key = key.into();
        check_relative(&key)?;
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceKey {
    type Error = PathError;
    fn try_from(key: String) -> Result<Self, PathError> {
        Self::new(key)
    }
}

impl From<ResourceKey> for String {
    fn from(key: ResourceKey) -> String {
        key.0
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a tenant's objects live in the bucket: `<root>tenants/<tenant>/`. `root` is the
/// configured prefix of the whole federation (empty, or ending in `/`).
pub fn tenant_prefix(root: &str, tenant: &str) -> String {
    format!("{root}tenants/{tenant}/")
}

/// The object key of `key` in `tenant`'s part of the bucket.
pub fn object_key(root: &str, tenant: &str, key: &ResourceKey) -> String {
    format!("{}{}", tenant_prefix(root, tenant), key.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_their_prefix() {
        for good in ["a", "etl/load.sql", "jars/v1.2/app.jar", "with space/x"] {
            assert!(ResourceKey::new(good).is_ok(), "{good}");
        }
        assert_eq!(ResourceKey::new(""), Err(PathError::Empty));
        assert!(matches!(
            ResourceKey::new("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        for bad in ["../other/x", "a/../../b", "a//b", "a/./b", "a/", "."] {
            assert!(
                matches!(ResourceKey::new(bad), Err(PathError::BadSegment(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            ResourceKey::new("a\\b"),
            Err(PathError::BadCharacter(_))
        ));
        assert!(matches!(
            ResourceKey::new("a\nb"),
            Err(PathError::BadCharacter(_))
        ));
        assert!(matches!(
            ResourceKey::new("x".repeat(901)),
            Err(PathError::TooLong(901))
        ));
        let key = ResourceKey::new("etl/load.sql").unwrap();
        assert_eq!(
            object_key("meridian/", "ads", &key),
            "meridian/tenants/ads/etl/load.sql"
        );
        assert_eq!(object_key("", "ads", &key), "tenants/ads/etl/load.sql");
    }

    #[test]
    fn a_bad_key_in_json_is_refused_with_the_reason() {
        let e = serde_json::from_str::<ResourceKey>("\"../x\"").unwrap_err();
        assert!(e.to_string().contains("`..` segment"), "{e}");
    }
}
