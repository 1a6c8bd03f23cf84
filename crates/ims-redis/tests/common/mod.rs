//! Set-up shared by the integration tests that run against a Redis Cluster.

use std::time::Duration;

use ims_redis::RedisConfig;
use ims_testkit::RedisCluster;

/// A configuration for `cluster` with the tests' key prefix (`test:`) and a fast probe.
pub fn cluster_config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        cluster_nodes: cluster.seeds().split(',').map(String::from).collect(),
        key_prefix: "test:".into(),
        probe_interval: Duration::from_millis(100),
        ..RedisConfig::default()
    }
}
