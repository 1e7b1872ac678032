//! A definition edited as a whole document, in JSON or TOML (the shape the JSON API takes),
//! checked by the server as it is saved: the workflow editor and administration's editors.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::admin::Tab;
use super::page::{self, Layout};

/// The editor's document formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    pub fn of(s: &str) -> Self {
        if s.eq_ignore_ascii_case("toml") {
            Self::Toml
        } else {
            Self::Json
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Toml => "toml",
        }
    }

    pub fn write(self, w: &impl Serialize) -> String {
        match self {
            Self::Json => serde_json::to_string_pretty(w).unwrap_or_default(),
            Self::Toml => toml::to_string_pretty(w).unwrap_or_default(),
        }
    }

    /// The document read as JSON or TOML, or where and why it does not parse.
    pub fn read(self, text: &str) -> Result<serde_json::Value, String> {
        match self {
            Self::Json => serde_json::from_str(text).map_err(|e| format!("document (JSON): {e}")),
            Self::Toml => toml::from_str(text).map_err(|e| {
                format!(
                    "document (TOML): {}",
                    e.to_string().trim_end().replace('\n', " ")
                )
            }),
        }
    }
}

/// What `T` reads from `value`, or the field (as a path: `run_as.tenants.ads.user`) and what
/// is wrong with it.
pub fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("document: {}", e.into_inner())
        } else {
            format!("document: {path}: {}", e.into_inner())
        }
    })
}

/// The editor page.
#[derive(Template)]
#[template(path = "document_edit.html")]
pub struct Editor {
    pub layout: Layout,
    /// The administration tabs, when it is one of those pages.
    pub tabs: Vec<Tab>,
    pub heading: String,
    /// Where the form posts.
    pub action: &'static str,
    /// `The workflow`.
    pub what: &'static str,
    /// The API request whose body has this shape.
    pub shape: &'static str,
    /// What saving does.
    pub after: &'static str,
    /// Hidden fields naming what is edited.
    pub key: Vec<(&'static str, String)>,
    /// Where to switch format (the stored document, or a new one, in the other format).
    pub switch: Vec<(&'static str, String, bool)>,
    pub format: &'static str,
    pub document: String,
    /// Why the document was not saved, beside it.
    pub error: String,
    /// Why nothing may be saved here at all.
    pub refused: String,
}

pub fn render(editor: Editor, status: StatusCode) -> Response {
    page::render(&editor, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_documents_say_where() {
        let bad = Format::Toml.read("tenant = \"ads\"\nname = ").unwrap_err();
        assert!(
            bad.starts_with("document (TOML): ") && bad.contains("line 2"),
            "{bad}"
        );
        let bad = Format::Json.read("{\"tenant\": }").unwrap_err();
        assert!(bad.contains("line 1 column 12"), "{bad}");
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            user: String,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            inner: Inner,
        }
        let wrong = typed::<Outer>(serde_json::json!({"inner": {"user": 7}})).unwrap_err();
        assert!(
            wrong.starts_with("document: inner.user: invalid type"),
            "{wrong}"
        );
    }
}
