//! `meridian user …`, `meridian token …` and `meridian whoami`: people, automation, and who the
//! CLI is acting as.
//!
//! A role is given as `--role ROLE [--tenant TENANT]`: `admin` and `operator` span every tenant,
//! `owner`, `developer` and `viewer` are held for one. A password is read from standard input
//! with `--password-stdin`, or generated and printed once.

use std::io::Read;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::model::encode;
use crate::api::WriteReply;
use crate::api::session::{Whoami, until};
use crate::api::users::{CreatedToken, PasswordReply, TokenView, UserView};
use crate::policy::Binding;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Operator,
    Owner,
    Developer,
    Viewer,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Owner => "owner",
            Self::Developer => "developer",
            Self::Viewer => "viewer",
        }
    }
}

/// One role binding from flags.
#[derive(Debug, Args)]
pub struct BindingArgs {
    /// admin, operator (every tenant), or owner, developer, viewer (of `--tenant`).
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// The tenant a tenant role is held for (`MERIDIAN_TENANT`).
    #[arg(long, env = "MERIDIAN_TENANT")]
    pub tenant: Option<String>,
}

impl BindingArgs {
    fn body(&self) -> Result<Value, ClientError> {
        let Some(role) = self.role else {
            return Err(ClientError::Refused(
                "--role is required: admin, operator, or owner, developer, viewer with --tenant"
                    .into(),
            ));
        };
        Ok(json!({"role": role.as_str(), "tenant": self.tenant}))
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; without --password-stdin a password is generated and printed once.
    Create {
        name: String,
        #[command(flatten)]
        binding: BindingArgs,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users (and the roles of theirs you may see).
    List,
    /// Show one user.
    Get { name: String },
    /// Delete a user; its sessions end at once.
    Delete { name: String },
    /// Set a user's password (generated and printed once without --password-stdin); every
    /// session of the user ends.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        /// Your current password, from standard input after the new one (needed to change
        /// your own).
        #[arg(long)]
        current_stdin: bool,
    },
    /// Give a user a role.
    Bind {
        name: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Take a role from a user.
    Unbind {
        name: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is printed once and cannot be shown again. It can hold
    /// only roles you may hand out (an owner: roles of their tenant).
    Create {
        name: String,
        #[command(flatten)]
        binding: BindingArgs,
        /// It stops working after this long: `90s`, `45m`, `12h`, `30d`.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (names, roles, expiry; never secrets).
    List,
    /// Delete a token; it stops working at once.
    Delete { name: String },
}

/// Seconds in `30d`, `12h`, `45m`, `90s` (a bare number is seconds).
pub fn duration_seconds(flag: &str, value: &str) -> Result<u64, ClientError> {
    let bad = || {
        ClientError::Refused(format!(
            "{flag} `{value}`: want a number with s, m, h or d (e.g. 30d)"
        ))
    };
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c),
        _ => (value, 's'),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(ClientError::Refused(format!("{flag}: must be more than 0")));
    }
    n.checked_mul(per).ok_or_else(bad)
}

fn read_stdin_lines(n: usize) -> Result<Vec<String>, ClientError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| ClientError::Failed(format!("reading standard input: {e}")))?;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.len() < n {
        return Err(ClientError::Refused(format!(
            "standard input: expected {n} line(s), got {}",
            lines.len()
        )));
    }
    Ok(lines)
}

fn bindings_text(bindings: &[Binding]) -> String {
    if bindings.is_empty() {
        "(no roles)".into()
    } else {
        bindings
            .iter()
            .map(Binding::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn user_line(u: &UserView) -> String {
    format!("{}\t{}", u.name, bindings_text(&u.bindings))
}

pub async fn user(client: &Client, command: &UserCommand) -> Result<String, ClientError> {
    match command {
        UserCommand::Create {
            name,
            binding,
            password_stdin,
        } => {
            let mut body = json!({"name": name});
            if binding.role.is_some() {
                body["bindings"] = json!([binding.body()?]);
            } else if binding.tenant.is_some() {
                return Err(ClientError::Refused(
                    "--tenant needs --role (owner, developer or viewer)".into(),
                ));
            }
            if *password_stdin {
                body["password"] = json!(read_stdin_lines(1)?[0]);
            }
            let reply: PasswordReply = client.call(Method::POST, "/users", Some(&body)).await?;
            Ok(match reply.password {
                Some(p) => format!(
                    "created {}; its password (shown only now):\n{p}",
                    reply.subject
                ),
                None => format!("created {}", reply.subject),
            })
        }
        UserCommand::List => {
            let users: Vec<UserView> = client.call(Method::GET, "/users", None::<&()>).await?;
            Ok(users.iter().map(user_line).collect::<Vec<_>>().join("\n"))
        }
        UserCommand::Get { name } => {
            let u: UserView = client
                .call(
                    Method::GET,
                    &format!("/users/{}", encode(name)),
                    None::<&()>,
                )
                .await?;
            Ok(super::model::pretty(
                &serde_json::to_value(u).expect("a user is JSON"),
            ))
        }
        UserCommand::Delete { name } => {
            let reply: WriteReply = client
                .call(
                    Method::DELETE,
                    &format!("/users/{}", encode(name)),
                    None::<&()>,
                )
                .await?;
            Ok(format!("deleted {}", reply.subject))
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            current_stdin,
        } => {
            let wanted = usize::from(*password_stdin) + usize::from(*current_stdin);
            let lines = if wanted > 0 {
                read_stdin_lines(wanted)?
            } else {
                vec![]
            };
            let mut body = json!({});
            let mut next = lines.into_iter();
            if *password_stdin {
                body["password"] = json!(next.next());
            }
            if *current_stdin {
                body["current_password"] = json!(next.next());
            }
            let reply: PasswordReply = client
                .call(
                    Method::PUT,
                    &format!("/users/{}/password", encode(name)),
                    Some(&body),
                )
                .await?;
            Ok(match reply.password {
                Some(p) => format!(
                    "changed the password of {}; the new one (shown only now):\n{p}",
                    reply.subject
                ),
                None => format!("changed the password of {}", reply.subject),
            })
        }
        UserCommand::Bind { name, binding } => {
            let reply: WriteReply = client
                .call(
                    Method::POST,
                    &format!("/users/{}/bindings", encode(name)),
                    Some(&binding.body()?),
                )
                .await?;
            Ok(format!("bound {}", reply.subject))
        }
        UserCommand::Unbind { name, binding } => {
            let b = binding.body()?;
            let id = match b["tenant"].as_str() {
                Some(t) => format!("{}@{t}", b["role"].as_str().unwrap_or_default()),
                None => b["role"].as_str().unwrap_or_default().to_owned(),
            };
            let reply: WriteReply = client
                .call(
                    Method::DELETE,
                    &format!("/users/{}/bindings/{}", encode(name), encode(&id)),
                    None::<&()>,
                )
                .await?;
            Ok(format!("unbound {}", reply.subject))
        }
    }
}

pub async fn token(client: &Client, command: &TokenCommand) -> Result<String, ClientError> {
    match command {
        TokenCommand::Create {
            name,
            binding,
            expires_in,
        } => {
            let mut body = json!({"name": name, "bindings": [binding.body()?]});
            if let Some(e) = expires_in {
                body["expires_in_seconds"] = json!(duration_seconds("--expires-in", e)?);
            }
            let created: CreatedToken = client.call(Method::POST, "/tokens", Some(&body)).await?;
            Ok(format!(
                "created token {} (expires: {}); its secret (shown only now):\n{}",
                created.name,
                until(created.expires_ms),
                created.token
            ))
        }
        TokenCommand::List => {
            let tokens: Vec<TokenView> = client.call(Method::GET, "/tokens", None::<&()>).await?;
            Ok(tokens
                .iter()
                .map(|t| {
                    format!(
                        "{}\t{}\texpires {}",
                        t.name,
                        bindings_text(&t.bindings),
                        until(t.expires_ms)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        TokenCommand::Delete { name } => {
            let reply: WriteReply = client
                .call(
                    Method::DELETE,
                    &format!("/tokens/{}", encode(name)),
                    None::<&()>,
                )
                .await?;
            Ok(format!("deleted {}", reply.subject))
        }
    }
}

/// `meridian whoami`: the principal the CLI's credential stands for.
pub async fn whoami(client: &Client) -> Result<String, ClientError> {
    let me: Whoami = client.call(Method::GET, "/session", None::<&()>).await?;
    Ok(format!(
        "{} {}\troles {}\texpires {}",
        me.kind,
        me.name,
        bindings_text(&me.bindings),
        until(me.expires_ms)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units() {
        assert_eq!(
            duration_seconds("--expires-in", "30d").unwrap(),
            30 * 86_400
        );
        assert_eq!(duration_seconds("--expires-in", "12h").unwrap(), 12 * 3600);
        assert_eq!(duration_seconds("--expires-in", "90").unwrap(), 90);
        assert!(duration_seconds("--expires-in", "0d").is_err());
        let e = duration_seconds("--expires-in", "3w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--expires-in `3w`"), "{e}");
    }
}
