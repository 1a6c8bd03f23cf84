//! A reusable Redis layer for axum/tokio services that must keep working when Redis does not.
//!
//! The crate knows nothing about the application that uses it. It offers:
//! - [`RedisConfig`]: connection settings read from the conventional `REDIS_*` environment;
//! - [`RedisConnection`]: a multiplexed connection with an observable up/down state, a
//!   background health probe, log-once state changes and a circuit breaker, so that while
//!   Redis is down no caller pays a connect or response time-out;
//! - [`RedisService`]: typed JSON helpers with key prefixing and degraded defaults
//!   (a miss, a no-op, zero) instead of errors;
//! - [`session`]: a refresh-token store keyed by the SHA-256 of the token, with rotation
//!   tombstones for reuse detection;
//! - [`cache`] and [`invalidate`]: tower layers for tenant-scoped response caching with
//!   race-safe, index-based invalidation, plus cache-aside for non-HTTP code;
//! - [`lock`]: distributed locks with leases and fencing tokens;
//! - [`rate_limit`]: a tower layer for distributed sliding-window rate limiting with an
//!   in-memory fallback.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), ims_redis::ConfigError> {
//! use std::time::Duration;
//! use ims_redis::{RedisConfig, RedisConnection, RedisService};
//!
//! let config = RedisConfig::from_lookup(|name| std::env::var(name).ok())?;
//! let connection = RedisConnection::connect(config.clone()).await;
//! let redis = RedisService::new(connection, config.key_prefix.clone());
//! redis.set("greeting", &"hello", Some(Duration::from_secs(60))).await;
//! let greeting: Option<String> = redis.get("greeting").await;
//! # let _ = greeting;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod body;
pub mod cache;
mod config;
mod connection;
mod error;
pub mod invalidate;
pub mod lock;
mod numbers;
pub mod rate_limit;
mod service;
pub mod session;

pub use body::LayerBody;
pub use config::{ConfigError, RedisConfig};
pub use connection::{RedisConnection, RedisInfo, RedisLink};
pub use error::RedisError;
pub use service::RedisService;

/// Re-export of the underlying client crate, so users can build commands and scripts
/// against [`RedisConnection::run`] without adding a second, possibly different, version.
pub use redis;
