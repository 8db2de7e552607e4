//! Cached views kept exact under writes: list windows, objects and dashboards that every
//! write changes in place, on every instance, before it answers (see `store` for how,
//! `window` for a list, `record` for what a write says). The design and its reasons are in
//! `docs/architecture.md` ("Cached views kept exact under writes").
//! Never reads or writes on its own account: the caller's handle reads, the caller's write
//! produces the record.

mod record;
mod store;
mod window;

use std::sync::Arc;

pub use record::{slot, Record, RowChange, DASHBOARD_SLOT, RESOURCES};
pub use store::{Lifetimes, LiveCounts, LiveStore, Reader, DROPPED, RECORDS, RESYNCS, WINDOW_CAP};

/// The store as the bus' [`tiered_cache::Feed`]: records from other instances, and the
/// bus' word on whether any may have been missed.
pub struct BusFeed(pub Arc<LiveStore>);

impl tiered_cache::Feed for BusFeed {
    fn record(&self, payload: &str) {
        match Record::decode(payload) {
            Some(record) => self.0.apply(&record, false),
            None => {
                // A record this build cannot read (a newer instance's?) may have changed
                // anything: start again rather than serve what it changed.
                tracing::warn!("an unreadable change record on the bus; cached views dropped");
                self.0.resync();
            }
        }
    }

    fn trust(&self, trusted: bool) {
        self.0.set_trusted(trusted);
    }

    fn gap(&self) {
        self.0.resync();
    }
}
