//! The point of no return of a unit of work that writes.
//!
//! A request can be stopped from outside: its deadline passes, or its
//! client hangs up. Stopped before its write commits, nothing happened, and
//! saying so (a 503 the client retries) is true. Stopped after the commit
//! was sent, the write happens anyway, and what follows it (invalidating
//! the caches it changed) must happen too. A [`CommitGate`] decides between
//! the two once: either the work passes it on its way to commit
//! ([`CommitGate::pass`]), or it is cancelled first ([`CommitGate::cancel`]),
//! never both. Attach one to a unit of work with [`crate::ReadCtx::gated`];
//! every commit through that context passes it first.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const OPEN: u8 = 0;
const COMMITTING: u8 = 1;
const CANCELLED: u8 = 2;

/// Decides once between "a write of this work commits" and "this work is
/// cancelled". Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct CommitGate(Arc<AtomicU8>);

impl CommitGate {
    /// Called before a commit is sent: `true` when it may be (the work was
    /// not cancelled first); from then on [`CommitGate::cancel`] fails.
    pub fn pass(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == COMMITTING,
        }
    }

    /// Cancels the work unless a commit of it has been sent: `true` when
    /// cancelled, and then nothing of it will commit.
    pub fn cancel(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == CANCELLED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CommitGate;

    #[test]
    fn the_first_decision_holds() {
        let gate = CommitGate::default();
        assert!(gate.pass() && gate.pass(), "several commits may pass");
        assert!(!gate.cancel(), "too late to cancel");
        assert!(gate.pass());

        let gate = CommitGate::default();
        assert!(gate.cancel() && gate.cancel());
        assert!(!gate.pass(), "nothing commits after a cancel");
    }

    #[test]
    fn a_race_has_one_winner() {
        for _ in 0..1000 {
            let gate = CommitGate::default();
            let other = gate.clone();
            let passer = std::thread::spawn(move || other.pass());
            let cancelled = gate.cancel();
            let passed = passer.join().expect("thread");
            assert_ne!(cancelled, passed);
        }
    }
}
