//! The error type of the crate: why a Redis operation produced no answer.
//!
//! Most callers never see it: [`crate::RedisService`] turns every variant into a degraded
//! default. It is public for code that runs its own commands through
//! [`crate::RedisConnection::run`] and needs to tell "Redis is down" from "Redis said no".

/// Why a Redis operation did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Redis is disabled by configuration (`REDIS_ENABLED=false`); nothing was sent.
    #[error("redis is disabled")]
    Disabled,
    /// The circuit breaker is open: Redis was found down recently; nothing was sent.
    #[error("redis is unavailable")]
    Unavailable,
    /// The command did not answer within the configured command time-out.
    #[error("redis command timed out")]
    Timeout,
    /// The connection failed while the command was in flight (refused, reset, closed).
    #[error("redis connection failed: {0}")]
    Connection(redis::RedisError),
    /// Redis answered with an error, or with a value of an unexpected type.
    #[error("redis command failed: {0}")]
    Command(redis::RedisError),
    /// A stored value could not be encoded or decoded as JSON.
    #[error("redis value is not valid JSON for this type: {0}")]
    Serialization(#[from] serde_json::Error),
}

impl RedisError {
    /// True when the error means "Redis could not be reached" rather than a bad command or
    /// value: callers fall back to their degraded path without logging anything new.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Disabled | Self::Unavailable | Self::Timeout | Self::Connection(_)
        )
    }
}
