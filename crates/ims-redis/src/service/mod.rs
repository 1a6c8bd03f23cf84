//! Typed convenience methods over [`RedisConnection`] that never fail the caller.
//!
//! Every key is given the configured prefix. Values are JSON. When Redis is unavailable each
//! method returns the degraded default named in its docs (a miss, a no-op, zero) without
//! logging: the connection already logged the outage once. Errors that are not about
//! availability (a value of the wrong shape, a wrong-type key) are logged as warnings, since
//! they point at a bug rather than an outage.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{de::DeserializeOwned, Serialize};

use crate::{RedisConnection, RedisError};

mod batch;

/// How many keys one `SCAN` step asks for and one `UNLINK` removes.
const SCAN_BATCH: usize = 1000;

/// Typed, prefixed, degrade-don't-fail access to Redis.
#[derive(Clone, Debug)]
pub struct RedisService {
    connection: RedisConnection,
    prefix: String,
}

impl RedisService {
    /// Wraps `connection`; every key is prefixed with `prefix` (e.g. `ims:`).
    pub fn new(connection: RedisConnection, prefix: impl Into<String>) -> Self {
        Self {
            connection,
            prefix: prefix.into(),
        }
    }

    /// The underlying connection, for commands this service does not wrap.
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    /// The key prefix, e.g. `ims:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full Redis key for `key`: the prefix followed by `key`.
    pub fn key(&self, key: &str) -> String {
        [self.prefix.as_str(), key].concat()
    }

    /// [`key`](Self::key) of the concatenation of `parts`, made in one allocation (for
    /// keys built on every request).
    pub fn key_of(&self, parts: &[&str]) -> String {
        let mut key = String::with_capacity(
            self.prefix.len() + parts.iter().map(|part| part.len()).sum::<usize>(),
        );
        key.push_str(&self.prefix);
        parts.iter().for_each(|part| key.push_str(part));
        key
    }

    /// True while Redis answers (see [`RedisConnection::is_connected`]).
    pub fn is_connected(&self) -> bool {
        self.connection.is_connected()
    }

    /// Reads and JSON-decodes `key`. Degraded default: `None` (a miss).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let full = self.key(key);
        let raw = self
            .connection
            .run(|mut c| async move { c.get::<_, Option<String>>(full).await })
            .await;
        match raw {
            Ok(Some(text)) => match serde_json::from_str(&text) {
                Ok(value) => Some(value),
                Err(e) => {
                    log_failure("get", key, &RedisError::Serialization(e));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                log_failure("get", key, &e);
                None
            }
        }
    }

    /// JSON-encodes `value` into `key`, with an optional time to live (millisecond
    /// precision). Returns whether it was written. Degraded default: a no-op (`false`).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> bool {
        let text = match serde_json::to_string(value) {
            Ok(text) => text,
            Err(e) => {
                log_failure("set", key, &RedisError::Serialization(e));
                return false;
            }
        };
        let full = self.key(key);
        let result = self
            .connection
            .run(|mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(full).arg(text);
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
                }
                cmd.query_async::<()>(&mut c).await
            })
            .await;
        result.map_err(|e| log_failure("set", key, &e)).is_ok()
    }

    /// Deletes the given keys; returns how many existed. Degraded default: `0`.
    pub async fn del(&self, keys: &[&str]) -> u64 {
        if keys.is_empty() {
            return 0;
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.connection
            .run(|mut c| async move { c.del::<_, u64>(full).await })
            .await
            .map_err(|e| log_failure("del", keys[0], &e))
            .unwrap_or(0)
    }

    /// Remaining time to live of `key` in seconds, with Redis' conventions: `-1` for a key
    /// without expiry, `-2` for a missing key. Degraded default: `-2`.
    pub async fn ttl(&self, key: &str) -> i64 {
        let full = self.key(key);
        self.connection
            .run(|mut c| async move { c.ttl::<_, i64>(full).await })
            .await
            .map_err(|e| log_failure("ttl", key, &e))
            .unwrap_or(-2)
    }

    /// Whether `key` exists. Degraded default: `false`.
    pub async fn exists(&self, key: &str) -> bool {
        let full = self.key(key);
        self.connection
            .run(|mut c| async move { c.exists::<_, bool>(full).await })
            .await
            .map_err(|e| log_failure("exists", key, &e))
            .unwrap_or(false)
    }

    /// Keys matching the glob `pattern` (prefix added), found with `SCAN` (on every master
    /// in cluster mode) so Redis is never blocked the way `KEYS` would block it, and
    /// returned without the prefix. Degraded default: empty.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let full_pattern = format!("{}{pattern}", escape_glob(&self.prefix));
        let mut found = Vec::new();
        let nodes = match self.connection.data_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                log_failure("keys", pattern, &e);
                return Vec::new();
            }
        };
        for node in &nodes {
            let mut cursor = 0;
            loop {
                match self.scan_step(node.as_ref(), cursor, &full_pattern).await {
                    Ok((next, batch)) => {
                        found.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                    Err(e) => {
                        log_failure("keys", pattern, &e);
                        return Vec::new();
                    }
                }
            }
        }
        found
            .into_iter()
            .map(|k| {
                k.strip_prefix(&self.prefix)
                    .map(str::to_string)
                    .unwrap_or(k)
            })
            .collect()
    }

    /// Deletes every key starting with `prefix` (after the service prefix) with `SCAN` and
    /// `UNLINK`, batch by batch (on every master in cluster mode), and returns how many were
    /// removed. Glob characters in `prefix` are escaped, so `a*` removes keys that start with
    /// the literal `a*`. Degraded default: `0` (or the count removed before Redis went away).
    pub async fn flush_by_prefix(&self, prefix: &str) -> u64 {
        let full_pattern = format!("{}{}*", escape_glob(&self.prefix), escape_glob(prefix));
        let mut removed = 0u64;
        let nodes = match self.connection.data_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                log_failure("flush_by_prefix", prefix, &e);
                return 0;
            }
        };
        for node in &nodes {
            removed += self.flush_node(node.as_ref(), prefix, &full_pattern).await;
        }
        removed
    }

    /// [`flush_by_prefix`](Self::flush_by_prefix) on one node. The keys of one `SCAN` step
    /// may lie in many slots; redis-rs splits a cluster `UNLINK` by slot.
    async fn flush_node(
        &self,
        node: Option<&(String, u16)>,
        prefix: &str,
        full_pattern: &str,
    ) -> u64 {
        let mut removed = 0u64;
        let mut cursor = 0;
        loop {
            let step = match self.scan_step(node, cursor, full_pattern).await {
                Ok((next, batch)) if batch.is_empty() => Ok(next),
                Ok((next, batch)) => self
                    .connection
                    .run(|mut c| async move {
                        redis::cmd("UNLINK")
                            .arg(batch)
                            .query_async::<u64>(&mut c)
                            .await
                    })
                    .await
                    .map(|n| {
                        removed += n;
                        next
                    }),
                Err(e) => Err(e),
            };
            match step {
                Ok(0) => break,
                Ok(next) => cursor = next,
                Err(e) => {
                    log_failure("flush_by_prefix", prefix, &e);
                    break;
                }
            }
        }
        removed
    }

    /// One `SCAN cursor MATCH pattern COUNT n` step. Each step is its own bounded command,
    /// so a large keyspace never turns into one long blocking call.
    async fn scan_step(
        &self,
        node: Option<&(String, u16)>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>), RedisError> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_BATCH);
        self.connection
            .run(|mut c| async move {
                let reply = c.on_node(scan, node).await?;
                Ok(redis::from_redis_value(reply)?)
            })
            .await
    }

    /// Atomically increments the integer at `key` and returns the new value.
    /// Degraded default: `None`, because no number would be honest. Never retried, so a
    /// reconnect cannot count twice.
    pub async fn incr(&self, key: &str) -> Option<i64> {
        let full = self.key(key);
        self.connection
            .run(|mut c| async move { c.incr::<_, _, i64>(full, 1).await })
            .await
            .map_err(|e| log_failure("incr", key, &e))
            .ok()
    }

    /// Sets the time to live of an existing key; returns whether the key existed.
    /// Degraded default: `false`.
    pub async fn expire(&self, key: &str, ttl: Duration) -> bool {
        let full = self.key(key);
        self.connection
            .run(|mut c| async move {
                redis::cmd("PEXPIRE")
                    .arg(full)
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async::<bool>(&mut c)
                    .await
            })
            .await
            .map_err(|e| log_failure("expire", key, &e))
            .unwrap_or(false)
    }

    /// A server setting (`CONFIG GET parameter`), or `None` when Redis is unreachable or
    /// refuses the command (managed services often do).
    pub async fn config_get(&self, parameter: &str) -> Option<String> {
        let parameter = parameter.to_string();
        let reply = self
            .connection
            .run(|mut c| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(&parameter)
                    .query_async::<Vec<String>>(&mut c)
                    .await
            })
            .await
            .ok()?;
        reply.into_iter().nth(1)
    }

    /// A real `PING` round trip (sent even while the breaker is open). Degraded: `None`.
    pub async fn ping(&self) -> Option<Duration> {
        self.connection.ping().await.ok()
    }

    /// Whether Redis takes a write now: `SET {prefix}health:writable` with a one-second
    /// TTL. A `PING` cannot tell, and a Redis that refuses writes (see
    /// [`RedisError::refused_write`]) still answers it. The error says why not.
    pub async fn check_writable(&self) -> Result<(), RedisError> {
        let key = self.key("health:writable");
        self.connection
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("PX")
                    .arg(1000)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}

/// Escapes the glob metacharacters of `SCAN MATCH` so that user-controlled text (ids, query
/// strings) can only ever match itself.
pub(crate) fn escape_glob(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn log_failure(op: &str, key: &str, e: &RedisError) {
    static THROTTLED: crate::error::Throttled = crate::error::Throttled::new();
    if !e.is_unavailable() {
        THROTTLED.warn(|skipped| {
            tracing::warn!(
                op,
                key,
                skipped,
                "Redis operation failed: {e} (logged at most once a minute)"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escaping_neutralises_metacharacters() {
        assert_eq!(escape_glob("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
        assert_eq!(escape_glob("org:1:posts"), "org:1:posts");
    }

    #[tokio::test]
    async fn disabled_service_returns_degraded_defaults() {
        let redis = RedisService::new(RedisConnection::disabled(), "t:");
        assert!(!redis.is_connected());
        assert_eq!(redis.get::<String>("k").await, None);
        assert!(!redis.set("k", "v", None).await);
        assert_eq!(redis.del(&["k"]).await, 0);
        assert_eq!(redis.ttl("k").await, -2);
        assert!(!redis.exists("k").await);
        assert!(redis.keys("*").await.is_empty());
        assert_eq!(redis.flush_by_prefix("k").await, 0);
        assert_eq!(redis.incr("k").await, None);
        assert!(!redis.expire("k", Duration::from_secs(1)).await);
        assert_eq!(redis.ping().await, None);
    }
}
