//! Quotas on this agent: per grant (a tenant in an environment), the share of the grant's
//! `max_concurrent_runs` the plane gave this agent in its last heartbeat's answer. A run
//! takes a part of its grant's share before it starts (with its slot: a [`Permit`]) and gives
//! it back when it ends; runs beyond the share wait, queued. Shares hold for a lease from when
//! the heartbeat that brought them was sent: an agent cut off from the plane longer starts
//! nothing more, so the plane may give its part to others once it has been silent for two.
//! Until a plane has said anything of quotas (an older plane), nothing is limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_domain::Clock;
use meridian_domain::run::Job;
use meridian_proto::pb;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// A grant: (tenant, environment).
pub type Key = (String, String);

/// The grant a job's run counts against.
pub fn key(job: &Job) -> Key {
    (job.tenant.clone(), job.environment.clone())
}

/// What a run needs to start: a slot, and a part of its grant's share.
pub struct Permit {
    pub slot: OwnedSemaphorePermit,
    pub quota: QuotaPermit,
}

/// Why a run cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every slot is taken.
    Slot,
    /// Its grant's share on this agent is taken.
    Quota,
    /// The agent is above its load thresholds.
    Load,
}

#[derive(Default)]
struct State {
    shares: HashMap<Key, u32>,
    /// Until when (monotonic ms) the shares hold; none: no plane has said (nothing limited).
    valid_until_ms: Option<i64>,
    going: HashMap<Key, u32>,
    waiting: HashMap<Key, u32>,
}

pub struct Quotas {
    state: Mutex<State>,
    changed: Notify,
    clock: Arc<dyn Clock>,
}

/// A run's part of its grant's share, given back when dropped.
pub struct QuotaPermit {
    quotas: Arc<Quotas>,
    key: Key,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        {
            let mut st = self.quotas.lock();
            if let Some(n) = st.going.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.going.remove(&self.key);
                }
            }
        }
        self.quotas.changed.notify_waiters();
    }
}

impl Quotas {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            clock,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("quotas")
    }

    /// Whether one more run of `key` may start now.
    fn allows(&self, st: &State, key: &Key) -> bool {
        match st.valid_until_ms {
            None => true,
            Some(until) if self.clock.monotonic_ms() >= until => false,
            Some(_) => {
                st.going.get(key).copied().unwrap_or(0) < st.shares.get(key).copied().unwrap_or(0)
            }
        }
    }

    fn taken(self: &Arc<Self>, st: &mut State, key: Key) -> QuotaPermit {
        *st.going.entry(key.clone()).or_default() += 1;
        QuotaPermit {
            quotas: self.clone(),
            key,
        }
    }

    /// A part of `key`'s share, if one is free now.
    pub fn try_take(self: &Arc<Self>, key: &Key) -> Option<QuotaPermit> {
        let mut st = self.lock();
        self.allows(&st, key)
            .then(|| self.taken(&mut st, key.clone()))
    }

    /// A part of `key`'s share once one is free (counted as waiting meanwhile).
    pub async fn take(self: &Arc<Self>, key: Key) -> QuotaPermit {
        let mut counted = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = self.lock();
                if self.allows(&st, &key) {
                    if counted && let Some(n) = st.waiting.get_mut(&key) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            st.waiting.remove(&key);
                        }
                    }
                    return self.taken(&mut st, key);
                }
                if !counted {
                    *st.waiting.entry(key.clone()).or_default() += 1;
                    counted = true;
                }
            }
            // Woken by a run's end or new shares; shares running out of time wake nobody.
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        }
    }

    /// A part of `key`'s share whatever the share says: a run that is going already (taken
    /// back after a restart) counts, and runs on.
    pub fn take_anyway(self: &Arc<Self>, key: Key) -> QuotaPermit {
        let mut st = self.lock();
        self.taken(&mut st, key)
    }

    /// The shares a heartbeat's answer gave, holding until `valid_until_ms` (monotonic); an
    /// answer that said nothing of quotas (`None`: an older plane) limits nothing.
    pub fn set(&self, shares: &[pb::QuotaShare], valid_until_ms: Option<i64>) {
        {
            let mut st = self.lock();
            st.shares = shares
                .iter()
                .map(|s| ((s.tenant.clone(), s.environment.clone()), s.share))
                .collect();
            st.valid_until_ms = valid_until_ms;
        }
        self.changed.notify_waiters();
    }

    /// What the next heartbeat says: per grant with a share, runs going or waiting here.
    pub fn usage(&self) -> Vec<pb::QuotaUsage> {
        let st = self.lock();
        let mut keys: Vec<&Key> = st
            .shares
            .keys()
            .chain(st.going.keys())
            .chain(st.waiting.keys())
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| pb::QuotaUsage {
                tenant: k.0.clone(),
                environment: k.1.clone(),
                going: st.going.get(k).copied().unwrap_or(0),
                waiting: st.waiting.get(k).copied().unwrap_or(0),
                share: st.shares.get(k).copied().unwrap_or(0),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_domain::ManualClock;

    fn share(tenant: &str, n: u32) -> pb::QuotaShare {
        pb::QuotaShare {
            tenant: tenant.into(),
            environment: "prod".into(),
            share: n,
        }
    }

    #[tokio::test]
    async fn runs_beyond_the_share_wait_until_one_ends_and_nothing_starts_once_it_is_stale() {
        let clock = ManualClock::at(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let quotas = Quotas::new(Arc::new(clock.clone()));
        let ads: Key = ("ads".into(), "prod".into());
        // No plane has said: nothing limited.
        let free: Vec<_> = (0..5).map(|_| quotas.try_take(&ads).unwrap()).collect();
        drop(free);
        let now = clock.monotonic_ms();
        quotas.set(&[share("ads", 2)], Some(now + 30_000));
        let one = quotas.try_take(&ads).unwrap();
        let _two = quotas.try_take(&ads).unwrap();
        assert!(quotas.try_take(&ads).is_none(), "a third waits");
        let bi: Key = ("bi".into(), "prod".into());
        assert!(
            quotas.try_take(&bi).is_none(),
            "a grant with no share here waits"
        );
        let waiter = tokio::spawn({
            let quotas = quotas.clone();
            let ads = ads.clone();
            async move { quotas.take(ads).await }
        });
        tokio::task::yield_now().await;
        while quotas.usage()[0].waiting == 0 {
            tokio::task::yield_now().await;
        }
        let said = quotas.usage();
        assert_eq!((said[0].going, said[0].waiting, said[0].share), (2, 1, 2));
        drop(one);
        let _three = waiter.await.unwrap();
        assert_eq!((quotas.usage()[0].going, quotas.usage()[0].waiting), (2, 0));
        // A lease unheard: nothing more starts, whatever the share.
        drop(_three);
        clock.advance(chrono::TimeDelta::seconds(31));
        assert!(quotas.try_take(&ads).is_none());
    }
}
