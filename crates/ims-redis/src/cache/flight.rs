//! Single flight: concurrent misses of one key run the handler once, in the process (a
//! `watch` channel per in-flight key) and, for routes that ask for it, across every
//! instance (a lock in Redis, the others polling for the stored result).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Cached, Lookup, ResponseCache, Seen};

/// The lease of a cluster-wide single flight's lock, renewed by its holder while the
/// handler runs ([`crate::lock::Guard::keep_alive`]): a holder that dies, or loses Redis,
/// frees the lock within this, and a waiting instance then runs the handler itself.
const FLIGHT_LEASE: Duration = Duration::from_secs(2);

/// How long the others wait for a live holder's result at most before running the
/// handler themselves.
const FLIGHT_WAIT: Duration = Duration::from_secs(15);

/// How often an instance waiting on another's flight looks for the stored result.
const FLIGHT_POLL: Duration = Duration::from_millis(25);

/// What a miss of a route with cluster-wide single flight does.
pub(crate) enum Shared {
    /// Another instance computed it meanwhile.
    Hit(Cached, Duration),
    /// Run the handler: with the lock (released after the store), or alone (the wait ran
    /// out, or Redis cannot be asked), storing against `Seen` if there is one.
    Run(Option<crate::lock::Guard>, Option<Seen>),
}

/// What a flight's leader hands its followers: the response it got, and until when it is
/// fresh as stored (`None`: not stored), so that each follower says the entry's real TTL,
/// as a hit from the store would (they said the route's nominal TTL; found by a probe).
pub(crate) type Published = (Arc<Cached>, Option<std::time::Instant>);

/// A request's part in the single flight of its key.
pub(crate) enum Flight {
    /// First miss: run the handler, publish the result.
    Leader(watch::Sender<Option<Published>>),
    /// A miss for the same key is running: wait for its result.
    Follower(watch::Receiver<Option<Published>>),
    /// Coordination unavailable (poisoned lock): run alone.
    Alone,
}

impl ResponseCache {
    /// Makes one instance of the cluster run the handler for a missed key while the others
    /// wait (bounded) for its stored result. After taking the lock the key is looked up
    /// again: the previous holder may have stored it between our miss and our lock.
    pub(crate) async fn cluster_flight(
        &self,
        scope: &str,
        key_prefix: &str,
        rest: &str,
        tag: Option<&str>,
        seen: Seen,
    ) -> Shared {
        let name = format!("flight:{scope}:{key_prefix}:{rest}");
        let deadline = std::time::Instant::now() + FLIGHT_WAIT;
        loop {
            let taken = self
                .locks
                .try_acquire_unfenced_or_fail(&name, FLIGHT_LEASE)
                .await;
            // Redis refused the lock's script (read-only replica, `NOREPLICAS`, no
            // permission) or could not be asked: nobody holds it, so nothing will ever be
            // stored to wait for. Run alone at once (every such miss waited the whole
            // 15 s, found by a probe).
            let Ok(taken) = taken else {
                return Shared::Run(None, Some(seen));
            };
            if let Some(mut guard) = taken {
                guard.keep_alive(FLIGHT_LEASE);
                return match self.lookup(scope, key_prefix, rest, tag).await {
                    Lookup::Hit(cached, ttl) => {
                        guard.release().await;
                        Shared::Hit(cached, ttl)
                    }
                    Lookup::Miss(seen) => Shared::Run(Some(guard), Some(seen)),
                    Lookup::Unavailable => Shared::Run(Some(guard), None),
                };
            }
            if !self.redis.is_connected() || std::time::Instant::now() >= deadline {
                return Shared::Run(None, Some(seen));
            }
            self.l1.lock_waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(FLIGHT_POLL).await;
            if let Lookup::Hit(cached, ttl) = self.lookup(scope, key_prefix, rest, tag).await {
                return Shared::Hit(cached, ttl);
            }
        }
    }

    /// Joins the running miss for `key`, or becomes its leader. The leader gets a sender to
    /// publish its result with (and must keep the guard until then); a follower gets the
    /// receiver to wait on.
    pub(crate) fn join_flight(&self, key: &str) -> Flight {
        let Ok(mut inflight) = self.inflight.lock() else {
            return Flight::Alone;
        };
        if let Some(rx) = inflight.get(key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.to_string(), rx);
        Flight::Leader(tx)
    }

    pub(crate) fn land_flight(&self, key: &str) {
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(key);
        }
    }
}
