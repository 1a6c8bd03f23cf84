//! A real local Redis Cluster (3 masters, 3 replicas) for integration tests.
//!
//! [`RedisCluster::start`] runs six private `redis-server` processes on free loopback ports
//! (each also needs its cluster-bus port, `port + 10000`), joins them with
//! `redis-cli --cluster create`, and returns only once the cluster is fully formed: every node
//! reports `cluster_state:ok` and every replica is in sync with its master, so a test can kill a
//! master straight away and watch a replica take over. The node timeout is 1 s, so a failover
//! takes a couple of seconds.
//!
//! Polling speaks RESP directly over a short-lived TCP connection (no client crate needed);
//! only the cluster creation shells out to `redis-cli`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Number of nodes: 3 masters, each with 1 replica.
const NODES: usize = 6;
/// The cluster bus listens on the client port plus this offset.
const BUS_OFFSET: u16 = 10_000;
/// How long to wait for the cluster to form, fail over or take a node back.
const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(50);

/// A private Redis Cluster of 3 masters and 3 replicas on loopback. All six processes are
/// killed, and their directory removed, when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// One `redis-server` of the cluster.
#[derive(Debug)]
struct Node {
    port: u16,
    /// Behind a lock so a test can kill and restart nodes through a shared reference.
    child: Mutex<Option<Child>>,
    /// When [`RedisCluster::kill_master`] killed it, to time the failover from the crash.
    killed_at: Mutex<Option<Instant>>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The master's node id for a replica, `-` for a master.
    master: String,
    /// Whether it serves at least one slot.
    has_slots: bool,
}

impl NodeLine {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Marked failing, for sure (`fail`) or only in this node's opinion (`fail?`).
    fn failing(&self) -> bool {
        self.has("fail") || self.has("fail?")
    }
}

impl RedisCluster {
    /// Starts six fresh, empty, non-persistent `redis-server` processes in cluster mode on free
    /// ports, creates the cluster with `redis-cli --cluster create … --cluster-replicas 1`, and
    /// waits until it is healthy (`cluster_state:ok` on every node, every replica's
    /// `master_link_status:up`). Panics when `redis-server`/`redis-cli` are not installed or the
    /// cluster does not form within 30 s.
    pub fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let ports = free_cluster_ports();
            match Self::spawn_all(ports) {
                Ok(cluster) => {
                    cluster.create();
                    cluster.wait_until_formed();
                    return cluster;
                }
                // Another process took one of the ports between the check and the start.
                Err(error) => last_error = error,
            }
        }
        panic!("could not start the Redis Cluster nodes: {last_error}");
    }

    fn spawn_all(ports: Vec<u16>) -> Result<Self, String> {
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).expect("create the Redis Cluster directory");
        let cluster = Self {
            dir,
            nodes: ports
                .into_iter()
                .map(|port| Node {
                    port,
                    child: Mutex::new(None),
                    killed_at: Mutex::new(None),
                })
                .collect(),
        };
        // Start all six first, then wait for them, so their start-up overlaps.
        for node in &cluster.nodes {
            node.spawn(&cluster.dir);
        }
        for node in &cluster.nodes {
            node.wait_until_up()?;
        }
        // On error `cluster` is dropped here, killing the nodes already started.
        Ok(cluster)
    }

    fn create(&self) {
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && !stdout.contains("[ERR]"),
            "redis-cli --cluster create failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Polls until every node sees the same healthy 3 + 3 topology.
    fn wait_until_formed(&self) {
        let mut last = String::from("no answer yet");
        let formed = poll_until(|| {
            for port in self.ports() {
                if let Err(why) = self.node_is_settled(port) {
                    last = format!("node {port}: {why}");
                    return false;
                }
            }
            true
        });
        if !formed {
            panic!(
                "the Redis Cluster on ports {:?} did not become healthy within {DEADLINE:?}; \
                 last problem: {last}",
                self.ports()
            );
        }
    }

    /// Whether one node reports `cluster_state:ok`, knows all six nodes (3 masters with slots,
    /// 3 replicas, none failing or still in handshake), and, if it is a replica, is in sync.
    fn node_is_settled(&self, port: u16) -> Result<(), String> {
        let info = command(port, &["CLUSTER", "INFO"])?;
        if field(&info, "cluster_state") != Some("ok") {
            return Err(format!("CLUSTER INFO:\n{info}"));
        }
        let nodes = command(port, &["CLUSTER", "NODES"])?;
        let lines = parse_nodes(&nodes);
        let healthy =
            |l: &NodeLine| !l.failing() && !l.has("handshake") && !l.has("noaddr") && l.port != 0;
        let masters = lines
            .iter()
            .filter(|l| healthy(l) && l.has("master") && l.has_slots)
            .count();
        let replicas = lines
            .iter()
            .filter(|l| healthy(l) && l.has("slave") && l.master != "-")
            .count();
        if lines.len() != NODES || masters != NODES / 2 || replicas != NODES / 2 {
            return Err(format!("CLUSTER NODES:\n{nodes}"));
        }
        let replication = command(port, &["INFO", "replication"])?;
        if field(&replication, "role") == Some("slave")
            && field(&replication, "master_link_status") != Some("up")
        {
            return Err(format!("INFO replication:\n{replication}"));
        }
        Ok(())
    }

    /// `127.0.0.1:p1,…,127.0.0.1:p6`: all six nodes, the value for `REDIS_CLUSTER_NODES`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client ports of all six nodes, running or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the current masters, ascending, as `CLUSTER NODES` of the first running
    /// node that answers reports them, leaving out nodes flagged `fail`/`fail?` and nodes this
    /// harness has killed (which the cluster only notices after the node timeout).
    pub fn masters(&self) -> Vec<u16> {
        self.ports_with_role("master")
    }

    /// The ports of the current replicas, ascending; see [`RedisCluster::masters`].
    pub fn replicas(&self) -> Vec<u16> {
        self.ports_with_role("slave")
    }

    fn ports_with_role(&self, role: &str) -> Vec<u16> {
        let lines = self.cluster_nodes();
        let mut ports: Vec<u16> = lines
            .iter()
            .filter(|l| l.has(role) && !l.failing() && self.is_running(l.port))
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// `CLUSTER NODES` of the first running node that answers.
    fn cluster_nodes(&self) -> Vec<NodeLine> {
        let mut errors = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match command(node.port, &["CLUSTER", "NODES"]) {
                Ok(text) => return parse_nodes(&text),
                Err(error) => errors.push(format!("{}: {error}", node.port)),
            }
        }
        panic!("no Redis Cluster node answers CLUSTER NODES: {errors:?}");
    }

    /// Kills (SIGKILL) the first of [`RedisCluster::masters`], like a crash, and returns its
    /// port.
    pub fn kill_master(&self) -> u16 {
        let port = *self
            .masters()
            .first()
            .expect("the Redis Cluster has no running master");
        self.node(port).kill();
        port
    }

    /// Waits until the cluster has recovered from the crash of the node on `killed`: every
    /// running node marks it `fail`, reports `cluster_state:ok` again, and sees three healthy
    /// masters with slots (so one of its replicas has been promoted). Returns the time since
    /// [`RedisCluster::kill_master`] killed it (or since this call, for a node killed another
    /// way). Panics after 30 s.
    pub fn wait_for_failover(&self, killed: u16) -> Duration {
        let node = self.node(killed);
        let since = node
            .killed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unwrap_or_else(Instant::now);
        let mut last = String::from("no answer yet");
        let recovered = poll_until(|| match self.failed_over(killed) {
            Ok(()) => true,
            Err(why) => {
                last = why;
                false
            }
        });
        if !recovered {
            panic!(
                "the Redis Cluster did not fail over from the crash of {killed} within \
                 {DEADLINE:?}; last problem: {last}"
            );
        }
        since.elapsed()
    }

    fn failed_over(&self, killed: u16) -> Result<(), String> {
        for port in self.ports().into_iter().filter(|&p| self.is_running(p)) {
            let info =
                command(port, &["CLUSTER", "INFO"]).map_err(|e| format!("node {port}: {e}"))?;
            let text =
                command(port, &["CLUSTER", "NODES"]).map_err(|e| format!("node {port}: {e}"))?;
            let lines = parse_nodes(&text);
            let dead_marked = lines.iter().any(|l| l.port == killed && l.has("fail"));
            let masters = lines
                .iter()
                .filter(|l| l.has("master") && l.has_slots && !l.failing() && l.port != killed)
                .count();
            if !dead_marked || masters != NODES / 2 || field(&info, "cluster_state") != Some("ok") {
                return Err(format!(
                    "node {port}: CLUSTER INFO:\n{info}\nCLUSTER NODES:\n{text}"
                ));
            }
        }
        Ok(())
    }

    /// Starts the killed node on `port` again with its old `nodes.conf`, so it rejoins under its
    /// old identity and, its slots having moved, becomes a replica of the promoted node. Waits
    /// until it is an in-sync replica and no node flags anyone as failing. Panics after 30 s.
    pub fn restart_node(&self, port: u16) {
        let node = self.node(port);
        assert!(!node.is_running(), "node {port} is still running");
        node.spawn(&self.dir);
        if let Err(error) = node.wait_until_up() {
            panic!("node {port} did not restart: {error}");
        }
        *node
            .killed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        let mut last = String::from("no answer yet");
        let back = poll_until(|| {
            let all_running = self.nodes.iter().all(Node::is_running);
            for p in self.ports().into_iter().filter(|&p| self.is_running(p)) {
                // With all six running again, the full health check applies.
                let settled = if all_running {
                    self.node_is_settled(p)
                } else {
                    self.node_rejoined(p, port)
                };
                if let Err(why) = settled {
                    last = format!("node {p}: {why}");
                    return false;
                }
            }
            let replication = command(port, &["INFO", "replication"]);
            match replication {
                Ok(r) if field(&r, "role") == Some("slave") => true,
                Ok(r) => {
                    last = format!("node {port}: INFO replication:\n{r}");
                    false
                }
                Err(e) => {
                    last = format!("node {port}: {e}");
                    false
                }
            }
        });
        if !back {
            panic!("node {port} did not rejoin the Redis Cluster within {DEADLINE:?}; {last}");
        }
    }

    /// For a partly running cluster: `node` reports `cluster_state:ok`, and sees `rejoined` as
    /// a healthy node; a replica is in sync.
    fn node_rejoined(&self, node: u16, rejoined: u16) -> Result<(), String> {
        let info = command(node, &["CLUSTER", "INFO"])?;
        let text = command(node, &["CLUSTER", "NODES"])?;
        let seen = parse_nodes(&text)
            .iter()
            .any(|l| l.port == rejoined && !l.failing() && l.has("slave"));
        if !seen || field(&info, "cluster_state") != Some("ok") {
            return Err(format!("CLUSTER INFO:\n{info}\nCLUSTER NODES:\n{text}"));
        }
        let replication = command(node, &["INFO", "replication"])?;
        if field(&replication, "role") == Some("slave")
            && field(&replication, "master_link_status") != Some("up")
        {
            return Err(format!("INFO replication:\n{replication}"));
        }
        Ok(())
    }

    /// Whether the node on `port` is running (not killed by this harness).
    pub fn is_running(&self, port: u16) -> bool {
        self.node(port).is_running()
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this Redis Cluster"))
    }

    /// The node id of the node on `port`, as in `CLUSTER NODES`.
    pub fn node_id(&self, port: u16) -> String {
        self.cluster_nodes()
            .into_iter()
            .find(|l| l.port == port)
            .map(|l| l.id)
            .unwrap_or_else(|| panic!("no node on port {port} in CLUSTER NODES"))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(&self, dir: &Path) {
        let port = self.port.to_string();
        let config = dir.join(format!("nodes-{port}.conf"));
        let log = dir.join(format!("redis-{port}.log"));
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
            ])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &config.to_string_lossy()])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--appendonly", "no", "--save", ""])
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(["--dir", &dir.to_string_lossy()])
            .args(["--logfile", &log.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        *self.child() = Some(child);
    }

    /// Waits until the freshly spawned process answers PING.
    fn wait_until_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if command(self.port, &["PING"]).is_ok_and(|pong| pong == "PONG") {
                return Ok(());
            }
            let exited = matches!(
                self.child().as_mut().map(|c| c.try_wait()),
                Some(Ok(Some(_)))
            );
            if exited {
                *self.child() = None;
                return Err(format!("redis-server on port {} exited", self.port));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("redis-server on port {} did not answer", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reap it.
    fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
            *self
                .killed_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        }
    }

    fn is_running(&self) -> bool {
        self.child().is_some()
    }
}

/// Six distinct loopback ports below 55536 whose bus ports (`+ 10000`) were free a moment ago.
/// Both listeners of every pick stay bound until all six are chosen, so no port comes twice.
fn free_cluster_ports() -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if ports.len() == NODES {
            return ports;
        }
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port >= u16::MAX - BUS_OFFSET {
            continue;
        }
        if let Ok(bus) = TcpListener::bind(("127.0.0.1", port + BUS_OFFSET)) {
            ports.push(port);
            held.push(listener);
            held.push(bus);
        }
    }
    if ports.len() == NODES {
        return ports;
    }
    panic!("could not find {NODES} free port pairs (port, port + {BUS_OFFSET})");
}

/// A fresh directory name under the system temp dir, unique per process and per cluster.
fn unique_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ims-redis-cluster-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Calls `check` every [`POLL`] until it returns true (then true) or [`DEADLINE`] passes
/// (then false).
fn poll_until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends one command to the node on `port` over a fresh connection and returns the reply:
/// the text of a simple string, integer or bulk string. Errors, nil and arrays are `Err`.
fn command(port: u16, args: &[&str]) -> Result<String, String> {
    let timeout = Duration::from_secs(2);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("set timeouts: {e}"))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or("connection closed")?;
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| format!("bad reply {line:?}"))?;
            let len = usize::try_from(len).map_err(|_| "nil reply".to_owned())?;
            let mut body = vec![0; len + 2];
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("read: {e}"))?;
            body.truncate(len);
            String::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// The value of `name:value` in an `INFO`-style reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot> …`.
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()
                .and_then(|address| address.rsplit(':').next())
                .and_then(|port| port.parse().ok())
                .unwrap_or(0);
            Some(NodeLine {
                id: fields[0].to_owned(),
                port,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master: fields[3].to_owned(),
                has_slots: fields.len() > 8,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002 master,fail - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        let lines = parse_nodes(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].port, 30004);
        assert!(lines[0].has("slave") && !lines[0].has_slots);
        assert!(lines[1].failing() && lines[1].has_slots);
        assert!(lines[2].has("master") && lines[2].has("myself"));
        assert_eq!(lines[0].master, lines[2].id);
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(field(info, "cluster_state"), Some("ok"));
        assert_eq!(field(info, "cluster_slots"), None);
    }
}
