//! Distributed locks against a private, real redis-server: one holder at a time, leases
//! that free the lock of a holder that never releases, owner-only release and extend, and
//! fencing tokens that expose a holder paused past its lease.

mod common;

use std::time::{Duration, Instant};

use common::service_for;
use ims_redis::lock::Locks;
use ims_testkit::RedisServer;

async fn locks(server: &RedisServer) -> Locks {
    Locks::new(service_for(server).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_holder_at_a_time_even_under_contention() {
    let server = RedisServer::start();
    let locks = locks(&server).await;
    let attempts = (0..50).map(|_| locks.try_acquire("job", Duration::from_secs(10)));
    let won: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "exactly one of 50 concurrent attempts");
    let holder = won.into_iter().next().expect("holder");
    assert!(locks
        .try_acquire("job", Duration::from_secs(10))
        .await
        .is_none());
    assert!(holder.release().await);
    assert!(locks
        .try_acquire("job", Duration::from_secs(10))
        .await
        .is_some());
}

#[tokio::test]
async fn a_holder_that_never_releases_frees_the_lock_when_its_lease_ends() {
    let server = RedisServer::start();
    let locks = locks(&server).await;
    // The holder "dies": its guard is forgotten, nothing ever releases it.
    let dead = locks.try_acquire("job", Duration::from_millis(300)).await;
    assert!(dead.is_some());
    std::mem::forget(dead);
    let started = Instant::now();
    let next = locks
        .acquire("job", Duration::from_secs(5), Duration::from_secs(3))
        .await;
    assert!(next.is_some(), "taken over after the lease");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the lease ended"
    );
    // A bounded wait gives up.
    assert!(locks
        .acquire("job", Duration::from_secs(5), Duration::from_millis(100))
        .await
        .is_none());
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_holds_a_stale_fencing_token_and_cannot_release() {
    let server = RedisServer::start();
    let locks = locks(&server).await;
    let paused = locks
        .try_acquire("job", Duration::from_millis(150))
        .await
        .expect("first holder");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let successor = locks
        .try_acquire("job", Duration::from_secs(10))
        .await
        .expect("successor after the lease");
    assert!(successor.fence() > paused.fence());
    assert_eq!(locks.current_fence("job").await, successor.fence());
    assert!(
        paused.fence() < locks.current_fence("job").await,
        "the paused holder can tell its token is stale"
    );
    assert!(
        !paused.extend(Duration::from_secs(10)).await,
        "not its lock any more"
    );
    assert!(
        !paused.release().await,
        "cannot release the successor's lock"
    );
    assert!(locks
        .try_acquire("job", Duration::from_secs(1))
        .await
        .is_none());
    assert!(successor.extend(Duration::from_secs(10)).await);
    assert!(successor.release().await);
}

#[tokio::test]
async fn redis_down_means_not_acquired_at_once() {
    let server = RedisServer::start();
    let locks = locks(&server).await;
    server.stop();
    let started = Instant::now();
    assert!(locks
        .acquire("job", Duration::from_secs(5), Duration::from_secs(2))
        .await
        .is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no blind retries"
    );
}

/// A holder that keeps its lease alive keeps the lock however long its work takes; once it
/// is gone (dropped without a release, as when its task dies), the lock is free within one
/// lease. A fencing counter expires a day after its last acquisition; an unfenced lock
/// leaves no counter at all.
#[tokio::test]
async fn a_kept_alive_lease_outlives_its_term_and_ends_with_its_holder() {
    let server = RedisServer::start();
    let locks = locks(&server).await;
    let lease = Duration::from_millis(300);
    let mut holder = locks
        .try_acquire_unfenced("flight", lease)
        .await
        .expect("holder");
    assert_eq!(holder.fence(), 0);
    holder.keep_alive(lease);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        locks.try_acquire("flight", lease).await.is_none(),
        "still held after three leases"
    );
    drop(holder);
    let started = Instant::now();
    let next = locks
        .acquire("flight", lease, Duration::from_secs(3))
        .await
        .expect("free once the holder is gone");
    assert!(started.elapsed() < Duration::from_secs(2));

    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*fence*")
        .query(&mut conn)
        .expect("keys");
    assert_eq!(
        keys.len(),
        1,
        "only the fenced acquisition counts: {keys:?}"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query(&mut conn)
        .expect("ttl");
    assert!(ttl > 23 * 3600 && ttl <= 24 * 3600, "{ttl}");
    assert!(next.release().await);
}
