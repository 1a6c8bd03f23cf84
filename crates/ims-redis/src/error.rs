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

    /// The error code when Redis answered but refuses writes until an operator acts:
    /// `READONLY` (the URL names a replica), `NOREPLICAS` (`min-replicas-to-write` unmet),
    /// `MISCONF` (a failed snapshot stops writes), `NOPERM` (an ACL user without the
    /// command), `OOM` (`maxmemory` reached under `noeviction`). Not a time-out, a lost
    /// connection or a moved slot: the breaker and the cluster link handle those.
    pub fn refused_write(&self) -> Option<&str> {
        let Self::Command(e) = self else {
            return None;
        };
        e.code().filter(|code| {
            matches!(
                *code,
                "READONLY" | "NOREPLICAS" | "MISCONF" | "NOPERM" | "OOM"
            )
        })
    }
}

/// A warning logged at most once a minute per site: Redis answering every command with the
/// same error (`READONLY`, `NOREPLICAS`, `NOPERM`, `OOM`) while it stays reachable would
/// otherwise write a line per request (a probe counted 53 a second). Redis away is not
/// logged through this at all: the connection logs one line when lost and one when back.
#[derive(Debug)]
pub(crate) struct Throttled {
    last: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl Throttled {
    /// Nothing logged yet.
    pub(crate) const fn new() -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(0),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Calls `log` with the number of warnings skipped since the last one, if a minute has
    /// passed since then; else counts this one as skipped.
    pub(crate) fn warn(&self, log: impl FnOnce(u64)) {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.skipped.swap(0, Ordering::Relaxed));
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_is_written_once_a_minute() {
        let throttled = Throttled::new();
        let mut written = Vec::new();
        for _ in 0..5 {
            throttled.warn(|skipped| written.push(skipped));
        }
        assert_eq!(written, [0]);
        // A minute later (the clock moved back by hand): the next one, with the count.
        throttled
            .last
            .fetch_sub(60_000, std::sync::atomic::Ordering::Relaxed);
        throttled.warn(|skipped| written.push(skipped));
        assert_eq!(written, [0, 4]);
    }
}
