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

use crate::{RedisError, RedisService};

// KEYS[1] lock, KEYS[2] fence counter (absent: no fencing); ARGV[1] owner token, ARGV[2]
// lease (ms), ARGV[3] how long the counter outlives its last acquisition (ms). Returns the
// fencing token (0 without one), or nil when the lock is held.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if KEYS[2] == nil then return 0 end
  local fence = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return fence
end
return false
";

/// How long a fencing counter is kept after its lock was last acquired. Fencing protects
/// against a holder paused past its lease writing after its successor; a pause of a day is
/// beyond any it is meant for, and a lock name used once (a key of its own per request,
/// say) must not leave a counter behind for ever.
const FENCE_TTL: Duration = Duration::from_secs(24 * 3600);

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

/// A held lock; release it when done (dropping it leaves the lease to expire, and stops
/// [`Guard::keep_alive`]'s renewals).
#[derive(Debug)]
pub struct Guard {
    redis: RedisService,
    key: String,
    token: String,
    fence: u64,
    renewing: Option<tokio::task::AbortHandle>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(renewing) = self.renewing.take() {
            renewing.abort();
        }
    }
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
    /// not be asked. The guard carries a fencing token ([`Guard::fence`]).
    pub async fn try_acquire(&self, name: &str, lease: Duration) -> Option<Guard> {
        self.attempt(name, lease, true).await.ok().flatten()
    }

    /// [`Locks::try_acquire`] without a fencing token (its [`Guard::fence`] is 0) and so
    /// without a counter key: for a holder whose writes a stale successor cannot spoil, or
    /// that are checked otherwise, such as a cache fill, whose store is refused by the
    /// cache's own epochs when anything changed meanwhile.
    pub async fn try_acquire_unfenced(&self, name: &str, lease: Duration) -> Option<Guard> {
        self.attempt(name, lease, false).await.ok().flatten()
    }

    /// [`Locks::try_acquire_unfenced`] telling a lock held by another (`Ok(None)`) from one
    /// that could not be asked for (`Err`: Redis away, or answering the script with an
    /// error, such as `READONLY`, `NOREPLICAS` or `NOPERM`). A caller that would wait for the
    /// holder must not wait on an error: no holder will ever show up.
    pub async fn try_acquire_unfenced_or_fail(
        &self,
        name: &str,
        lease: Duration,
    ) -> Result<Option<Guard>, RedisError> {
        self.attempt(name, lease, false).await
    }

    async fn attempt(
        &self,
        name: &str,
        lease: Duration,
        fenced: bool,
    ) -> Result<Option<Guard>, RedisError> {
        let (key, fence_key) = self.keys(name);
        let token = format!("{:032x}", rand::random::<u128>());
        let lease_ms = lease.as_millis().max(1) as u64;
        let fence_ttl_ms = FENCE_TTL.as_millis() as u64;
        let (k, t) = (key.clone(), token.clone());
        let fence = self
            .redis
            .connection()
            .run(|mut c| async move {
                let mut invocation = ACQUIRE.key(k);
                if fenced {
                    invocation.key(fence_key);
                }
                invocation
                    .arg(t)
                    .arg(lease_ms)
                    .arg(fence_ttl_ms)
                    .invoke_async::<Option<u64>>(&mut c)
                    .await
            })
            .await?;
        Ok(fence.map(|fence| Guard {
            redis: self.redis.clone(),
            key,
            token,
            fence,
            renewing: None,
        }))
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
        extend(&self.redis, self.key.clone(), self.token.clone(), lease).await
    }

    /// Renews the lease to `lease` every third of it, in a task of its own, until the guard
    /// is released or dropped, or a renewal fails (the lock is no longer ours, or Redis
    /// cannot be reached). So the lease can be short: waiters see a holder that died, or
    /// lost Redis, within one lease, while a live holder keeps the lock however long its
    /// work takes.
    pub fn keep_alive(&mut self, lease: Duration) {
        let (redis, key, token) = (self.redis.clone(), self.key.clone(), self.token.clone());
        let task = tokio::spawn(async move {
            let every = lease / 3;
            loop {
                tokio::time::sleep(every).await;
                if !extend(&redis, key.clone(), token.clone(), lease).await {
                    return;
                }
            }
        });
        if let Some(previous) = self.renewing.replace(task.abort_handle()) {
            previous.abort();
        }
    }

    /// Releases the lock if it is still ours; true when it was.
    pub async fn release(mut self) -> bool {
        if let Some(renewing) = self.renewing.take() {
            renewing.abort();
        }
        let (key, token) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
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

async fn extend(redis: &RedisService, key: String, token: String, lease: Duration) -> bool {
    let lease_ms = lease.as_millis().max(1) as u64;
    redis
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
