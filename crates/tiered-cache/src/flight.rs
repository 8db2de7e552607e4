//! Single flight: concurrent misses of one rendered key on this instance share one fill.
//! Never runs a fill or looks at a value: it only pairs one leader with its waiters.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

/// How a flight ended, shared by every waiter.
#[derive(Clone)]
pub(crate) enum Outcome {
    Value(Bytes),
    /// The fill's own error, type-erased; [`Flights`] keys by the error type, so a waiter always
    /// downcasts it back to the type it expects.
    Failed(Arc<dyn Any + Send + Sync>),
    TimedOut(Duration),
}

type Slot = watch::Receiver<Option<Outcome>>;

/// The key includes the generation (a fill under an older generation is never joined by a
/// caller who already sees the newer one) and the fill's error type.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    error_type: TypeId,
    key: String,
}

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<FlightKey, Slot>>,
}

pub(crate) enum Joined {
    /// Run the fill, then [`Leader::finish`].
    Leader(Leader, Waiter),
    /// Someone else runs it.
    Waiter(Waiter),
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, error_type: TypeId, key: String) -> Joined {
        let key = FlightKey { error_type, key };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(&key) {
            return Joined::Waiter(Waiter(rx.clone()));
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx.clone());
        Joined::Leader(
            Leader {
                tx,
                flights: self.clone(),
                key,
            },
            Waiter(rx),
        )
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Owned by the task running the fill. Dropping it without [`finish`](Self::finish) (a panic,
/// a cancelled task) wakes the waiters with "aborted" and frees the key for a new flight.
pub(crate) struct Leader {
    tx: watch::Sender<Option<Outcome>>,
    flights: Arc<Flights>,
    key: FlightKey,
}

impl Leader {
    pub(crate) fn finish(self, outcome: Outcome) {
        // Unregister first, then publish. The other order lets a caller arriving in between join
        // a finished flight and receive its outcome: harmless for a value (it is in L1 by now
        // anyway), wrong for an error or a timeout, which that caller should retry with a
        // fill of its own. (Seen in the fill-timeout test.)
        self.unregister();
        self.tx.send_replace(Some(outcome));
    }

    /// Removes this flight from the map, unless a newer flight of the key already replaced it.
    fn unregister(&self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.unregister();
    }
}

pub(crate) struct Waiter(Slot);

impl Waiter {
    /// The flight's outcome, or `None` if its leader went away without one.
    pub(crate) async fn wait(mut self) -> Option<Outcome> {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_share_the_leaders_outcome_and_the_key_is_freed() {
        let flights = Arc::new(Flights::default());
        let t = TypeId::of::<()>();
        let Joined::Leader(leader, w1) = flights.join(t, "k".into()) else {
            panic!("first caller must lead")
        };
        let Joined::Waiter(w2) = flights.join(t, "k".into()) else {
            panic!("second caller must wait")
        };
        // A different error type does not join.
        assert!(matches!(
            flights.join(TypeId::of::<u8>(), "k".into()),
            Joined::Leader(..)
        ));
        leader.finish(Outcome::Value(Bytes::from_static(b"v")));
        for w in [w1, w2] {
            assert!(matches!(w.wait().await, Some(Outcome::Value(v)) if v == "v"));
        }
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_aborts_its_waiters() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader, w) = flights.join(TypeId::of::<()>(), "k".into()) else {
            panic!("first caller must lead")
        };
        drop(leader);
        assert!(w.wait().await.is_none());
        assert_eq!(flights.len(), 0);
    }
}
