//! `meridian resources`: the resource center — a tenant's scripts, jars and SQL files in the
//! federation's S3 bucket, which tasks name in `resources`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::{Client, ClientError};
use crate::api::resources::Resource;

#[derive(Debug, Args)]
pub struct ResourcesArgs {
    /// The tenant whose resources these are (a tenant token may only use its own).
    #[arg(long, env = "MERIDIAN_TENANT", global = true)]
    pub tenant: Option<String>,
    #[command(subcommand)]
    pub command: ResourcesCommand,
}

#[derive(Debug, Subcommand)]
pub enum ResourcesCommand {
    /// Upload a local file as `key` (replacing what was there).
    Upload { local: PathBuf, key: String },
    /// List keys, optionally only those starting with `prefix`.
    Ls { prefix: Option<String> },
    /// Download `key` to a file (default: stdout).
    Get {
        key: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Delete `key`.
    Rm { key: String },
}

/// A key or prefix as a URL path: each segment percent-encoded, slashes kept.
fn url_path(key: &str) -> String {
    key.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn line(r: &Resource) -> String {
    let modified = chrono::DateTime::from_timestamp_millis(r.last_modified_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into());
    format!("{:>12}  {modified}  {}  {}", r.size, r.etag, r.key)
}

pub async fn run(client: &Client, args: &ResourcesArgs) -> Result<String, ClientError> {
    let tenant = args.tenant.as_deref().ok_or_else(|| {
        ClientError::Refused("--tenant is required (or set MERIDIAN_TENANT)".into())
    })?;
    let tenant = url_path(tenant);
    let checked = |key: &str| {
        meridian_domain::resource::ResourceKey::new(key)
            .map(|k| url_path(k.as_str()))
            .map_err(|e| ClientError::Refused(format!("key `{key}`: {e}")))
    };
    match &args.command {
        ResourcesCommand::Upload { local, key } => {
            let key = checked(key)?;
            // Streamed from the file, not read into memory.
            let file = tokio::fs::File::open(local)
                .await
                .map_err(|e| ClientError::Refused(format!("reading {}: {e}", local.display())))?;
            let r: Resource = client
                .upload(
                    Method::PUT,
                    &format!("/resources/{tenant}/{key}"),
                    file.into(),
                )
                .await?;
            Ok(format!(
                "uploaded {} ({} bytes, ETag {})",
                r.key, r.size, r.etag
            ))
        }
        ResourcesCommand::Ls { prefix } => {
            let query = match prefix {
                Some(p) => format!("?prefix={}", url_path(p).replace('/', "%2F")),
                None => String::new(),
            };
            let list: Vec<Resource> = client
                .call(
                    Method::GET,
                    &format!("/resources/{tenant}{query}"),
                    None::<&()>,
                )
                .await?;
            Ok(list.iter().map(line).collect::<Vec<_>>().join("\n"))
        }
        ResourcesCommand::Get { key, output } => {
            let path = format!("/resources/{tenant}/{}", checked(key)?);
            match output {
                Some(file) => {
                    let mut out = tokio::fs::File::create(file).await.map_err(|e| {
                        ClientError::Failed(format!("creating {}: {e}", file.display()))
                    })?;
                    let written = client.download(&path, &mut out).await?;
                    Ok(format!("{written} bytes to {}", file.display()))
                }
                None => {
                    client.download(&path, &mut tokio::io::stdout()).await?;
                    Ok(String::new())
                }
            }
        }
        ResourcesCommand::Rm { key } => {
            let r: Resource = client
                .call(
                    Method::DELETE,
                    &format!("/resources/{tenant}/{}", checked(key)?),
                    None::<&()>,
                )
                .await?;
            Ok(format!("deleted {}", r.key))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_become_url_paths() {
        assert_eq!(super::url_path("etl/load v2.sql"), "etl/load%20v2.sql");
        assert_eq!(super::url_path("a%b/c?d"), "a%25b/c%3Fd");
    }
}
