//! Integration tests of tiered-cache against real redis-servers (one per test, on a free port).
//! One binary for the whole crate: each file below is a module, not a test target.
//! Never shares state between tests: each builds its own caches (and Redis).

mod fills;
mod invalidation;
mod l1_only;
mod modes;
mod outage;
mod races;
mod settle;
mod single_flight;
mod support;
