//! Distributed locks with leases and fencing tokens, for work that must run once across
//! every instance (a cache miss of an expensive report, a scheduled job).
//!
//! A lock is a key set with `SET NX PX` to a random owner token, so only its owner can
//! release or extend it (compare-and-delete, compare-and-extend scripts), and a holder that
//! dies releases it when the lease runs out. Each acquisition also takes a fencing token
//! from a counter beside the lock, in the same script: a holder that was paused past its
//! lease holds a token lower than its successor's, so whatever it writes with it can be
//! refused by comparing it with [`Locks::current_fence`]. Acquiring waits a bounded time and is never retried
//! blindly: a failed round trip is an answer ("not acquired"), not a reason to try again.
//!
//! # Example
//! ```no_run
//! # async fn demo(redis: ims_redis::RedisService) {
//! use std::time::Duration;
//! use ims_redis::lock::Locks;
//!
//! let locks = Locks::new(redis);
//! if let Some(guard) = locks.acquire("purge", Duration::from_secs(30), Duration::ZERO).await {
//!     // ... work, then:
//!     guard.release().await;
//! }
//! # }
//! ```

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;

use crate::RedisService;

// KEYS[1] lock, KEYS[2] fence counter; ARGV[1] owner token, ARGV[2] lease (ms).
// Returns the fencing token, or nil when the lock is held.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
";

// Deletes the lock only if it still holds our token.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

// Extends the lease only if the lock still holds our token.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_SCRIPT));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SCRIPT));
static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND_SCRIPT));

/// How often a waiting acquirer tries again.
const POLL: Duration = Duration::from_millis(20);

/// Acquires locks in one Redis (keys `{prefix}lock:<name>` and `{prefix}lock:<name>:fence`;
/// on a cluster the name is the keys' hash tag, so both share a slot).
#[derive(Clone, Debug)]
pub struct Locks {
    redis: RedisService,
}

/// A held lock; release it when done (dropping it leaves the lease to expire).
#[derive(Debug)]
pub struct Guard {
    redis: RedisService,
    key: String,
    token: String,
    fence: u64,
}

impl Locks {
    /// Locks over `redis`.
    pub fn new(redis: RedisService) -> Self {
        Self { redis }
    }

    fn keys(&self, name: &str) -> (String, String) {
        let name = if self.redis.connection().is_cluster() {
            format!("{{{name}}}")
        } else {
            name.to_string()
        };
        (
            self.redis.key(&format!("lock:{name}")),
            self.redis.key(&format!("lock:{name}:fence")),
        )
    }

    /// One attempt: the guard if the lock was free, `None` if it is held or Redis could
    /// not be asked.
    pub async fn try_acquire(&self, name: &str, lease: Duration) -> Option<Guard> {
        let (key, fence_key) = self.keys(name);
        let token = format!("{:032x}", rand::random::<u128>());
        let lease_ms = lease.as_millis().max(1) as u64;
        let (k, f, t) = (key.clone(), fence_key, token.clone());
        let fence = self
            .redis
            .connection()
            .run(|mut c| async move {
                ACQUIRE
                    .key(k)
                    .key(f)
                    .arg(t)
                    .arg(lease_ms)
                    .invoke_async::<Option<u64>>(&mut c)
                    .await
            })
            .await
            .ok()
            .flatten()?;
        Some(Guard {
            redis: self.redis.clone(),
            key,
            token,
            fence,
        })
    }

    /// Tries until the lock is acquired or `wait` has passed (`Duration::ZERO`: once).
    pub async fn acquire(&self, name: &str, lease: Duration, wait: Duration) -> Option<Guard> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(guard) = self.try_acquire(name, lease).await {
                return Some(guard);
            }
            if Instant::now() + POLL > deadline || !self.redis.is_connected() {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The newest fencing token handed out for `name` (0 if none, or Redis is down).
    pub async fn current_fence(&self, name: &str) -> u64 {
        let (_, fence_key) = self.keys(name);
        self.redis
            .connection()
            .run(|mut c| async move {
                redis::cmd("GET")
                    .arg(fence_key)
                    .query_async::<Option<u64>>(&mut c)
                    .await
            })
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

impl Guard {
    /// This holder's fencing token: larger than every earlier holder's.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Extends the lease to `lease` from now; false if the lock is no longer ours.
    pub async fn extend(&self, lease: Duration) -> bool {
        let (key, token) = (self.key.clone(), self.token.clone());
        let lease_ms = lease.as_millis().max(1) as u64;
        self.redis
            .connection()
            .run(|mut c| async move {
                EXTEND
                    .key(key)
                    .arg(token)
                    .arg(lease_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .is_ok_and(|n| n == 1)
    }

    /// Releases the lock if it is still ours; true when it was.
    pub async fn release(self) -> bool {
        let (key, token) = (self.key, self.token);
        self.redis
            .connection()
            .run(|mut c| async move {
                RELEASE
                    .key(key)
                    .arg(token)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .is_ok_and(|n| n == 1)
    }
}
