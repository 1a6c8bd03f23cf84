//! A Redis connection that fails fast: an observable up/down state, a background probe, one
//! log line per state change, and a circuit breaker.
//!
//! redis-rs' `ConnectionManager` multiplexes commands over one socket and reconnects on its
//! own, but it exposes no connection state and a command issued during a reconnect waits for
//! the whole retry schedule. This wrapper adds what a request path needs: while the breaker
//! is open (Redis found down) no command is sent at all, so callers get their degraded answer
//! in microseconds; a probe task pings Redis in the background and closes the breaker as soon
//! as Redis answers again. Commands are never retried here, so a non-idempotent command
//! (`INCR`, `EVAL`) is never applied twice.
//!
//! With `REDIS_CLUSTER_NODES` the same wrapper holds redis-rs' async cluster connection
//! instead ([`RedisLink::Cluster`]), built with no retries and the same time-outs, so the
//! breaker, the log-once rule and the time-out bound are identical in both modes. In
//! cluster mode Redis counts as up only while every slot has a healthy master that answers
//! (see `link::cluster_usable`), and the link is rebuilt from the seed nodes when it stops
//! answering or the cluster is whole again. The link itself is in `link.rs`, Redis' `INFO`
//! figures in `info.rs`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{RedisConfig, RedisError};

mod info;
mod latency;
mod link;

pub use info::RedisInfo;
use latency::{Latency, Verdict};
pub use link::RedisLink;
use link::{cluster_link, cluster_usable, single_link};

/// A cheaply clonable handle to one multiplexed Redis connection with a circuit breaker.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when Redis is disabled or the URL could not be turned into a client. Behind a
    /// lock because a cluster link is replaced when it stops answering (see `ping`).
    manager: Option<RwLock<RedisLink>>,
    cluster: bool,
    /// The settings, to build a fresh cluster link.
    config: RedisConfig,
    /// The breaker: commands are only sent while this is true.
    up: AtomicBool,
    /// Set by `close`: the probe stops and every operation degrades.
    closed: AtomicBool,
    /// Number of transitions from up to down, for statistics and tests.
    outages: AtomicU64,
    /// Writes Redis refused while answering (`RedisError::refused_write`), and when the
    /// last one came (milliseconds since `created`, plus one; 0: never).
    write_refusals: AtomicU64,
    last_refusal_ms: AtomicU64,
    /// Since when probes that reached Redis have found the cluster unusable, each one since
    /// (milliseconds since `created`, plus one; 0: the last probe found it usable).
    unusable_since_ms: AtomicU64,
    /// When the cluster link was last rebuilt for a command that found no connection to a
    /// node of its slot map (milliseconds since `created`, plus one), so that a burst of such
    /// commands rebuilds it once.
    topology_rebuilt_ms: AtomicU64,
    created: Instant,
    /// Publishes every state change, for subsystems that must react to recovery.
    changes: watch::Sender<bool>,
    command_timeout: Duration,
    /// Round trips of the commands, so that a Redis slow enough to hold up every request
    /// counts as down (`latency.rs`).
    latency: Latency,
    /// A ping may have to establish a new connection first, so it gets the connect budget too.
    ping_timeout: Duration,
    /// Where we connect, with the password masked, for log lines.
    redacted_url: String,
    probe: Mutex<Option<JoinHandle<()>>>,
}

impl RedisConnection {
    /// Creates the connection and checks it once (bounded by the connect and command
    /// time-outs). Never fails: an unreachable or disabled Redis yields a handle that is down
    /// and answers every operation with [`RedisError::Unavailable`] or
    /// [`RedisError::Disabled`]; a background probe brings it up when Redis appears.
    pub async fn connect(config: RedisConfig) -> Self {
        if !config.enabled {
            tracing::info!("Redis disabled (REDIS_ENABLED=false): using in-process fallbacks");
            return Self::from_parts(None, &config);
        }
        // rustls needs a process-wide crypto provider for rediss:// URLs; another part of the
        // program may have installed one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !config.slow_threshold.is_zero() && config.slow_threshold >= config.command_timeout {
            tracing::warn!(
                "REDIS_SLOW_MS={} is not below REDIS_COMMAND_TIMEOUT_MS={}: commands time out \
                 before their mean can reach it, so a slow Redis is found only by its time-outs",
                config.slow_threshold.as_millis(),
                config.command_timeout.as_millis()
            );
        }
        let manager = if config.is_cluster() {
            cluster_link(&config)
        } else {
            single_link(&config)
        };
        let connection = Self::from_parts(manager, &config);
        if connection.is_enabled() {
            match connection.ping_inner().await {
                Ok(_) => {
                    connection.inner.up.store(true, Ordering::Release);
                    connection.inner.changes.send_replace(true);
                    tracing::info!("Redis connected at {}", connection.inner.redacted_url);
                }
                Err(e) => tracing::warn!(
                    "Redis unreachable at {} ({e}); running degraded until it is back",
                    connection.inner.redacted_url
                ),
            }
            connection.start_probe(config.probe_interval);
        }
        connection
    }

    /// A handle that never connects, as with `REDIS_ENABLED=false`.
    pub fn disabled() -> Self {
        Self::from_parts(
            None,
            &RedisConfig {
                enabled: false,
                ..RedisConfig::default()
            },
        )
    }

    fn from_parts(manager: Option<RedisLink>, config: &RedisConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                cluster: matches!(manager, Some(RedisLink::Cluster(_))),
                manager: manager.map(RwLock::new),
                config: config.clone(),
                up: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                outages: AtomicU64::new(0),
                write_refusals: AtomicU64::new(0),
                last_refusal_ms: AtomicU64::new(0),
                unusable_since_ms: AtomicU64::new(0),
                topology_rebuilt_ms: AtomicU64::new(0),
                created: Instant::now(),
                changes: watch::channel(false).0,
                command_timeout: config.command_timeout,
                latency: Latency::new(config.slow_threshold),
                ping_timeout: config.command_timeout + config.connect_timeout,
                redacted_url: config.redacted_url(),
                probe: Mutex::new(None),
            }),
        }
    }

    fn start_probe(&self, interval: Duration) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let handle = tokio::spawn(async move {
            loop {
                // Each tick at a random point between half and one and a half periods: ticks
                // a fixed period apart land at the same point of a stall that repeats (a
                // script run back to back), so their `PING`s were not independent samples,
                // and at 85 or 100 ms scripts every one answered fast enough to end an
                // outage while Redis was still slow (probe 27).
                tokio::time::sleep(interval.mul_f64(0.5 + rand::random::<f64>())).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.closed.load(Ordering::Acquire) {
                    break;
                }
                RedisConnection { inner }.probe().await;
            }
        });
        if let Ok(mut probe) = self.inner.probe.lock() {
            *probe = Some(handle);
        }
    }

    /// True only while the last contact with Redis succeeded: commands are being sent.
    pub fn is_connected(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// True in Redis Cluster mode (`REDIS_CLUSTER_NODES`).
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// The `host:port` of every master and whether it answers a `PING` within the command
    /// time-out; empty on a single server or when the cluster cannot be asked.
    pub async fn cluster_masters(&self) -> Vec<(String, bool)> {
        // Not through `run` either: while the breaker is open (a master died, the cluster is
        // failing over) is when an operator needs the list most, and it was empty then.
        let Some(mut link) = self.link() else {
            return Vec::new();
        };
        // The node asked is picked at random and may be the dead one: a second try.
        let mut masters = None;
        for _ in 0..2 {
            if let Ok(Some(Ok(found))) =
                tokio::time::timeout(self.inner.command_timeout, link.masters()).await
            {
                masters = Some(found);
                break;
            }
        }
        let Some(masters) = masters else {
            return Vec::new();
        };
        let checks = masters.into_iter().map(|(node, _)| async move {
            let name = format!("{}:{}", node.0, node.1);
            // Not through `run`: one dead master must not open the breaker for all.
            let answered = match self.link() {
                Some(mut link) => matches!(
                    tokio::time::timeout(
                        self.inner.command_timeout,
                        link.on_node(redis::cmd("PING"), Some(&node)),
                    )
                    .await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            (name, answered)
        });
        futures::future::join_all(checks).await
    }

    /// A dedicated pub/sub connection (to the server, or to the first cluster seed that
    /// answers: cluster pub/sub reaches every node), bounded by the connect time-out.
    /// `None` when Redis is disabled, closed or unreachable.
    pub async fn pubsub(&self) -> Option<redis::aio::PubSub> {
        if !self.is_enabled() || self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let urls = if self.inner.cluster {
            self.inner.config.cluster_urls()
        } else {
            vec![self.inner.config.connection_url()]
        };
        for url in urls {
            let Ok(client) = redis::Client::open(url) else {
                continue;
            };
            if let Ok(Ok(pubsub)) =
                tokio::time::timeout(self.inner.config.connect_timeout, client.get_async_pubsub())
                    .await
            {
                return Some(pubsub);
            }
        }
        None
    }

    /// The current link (a cheap clone), or `None` when Redis is disabled.
    fn link(&self) -> Option<RedisLink> {
        let lock = self.inner.manager.as_ref()?;
        lock.read().ok().map(|link| link.clone())
    }

    /// Replaces the cluster link with a fresh one that discovers the topology from the seed
    /// nodes again. redis-rs refreshes its slot map after `MOVED` replies and during its
    /// retries, but with retries off (fail fast) a link whose master died can keep trying
    /// that node and never learn that a replica took over; a new link asks the survivors.
    fn rebuild_cluster_link(&self) {
        if !self.inner.cluster {
            return;
        }
        if let (Some(lock), Some(fresh)) = (&self.inner.manager, cluster_link(&self.inner.config)) {
            if let Ok(mut link) = lock.write() {
                *link = fresh;
            }
        }
    }

    /// The nodes that hold data: the server (`None`), or every healthy master of the
    /// cluster (a failed master's slots are served by its promoted replica, listed too).
    /// What a walk over the keyspace or a sum of per-node figures must visit.
    pub async fn data_nodes(&self) -> Result<Vec<Option<(String, u16)>>, RedisError> {
        let masters = self
            .run(|mut c| async move { c.masters().await.transpose() })
            .await?;
        Ok(match masters {
            None => vec![None],
            Some(masters) => masters
                .into_iter()
                .filter(|(_, failed)| !*failed)
                .map(|(node, _)| Some(node))
                .collect(),
        })
    }

    /// Redis' own figures from `INFO` (summed over the masters of a cluster); `None` when
    /// Redis cannot be asked.
    pub async fn info(&self) -> Option<RedisInfo> {
        let nodes = self.data_nodes().await.ok()?;
        let mut total = RedisInfo::default();
        for node in nodes {
            let text = self
                .run(|mut c| async move {
                    let reply = c.on_node(redis::cmd("INFO"), node.as_ref()).await?;
                    redis::from_redis_value::<String>(reply).map_err(Into::into)
                })
                .await
                .ok()?;
            total.add(&RedisInfo::parse(&text));
        }
        Some(total)
    }

    /// False when Redis is disabled by configuration.
    pub fn is_enabled(&self) -> bool {
        self.inner.manager.is_some()
    }

    /// A receiver that sees every change of [`RedisConnection::is_connected`]. Its first
    /// value is the state at subscription time.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.changes.subscribe()
    }

    /// How many times the connection went from up to down since start.
    pub fn outages(&self) -> u64 {
        self.inner.outages.load(Ordering::Relaxed)
    }

    /// How many commands Redis refused as writes since start (`READONLY`, `NOREPLICAS`,
    /// `MISCONF`, `NOPERM`, `OOM`: see [`RedisError::refused_write`]). Redis answers, so
    /// the breaker stays closed; this is how an operator sees it.
    pub fn write_refusals(&self) -> u64 {
        self.inner.write_refusals.load(Ordering::Relaxed)
    }

    /// True when Redis refused a write within the last `within`.
    pub fn refused_a_write_within(&self, within: Duration) -> bool {
        let last = self.inner.last_refusal_ms.load(Ordering::Relaxed);
        let within = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        last > 0 && self.stamp_ms().saturating_sub(last) <= within
    }

    /// Now, for the moments kept in atomics: milliseconds since the connection was made,
    /// plus one, so that 0 can stand for "never".
    fn stamp_ms(&self) -> u64 {
        u64::try_from(self.inner.created.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The configured bound on one command's round trip.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// The mean round trip at which Redis counts as down (`REDIS_SLOW_MS`; zero: never).
    pub fn slow_threshold(&self) -> Duration {
        self.inner.latency.threshold()
    }

    /// Runs `command` on the shared connection if the breaker is closed, bounded by the
    /// command time-out. A connection failure or time-out opens the breaker (logged once);
    /// the command is not retried.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisError>
    where
        F: FnOnce(RedisLink) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let manager = self.link().ok_or(RedisError::Disabled)?;
        if !self.is_connected() || self.inner.closed.load(Ordering::Acquire) {
            return Err(RedisError::Unavailable);
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.inner.command_timeout);
        let reply = tokio::time::timeout_at(deadline, command(manager)).await;
        if reply.is_ok() {
            self.inner.latency.record(started.elapsed());
        }
        match reply {
            Ok(Ok(value)) => Ok(value),
            // The cluster link's slot map names a node it has no connection to: the topology
            // moved (a planned failover, a node rejoining as a replica), not Redis away. The
            // command fails (its caller degrades as for any failure) and the link is rebuilt
            // from the seeds; the probe, within its period, tells whether the cluster is
            // really unusable. Opening the breaker here made a planned `CLUSTER FAILOVER`
            // count as an outage (flushing the in-process tier, deferring invalidations to
            // the outbox), found by a probe.
            Ok(Err(e)) if self.inner.cluster && is_stale_topology(&e) => {
                self.refresh_topology();
                Err(RedisError::Connection(e))
            }
            Ok(Err(e)) if is_connection_error(&e) => {
                self.mark_down(&e.to_string());
                Err(RedisError::Connection(e))
            }
            Ok(Err(e)) => {
                let e = RedisError::Command(e);
                if e.refused_write().is_some() {
                    self.inner.write_refusals.fetch_add(1, Ordering::Relaxed);
                    self.inner
                        .last_refusal_ms
                        .store(self.stamp_ms(), Ordering::Relaxed);
                }
                Err(e)
            }
            Err(_) => {
                self.mark_down("command timed out");
                Err(RedisError::Timeout)
            }
        }
    }

    /// Rebuilds the cluster link, at most once per [`TOPOLOGY_REFRESH_INTERVAL_MS`].
    fn refresh_topology(&self) {
        let now = self.stamp_ms();
        let last = self.inner.topology_rebuilt_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= TOPOLOGY_REFRESH_INTERVAL_MS;
        if due
            && self
                .inner
                .topology_rebuilt_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.rebuild_cluster_link();
        }
    }

    /// One tick of the background probe: a `PING`, and the verdicts on it (`latency.rs`).
    /// While the connection is up, the round trip may join the latency window, and a window
    /// whose mean reached the slow threshold (`REDIS_SLOW_MS`) marks the connection down.
    /// While it is down, the `PING` counts towards the recovery rule, which alone marks it
    /// up again.
    async fn probe(&self) {
        let was_up = self.is_connected();
        let answered = self.ping().await;
        let now = Instant::now();
        match answered {
            Ok(took) if was_up && self.is_connected() => {
                self.inner.latency.record_ping(took);
                if let Verdict::Slow(mean) = self.inner.latency.judge(now) {
                    self.mark_down(&format!(
                        "its round trips took {} ms on average over the last {} ms, at or \
                         above REDIS_SLOW_MS={}",
                        mean.as_millis(),
                        latency::WINDOW.as_millis(),
                        self.inner.latency.threshold().as_millis()
                    ));
                }
            }
            Ok(took) if !self.is_connected() && self.inner.latency.recovered(took, now) => {
                self.mark_up();
            }
            _ => {}
        }
    }

    /// Sends a real `PING` even while the breaker is open and returns its round-trip time.
    /// A failure opens the breaker. Success closes nothing: only the probe ends an outage,
    /// once Redis has answered fast on several of its ticks in a row (`latency.rs`); a
    /// `PING` from `/health` answering between two slow scripts closed it too often.
    ///
    /// A cluster that answers but is found unusable (a slot without a healthy master, a
    /// master reporting `cluster_state:fail`) opens the breaker once every probe for
    /// [`UNUSABLE_FOR`] has found it so: a planned failover passes through such states (a
    /// probe and a test saw a node report `fail` while its replica took over, for 0.6 s
    /// on a busy machine), and a real loss of a master is seen at once by the commands sent
    /// to it, which time out or are refused. (It was two probes in a row, 0.1 s apart at the
    /// tests' probe period: the planned-failover test failed now and then under load.)
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        match self.ping_inner().await {
            Ok(elapsed) => {
                self.inner.unusable_since_ms.store(0, Ordering::Relaxed);
                Ok(elapsed)
            }
            Err(Probe::Unusable(e)) => {
                let now = self.stamp_ms();
                let since = match self.inner.unusable_since_ms.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => now,
                    Err(since) => since,
                };
                let lasted = Duration::from_millis(now.saturating_sub(since));
                if lasted >= UNUSABLE_FOR || !self.is_connected() {
                    self.mark_down(&e.to_string());
                    self.rebuild_cluster_link();
                }
                Err(e)
            }
            Err(Probe::Failed(e)) => {
                self.inner.unusable_since_ms.store(0, Ordering::Relaxed);
                if e.is_unavailable() {
                    self.mark_down(&e.to_string());
                    self.rebuild_cluster_link();
                }
                Err(e)
            }
        }
    }

    async fn ping_inner(&self) -> Result<Duration, Probe> {
        let mut conn = self.link().ok_or(Probe::Failed(RedisError::Disabled))?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Probe::Failed(RedisError::Unavailable));
        }
        let started = Instant::now();
        let classify = |e: redis::RedisError| {
            if is_connection_error(&e) {
                RedisError::Connection(e)
            } else {
                RedisError::Command(e)
            }
        };
        let reply = tokio::time::timeout(self.inner.ping_timeout, async {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| {
                    // The link's slot map is behind the cluster's: see `run`.
                    if self.inner.cluster && is_stale_topology(&e) {
                        self.refresh_topology();
                        Probe::Unusable(classify(e))
                    } else {
                        Probe::Failed(classify(e))
                    }
                })?;
            let elapsed = started.elapsed();
            if let RedisLink::Cluster(cluster) = &mut conn {
                let stale = cluster_usable(cluster)
                    .await
                    .map_err(|e| Probe::Unusable(classify(e)))?;
                if stale {
                    self.refresh_topology();
                    // While the breaker is open, a master the link could not reach is not
                    // known to be alive: the next probe, on the rebuilt link, decides.
                    // Closing it here closed it, now and then, on a master that had just
                    // died and that the others did not see gone yet; its commands then
                    // timed out, a second outage for one failover (the failover test).
                    if !self.is_connected() {
                        return Err(Probe::Unusable(RedisError::Unavailable));
                    }
                }
            }
            Ok(elapsed)
        })
        .await;
        reply.unwrap_or(Err(Probe::Failed(RedisError::Timeout)))
    }

    fn mark_down(&self, reason: &str) {
        if self.inner.up.swap(false, Ordering::AcqRel) {
            self.inner.latency.went_down(Instant::now());
            // A command failed against the cluster: its slot map may point at a dead master.
            self.rebuild_cluster_link();
            self.inner.outages.fetch_add(1, Ordering::Relaxed);
            self.inner.changes.send_replace(false);
            tracing::warn!(
                "Redis connection lost ({reason}); running degraded until it is back ({})",
                self.inner.redacted_url
            );
        }
    }

    fn mark_up(&self) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        if !self.inner.up.swap(true, Ordering::AcqRel) {
            // The cluster is whole again: a link built while a master was failing over may
            // still map its slots to the dead node, so start from the topology of now.
            self.rebuild_cluster_link();
            self.inner.changes.send_replace(true);
            tracing::info!("Redis connection is back ({})", self.inner.redacted_url);
        }
    }

    /// Stops the probe and degrades every later operation; the socket closes when the last
    /// handle is dropped. Called on shutdown.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.up.store(false, Ordering::Release);
        self.inner.changes.send_replace(false);
        let probe = self.inner.probe.lock().ok().and_then(|mut p| p.take());
        if let Some(probe) = probe {
            probe.abort();
            let _ = probe.await;
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("url", &self.inner.redacted_url)
            .field("enabled", &self.is_enabled())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// How a probe failed: Redis did not answer, or a cluster answered but is not usable.
enum Probe {
    Failed(RedisError),
    Unusable(RedisError),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(e) | Self::Unusable(e) => e.fmt(f),
        }
    }
}

/// Cluster commands rebuild the link at most this often for a stale slot map.
const TOPOLOGY_REFRESH_INTERVAL_MS: u64 = 250;

/// How long probes must find a cluster unusable before it counts as down (see
/// [`RedisConnection::ping`]).
const UNUSABLE_FOR: Duration = Duration::from_secs(1);

/// A cluster command whose slot map named a node the link has no connection to (redis-rs'
/// `ClusterConnectionNotFound` with the node's address): the topology moved under it.
pub(crate) fn is_stale_topology(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        && e.to_string().contains("Requested connection not found")
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
