//! Test harness shared by the workspace's integration tests.
//!
//! Each test gets its own `redis-server` process on a free loopback port, so tests can stop,
//! restart and flush it without disturbing one another or the machine's shared Redis.
//! [`RedisCluster`] runs a whole local Redis Cluster (3 masters, 3 replicas) the same way.

mod cluster;

pub use cluster::RedisCluster;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reads a rate limiter's Redis log as `LRANGE key 0 -1` returned it (`#{total}`, then runs
/// `{stamp}:{count}`, a bare stamp being a run of one): the admissions it counts and its
/// number of runs, after checking that the head is the sum of the runs and that stamps
/// never decrease. An empty list counts nothing.
pub fn limiter_log(items: &[String]) -> (u64, u64) {
    let Some((head, runs)) = items.split_first() else {
        return (0, 0);
    };
    let total: u64 = head
        .strip_prefix('#')
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("head {head:?}"));
    let mut sum = 0;
    let mut last = 0_u64;
    for run in runs {
        let (stamp, count) = run.split_once(':').unwrap_or((run, "1"));
        let stamp: u64 = stamp.parse().expect("stamp");
        assert!(stamp >= last, "stamps never decrease: {items:?}");
        last = stamp;
        sum += count.parse::<u64>().expect("count");
    }
    assert_eq!(total, sum, "head is the sum of the runs: {items:?}");
    (total, runs.len() as u64)
}

/// A private `redis-server` process. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// Behind a lock so a test can stop and restart the server through a shared reference
    /// while other tasks use the app that owns it.
    child: Mutex<Option<Child>>,
    /// Serve TLS only (no plain-text port), with a certificate from a private test CA.
    tls: bool,
}

impl RedisServer {
    /// Starts a fresh, empty, non-persistent `redis-server` on a free port and waits until it
    /// accepts connections. Panics when `redis-server` is not installed.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Like [`RedisServer::start`], but the server speaks only TLS, with a certificate for
    /// `localhost` signed by a fresh CA whose certificate is at [`RedisServer::ca_file`].
    /// Needs the `openssl` command.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("ims-redis-{port}-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let server = Self {
                port,
                dir,
                child: Mutex::new(None),
                tls,
            };
            if tls {
                server.make_certificates();
            }
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(&self) -> bool {
        let mut command = Command::new("redis-server");
        if self.tls {
            let file = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", &file("server.crt")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.crt")])
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        *self.child() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            let exited = matches!(
                self.child().as_mut().map(|c| c.try_wait()),
                Some(Ok(Some(_)))
            );
            if exited {
                *self.child() = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`, or `rediss://localhost:{port}` for a TLS server.
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// The PEM certificate of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn make_certificates(&self) {
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("the openssl command must be installed for TLS tests");
            assert!(status.success(), "openssl {args:?} failed");
        };
        std::fs::write(
            self.dir.join("san.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write san.cnf");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=ims-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ]);
    }

    /// Kills the process (an abrupt outage, like a crash) and waits until the port is closed.
    pub fn stop(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (it keeps nothing on disk).
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing answers, as in a
    /// network partition. Its data survives, unlike [`RedisServer::stop`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = self.child().as_ref() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }

    /// Makes the server slow without failing anything: a `redis-cli` runs Lua scripts that
    /// spin for `ms` milliseconds each, back to back, so every other client's command waits
    /// behind one (up to `ms`), until the returned guard is dropped. Plain-text servers only.
    pub fn slow_down(&self, ms: u64) -> Busy {
        const SPIN: &str = "local t = redis.call('TIME') \
            local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000 \
            repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop \
            return 1";
        let child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "-r", "-1", "EVAL", SPIN, "0"])
            .arg(ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli (apt-get install redis-tools)");
        Busy(child)
    }
}

/// Keeps a [`RedisServer`] slow while it lives (see [`RedisServer::slow_down`]).
#[derive(Debug)]
pub struct Busy(Child);

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused process ignores SIGKILL until it is continued on some systems' ptrace
        // setups; continuing first is harmless otherwise.
        self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
