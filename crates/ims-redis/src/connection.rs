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
//! cluster mode the probe also asks `CLUSTER INFO`: Redis counts as up only while the
//! cluster reports `cluster_state:ok` (every slot served).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{RedisConfig, RedisError};

/// The multiplexed connection commands run on: one server, or a cluster. Cheap to clone;
/// implements [`ConnectionLike`], so commands, pipelines and scripts take it as they are.
#[derive(Clone)]
pub enum RedisLink {
    /// One Redis server (or its TLS endpoint).
    Single(ConnectionManager),
    /// A Redis Cluster; commands are routed by their keys' slots.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisLink {
    /// The `host:port` of every master of the cluster, from `CLUSTER NODES`, and whether
    /// the cluster has marked it failed; `None` on a single server.
    pub async fn masters(&mut self) -> Option<redis::RedisResult<Vec<((String, u16), bool)>>> {
        let Self::Cluster(cluster) = self else {
            return None;
        };
        let nodes = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into));
        Some(nodes.map(|text| parse_masters(&text)))
    }

    /// Sends `cmd` to `node` (`host:port` of a cluster node), or to the server (`None`, or a
    /// single-server link).
    pub async fn on_node(
        &mut self,
        cmd: redis::Cmd,
        node: Option<&(String, u16)>,
    ) -> redis::RedisResult<redis::Value> {
        match (self, node) {
            (Self::Cluster(c), Some((host, port))) => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(route)).await
            }
            (link, _) => cmd.query_async(link).await,
        }
    }
}

/// The masters, from `CLUSTER NODES` text (lines
/// `<id> <ip:port@bus[,host]> <flags> <master> <ping> <pong> <epoch> <state> <slots…>`),
/// each with whether it is flagged failed (`fail` or `fail?`).
fn parse_masters(text: &str) -> Vec<((String, u16), bool)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") {
                return None;
            }
            let failed = flags.split(',').any(|f| f.starts_with("fail"));
            let address = fields.get(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(((host.to_string(), port.parse().ok()?), failed))
        })
        .collect()
}

/// Figures from Redis' `INFO`, as operators read them (seed 003's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisInfo {
    /// Keys in every database (`# Keyspace`).
    pub keys: u64,
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `evicted_keys` since the server started.
    pub evicted_keys: u64,
    /// `connected_clients`.
    pub connected_clients: u64,
}

impl RedisInfo {
    fn parse(text: &str) -> Self {
        let mut info = Self::default();
        for line in text.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            let number = || value.trim().parse::<u64>().unwrap_or(0);
            match name {
                "used_memory" => info.used_memory = number(),
                "evicted_keys" => info.evicted_keys = number(),
                "connected_clients" => info.connected_clients = number(),
                db if db.starts_with("db") => {
                    info.keys += value
                        .split(',')
                        .find_map(|field| field.strip_prefix("keys="))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
        info
    }

    fn add(&mut self, other: &Self) {
        self.keys += other.keys;
        self.used_memory += other.used_memory;
        self.evicted_keys += other.evicted_keys;
        self.connected_clients += other.connected_clients;
    }
}

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
    /// Publishes every state change, for subsystems that must react to recovery.
    changes: watch::Sender<bool>,
    command_timeout: Duration,
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
                changes: watch::channel(false).0,
                command_timeout: config.command_timeout,
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
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.closed.load(Ordering::Acquire) {
                    break;
                }
                let _ = RedisConnection { inner }.ping().await;
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
        let Ok(Some(masters)) = self
            .run(|mut c| async move { c.masters().await.transpose() })
            .await
        else {
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

    /// The configured bound on one command's round trip.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
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
        match tokio::time::timeout(self.inner.command_timeout, command(manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_connection_error(&e) => {
                self.mark_down(&e.to_string());
                Err(RedisError::Connection(e))
            }
            Ok(Err(e)) => Err(RedisError::Command(e)),
            Err(_) => {
                self.mark_down("command timed out");
                Err(RedisError::Timeout)
            }
        }
    }

    /// Sends a real `PING` even while the breaker is open and returns its round-trip time.
    /// Success closes the breaker, failure opens it; this is how outages end.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        match self.ping_inner().await {
            Ok(elapsed) => {
                self.mark_up();
                Ok(elapsed)
            }
            Err(e) => {
                if e.is_unavailable() {
                    self.mark_down(&e.to_string());
                    self.rebuild_cluster_link();
                }
                Err(e)
            }
        }
    }

    async fn ping_inner(&self) -> Result<Duration, RedisError> {
        let mut conn = self.link().ok_or(RedisError::Disabled)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(RedisError::Unavailable);
        }
        let started = Instant::now();
        let reply = tokio::time::timeout(self.inner.ping_timeout, async {
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            let elapsed = started.elapsed();
            if let RedisLink::Cluster(cluster) = &mut conn {
                cluster_usable(cluster).await?;
            }
            Ok::<_, redis::RedisError>(elapsed)
        })
        .await;
        match reply {
            Ok(Ok(elapsed)) => Ok(elapsed),
            Ok(Err(e)) if is_connection_error(&e) => Err(RedisError::Connection(e)),
            Ok(Err(e)) => Err(RedisError::Command(e)),
            Err(_) => Err(RedisError::Timeout),
        }
    }

    fn mark_down(&self, reason: &str) {
        if self.inner.up.swap(false, Ordering::AcqRel) {
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

/// A lazily connecting single-server link.
fn single_link(config: &RedisConfig) -> Option<RedisLink> {
    redis::Client::open(config.connection_url())
        .and_then(|client| {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.command_timeout))
                // Reconnection is driven by the probe; a long retry schedule inside the
                // manager would only make callers wait.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(200));
            ConnectionManager::new_lazy_with_config(client, manager_config)
        })
        .map_err(|e| tracing::error!("Redis client could not be created: {e}"))
        .ok()
        .map(RedisLink::Single)
}

/// A lazily connecting cluster link. No retries: redis-rs would otherwise retry a command
/// against a dead master (up to 16 times, with back-off) while the request waits; here it
/// fails at once, the breaker opens, and the request degrades. Slot maps are refreshed by
/// redis-rs after connection errors and `MOVED` replies, so a promoted replica is found
/// without restarting.
fn cluster_link(config: &RedisConfig) -> Option<RedisLink> {
    let cluster_config = redis::cluster::ClusterConfig::new()
        .set_connection_timeout(config.connect_timeout)
        .set_response_timeout(config.command_timeout);
    redis::cluster::ClusterClientBuilder::new(config.cluster_urls())
        .retries(0)
        .build()
        .map(|client| client.get_pending_async_connection_with_config(cluster_config))
        .map_err(|e| tracing::error!("Redis Cluster client could not be created: {e}"))
        .ok()
        .map(RedisLink::Cluster)
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

/// Fails unless the cluster (asked at a random node) reports `cluster_state:ok` and every
/// master it lists as healthy answers a `PING`: with a slot unserved, Redis Cluster refuses
/// commands anyway, and answering them as misses at once beats sending each to a dead
/// master and waiting out the command time-out. The second check matters in the first
/// `cluster-node-timeout` after a master dies, while the survivors still report `ok`.
async fn cluster_usable(cluster: &mut ClusterConnection) -> redis::RedisResult<()> {
    let nodes: String = redis::from_redis_value(
        cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?,
    )?;
    // Every slot must be served by a master not flagged failed: between a master's `fail`
    // flag and its replica's promotion, some survivors may still report `cluster_state:ok`.
    if served_slots(&nodes) < 16_384 {
        return Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "not every slot has a healthy master",
        )));
    }
    for ((host, port), failed) in parse_masters(&nodes) {
        if failed {
            continue;
        }
        let route = SingleNodeRoutingInfo::ByAddress { host, port };
        cluster
            .route_command(redis::cmd("PING"), RoutingInfo::SingleNode(route))
            .await?;
    }
    let info: String = redis::from_redis_value(
        cluster
            .route_command(
                redis::cmd("CLUSTER").arg("INFO").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?,
    )?;
    if info.lines().any(|l| l.trim() == "cluster_state:ok") {
        Ok(())
    } else {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the cluster reports cluster_state:fail",
        )))
    }
}

/// How many slots masters not flagged failed serve, from `CLUSTER NODES` text (slot fields
/// `0-5460` or `5461`; migration markers `[…]` are not ownership).
fn served_slots(text: &str) -> u32 {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let healthy_master = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f.starts_with("fail"));
            healthy_master.then(|| {
                fields
                    .iter()
                    .skip(8)
                    .filter(|f| !f.starts_with('['))
                    .filter_map(|range| match range.split_once('-') {
                        Some((a, b)) => Some(b.parse::<u32>().ok()? + 1 - a.parse::<u32>().ok()?),
                        None => range.parse::<u32>().ok().map(|_| 1),
                    })
                    .sum::<u32>()
            })
        })
        .sum()
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_figures_are_read_and_summed() {
        let text = "# Clients\r\nconnected_clients:7\r\n# Memory\r\nused_memory:1024\r\n\
                    # Stats\r\nevicted_keys:3\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\n\
                    db1:keys=5,expires=0,avg_ttl=0\r\n";
        let mut info = RedisInfo::parse(text);
        assert_eq!(
            info,
            RedisInfo {
                keys: 15,
                used_memory: 1024,
                evicted_keys: 3,
                connected_clients: 7
            }
        );
        info.add(&RedisInfo::parse(text));
        assert_eq!(info.keys, 30);
    }

    #[test]
    fn only_healthy_masters_count_towards_served_slots() {
        let whole = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
c3 127.0.0.1:7002@17002 master - 0 0 3 connected 5461-10922 [10923->-x]
e5 127.0.0.1:7004@17004 master - 0 0 5 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
";
        assert_eq!(served_slots(whole), 16_384);
        let failing = whole.replace("master - 0 0 5", "master,fail - 0 0 5");
        assert_eq!(served_slots(&failing), 10_923);
    }

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected
c3 127.0.0.1:7002@17002,host.example master - 0 0 3 connected 5461-10922
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
";
        assert_eq!(
            parse_masters(text),
            [
                (("127.0.0.1".to_string(), 7000), false),
                (("127.0.0.1".to_string(), 7001), true),
                (("127.0.0.1".to_string(), 7002), false),
            ]
        );
    }
}
