//! Distributed rate limiting: a sliding-window log in Redis shared by every instance, with
//! the same algorithm in process memory while Redis is unreachable.
//!
//! **Algorithm.** Each (client, route) keeps the timestamps of its admitted requests in a
//! Redis list (runs of equal stamps, with their total at the head); a Lua script drops
//! those older than the window, admits the request if fewer than `limit` remain, and
//! returns the remaining quota and the time until the oldest one leaves the window — one atomic round trip (`EVALSHA`) using Redis' clock, so all
//! instances agree. We chose it over GCRA and fixed or sliding-window counters because it
//! is exact: at most `limit` requests in *any* window of its length, which is what "5 login
//! attempts per 15 minutes" promises; GCRA would let a sixth through after 3 minutes, and
//! counters approximate at window edges. Its memory is at most O(limit) per key, and one
//! element per reservation for a busy key. The script is never retried: a second run would count the
//! request twice.
//!
//! **Leases.** A busy key reserves several entries of its log in one call and admits with
//! them in process for up to a second ([`lease`] explains why that stays exact), so a hot
//! client costs a script call every few dozen requests, not every request. Small limits
//! (under [`lease::MIN_LEASED_LIMIT`]) are checked in Redis request by request.
//!
//! **Fallback.** While the connection's breaker is open (or a check fails), the same log is
//! kept in a bounded [`moka`] map in process memory, so limits still hold per instance;
//! when Redis is back, checks go to Redis again.
//!
//! **Round trips.** [`RateLimitLayer`] decides before the request goes on, whatever lies
//! behind it; with leases a busy client's check is answered in process, so a limited cache
//! hit still costs one Redis round trip (plus one script call every few dozen requests), and
//! the limiter and the cache layers know nothing of each other.
//!
//! # Example
//! ```no_run
//! # fn demo(redis: ims_redis::RedisService) {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ims_redis::rate_limit::{Quota, RateLimitLayer, RateLimiter};
//!
//! let limiter = RateLimiter::new(
//!     redis,
//!     // Who the client is, and which route this is (e.g. axum's MatchedPath).
//!     Arc::new(|_parts: &http::request::Parts| Some("203.0.113.9".into())),
//!     Arc::new(|parts: &http::request::Parts| Some(parts.uri.path().into())),
//!     100_000,
//! );
//! let layer = RateLimitLayer::new(Quota { limit: 5, window: Duration::from_secs(900) });
//! // router.route_layer(layer).layer(Extension(limiter))
//! # let _ = (limiter, layer);
//! # }
//! ```

mod layer;
pub mod lease;
mod memory;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use smallvec::SmallVec;

use lease::{Ask, LeaseCell, Taken};

pub use layer::{RateLimitLayer, RateLimitService};

use crate::RedisService;

/// How many requests a client may make to one route per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests admitted per window.
    pub limit: u32,
    /// The window's length.
    pub window: Duration,
}

/// Where a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Shared by every instance.
    Redis,
    /// This process only (Redis unreachable).
    Memory,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The quota's limit.
    pub limit: u32,
    /// Requests left in the current window after this one.
    pub remaining: u32,
    /// Time until the oldest counted request leaves the window (a slot frees up).
    pub reset: Duration,
    /// The quota's window.
    pub window: Duration,
    /// Which store decided.
    pub store: Store,
    /// What to take back if another policy refuses the same request.
    pub(crate) admission: Admission,
}

/// The log entry an admission added, so that it can be taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Refused, or counted atomically with every other policy: nothing to take back.
    None,
    /// Entries pushed onto the Redis log: their stamp (µs) and how many (a reservation).
    Redis(i64, u32),
    /// The instant of an admission counted in memory (its slice is found from it).
    Memory(Instant),
    /// A slot of this instance's lease.
    Lease(lease::Taken),
}

/// Identifies a request's client, route or user; `None` exempts the request. Text the
/// request already holds (a route template, a claim) is lent, not copied.
pub type PartsFn =
    Arc<dyn for<'a> Fn(&'a http::request::Parts) -> Option<Cow<'a, str>> + Send + Sync>;

type Log = Arc<Mutex<memory::Slices>>;
type SharedLease = Arc<LeaseCell>;

/// The rate-limiting engine shared by every limited route of a process.
pub struct RateLimiter {
    redis: RedisService,
    client: PartsFn,
    route: PartsFn,
    /// Per-key logs used while Redis is unreachable; bounded in entries and idle time.
    memory: moka::sync::Cache<String, Log>,
    /// This instance's leases on busy keys' Redis logs, read on every limited request: a
    /// bounded map without idle expiry (a lease's own term bounds what it can admit; an
    /// evicted one only leaves its unused slots counted in Redis until they expire, strict
    /// rather than lenient).
    leases: quick_cache::sync::Cache<String, SharedLease>,
}

// Sliding-window log of admissions in a list, oldest first: the head is `#{total}`, the
// admissions the log counts; every other element is `{stamp}:{count}`, `count` admissions
// stamped `stamp` (microseconds of Redis' clock), each counting until `stamp + window`.
// Expired runs are popped from the front (each once, so O(1) amortized) and a request is
// admitted while the total is below the limit: the exact rule of a sorted set of every
// request, with O(1) list commands, no member nonces, no range scans, and one element per
// reservation rather than one per admission (a lease of 64 is one push, and later one pop).
// Stamps never decrease along a list (a stamp below the tail is raised to it: the run then
// only counts longer), and a run with the tail's stamp is merged into the tail.
// A list of bare stamps (one admission each, as logs were written before runs) is read as
// runs of one and gets its head on first use.
//
// Numbers are written with string.format: Lua's own number-to-string conversion keeps 14
// digits, and stamps have 16.
macro_rules! log_functions {
    () => {
        r"
local function str(n) return string.format('%.0f', n) end
local function parse(e)
  local c = string.find(e, ':', 1, true)
  if c then return tonumber(string.sub(e, 1, c - 1)), tonumber(string.sub(e, c + 1)) end
  return tonumber(e), 1
end
local function is_head(e) return string.byte(e, 1) == 35 end
-- The log's total, and whether the list exists.
local function total_of(key)
  local head = redis.call('LINDEX', key, 0)
  if not head then return 0, false end
  if is_head(head) then return tonumber(string.sub(head, 2)), true end
  local n = redis.call('LLEN', key)
  redis.call('LPUSH', key, '#' .. str(n))
  return n, true
end
-- Takes up to n admissions stamped `stamp` out of the log, searching from its newest end
-- (stamps only grow, so the search stops at the first older run); returns the new total.
local function give_back(key, total, stamp, n)
  local i = -1
  while n > 0 do
    local e = redis.call('LINDEX', key, i)
    if not e or is_head(e) then break end
    local s, c = parse(e)
    if s < stamp then break end
    if s == stamp then
      local k = math.min(c, n)
      n, total = n - k, total - k
      if k == c then
        redis.call('LSET', key, i, '~')
        redis.call('LREM', key, -1, '~')
      else
        redis.call('LSET', key, i, str(s) .. ':' .. str(c - k))
        i = i - 1
      end
    else
      i = i - 1
    end
  end
  redis.call('LSET', key, 0, '#' .. str(total))
  return total
end
"
    };
}

// Every policy of one request in one call: admitted only if every log has room, and then
// counted by all. Per key ARGV holds: limit, window (µs), entries wanted (a lease, see
// lease.rs; 1 = this request only), how far past now to stamp them (µs), and unused
// entries to give back first (count, stamp). Returns admitted, now, then per key: room
// (0/1), remaining, reset (µs), entries pushed, their stamp.
// One server takes all keys at once; a cluster calls it per key (each key its own slot).
const RESERVE_SCRIPT: &str = concat!(
    log_functions!(),
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local counts, oldest, room, exists = {}, {}, {}, {}
local admit = 1
for i = 1, #KEYS do
  local a = 6 * (i - 1)
  local key = KEYS[i]
  local limit, window = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local total, present = total_of(key)
  local back = tonumber(ARGV[a + 5])
  if back > 0 and total > 0 then total = give_back(key, total, tonumber(ARGV[a + 6]), back) end
  local o = redis.call('LINDEX', key, 1)
  while o do
    local s, c = parse(o)
    if s > now - window then break end
    -- The head goes, and the oldest run becomes the new head.
    redis.call('LPOP', key)
    total = total - c
    redis.call('LSET', key, 0, '#' .. str(total))
    o = redis.call('LINDEX', key, 1)
  end
  oldest[i] = o and (parse(o))
  counts[i], exists[i] = total, present
  room[i] = 1
  if total >= limit then room[i] = 0; admit = 0 end
end
local out = {admit, now}
for i = 1, #KEYS do
  local a = 6 * (i - 1)
  local key = KEYS[i]
  local limit, window = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local got, stamp = 0, now
  if admit == 1 then
    got = math.min(tonumber(ARGV[a + 3]), limit - counts[i])
    stamp = now + tonumber(ARGV[a + 4])
  end
  if got > 0 then
    if not exists[i] then redis.call('RPUSH', key, '#0') end
    local tail = redis.call('LINDEX', key, -1)
    local ts, tc
    if not is_head(tail) then ts, tc = parse(tail) end
    if ts and ts > stamp then stamp = ts end
    if ts == stamp then
      redis.call('LSET', key, -1, str(stamp) .. ':' .. str(tc + got))
    else
      redis.call('RPUSH', key, str(stamp) .. ':' .. str(got))
    end
    counts[i] = counts[i] + got
    redis.call('LSET', key, 0, '#' .. str(counts[i]))
    redis.call('PEXPIRE', key, math.ceil((stamp - now + window) / 1000))
    if not oldest[i] then oldest[i] = stamp end
  end
  local reset = window
  if oldest[i] then reset = oldest[i] + window - now end
  out[#out + 1] = room[i]
  out[#out + 1] = limit - counts[i]
  out[#out + 1] = reset
  out[#out + 1] = got
  out[#out + 1] = stamp
end
return out
"
);

// Takes back `ARGV[2]` admissions stamped `ARGV[1]` (a refusal by another policy).
const REFUND_SCRIPT: &str = concat!(
    log_functions!(),
    r"
local total, present = total_of(KEYS[1])
if present and total > 0 then give_back(KEYS[1], total, tonumber(ARGV[1]), tonumber(ARGV[2])) end
return 1
"
);

/// How long a request waits for its key's reservation in flight before asking Redis itself
/// (the reservation normally answers within one round trip).
const LEASE_WAIT: Duration = Duration::from_millis(250);

// Hashing the script (for EVALSHA) once per process, not once per request.
static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE_SCRIPT));
static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND_SCRIPT));

/// Reservations sent and not answered yet: if the request is dropped meanwhile (its client
/// went away), they are settled as failed, so the next request of the key reserves again
/// and nobody waits for an answer that will not come.
struct Unsettled<'a>(Vec<(&'a LeaseCell, Ask)>);

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        for (lease, ask) in self.0.drain(..) {
            lease.settle(|lease| lease.failed(ask));
        }
    }
}

/// Redis' answer for one key of a [`RESERVE_SCRIPT`] call.
#[derive(Debug, Clone, Copy)]
struct Reply {
    /// Whether this key had room (the whole call admits only if all had).
    room: bool,
    remaining: u32,
    reset: Duration,
    got: u32,
    stamp: i64,
}

impl RateLimiter {
    /// An engine over `redis`. `client` names the caller (an IP address), `route` the route
    /// (its template); keys are `{prefix}ratelimit:{client}:{route}`. At most
    /// `max_memory_keys` logs are kept in memory for the fallback.
    pub fn new(
        redis: RedisService,
        client: PartsFn,
        route: PartsFn,
        max_memory_keys: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            redis,
            client,
            route,
            memory: moka::sync::Cache::builder()
                .max_capacity(max_memory_keys)
                // No quota here is longer than a day; an idle log older than that is empty.
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            leases: quick_cache::sync::Cache::new(
                usize::try_from(max_memory_keys).unwrap_or(usize::MAX),
            ),
        })
    }

    /// The key of a request, or `None` when it is not limited (no client or route).
    pub fn key_of(&self, parts: &http::request::Parts) -> Option<String> {
        let client = (self.client)(parts)?;
        let route = (self.route)(parts)?;
        Some(format!("ratelimit:{client}:{route}"))
    }

    /// The key of a request and its route, or `None` when it is not limited.
    pub(crate) fn key_and_route<'a>(
        &self,
        parts: &'a http::request::Parts,
    ) -> Option<(String, Cow<'a, str>)> {
        let client = (self.client)(parts)?;
        let route = (self.route)(parts)?;
        Some((["ratelimit:", &client, ":", &route].concat(), route))
    }

    /// Counts one request against `quota` under `key`: in Redis when it answers (or with a
    /// slot this instance reserved there), else in memory.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        let checks = [(key.to_string(), quota)];
        let mut decisions = self.check_all(&checks).await;
        decisions.pop().unwrap_or(Decision {
            allowed: true,
            limit: quota.limit,
            remaining: quota.limit,
            reset: quota.window,
            window: quota.window,
            store: Store::Memory,
            admission: Admission::None,
        })
    }

    fn check_in_memory(&self, key: &str, quota: Quota) -> Decision {
        let now = Instant::now();
        let log = self.memory.get_with(key.to_string(), || {
            Arc::new(Mutex::new(memory::Slices::new(now, quota)))
        });
        let Ok(mut log) = log.lock() else {
            // A poisoned log means a panic mid-update elsewhere; admitting is the safe
            // failure for availability, and it cannot happen without a bug.
            return Decision {
                allowed: true,
                limit: quota.limit,
                window: quota.window,
                remaining: 0,
                reset: quota.window,
                store: Store::Memory,
                admission: Admission::None,
            };
        };
        let memory::Counted {
            allowed,
            in_window,
            reset,
        } = log.admit(now, quota);
        Decision {
            allowed,
            limit: quota.limit,
            window: quota.window,
            remaining: quota.limit.saturating_sub(in_window),
            reset,
            store: Store::Memory,
            admission: if allowed {
                Admission::Memory(now)
            } else {
                Admission::None
            },
        }
    }

    /// Decides `checks` from this instance's leases alone when each has a usable slot
    /// (the usual case for a busy client): no Redis, no waiting, so a caller can go on
    /// without awaiting. `None` when any policy would have to ask Redis or wait for a
    /// reservation in flight; then nothing is taken, and [`check_all`](Self::check_all)
    /// decides.
    pub fn decide_now(&self, checks: &[(String, Quota)]) -> Option<SmallVec<[Decision; 2]>> {
        let now = Instant::now();
        let mut taken: SmallVec<[(SharedLease, Taken, Option<Ask>); 2]> = SmallVec::new();
        for (key, quota) in checks {
            let slot = (quota.limit >= lease::MIN_LEASED_LIMIT)
                .then(|| {
                    let Ok(lease) = self.leases.get_or_insert_with(key.as_str(), || {
                        Ok::<_, Infallible>(SharedLease::default())
                    });
                    let mut state = lease.lock()?;
                    let got = state.take(now)?;
                    let ahead = state.ahead(*quota, now);
                    drop(state);
                    Some((lease, got, ahead))
                })
                .flatten();
            let Some(slot) = slot else {
                // This policy needs Redis (or a reservation in flight): `check_all` decides
                // the whole request, and the slots taken for the others go back. A
                // reservation ahead one of them asked for is still sent.
                for ((key, quota), (lease, got, ahead)) in checks.iter().zip(taken) {
                    if let Some(mut state) = lease.lock() {
                        state.untake(got, now);
                    }
                    if let Some(ask) = ahead {
                        self.reserve_ahead(key, *quota, &lease, ask);
                    }
                }
                return None;
            };
            taken.push(slot);
        }
        Some(
            checks
                .iter()
                .zip(taken)
                .map(|((key, quota), (lease, got, ahead))| {
                    if let Some(ask) = ahead {
                        self.reserve_ahead(key, *quota, &lease, ask);
                    }
                    leased(*quota, got)
                })
                .collect(),
        )
    }

    /// Counts one request against every `(key, quota)` at once: admitted only if every one
    /// admits it, and then counted by all of them; a request one policy refuses consumes
    /// none of the others' quota. Slots of this instance's leases are used first; the keys
    /// without one are asked in Redis, in one atomic call on one server or concurrently on
    /// a cluster (then an admission refused elsewhere is taken back).
    pub async fn check_all(&self, checks: &[(String, Quota)]) -> SmallVec<[Decision; 2]> {
        // Inline for the usual one or two policies: no allocation per request.
        let mut leases: SmallVec<[Option<SharedLease>; 2]> = SmallVec::new();
        let mut decisions: SmallVec<[Option<Decision>; 2]> = SmallVec::new();
        let mut asks: Vec<Ask> = Vec::new();
        let mut missing: Vec<usize> = Vec::new();
        // A reservation in flight is waited for only while Redis is up. Sent before an
        // outage was noticed, it can take the whole command time-out; a request that
        // waited for it waited on a dead Redis (contract §8: a test saw a read and a write
        // take 279 ms just after a slow Redis was marked down). Redis down, the request
        // asks at once and is decided in memory.
        let wait = if self.redis.is_connected() {
            LEASE_WAIT
        } else {
            Duration::ZERO
        };
        for (i, (key, quota)) in checks.iter().enumerate() {
            let lease = (quota.limit >= lease::MIN_LEASED_LIMIT).then(|| {
                let Ok(lease) = self.leases.get_or_insert_with(key.as_str(), || {
                    Ok::<_, Infallible>(SharedLease::default())
                });
                lease
            });
            let taken = match &lease {
                Some(lease) => lease.take_or_ask(*quota, wait).await,
                None => Err(Ask::single()),
            };
            decisions.push(match taken {
                Ok((taken, ahead)) => {
                    if let (Some(ask), Some(lease)) = (ahead, &lease) {
                        self.reserve_ahead(key, *quota, lease, ask);
                    }
                    Some(leased(*quota, taken))
                }
                Err(ask) => {
                    asks.push(ask);
                    missing.push(i);
                    None
                }
            });
            leases.push(lease);
        }
        if !missing.is_empty() {
            let mut unsettled = Unsettled(
                missing
                    .iter()
                    .zip(&asks)
                    .filter_map(|(&i, ask)| Some((leases[i].as_deref()?, *ask)))
                    .collect(),
            );
            let sent = Instant::now();
            let replies = self.reserve(checks, &missing, &asks).await;
            unsettled.0.clear();
            for ((&i, ask), reply) in missing.iter().zip(&asks).zip(replies) {
                let (key, quota) = &checks[i];
                let decision = match reply {
                    Some(reply) => Decision {
                        // This policy's own answer: whether it had room. A request one
                        // policy refuses is refused (`admitted` below), but the headers
                        // must name the policy that refused, not one that had room.
                        allowed: reply.room,
                        limit: quota.limit,
                        remaining: reply.remaining + reply.got.saturating_sub(1),
                        reset: reply.reset,
                        window: quota.window,
                        store: Store::Redis,
                        admission: if reply.got > 0 {
                            Admission::Redis(reply.stamp, reply.got)
                        } else {
                            Admission::None
                        },
                    },
                    None => {
                        if let Some(lease) = &leases[i] {
                            lease.settle(|lease| lease.failed(*ask));
                        }
                        self.check_in_memory(key, *quota)
                    }
                };
                decisions[i] = Some(decision);
            }
            let admitted = decisions.iter().flatten().all(|d| d.allowed);
            for (&i, ask) in missing.iter().zip(&asks) {
                let (Some(lease), Some(decision)) = (&leases[i], decisions[i]) else {
                    continue;
                };
                if decision.store != Store::Redis {
                    continue;
                }
                let (got, stamp) = match decision.admission {
                    Admission::Redis(stamp, got) => (got, stamp),
                    _ => (0, 0),
                };
                // Refused by another key: this key's entries are taken back below.
                lease.settle(|lease| {
                    lease.answered(
                        *ask,
                        sent,
                        admitted,
                        got,
                        stamp,
                        decision.remaining.saturating_sub(got.saturating_sub(1)),
                        decision.reset,
                    )
                });
            }
        }
        let mut decisions: SmallVec<[Decision; 2]> = decisions.into_iter().flatten().collect();
        if decisions.iter().any(|d| !d.allowed) {
            let refunds = checks
                .iter()
                .zip(&leases)
                .zip(decisions.iter_mut())
                .filter(|(_, d)| d.allowed)
                .map(|(((key, _), lease), d)| {
                    let admission = std::mem::replace(&mut d.admission, Admission::None);
                    self.refund(key, lease.as_ref(), admission, Instant::now())
                });
            futures::future::join_all(refunds).await;
        }
        decisions
    }

    /// Asks Redis for the keys `missing` (indexes into `checks`), one reply per key; `None`
    /// where Redis could not be asked.
    async fn reserve(
        &self,
        checks: &[(String, Quota)],
        missing: &[usize],
        asks: &[Ask],
    ) -> Vec<Option<Reply>> {
        if missing.len() > 1 && !self.redis.connection().is_cluster() {
            let keys: Vec<&(String, Quota)> = missing.iter().map(|&i| &checks[i]).collect();
            return match call(&self.redis, &keys, asks).await {
                // Atomic over all keys: a refusal counted nowhere.
                Some(replies) if replies.len() == missing.len() => {
                    replies.into_iter().map(Some).collect()
                }
                _ => vec![None; missing.len()],
            };
        }
        futures::future::join_all(missing.iter().zip(asks).map(|(&i, ask)| async move {
            // One key per call: the request is admitted by this key alone; another key's
            // refusal takes it back.
            let replies = call(&self.redis, &[&checks[i]], std::slice::from_ref(ask)).await?;
            replies.into_iter().next()
        }))
        .await
    }

    /// Sends `ask`, a reservation ahead for `key`'s busy lease, in the background: the
    /// request that triggered it goes on with the slot it already has.
    fn reserve_ahead(&self, key: &str, quota: Quota, lease: &SharedLease, ask: Ask) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lease.settle(|lease| lease.failed(ask));
            return;
        };
        let (redis, key, lease) = (self.redis.clone(), key.to_string(), lease.clone());
        runtime.spawn(async move {
            let sent = Instant::now();
            let reply = call(&redis, &[&(key, quota)], &[ask])
                .await
                .and_then(|replies| replies.into_iter().next());
            lease.settle(|lease| match reply {
                Some(reply) => lease.answered(
                    ask,
                    sent,
                    reply.room,
                    reply.got,
                    reply.stamp,
                    reply.remaining,
                    reply.reset,
                ),
                None => lease.failed(ask),
            });
        });
    }

    /// Takes back an admission (see [`check_all`](Self::check_all)). Until it is taken back
    /// the slot counts, so the limit errs on the strict side, never the lenient one.
    async fn refund(
        &self,
        key: &str,
        lease: Option<&SharedLease>,
        admission: Admission,
        now: Instant,
    ) {
        match admission {
            Admission::None => {}
            Admission::Lease(taken) => {
                if let Some(mut lease) = lease.and_then(|l| l.lock()) {
                    lease.untake(taken, now);
                }
            }
            Admission::Redis(stamp, count) => {
                let full = self.redis.key(key);
                let _ = self
                    .redis
                    .connection()
                    .run(|mut c| async move {
                        REFUND
                            .key(full)
                            .arg(stamp)
                            .arg(count)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
            }
            Admission::Memory(at) => {
                if let Some(log) = self.memory.get(key) {
                    if let Ok(mut log) = log.lock() {
                        log.give_back(at);
                    }
                }
            }
        }
    }
}

/// The decision for a request admitted with a slot its lease had reserved.
fn leased(quota: Quota, taken: Taken) -> Decision {
    Decision {
        allowed: true,
        limit: quota.limit,
        remaining: taken.remaining,
        reset: taken.reset,
        window: quota.window,
        store: Store::Redis,
        admission: Admission::Lease(taken),
    }
}

/// One [`RESERVE_SCRIPT`] call over `keys` (all in one slot on a cluster).
async fn call(redis: &RedisService, keys: &[&(String, Quota)], asks: &[Ask]) -> Option<Vec<Reply>> {
    let full: Vec<String> = keys.iter().map(|(key, _)| redis.key(key)).collect();
    let args: Vec<i64> = keys
        .iter()
        .zip(asks)
        .flat_map(|((_, quota), ask)| {
            let (stamp, back) = ask.give_back.unwrap_or((0, 0));
            [
                i64::from(quota.limit),
                quota.window.as_micros().max(1) as i64,
                i64::from(ask.want),
                ask.term.as_micros() as i64,
                i64::from(back),
                stamp,
            ]
        })
        .collect();
    let reply = redis
        .connection()
        .run(|mut c| async move {
            let mut invocation = RESERVE.prepare_invoke();
            for key in &full {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(*arg);
            }
            invocation.invoke_async::<Vec<i64>>(&mut c).await
        })
        .await
        .ok()?;
    // The first field says whether the whole call admitted; each key's `room` says it too.
    let replies: Vec<Reply> = reply
        .get(2..)?
        .chunks(5)
        .map(|fields| {
            let field = |n: usize| fields.get(n).copied().unwrap_or(0);
            Reply {
                room: field(0) == 1,
                remaining: field(1).clamp(0, i64::from(u32::MAX)) as u32,
                reset: Duration::from_micros(field(2).max(0) as u64),
                got: field(3).clamp(0, i64::from(u32::MAX)) as u32,
                stamp: field(4),
            }
        })
        .collect();
    (replies.len() == keys.len()).then_some(replies)
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("redis", &self.redis)
            .field("memory_keys", &self.memory.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisConnection;

    fn limiter() -> Arc<RateLimiter> {
        RateLimiter::new(
            RedisService::new(RedisConnection::disabled(), "t:"),
            Arc::new(|_| Some("c".into())),
            Arc::new(|_| Some("r".into())),
            1000,
        )
    }

    #[tokio::test]
    async fn the_memory_store_admits_exactly_the_limit_per_window() {
        let limiter = limiter();
        let quota = Quota {
            limit: 3,
            window: Duration::from_millis(200),
        };
        let decisions: Vec<Decision> =
            futures::future::join_all((0..5).map(|_| limiter.check("k", quota))).await;
        assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 3);
        assert!(decisions.iter().all(|d| d.store == Store::Memory));
        assert_eq!(decisions[2].remaining, 0);
        assert!(!decisions[4].allowed && decisions[4].reset <= quota.window);
        // Another key has its own quota.
        assert!(limiter.check("other", quota).await.allowed);
        tokio::time::sleep(Duration::from_millis(220)).await;
        assert!(
            limiter.check("k", quota).await.allowed,
            "the window slid on"
        );
    }
}
