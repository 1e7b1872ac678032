//! Documents an agent or plane node keeps in its own database (an assignment, a job, a take's
//! items), written with the version of their shape: `{"v":"1","doc":…}`.
//!
//! The rule for a change of shape (see the README, "Upgrades"): a new optional field (with a
//! serde default) keeps the version; anything else (a field renamed, removed or made
//! required, a meaning changed) is a new version, and [`read`] keeps reading every earlier one
//! — a document written before versions existed is version 0, the bare document. A document
//! of a *newer* version than this build knows is refused, naming the version, so a downgrade
//! never misreads what an upgrade wrote.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version [`write`] tags documents with.
pub const VERSION: &str = "1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredError {
    #[error("written by a newer version (shape v{0}); this build reads up to v{VERSION}")]
    Newer(String),
    #[error("{0}")]
    Shape(String),
}

/// `value` as a versioned document.
pub fn write<T: Serialize>(value: &T) -> String {
    let doc = serde_json::to_string(value).expect("stored documents serialise");
    format!("{{\"v\":\"{VERSION}\",\"doc\":{doc}}}")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    v: String,
    doc: serde_json::Value,
}

/// A document [`write`] wrote, of this version or an earlier one (version 0: the bare
/// document, as written before versions).
pub fn read<T: DeserializeOwned>(text: &str) -> Result<T, StoredError> {
    let shape = |e: serde_json::Error| StoredError::Shape(e.to_string());
    // An envelope is exactly `v` and `doc`; anything else is a bare document, even one that
    // carries a `v` of its own (a shape tagged before the envelope).
    if text.trim_start().starts_with("{\"v\":")
        && let Ok(envelope) = serde_json::from_str::<Envelope>(text)
    {
        return match envelope.v.as_str() {
            VERSION => serde_json::from_value(envelope.doc).map_err(shape),
            newer => Err(StoredError::Newer(newer.to_owned())),
        };
    }
    serde_json::from_str(text).map_err(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn every_version_reads_and_a_newer_one_is_refused() {
        let doc = Doc {
            name: "a".into(),
            n: 2,
        };
        let written = write(&doc);
        assert_eq!(written, r#"{"v":"1","doc":{"name":"a","n":2}}"#);
        assert_eq!(read::<Doc>(&written).unwrap(), doc);
        // Version 0: the bare document.
        assert_eq!(read::<Doc>(r#"{"name":"a","n":2}"#).unwrap(), doc);
        // Lists too (a take's items).
        assert_eq!(read::<Vec<u32>>(&write(&vec![1, 2])).unwrap(), [1, 2]);
        assert_eq!(read::<Vec<u32>>("[1,2]").unwrap(), [1, 2]);
        assert_eq!(
            read::<Doc>(r#"{"v":"2","doc":{"name":"a"}}"#).unwrap_err(),
            StoredError::Newer("2".into())
        );
        assert!(matches!(
            read::<Doc>(r#"{"v":"1","doc":{"name":"a","extra":1}}"#),
            Err(StoredError::Shape(e)) if e.contains("extra")
        ));
    }

    /// A shape that tagged its own version before the envelope (a report, a user, a token:
    /// `{"v":"1",…}`) is a bare document, not an envelope.
    #[test]
    fn a_bare_document_with_a_v_of_its_own_reads_as_itself() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "v")]
        enum Tagged {
            #[serde(rename = "1")]
            V1 { name: String },
        }
        let bare = r#"{"v":"1","name":"a"}"#;
        assert_eq!(
            read::<Tagged>(bare).unwrap(),
            Tagged::V1 { name: "a".into() }
        );
        let tagged = Tagged::V1 { name: "b".into() };
        assert_eq!(read::<Tagged>(&write(&tagged)).unwrap(), tagged);
    }
}
