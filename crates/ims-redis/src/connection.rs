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

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{RedisConfig, RedisError};

/// A cheaply clonable handle to one multiplexed Redis connection with a circuit breaker.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when Redis is disabled or the URL could not be turned into a client.
    manager: Option<ConnectionManager>,
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
        if !config.cluster_nodes.is_empty() {
            tracing::warn!(
                "REDIS_CLUSTER_NODES is set but cluster mode is not supported yet; connecting to {}",
                config.redacted_url()
            );
        }
        // rustls needs a process-wide crypto provider for rediss:// URLs; another part of the
        // program may have installed one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let manager = redis::Client::open(config.connection_url())
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
            .ok();
        let connection = Self::from_parts(manager, &config);
        if connection.inner.manager.is_some() {
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

    fn from_parts(manager: Option<ConnectionManager>, config: &RedisConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                manager,
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
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let manager = self.inner.manager.as_ref().ok_or(RedisError::Disabled)?;
        if !self.is_connected() || self.inner.closed.load(Ordering::Acquire) {
            return Err(RedisError::Unavailable);
        }
        match tokio::time::timeout(self.inner.command_timeout, command(manager.clone())).await {
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
                }
                Err(e)
            }
        }
    }

    async fn ping_inner(&self) -> Result<Duration, RedisError> {
        let manager = self.inner.manager.as_ref().ok_or(RedisError::Disabled)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(RedisError::Unavailable);
        }
        let mut conn = manager.clone();
        let started = Instant::now();
        let reply = tokio::time::timeout(
            self.inner.ping_timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match reply {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) if is_connection_error(&e) => Err(RedisError::Connection(e)),
            Ok(Err(e)) => Err(RedisError::Command(e)),
            Err(_) => Err(RedisError::Timeout),
        }
    }

    fn mark_down(&self, reason: &str) {
        if self.inner.up.swap(false, Ordering::AcqRel) {
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

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
