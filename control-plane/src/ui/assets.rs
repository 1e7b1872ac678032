//! The UI's static files, embedded in the binary and served from `/ui/static/{name}`: the
//! vendored htmx and its SSE extension (`control-plane/ui/VENDORED.md`), and the UI's own
//! style sheet and script. Every page names each file's SHA-384 in `integrity`, so a browser
//! refuses a file that is not the one the binary was built with.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha384};

/// One static file.
pub struct Asset {
    /// Its name under `/ui/static/` (versioned for vendored files).
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

impl Asset {
    /// Where pages load it from.
    pub fn url(&self) -> String {
        format!("/ui/static/{}", self.name)
    }

    /// `sha384-…` of its bytes, for `integrity`.
    pub fn integrity(&self) -> &'static str {
        static CACHE: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
        let all = CACHE.get_or_init(|| {
            ALL.iter()
                .map(|a| {
                    let digest = Sha384::digest(a.bytes);
                    (
                        a.name,
                        format!(
                            "sha384-{}",
                            base64::engine::general_purpose::STANDARD.encode(digest)
                        ),
                    )
                })
                .collect()
        });
        all.iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, i)| i.as_str())
            .expect("every asset is in ALL")
    }
}

pub const HTMX: Asset = Asset {
    name: "htmx-2.0.11.min.js",
    bytes: include_bytes!("../../ui/static/htmx-2.0.11.min.js"),
    content_type: "text/javascript; charset=utf-8",
};

pub const SSE: Asset = Asset {
    name: "htmx-ext-sse-2.2.4.js",
    bytes: include_bytes!("../../ui/static/htmx-ext-sse-2.2.4.js"),
    content_type: "text/javascript; charset=utf-8",
};

pub const CSS: Asset = Asset {
    name: "meridian.css",
    bytes: include_bytes!("../../ui/static/meridian.css"),
    content_type: "text/css; charset=utf-8",
};

pub const JS: Asset = Asset {
    name: "meridian.js",
    bytes: include_bytes!("../../ui/static/meridian.js"),
    content_type: "text/javascript; charset=utf-8",
};

const ALL: [&Asset; 4] = [&HTMX, &SSE, &CSS, &JS];

/// `GET /ui/static/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ALL.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The pages pin each file by its hash; a new build may change them, so revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes `control-plane/ui/VENDORED.md` records are those of the embedded files: a
    /// vendored file changed by hand (or a record not updated) fails here.
    #[test]
    fn vendored_files_are_the_ones_recorded() {
        let recorded = include_str!("../../ui/VENDORED.md");
        for asset in [&HTMX, &SSE] {
            let line = recorded
                .lines()
                .find(|l| l.contains(asset.name))
                .unwrap_or_else(|| panic!("{} is not in VENDORED.md", asset.name));
            assert!(
                line.contains(asset.integrity()),
                "{}: embedded {} is not what VENDORED.md records",
                asset.name,
                asset.integrity()
            );
        }
    }
}
