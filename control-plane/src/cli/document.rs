//! The model as documents: `meridian get KIND [KEY…] -o yaml|json` prints what `meridian apply
//! -f FILE|DIR [--dry-run]` takes back.
//!
//! A document is an entity as the API takes it, with a `kind` (`dc`, `cluster`, `env`,
//! `tenant`, `grant`, `workflow`, `schedule`) and without what the plane keeps about it (a
//! workflow's `version`). YAML files may hold several documents (`---`), JSON files one or an
//! array, TOML files one. `apply` reads and checks every document before it changes anything,
//! then, in the order things depend on each other (data centers first, schedules last), sends
//! one write per document that differs from what the plane holds: a create, or a replacement
//! (a workflow's new version). What is the same is left alone, so applying twice changes
//! nothing the second time; `--dry-run` shows what would change, as a diff, and changes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

use super::client::{Client, ClientError};
use super::model::{self, Noun};
use crate::api::WriteReply;

/// What a document is; the order is the order `apply` writes them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    Dc,
    Cluster,
    #[value(alias = "environment")]
    Env,
    Tenant,
    Grant,
    Workflow,
    Schedule,
}

impl Kind {
    fn noun(self) -> &'static Noun {
        match self {
            Self::Dc => &model::DC,
            Self::Cluster => &model::CLUSTER,
            Self::Env => &model::ENV,
            Self::Tenant => &model::TENANT,
            Self::Grant => &model::GRANT,
            Self::Workflow => &model::WORKFLOW,
            Self::Schedule => &model::SCHEDULE,
        }
    }

    fn word(self) -> &'static str {
        self.noun().word
    }

    /// Fields the plane adds to what it keeps, never part of a document.
    fn kept_by_the_plane(self) -> &'static [&'static str] {
        self.noun().kept
    }

    /// The document as the model types read it: every default filled in, so two documents
    /// that mean the same compare equal; `Err` names the field at fault.
    fn normal(self, document: Value) -> Result<Normal, String> {
        use crate::model::{Cluster, DataCenter, Environment, Grant, Schedule, Tenant, Workflow};
        match self {
            Self::Dc => normal::<DataCenter>(self, document),
            Self::Cluster => normal::<Cluster>(self, document),
            Self::Env => normal::<Environment>(self, document),
            Self::Tenant => normal::<Tenant>(self, document),
            Self::Grant => normal::<Grant>(self, document),
            Self::Workflow => normal::<Workflow>(self, document),
            Self::Schedule => normal::<Schedule>(self, document),
        }
    }

    fn from_document(word: &str) -> Option<Self> {
        Self::from_str(word, true).ok()
    }

    fn words() -> String {
        Self::value_variants()
            .iter()
            .map(|k| k.word())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A document read the way the plane reads it.
#[derive(Debug)]
struct Normal {
    kind: Kind,
    /// What is sent and compared.
    value: Value,
    /// Its keys in the API's paths (`[name]`, `[tenant, name]`).
    keys: Vec<String>,
    /// The same in the model type's field order (a JSON map sorts its keys), with enums as
    /// JSON writes them (`kind: {shell: …}`, not YAML's `!shell` tags), for printing.
    ordered: serde_yaml_ng::Value,
}

impl Normal {
    /// `workflow demo/hello`.
    fn subject(&self) -> String {
        format!("{} {}", self.kind.word(), self.keys.join("/"))
    }

    /// As YAML, `kind` first, the fields in the model's order.
    fn yaml(&self) -> String {
        let mut text = format!("kind: {}\n", self.kind.word());
        text.push_str(
            &serde_yaml_ng::to_string(&self.ordered).expect("documents always print as YAML"),
        );
        text
    }

    /// As JSON, `kind` first.
    fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("kind".into(), Value::String(self.kind.word().into()));
        if let Value::Object(fields) = &self.value {
            out.extend(fields.clone());
        }
        Value::Object(out)
    }
}

fn normal<T: DeserializeOwned + Serialize>(kind: Kind, document: Value) -> Result<Normal, String> {
    let typed: T = serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;
    let value = serde_json::to_value(&typed).expect("model types always serialise to JSON");
    let keys = model::document_keys(kind.noun(), &value).map_err(|e| e.to_string())?;
    // The type printed as JSON text, read back as YAML, whose mappings keep their order.
    let text = serde_json::to_string(&typed).expect("model types always print as JSON");
    let ordered = serde_yaml_ng::from_str(&text).expect("JSON is YAML");
    Ok(Normal {
        kind,
        value,
        keys,
        ordered,
    })
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub kind: Kind,
    /// NAME; TENANT NAME for workflows and schedules; TENANT ENVIRONMENT for grants. None:
    /// every one you may see (with `--tenant`, that tenant's).
    #[arg(num_args = 0..=2)]
    pub keys: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: Format,
    /// Without keys: only this tenant's (grants, workflows, schedules).
    #[arg(long)]
    pub tenant: Option<String>,
    /// A workflow version (default: the newest).
    #[arg(long)]
    pub version: Option<u64>,
    /// Read the node's local copy without asking the leader (may be slightly behind).
    #[arg(long)]
    pub stale: bool,
}

/// `meridian get`: documents `apply` takes back.
pub async fn get(client: &Client, args: &GetArgs) -> Result<String, ClientError> {
    let noun = args.kind.noun();
    let mut query = vec![];
    if args.stale {
        query.push("stale=true".to_owned());
    }
    let found: Vec<Value> = if args.keys.is_empty() {
        if args.version.is_some() {
            return Err(ClientError::Refused(
                "--version needs the workflow's TENANT NAME".into(),
            ));
        }
        if let Some(t) = &args.tenant {
            query.push(format!("tenant={}", model::encode(t)));
        }
        if noun.paged {
            // Every page: a thousand a request.
            model::pages(client, noun, query, crate::api::PAGE, None, true).await?
        } else {
            client
                .call(
                    Method::GET,
                    &model::with_query(noun.path, &query),
                    None::<&()>,
                )
                .await?
        }
    } else {
        if let Some(v) = args.version {
            query.push(format!("version={v}"));
        }
        let path = model::with_query(&model::key_path(noun, &args.keys)?, &query);
        vec![client.call(Method::GET, &path, None::<&()>).await?]
    };
    let documents = found
        .into_iter()
        .map(|v| held(args.kind, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match args.output {
        Format::Yaml => documents
            .iter()
            .map(Normal::yaml)
            .collect::<Vec<_>>()
            .join("---\n")
            .trim_end()
            .to_owned(),
        Format::Json => {
            let mut values: Vec<Value> = documents.iter().map(Normal::json).collect();
            // One asked for by its keys prints as one document; a list as an array.
            model::pretty(&if !args.keys.is_empty() {
                values.remove(0)
            } else {
                Value::Array(values)
            })
        }
    })
}

/// What the plane holds, as a document.
fn held(kind: Kind, mut value: Value) -> Result<Normal, ClientError> {
    if let Some(fields) = value.as_object_mut() {
        for field in kind.kept_by_the_plane() {
            fields.remove(*field);
        }
    }
    kind.normal(value).map_err(|e| {
        ClientError::Failed(format!(
            "the plane's {} does not read as a document ({e}); is the CLI older than the plane?",
            kind.word()
        ))
    })
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file of documents (YAML, JSON or TOML, by its extension), or a directory: its
    /// `.yaml`, `.yml`, `.json` and `.toml` files, in name order. Repeatable.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Show what would change, as a diff, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `meridian apply`.
pub async fn apply(client: &Client, args: &ApplyArgs) -> Result<String, ClientError> {
    let mut documents = Vec::new();
    for path in &args.files {
        for file in files(path)? {
            for (origin, value) in read(&file)? {
                documents.push(document(&origin, value)?);
            }
        }
    }
    if documents.is_empty() {
        return Err(ClientError::Refused(
            "-f: no documents in what was given".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (origin, d) in &documents {
        if !seen.insert((d.kind, d.keys.clone())) {
            return Err(ClientError::Refused(format!(
                "{origin}: {} is given twice",
                d.subject()
            )));
        }
    }
    documents.sort_by_key(|(_, d)| d.kind);
    let mut out = Vec::new();
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    for (_, desired) in &documents {
        let noun = desired.kind.noun();
        let path = model::key_path(noun, &desired.keys)?;
        let current = match client.find::<Value>(&path).await? {
            Some(v) => Some(held(desired.kind, v)?),
            None => None,
        };
        let subject = desired.subject();
        match current {
            Some(current) if current.value == desired.value => {
                unchanged += 1;
                out.push(format!("{subject}: unchanged"));
            }
            Some(current) => {
                updated += 1;
                if args.dry_run {
                    out.push(format!("{subject}: would be updated"));
                    out.push(diff(&current.yaml(), &desired.yaml()));
                    continue;
                }
                // A workflow's new version is a create; everything else is replaced in place.
                let reply: WriteReply = if desired.kind == Kind::Workflow {
                    client
                        .call(Method::POST, noun.path, Some(&desired.value))
                        .await
                } else {
                    client.call(Method::PUT, &path, Some(&desired.value)).await
                }
                .map_err(|e| stopped(e, &subject, &out))?;
                out.push(format!("{subject}: updated{}", version(&reply)));
            }
            None => {
                created += 1;
                if args.dry_run {
                    out.push(format!("{subject}: would be created"));
                    out.push(diff("", &desired.yaml()));
                    continue;
                }
                let reply: WriteReply = client
                    .call(Method::POST, noun.path, Some(&desired.value))
                    .await
                    .map_err(|e| stopped(e, &subject, &out))?;
                out.push(format!("{subject}: created{}", version(&reply)));
            }
        }
    }
    let would = if args.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    out.push(format!(
        "{} document{}: {created} created, {updated} updated, {unchanged} unchanged{would}",
        documents.len(),
        if documents.len() == 1 { "" } else { "s" },
    ));
    Ok(out.join("\n"))
}

/// A refused write mid-way: what was applied before it, then why it stopped.
fn stopped(error: ClientError, subject: &str, done: &[String]) -> ClientError {
    let before = if done.is_empty() {
        String::new()
    } else {
        format!("{}\n", done.join("\n"))
    };
    let message = format!("{before}{subject}: {error}\n(the documents after it were not applied)");
    match error {
        ClientError::Refused(_) => ClientError::Refused(message),
        ClientError::Failed(_) => ClientError::Failed(message),
    }
}

fn version(reply: &WriteReply) -> String {
    reply
        .version
        .map(|v| format!(" (version {v})"))
        .unwrap_or_default()
}

/// A unified diff from what the plane holds to what would be applied.
fn diff(current: &str, desired: &str) -> String {
    similar::TextDiff::from_lines(current, desired)
        .unified_diff()
        .context_radius(3)
        .header("plane", "file")
        .to_string()
        .trim_end()
        .to_owned()
}

/// The files `path` names: itself, or a directory's documents in name order.
fn files(path: &Path) -> Result<Vec<PathBuf>, ClientError> {
    let read_error = |e: std::io::Error| ClientError::Refused(format!("{}: {e}", path.display()));
    if !path.is_dir() {
        std::fs::metadata(path).map_err(read_error)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        if file.is_file() && Syntax::of(&file).is_some() {
            found.push(file);
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(ClientError::Refused(format!(
            "{}: no .yaml, .yml, .json or .toml files in it",
            path.display()
        )));
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy)]
enum Syntax {
    Yaml,
    Json,
    Toml,
}

impl Syntax {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            "toml" => Some(Self::Toml),
            _ => None,
        }
    }
}

/// A file's documents, each with where it came from (`file`, or `file#2` for the second).
fn read(path: &Path) -> Result<Vec<(String, Value)>, ClientError> {
    let name = path.display().to_string();
    let refused = |e: String| ClientError::Refused(format!("{name}: {e}"));
    let text = std::fs::read_to_string(path).map_err(|e| refused(e.to_string()))?;
    // A file named otherwise is read as YAML, which also reads JSON.
    let values: Vec<Value> = match Syntax::of(path).unwrap_or(Syntax::Yaml) {
        Syntax::Yaml => {
            let mut values = Vec::new();
            for document in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = Value::deserialize(document).map_err(|e| refused(e.to_string()))?;
                if !value.is_null() {
                    values.push(value);
                }
            }
            values
        }
        Syntax::Json => match serde_json::from_str(&text).map_err(|e| refused(e.to_string()))? {
            Value::Array(values) => values,
            one => vec![one],
        },
        Syntax::Toml => vec![
            toml::from_str(&text)
                .map_err(|e| refused(e.to_string().trim_end().replace('\n', " ")))?,
        ],
    };
    let many = values.len() > 1;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let origin = if many {
                format!("{name}#{}", i + 1)
            } else {
                name.clone()
            };
            (origin, v)
        })
        .collect())
}

/// One document checked: its kind known, every field read as the plane reads it.
fn document(origin: &str, mut value: Value) -> Result<(String, Normal), ClientError> {
    let refused = |e: String| ClientError::Refused(format!("{origin}: {e}"));
    let fields = value
        .as_object_mut()
        .ok_or_else(|| refused("a document is a mapping of fields".into()))?;
    let kind = match fields.remove("kind") {
        None => return Err(refused(format!("kind: missing (one of {})", Kind::words()))),
        Some(word) => word
            .as_str()
            .and_then(Kind::from_document)
            .ok_or_else(|| refused(format!("kind: {word} is not one of {}", Kind::words())))?,
    };
    for field in kind.kept_by_the_plane() {
        fields.remove(*field);
    }
    let normal = kind.normal(value).map_err(refused)?;
    Ok((origin.to_owned(), normal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_with_its_defaults_and_prints_back_the_same() {
        let (_, d) = document(
            "x.yaml",
            serde_json::json!({"kind": "schedule", "tenant": "demo", "name": "daily",
                "workflow": "hello", "environment": "dev", "spec": {"cron": "0 0 6 * * ?"}}),
        )
        .unwrap();
        assert_eq!(d.subject(), "schedule demo/daily");
        assert_eq!(d.value["spec"]["time_zone"], "UTC");
        let printed = d.yaml();
        assert!(
            printed.starts_with("kind: schedule\ntenant: demo\n"),
            "{printed}"
        );
        let back: Value = serde_yaml_ng::from_str(&printed).unwrap();
        let (_, again) = document("y", back).unwrap();
        assert_eq!(again.value, d.value);
    }

    #[test]
    fn a_bad_document_names_where_it_is_and_the_field() {
        let e = document(
            "x.yaml#2",
            serde_json::json!({"kind": "workflow", "tenant": "demo", "name": "w",
                "definition": {"tasks": [{"name": "a", "kind": {"shel": {}}}]}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.yaml#2: definition.tasks[0].kind"), "{e}");
        let e = document("x", serde_json::json!({"name": "w"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind: missing (one of dc, cluster, env"), "{e}");
    }

    #[test]
    fn create_takes_what_get_prints() {
        let printed = serde_json::json!({"kind": "workflow", "version": 3, "tenant": "demo",
            "name": "w", "definition": {"tasks": []}});
        let body = model::for_noun(&model::WORKFLOW, printed).unwrap();
        assert!(body.get("version").is_none() && body.get("kind").is_none());
        let wrong = model::for_noun(
            &model::SCHEDULE,
            serde_json::json!({"kind": "workflow", "name": "w"}),
        )
        .unwrap_err();
        assert!(wrong.to_string().contains("is not `schedule`"), "{wrong}");
    }
}
