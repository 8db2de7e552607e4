//! Circuit breaker in front of Redis: decides whether an L2 call may be attempted right now.
//! Never performs a call itself; the L2 module reports each outcome back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::BreakerState;

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out since `since`. If it never reports (its caller was cancelled), another
    /// probe is allowed after `open_for`, so the breaker cannot stay half-open forever.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Make the call and report the outcome.
    Call,
    /// The open period is over: the holder must run one probe and report it; everyone else is
    /// still refused until the probe answers.
    Probe,
    /// Skip Redis.
    Refused,
}

pub(crate) struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold,
            open_for,
        }
    }

    pub(crate) fn permit(&self) -> Permit {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match *s {
            State::Closed { .. } => Permit::Call,
            State::Open { until } if now >= until => {
                // Exactly one caller sees this transition, so exactly one probe runs.
                *s = State::HalfOpen { since: now };
                Permit::Probe
            }
            State::HalfOpen { since } if now.saturating_duration_since(since) >= self.open_for => {
                *s = State::HalfOpen { since: now };
                Permit::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Permit::Refused,
        }
    }

    /// Returns the new state if it changed.
    pub(crate) fn success(&self) -> Option<BreakerState> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = !matches!(*s, State::Closed { .. });
        *s = State::Closed { failures: 0 };
        changed.then_some(BreakerState::Closed)
    }

    /// Returns the new state if it changed.
    pub(crate) fn failure(&self) -> Option<BreakerState> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *s {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                None
            }
            // A failure reported by a call that was already in flight when the breaker opened
            // must not extend the open period or cancel a running probe.
            State::Open { .. } => None,
            State::Closed { .. } | State::HalfOpen { .. } => {
                *s = State::Open {
                    until: Instant::now() + self.open_for,
                };
                Some(BreakerState::Open)
            }
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let b = Breaker::new(2, Duration::from_millis(50));
        assert_eq!(b.permit(), Permit::Call);
        assert_eq!(b.failure(), None);
        assert_eq!(b.failure(), Some(BreakerState::Open));
        assert_eq!(b.permit(), Permit::Refused);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Refused);
        assert_eq!(b.success(), Some(BreakerState::Closed));
        assert_eq!(b.permit(), Permit::Call);
    }

    #[test]
    fn a_lost_probe_is_replaced() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.failure();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.permit(), Permit::Probe);
        // The probe's caller went away without reporting.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.failure(), Some(BreakerState::Open));
        assert_eq!(b.state(), BreakerState::Open);
    }
}
