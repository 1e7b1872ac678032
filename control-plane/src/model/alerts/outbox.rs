//! The delivery outbox: what is due, each attempt's outcome (`AlertAttempts`, proposed by the
//! leader's courier after it tried), and the reads the API and UI show.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::raise::Notice;
use super::{AlertChannel, channel};
use crate::model::Name;
use crate::model::checks::{json, subject};
use crate::model::outcome::{Applied, ApplyError, Context};

/// A delivery is given up this long after it was raised.
pub const GIVE_UP_MS: i64 = 24 * 3600 * 1000;
/// Finished deliveries are kept this long, then forgotten.
pub const KEEP_MS: i64 = 30 * 24 * 3600 * 1000;
/// The longest wait between two attempts.
pub const MOST_BACKOFF_MS: i64 = 60_000;

/// The wait after the `n`th failed attempt: 1 s, 2 s, 4 s, … at most a minute.
pub fn backoff_ms(n: u32) -> i64 {
    (1000i64 << n.saturating_sub(1).min(16)).min(MOST_BACKOFF_MS)
}

/// One try of one delivery, as the courier reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertAttempt {
    pub delivery: String,
    /// When it was tried (the courier's clock).
    pub at_ms: i64,
    pub ok: bool,
    /// The receiver's answer (`HTTP 200`, `250 OK`) or what went wrong.
    pub message: String,
    pub took_ms: u64,
    /// The plane node that tried.
    pub node: String,
    /// The delivery's count it carried (more may have joined since).
    pub sent: u32,
    /// How many of the delivery's kept events it carried.
    #[serde(default)]
    pub sent_events: u32,
    /// Nothing to retry: its channel is gone.
    #[serde(default)]
    pub give_up: bool,
}

/// A delivery as the API and UI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    pub id: String,
    #[serde(default)]
    pub tenant: Option<String>,
    pub rule: String,
    pub channel: String,
    pub event: String,
    /// Events grouped into it (at most [`super::raise::GROUPED`] kept).
    pub count: u32,
    pub events: Vec<Notice>,
    pub created_ms: i64,
    /// When it is (next) due.
    pub next_ms: i64,
    /// `pending`, `delivered`, `failed`.
    pub state: String,
    pub attempts: u32,
    pub last_error: String,
    #[serde(default)]
    pub delivered_ms: Option<i64>,
    /// Every attempt, oldest first (one delivery's read; empty in lists).
    #[serde(default)]
    pub tries: Vec<Try>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Try {
    pub attempt: u32,
    pub at_ms: i64,
    pub ok: bool,
    pub message: String,
    pub took_ms: u64,
    pub node: String,
}

impl Delivery {
    /// One line for people: the first event's text, and how many more joined it.
    pub fn summary(&self) -> String {
        let first = self.events.first().map(|n| n.text.as_str()).unwrap_or("");
        match self.count {
            0 | 1 => first.to_owned(),
            n => format!("{first} (and {} more like it)", n - 1),
        }
    }
}

fn delivery(row: &sqlx::sqlite::SqliteRow) -> sqlx::Result<Delivery> {
    let tenant: String = row.get("tenant");
    Ok(Delivery {
        id: row.get("id"),
        tenant: (!tenant.is_empty()).then_some(tenant),
        rule: row.get("rule"),
        channel: row.get("channel"),
        event: row.get("event"),
        count: row.get::<i64, _>("count") as u32,
        events: serde_json::from_str(row.get::<&str, _>("events"))
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_ms: row.get("created_ms"),
        next_ms: row.get("next_ms"),
        state: row.get("state"),
        attempts: row.get::<i64, _>("attempts") as u32,
        last_error: row.get("last_error"),
        delivered_ms: row.get("delivered_ms"),
        tries: Vec::new(),
    })
}

const COLUMNS: &str = "id, tenant, rule, channel, event, count, events, created_ms, next_ms, \
                       state, attempts, last_error, delivered_ms";

/// Deliveries due at `now_ms` (oldest first), each with its channel (none: deleted since).
pub async fn due(
    conn: &mut SqliteConnection,
    now_ms: i64,
    limit: u32,
) -> sqlx::Result<Vec<(Delivery, Option<AlertChannel>)>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alert_deliveries WHERE state = 'pending' AND next_ms <= ? \
         ORDER BY next_ms, id LIMIT ?"
    ))
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let d = delivery(&row)?;
        let owner = d
            .tenant
            .as_deref()
            .map(Name::new)
            .transpose()
            .ok()
            .flatten();
        let name = Name::new(d.channel.clone()).ok();
        let ch = match name {
            Some(n) => channel(conn, owner.as_ref(), &n).await?,
            None => None,
        };
        due.push((d, ch));
    }
    Ok(due)
}

/// `AlertAttempts`: each attempt recorded; a delivery succeeds (what joined it meanwhile is
/// due at once), waits out its backoff, or is given up a day after it was raised. An attempt
/// on a delivery no longer pending (a former leader's, late) is only recorded.
pub(in crate::model) async fn record(
    tx: &mut SqliteConnection,
    context: Context,
    attempts: &[AlertAttempt],
) -> Result<Applied, ApplyError> {
    let mut delivered = 0;
    for a in attempts {
        let Some(row) = sqlx::query(
            "SELECT state, attempts, count, events, created_ms FROM alert_deliveries WHERE id = ?",
        )
        .bind(&a.delivery)
        .fetch_optional(&mut *tx)
        .await?
        else {
            continue;
        };
        let n = row.get::<i64, _>("attempts") + 1;
        sqlx::query(
            "INSERT INTO alert_attempts (delivery_id, attempt, at_ms, ok, message, took_ms, node) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&a.delivery)
        .bind(n)
        .bind(a.at_ms)
        .bind(a.ok)
        .bind(&a.message)
        .bind(a.took_ms as i64)
        .bind(&a.node)
        .execute(&mut *tx)
        .await?;
        if row.get::<String, _>("state") != "pending" {
            continue;
        }
        let count = row.get::<i64, _>("count");
        if a.ok && count > i64::from(a.sent) {
            // Events joined while it was being sent: this one is delivered as sent, and what
            // joined goes out at once as a delivery of its own (its own id: receivers dedupe
            // on ids).
            let events: Vec<Notice> = serde_json::from_str(row.get::<&str, _>("events"))
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let split = (a.sent_events as usize).min(events.len());
            let (sent, rest) = events.split_at(split);
            sqlx::query(
                "INSERT INTO alert_deliveries (id, log_index, tenant, rule, channel, event, \
                 group_key, events, count, created_ms, next_ms, state) \
                 SELECT ?1, log_index, tenant, rule, channel, event, group_key, ?2, ?3, ?4, ?4, \
                 'pending' FROM alert_deliveries WHERE id = ?5",
            )
            .bind(format!("{}+{n}", a.delivery))
            .bind(json(&rest))
            .bind(count - i64::from(a.sent))
            .bind(context.at_ms)
            .bind(&a.delivery)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE alert_deliveries SET attempts = ?, state = 'delivered', delivered_ms = ?, \
                 count = ?, events = ?, last_error = '' WHERE id = ?",
            )
            .bind(n)
            .bind(a.at_ms)
            .bind(i64::from(a.sent))
            .bind(json(&sent))
            .bind(&a.delivery)
            .execute(&mut *tx)
            .await?;
            delivered += 1;
        } else if a.ok {
            sqlx::query(
                "UPDATE alert_deliveries SET attempts = ?, state = 'delivered', delivered_ms = ?, \
                 last_error = '' WHERE id = ?",
            )
            .bind(n)
            .bind(a.at_ms)
            .bind(&a.delivery)
            .execute(&mut *tx)
            .await?;
            delivered += 1;
        } else {
            let created: i64 = row.get("created_ms");
            let give_up = a.give_up || context.at_ms - created >= GIVE_UP_MS;
            sqlx::query(
                "UPDATE alert_deliveries SET attempts = ?, state = ?, next_ms = ?, last_error = ? \
                 WHERE id = ?",
            )
            .bind(n)
            .bind(if give_up { "failed" } else { "pending" })
            .bind(context.at_ms + backoff_ms(n as u32))
            .bind(&a.message)
            .bind(&a.delivery)
            .execute(&mut *tx)
            .await?;
        }
    }
    forget_old(tx, context.at_ms).await?;
    Ok(subject(format!(
        "alert attempts ({} tried, {delivered} delivered)",
        attempts.len()
    )))
}

/// Finished deliveries older than [`KEEP_MS`], and marks as old, go (a few per call).
async fn forget_old(tx: &mut SqliteConnection, now_ms: i64) -> sqlx::Result<()> {
    let before = now_ms - KEEP_MS;
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM alert_deliveries WHERE state != 'pending' AND created_ms < ? \
         ORDER BY created_ms, id LIMIT 100",
    )
    .bind(before)
    .fetch_all(&mut *tx)
    .await?;
    for id in old {
        sqlx::query("DELETE FROM alert_attempts WHERE delivery_id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM alert_deliveries WHERE id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "DELETE FROM alert_marks WHERE (tenant, rule, key) IN \
         (SELECT tenant, rule, key FROM alert_marks WHERE at_ms < ? \
          ORDER BY at_ms, tenant, rule, key LIMIT 100)",
    )
    .bind(before)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Of these owners ('' is the federation's); none: every owner.
    pub owners: Option<Vec<String>>,
    pub state: Option<String>,
    pub rule: Option<String>,
    pub limit: u32,
}

/// Deliveries, newest first.
pub async fn list(
    conn: &mut SqliteConnection,
    filter: &DeliveryFilter,
) -> sqlx::Result<Vec<Delivery>> {
    let owners = filter.owners.as_ref().map(json);
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alert_deliveries \
         WHERE (?1 IS NULL OR tenant IN (SELECT value FROM json_each(?1))) \
         AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR rule = ?3) \
         ORDER BY created_ms DESC, id DESC LIMIT ?4"
    ))
    .bind(owners)
    .bind(filter.state.as_deref())
    .bind(filter.rule.as_deref())
    .bind(i64::from(filter.limit.clamp(1, 1000)))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(delivery).collect()
}

/// One delivery with every attempt.
pub async fn get(conn: &mut SqliteConnection, id: &str) -> sqlx::Result<Option<Delivery>> {
    let Some(row) = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alert_deliveries WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let mut d = delivery(&row)?;
    d.tries = sqlx::query(
        "SELECT attempt, at_ms, ok, message, took_ms, node FROM alert_attempts \
         WHERE delivery_id = ? ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Try {
        attempt: r.get::<i64, _>("attempt") as u32,
        at_ms: r.get("at_ms"),
        ok: r.get("ok"),
        message: r.get("message"),
        took_ms: r.get::<i64, _>("took_ms") as u64,
        node: r.get("node"),
    })
    .collect();
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let waits: Vec<i64> = (1..=9).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [
                1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        assert_eq!(backoff_ms(u32::MAX), MOST_BACKOFF_MS);
    }
}
