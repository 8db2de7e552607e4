//! Strata: the multi-tenant business API server.
//!
//! The binary (`main.rs`) parses the command line and calls into here; the
//! integration tests start the same [`app::serve`] on a free port.

pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod listen;
pub mod openapi;
pub mod ops;
pub mod resources;
pub mod warm;

pub use config::Config;
