//! An attempt's log as one object in the federation's S3 bucket: its pieces, each with its
//! offset, as JSON lines under `<root>logs/<tenant>/<run>/<task>/<attempt>.jsonl` (beside the
//! tenants' resources, never among them). The same pieces with the same offsets as the
//! logbooks hold, so a reader's cursor means the same whichever it read from. Objects read
//! are kept parsed in a small cache: a page's tail and its "load earlier" read one object.

use std::sync::Arc;

use meridian_bucket::{Bucket, BucketError};
use serde::{Deserialize, Serialize};

use super::{LogPiece, PieceQuery, Pieces, merge};
use crate::model::archive::Copy;
use crate::model::history::tenant_of_run;

/// Objects larger are not read (the cap keeps logs far smaller).
const MAX_OBJECT_BYTES: u64 = 256 * 1024 * 1024;
/// Parsed objects kept, by the bytes of their text.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Line {
    o: i64,
    d: String,
}

/// The bucket task logs are copied to, as this node reads and writes it.
#[derive(Clone)]
pub struct Archive {
    bucket: Bucket,
    cache: moka::sync::Cache<String, Arc<Vec<LogPiece>>>,
}

impl Archive {
    pub fn new(bucket: Bucket) -> Self {
        Self {
            bucket,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_, pieces: &Arc<Vec<LogPiece>>| {
                    let bytes: usize = pieces.iter().map(|p| p.data.len() + 16).sum();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Where an attempt's log goes.
    pub fn key(&self, run_id: &str, task: &str, attempt: u32) -> String {
        let tenant = tenant_of_run(run_id).map_or_else(|| "_".to_owned(), |t| t.to_string());
        format!(
            "{}logs/{tenant}/{}/{task}/{attempt}.jsonl",
            self.bucket.root(),
            run_id.replace('/', "_")
        )
    }

    /// Writes `pieces` (oldest first) as the object `key`.
    pub async fn put(&self, key: &str, pieces: &[LogPiece]) -> Result<(), BucketError> {
        let mut body = Vec::new();
        for p in pieces {
            let line = Line {
                o: p.offset,
                d: p.data.clone(),
            };
            serde_json::to_writer(&mut body, &line).expect("a line serialises");
            body.push(b'\n');
        }
        self.bucket.put(key, body).await
    }

    /// The pieces `q` asks for of `copy`'s object. Cached by key and the end it copied: an
    /// attempt archived again (its end changed) is read afresh.
    pub async fn pieces(&self, copy: &Copy, q: &PieceQuery) -> Result<Pieces, BucketError> {
        let cached = format!("{}#{}", copy.key, copy.ended_index);
        let all = match self.cache.get(&cached) {
            Some(all) => all,
            None => {
                let bytes = self.bucket.get(&copy.key, MAX_OBJECT_BYTES).await?;
                let all = Arc::new(parse(&bytes));
                self.cache.insert(cached, all.clone());
                all
            }
        };
        Ok(select(&all, q))
    }

    /// Deletes the object `key` (retention); copies cached go with their key's rows.
    pub async fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.bucket.remove(key).await
    }
}

/// The pieces of an object (a line that does not read is skipped).
fn parse(bytes: &[u8]) -> Vec<LogPiece> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Line>(l).ok())
        .map(|l| LogPiece {
            offset: l.o,
            data: l.d,
        })
        .collect()
}

/// What `q` asks of `all` (oldest first), as a logbook answers it.
fn select(all: &[LogPiece], q: &PieceQuery) -> Pieces {
    let within = all
        .iter()
        .filter(|p| p.offset > q.after && p.offset < q.before)
        .cloned()
        .collect();
    let one = Pieces {
        pieces: within,
        more: false,
    };
    merge(vec![one], q.budget, q.newest_first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_reads_back_as_the_pieces_it_was_written_from() {
        let pieces = vec![
            LogPiece {
                offset: 0,
                data: "one \"quoted\"\n".into(),
            },
            LogPiece {
                offset: 13,
                data: "two\n".into(),
            },
            LogPiece {
                offset: 17,
                data: "three\n".into(),
            },
        ];
        let mut body = Vec::new();
        for p in &pieces {
            serde_json::to_writer(
                &mut body,
                &Line {
                    o: p.offset,
                    d: p.data.clone(),
                },
            )
            .unwrap();
            body.push(b'\n');
        }
        let back = parse(&body);
        assert_eq!(back, pieces);
        let q = |after, before, budget, newest_first| PieceQuery {
            run_id: String::new(),
            task: String::new(),
            attempt: 1,
            after,
            before,
            budget,
            newest_first,
        };
        let tail = select(&back, &q(-1, i64::MAX, 10, true));
        assert_eq!(
            tail.pieces.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [13, 17]
        );
        assert!(tail.more);
        let after = select(&back, &q(0, i64::MAX, 100, false));
        assert_eq!(
            after.pieces.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [13, 17]
        );
        assert!(!after.more);
    }
}
