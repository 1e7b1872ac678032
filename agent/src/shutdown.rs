//! How the agent's workers are asked to stop: one [`Shutdown`] handle, cloned into each, that
//! moves once from running to draining (no new fires; what is going finishes and is reported)
//! and once to stopped (every worker returns at its next wait). Workers wait on it in their
//! `select!`s; nothing polls.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Draining,
    Stopped,
}

/// The agent's stop signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Running),
        }
    }

    /// No new fires from now on; what is going goes on.
    pub fn drain(&self) {
        self.phase.send_if_modified(|p| {
            let moved = *p < Phase::Draining;
            *p = (*p).max(Phase::Draining);
            moved
        });
    }

    /// Every worker returns at its next wait.
    pub fn stop(&self) {
        self.phase.send_replace(Phase::Stopped);
    }

    /// Whether new work must not start (draining or stopped).
    pub fn draining(&self) -> bool {
        *self.phase.borrow() >= Phase::Draining
    }

    /// Whether the workers are to return.
    pub fn is_stopped(&self) -> bool {
        *self.phase.borrow() >= Phase::Stopped
    }

    /// Resolves once [`Shutdown::stop`] has been called (at once if it was).
    pub async fn stopped(&self) {
        let mut rx = self.phase.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|p| *p >= Phase::Stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_drains_then_stops_and_never_goes_back() {
        let s = Shutdown::new();
        assert!(!s.draining() && !s.is_stopped());
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.stopped().await }
        });
        s.drain();
        assert!(s.draining() && !s.is_stopped());
        assert!(!waiting.is_finished());
        s.stop();
        waiting.await.unwrap();
        s.drain();
        assert!(s.is_stopped(), "draining after a stop does not undo it");
        // Already stopped: resolves at once.
        s.stopped().await;
    }
}
