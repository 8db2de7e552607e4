//! Strata's storage layer: pools, read/write routing, migrations, and one
//! repository per resource over SQLite and PostgreSQL.
//! It never sees HTTP, sessions' cookies or cache keys: callers pass a tenant
//! id they already trust and get rows back.

pub mod change;
mod error;
mod gate;
mod lsn;
pub mod model;
mod pool;
pub mod repo;
mod router;
pub mod seed;

pub use error::DbError;
pub use gate::CommitGate;
pub use lsn::{Lsn, ParseLsnError, ReadCtx, ReadSource, ServedBy};
pub use pool::{Backend, Db, DbConfig};
pub use router::{ReplicaSettings, ReplicaStatus};
