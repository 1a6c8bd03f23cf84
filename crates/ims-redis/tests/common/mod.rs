//! Set-up shared by the integration tests: a configuration and a connected service for a
//! private redis-server or a Redis Cluster, with the tests' key prefix (`test:`) and a fast
//! probe. Each test crate uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use ims_redis::{RedisConfig, RedisConnection, RedisService};
use ims_testkit::{RedisCluster, RedisServer};

/// A configuration for `cluster` with the tests' key prefix (`test:`) and a fast probe.
pub fn cluster_config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        cluster_nodes: cluster.seeds().split(',').map(String::from).collect(),
        key_prefix: "test:".into(),
        probe_interval: Duration::from_millis(100),
        ..RedisConfig::default()
    }
}

/// A configuration for the single `server`.
pub fn config_for(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        url: Some(server.url()),
        key_prefix: "test:".into(),
        probe_interval: Duration::from_millis(100),
        ..RedisConfig::default()
    }
}

/// A service connected to `server` (asserted connected).
pub async fn service_for(server: &RedisServer) -> RedisService {
    let config = config_for(server);
    let connection = RedisConnection::connect(config.clone()).await;
    assert!(connection.is_connected(), "fresh server must be reachable");
    RedisService::new(connection, config.key_prefix)
}
