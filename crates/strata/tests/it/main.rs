//! Integration tests: each starts the real server on a free port against a
//! fresh SQLite file or a fresh PostgreSQL database and speaks HTTP to it.
//! Every behavioural test runs on both backends (the `both!` macro).

mod auth;
mod cached;
mod cli;
#[path = "../../../strata-db/tests/it/cluster.rs"]
mod cluster;
mod consistency;
mod faults;
mod hostile;
mod instances;
mod isolation;
mod listen;
mod lists;
mod misc;
mod replicas;
mod resources;
mod restart;
mod support;

/// Runs an `async fn(Backend)` test once per backend.
#[macro_export]
macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )+
    };
}
