//! Batch, counter and versioned-namespace operations (seeds 002 and 004: pipelined batches,
//! counters, version-based keys), with the same degrade-don't-fail rules as the rest of
//! [`RedisService`].
//!
//! Batches are pipelines of single-key commands, not `MGET`/`MSET` (a multi-key command on
//! a cluster needs every key in one slot): one round trip on one server. On a cluster the
//! commands are sent concurrently instead, each to its slot's node, over the multiplexed
//! connections (redis-rs does not split one pipeline across nodes).
//!
//! A versioned namespace keeps a counter at `{namespace}:version`; keys built with
//! [`RedisService::versioned_key`] embed the current version, so bumping it
//! ([`RedisService::bump_version`]) makes every key of the old version unreachable at once
//! (say, after a bulk import), without finding or deleting them: give such keys a TTL and
//! the old ones expire on their own.
//!
//! # Example
//! ```no_run
//! # async fn demo(redis: ims_redis::RedisService) {
//! use std::time::Duration;
//!
//! let ttl = Some(Duration::from_secs(60));
//! redis.set_many(&[("price:a", &100), ("price:b", &250)], ttl).await;
//! let prices: Vec<Option<u32>> = redis.get_many(&["price:a", "price:b", "price:c"]).await;
//! assert_eq!(prices.len(), 3);
//!
//! let left = redis.incr_by("likes:a", -3).await; // None while Redis is down
//! let first = redis.set_nx("job:import", &"instance-1", ttl).await; // Some(true): ours
//!
//! if let Some(key) = redis.versioned_key("blog", "post:42").await {
//!     redis.set(&key, &"cached post", ttl).await;
//! }
//! redis.bump_version("blog").await; // every catalog key above is now unreachable
//! # let _ = (prices, left, first);
//! # }
//! ```

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use super::{log_failure, RedisService};
use crate::RedisError;

impl RedisService {
    /// The values of `keys`, in order, in one pipelined round trip. Degraded: all `None`
    /// (a value of the wrong shape is `None` too, and logged).
    pub async fn get_many<T: DeserializeOwned>(&self, keys: &[&str]) -> Vec<Option<T>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let reply = if self.connection.is_cluster() {
            let gets = full.iter().map(|key| {
                self.connection.run(move |mut c| async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<String>>(&mut c)
                        .await
                })
            });
            futures::future::join_all(gets)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        } else {
            self.connection
                .run(|mut c| async move {
                    let mut pipe = redis::pipe();
                    for key in &full {
                        pipe.cmd("GET").arg(key);
                    }
                    pipe.query_async::<Vec<Option<String>>>(&mut c).await
                })
                .await
        };
        match reply {
            Ok(values) => keys
                .iter()
                .zip(values)
                .map(|(key, value)| {
                    let text = value?;
                    serde_json::from_str(&text)
                        .map_err(|e| log_failure("get_many", key, &RedisError::Serialization(e)))
                        .ok()
                })
                .collect(),
            Err(e) => {
                log_failure("get_many", keys[0], &e);
                keys.iter().map(|_| None).collect()
            }
        }
    }

    /// Stores every `(key, value)` with the same `ttl` in one pipelined round trip. True
    /// when all were stored. Not atomic: a failure part-way may leave some stored.
    /// Degraded: false.
    pub async fn set_many<T: Serialize>(
        &self,
        entries: &[(&str, &T)],
        ttl: Option<Duration>,
    ) -> bool {
        if entries.is_empty() {
            return true;
        }
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            match serde_json::to_string(value) {
                Ok(text) => encoded.push((self.key(key), text)),
                Err(e) => {
                    log_failure("set_many", key, &RedisError::Serialization(e));
                    return false;
                }
            }
        }
        let set = |key: &str, text: &str| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(text);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            cmd
        };
        let reply = if self.connection.is_cluster() {
            let sets = encoded.iter().map(|(key, text)| {
                let cmd = set(key, text);
                self.connection
                    .run(move |mut c| async move { cmd.query_async::<()>(&mut c).await })
            });
            futures::future::join_all(sets)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map(drop)
        } else {
            self.connection
                .run(|mut c| async move {
                    let mut pipe = redis::pipe();
                    for (key, text) in &encoded {
                        pipe.add_command(set(key, text)).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                })
                .await
        };
        reply
            .map_err(|e| log_failure("set_many", entries[0].0, &e))
            .is_ok()
    }

    /// Adds `delta` (negative to decrement) to the integer at `key` (0 when missing) and
    /// returns the new value. Degraded: `None`.
    pub async fn incr_by(&self, key: &str, delta: i64) -> Option<i64> {
        let full = self.key(key);
        self.connection
            .run(|mut c| async move {
                redis::cmd("INCRBY")
                    .arg(full)
                    .arg(delta)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map_err(|e| log_failure("incr_by", key, &e))
            .ok()
    }

    /// Subtracts one from the integer at `key` (0 when missing); the new value. Degraded:
    /// `None`.
    pub async fn decr(&self, key: &str) -> Option<i64> {
        self.incr_by(key, -1).await
    }

    /// Stores `value` only if `key` does not exist (`SET NX`, with `ttl`): `Some(true)` when
    /// stored, `Some(false)` when the key was there. Degraded: `None`, so a caller cannot
    /// mistake an outage for "someone else has it" or for "it is ours".
    pub async fn set_nx<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Option<bool> {
        let text = serde_json::to_string(value)
            .map_err(|e| log_failure("set_nx", key, &RedisError::Serialization(e)))
            .ok()?;
        let full = self.key(key);
        self.connection
            .run(|mut c| async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(full).arg(text).arg("NX");
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
                }
                cmd.query_async::<Option<String>>(&mut c).await
            })
            .await
            .map_err(|e| log_failure("set_nx", key, &e))
            .ok()
            .map(|reply| reply.is_some())
    }

    /// The current version of `namespace` (0 before the first bump). Degraded: `None`.
    pub async fn version(&self, namespace: &str) -> Option<u64> {
        let key = format!("{namespace}:version");
        let full = self.key(&key);
        self.connection
            .run(|mut c| async move {
                redis::cmd("GET")
                    .arg(full)
                    .query_async::<Option<u64>>(&mut c)
                    .await
            })
            .await
            .map_err(|e| log_failure("version", &key, &e))
            .ok()
            .map(|version| version.unwrap_or(0))
    }

    /// `key` in the current version of `namespace`: `{namespace}:v{version}:{key}` (pass
    /// it to the other methods, which add the prefix). Degraded: `None` (treat as a miss;
    /// never write to a guessed version).
    pub async fn versioned_key(&self, namespace: &str, key: &str) -> Option<String> {
        let version = self.version(namespace).await?;
        Some(format!("{namespace}:v{version}:{key}"))
    }

    /// Moves `namespace` to its next version, making every key of the previous one
    /// unreachable; the new version. Degraded: `None` (nothing changed).
    pub async fn bump_version(&self, namespace: &str) -> Option<u64> {
        let key = format!("{namespace}:version");
        self.incr_by(&key, 1).await.map(|v| v.max(0) as u64)
    }
}
