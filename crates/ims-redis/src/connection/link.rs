//! The link commands run on: one server (redis-rs' `ConnectionManager`) or a Redis Cluster
//! (its async cluster connection), behind one type, and what cluster mode needs on top:
//! the masters, routing to one node, and the probe's test of a usable cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::RedisConfig;

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

/// A lazily connecting single-server link.
pub(super) fn single_link(config: &RedisConfig) -> Option<RedisLink> {
    redis::Client::open(config.connection_url())
        .and_then(|client| {
            // No response time-out of redis-rs': `RedisConnection::run` (and every other
            // caller of the link) bounds each use by the command time-out already, and a
            // second timer per command cost every cached hit a timer-wheel insert and
            // removal for nothing.
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(None)
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
pub(super) fn cluster_link(config: &RedisConfig) -> Option<RedisLink> {
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

/// Fails unless every slot has a master not flagged failed, and every such master answers
/// and reports `cluster_state:ok`: with a slot unserved, Redis Cluster refuses commands
/// anyway, and answering them as misses at once beats sending each to a dead master and
/// waiting out the command time-out. Asking each master matters twice: in the first
/// `cluster-node-timeout` after a master dies the survivors still report `ok` (the dead
/// one does not answer), and a master can report `fail` while the others report `ok` (a
/// probe left one with stale slot-migration marks; it refused its own slots). Asking one
/// node at random made the answer flip with the node asked, twice a second, each flip
/// flushing the in-process tier and logging a line.
///
/// A master the link has no connection to yet (its slot map predates a failover that
/// promoted it) is skipped, and `Ok(true)` asks the caller to rebuild the link: commands to
/// its slots fail at once the same way, so nothing waits on it, and the cluster's own
/// view (the slot count above) already says it serves its slots.
pub(super) async fn cluster_usable(cluster: &mut ClusterConnection) -> redis::RedisResult<bool> {
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
    let mut stale = false;
    for ((host, port), failed) in parse_masters(&nodes) {
        if failed {
            continue;
        }
        let route = SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port,
        };
        let reply = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("INFO").clone(),
                RoutingInfo::SingleNode(route),
            )
            .await;
        let info: String = match reply {
            Err(e) if super::is_stale_topology(&e) => {
                stale = true;
                continue;
            }
            reply => redis::from_redis_value(reply?)?,
        };
        if !reports_ok(&info) {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("the cluster reports cluster_state:fail at {host}:{port}"),
            )));
        }
    }
    Ok(stale)
}

/// Whether `CLUSTER INFO` text says the node considers the cluster usable.
fn reports_ok(info: &str) -> bool {
    info.lines().any(|l| l.trim() == "cluster_state:ok")
}

/// How many slots healthy masters serve, from `CLUSTER NODES` text (slot fields `0-5460` or
/// `5461`; migration markers `[…]` are not ownership). Healthy: not flagged failed, and its
/// link to the node asked is `connected`. A master that died is flagged `fail` only after
/// `cluster-node-timeout`, but its cluster-bus link drops at once; counting it until the
/// flag came made the probe call a cluster with a dead master usable, the breaker closed
/// every half second and each command to the dead slots waited out its time-out (a
/// black-box probe saw six outages logged for one failover).
fn served_slots(text: &str) -> u32 {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let healthy_master = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f.starts_with("fail"))
                && fields.get(7) == Some(&"connected");
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Dead but not yet flagged: its link is down.
        let dead = whole.replace("0 0 5 connected", "0 0 5 disconnected");
        assert_eq!(served_slots(&dead), 10_923);
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
