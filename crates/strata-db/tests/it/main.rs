//! strata-db's integration tests, one binary (see STYLE.md): real SQLite
//! files and real PostgreSQL databases, each test with its own.

mod bench;
mod cluster;
mod eval;
mod indexes;
mod replica;
mod seeding;
mod support;
