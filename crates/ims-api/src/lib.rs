//! IMS API: a multi-tenant inventory management REST API on axum, SQL (SQLite or
//! PostgreSQL) and Redis.
//!
//! The binary is a thin shell over [`startup::Application`], which takes [`config::Settings`]
//! and a bound listener, so tests run the real server on port 0.

/// mimalloc for every binary linking the API (the server, its tests and benches): glibc's
/// malloc cost ~18 % of a cached hit's server time with lock contention between threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod around;
pub mod auth;
pub mod catalog;
pub mod client_ip;
pub mod config;
pub mod contacts;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod fairness;
pub mod fields;
pub mod health;
pub mod inventory;
pub mod items;
pub mod json_integers;
pub mod log_format;
pub mod money;
pub mod openapi;
pub mod orders;
pub mod outbox;
pub mod owned;
pub mod pagination;
pub mod period;
pub mod policy;
pub mod purchasing;
pub mod reports;
pub mod request_id;
pub mod sales;
pub mod seed;
pub mod serve;
pub mod startup;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod warmup;
pub mod writes_only;
