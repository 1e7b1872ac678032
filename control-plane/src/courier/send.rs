//! Sending one delivery: a webhook's signed JSON, a chat message, a mail through the relay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use meridian_domain::Clock;
use serde::Deserialize;
use sha2::Sha256;

use crate::model::alerts::outbox::{AlertAttempt, Delivery};
use crate::model::{AlertChannel, ChannelKind};

/// How long one send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// `[mail]` in `plane.toml`: the SMTP relay email channels go through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The relay's host name.
    pub host: String,
    /// Its port (587 for STARTTLS, 465 for TLS, 25 for a local relay).
    #[serde(default = "default_port")]
    pub port: u16,
    /// How the connection is protected.
    #[serde(default)]
    pub tls: MailTls,
    /// The sender address alerts come from.
    pub from: String,
    /// Sign in to the relay as this user (with `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the relay password (read at each send, so it can be rotated).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_port() -> u16 {
    587
}

/// `[mail] tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailTls {
    /// STARTTLS, required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// Plain text: only for a relay on the same host or a test server.
    None,
}

/// What sends; cheap to clone (one per delivery in a round).
#[derive(Clone)]
pub struct Sender {
    node: String,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    mail: Option<Arc<MailConfig>>,
}

impl Sender {
    pub fn new(node: String, clock: Arc<dyn Clock>, mail: Option<MailConfig>) -> Self {
        // Receivers are anyone's servers: the web PKI's roots, not the federation's CA.
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // A receiver's answer is its own: a redirect is not followed elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(SEND_TIMEOUT)
            .user_agent(concat!("meridian-alerts/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with a preconfigured TLS config builds");
        Self {
            node,
            clock,
            http,
            mail: mail.map(Arc::new),
        }
    }

    /// Tries `delivery` once through `channel` (none: deleted since; given up).
    pub async fn send(&self, delivery: &Delivery, channel: Option<&AlertChannel>) -> AlertAttempt {
        let at_ms = self.clock.now_ms();
        let started = Instant::now();
        let outcome = match channel {
            None => Err(Failure::GiveUp(format!(
                "channel `{}` no longer exists",
                delivery.channel
            ))),
            Some(c) => match c.kind {
                ChannelKind::Webhook => self.webhook(delivery, c, at_ms).await,
                ChannelKind::Chat => self.chat(delivery, c).await,
                ChannelKind::Email => self.mail(delivery, c).await,
            },
        };
        let (ok, message, give_up) = match outcome {
            Ok(answer) => (true, answer, false),
            Err(Failure::Retry(why)) => (false, why, false),
            Err(Failure::GiveUp(why)) => (false, why, true),
        };
        AlertAttempt {
            delivery: delivery.id.clone(),
            at_ms,
            ok,
            message,
            took_ms: started.elapsed().as_millis() as u64,
            node: self.node.clone(),
            sent: delivery.count,
            sent_events: delivery.events.len() as u32,
            give_up,
        }
    }

    async fn webhook(
        &self,
        delivery: &Delivery,
        channel: &AlertChannel,
        at_ms: i64,
    ) -> Result<String, Failure> {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": delivery.id,
            "tenant": delivery.tenant,
            "rule": delivery.rule,
            "channel": delivery.channel,
            "event": delivery.event,
            "count": delivery.count,
            "summary": delivery.summary(),
            "events": delivery.events,
            "created_ms": delivery.created_ms,
            "attempt": delivery.attempts + 1,
        }))
        .expect("a delivery serialises");
        let mut request = self
            .http
            .post(channel.url.as_deref().unwrap_or_default())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Meridian-Delivery", &delivery.id);
        if let Some(secret) = &channel.secret {
            request = request.header(
                "X-Meridian-Signature",
                signature(secret, at_ms / 1000, &body),
            );
        }
        post(request.body(body)).await
    }

    async fn chat(&self, delivery: &Delivery, channel: &AlertChannel) -> Result<String, Failure> {
        let request = self
            .http
            .post(channel.url.as_deref().unwrap_or_default())
            .header("X-Meridian-Delivery", &delivery.id)
            .json(&serde_json::json!({ "text": text(delivery) }));
        post(request).await
    }

    async fn mail(&self, delivery: &Delivery, channel: &AlertChannel) -> Result<String, Failure> {
        let Some(relay) = &self.mail else {
            return Err(Failure::Retry(format!(
                "plane node {} has no [mail] relay in its plane.toml",
                self.node
            )));
        };
        let from = relay
            .from
            .parse()
            .map_err(|e| Failure::Retry(format!("[mail] from `{}`: {e}", relay.from)))?;
        let mut message = Message::builder()
            .from(from)
            .subject(format!("[meridian] {}", delivery.summary()));
        for to in &channel.to {
            let to = to
                .parse()
                .map_err(|e| Failure::GiveUp(format!("recipient `{to}`: {e}")))?;
            message = message.to(to);
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(format!("{}\n\ndelivery {}\n", text(delivery), delivery.id))
            .map_err(|e| Failure::GiveUp(format!("building the mail: {e}")))?;
        let builder = match relay.tls {
            MailTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay.host.as_str())
            }
            MailTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&relay.host)
                .map_err(|e| Failure::Retry(format!("relay {}: {e}", relay.host)))?,
            MailTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&relay.host)
                .map_err(|e| Failure::Retry(format!("relay {}: {e}", relay.host)))?,
        };
        let mut builder = builder.port(relay.port).timeout(Some(SEND_TIMEOUT));
        if let (Some(user), Some(file)) = (&relay.username, &relay.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|e| Failure::Retry(format!("reading {}: {e}", file.display())))?;
            builder = builder.credentials(Credentials::new(user.clone(), password.trim().into()));
        }
        let response = builder
            .build()
            .send(message)
            .await
            .map_err(|e| Failure::Retry(format!("relay {}:{}: {e}", relay.host, relay.port)))?;
        Ok(format!(
            "{} {}",
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        ))
    }
}

/// Why a send did not go through.
enum Failure {
    /// Worth trying again (receiver down, timeout, 5xx, 429).
    Retry(String),
    /// Never will (the channel is gone, an address is malformed).
    GiveUp(String),
}

async fn post(request: reqwest::RequestBuilder) -> Result<String, Failure> {
    let response = request.send().await.map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        Failure::Retry(why)
    })?;
    // Only the status is kept: a body is the receiver's, and the tenant who made the channel
    // reads the attempts (so a plane node is no way to read what an address answers).
    let status = response.status();
    if status.is_success() {
        Ok(format!("HTTP {}", status.as_u16()))
    } else {
        Err(Failure::Retry(format!("HTTP {}", status.as_u16())))
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp is signed with the
/// body, so a receiver can refuse an old message replayed.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!(
        "t={t},v1={}",
        crate::api::token::hex(&mac.finalize().into_bytes())
    )
}

/// A delivery as people read it: a headline, then each event's line.
fn text(delivery: &Delivery) -> String {
    let mut lines = vec![delivery.summary()];
    if delivery.events.len() > 1 {
        lines.extend(delivery.events.iter().map(|e| format!("- {}", e.text)));
    }
    if delivery.count as usize > delivery.events.len() {
        lines.push(format!(
            "… and {} more",
            delivery.count as usize - delivery.events.len()
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_and_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as the signature splits it.
        let sig = signature("Jefe", 0, b"what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        let want = crate::api::token::hex(&mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=0,v1={want}"));
        // And a known vector, so the construction itself is pinned.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            crate::api::token::hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
