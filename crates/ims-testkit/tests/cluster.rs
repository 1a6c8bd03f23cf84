//! Starts a real local Redis Cluster, writes through it, kills a master and watches the
//! failover.

use std::process::Command;
use std::time::Instant;

use ims_testkit::RedisCluster;

/// Runs `redis-cli -c -p <port> <args…>` (following MOVED redirects) and returns its output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-c", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(output.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn cluster_state(port: u16) -> String {
    redis_cli(port, &["cluster", "info"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_state:").map(str::to_owned))
        .expect("cluster_state in CLUSTER INFO")
}

#[test]
fn cluster_starts_serves_and_fails_over() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    println!("cluster started in {:?}", started.elapsed());

    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    let seeds = cluster.seeds();
    assert_eq!(seeds.split(',').count(), 6);
    assert!(seeds.starts_with("127.0.0.1:"), "{seeds}");
    assert_eq!(cluster.masters().len(), 3, "{:?}", cluster.masters());
    assert_eq!(cluster.replicas().len(), 3, "{:?}", cluster.replicas());

    // Write through one node, read through another: redis-cli follows the MOVED redirect.
    assert_eq!(redis_cli(ports[0], &["set", "{tag}a", "1"]), "OK");
    assert_eq!(redis_cli(ports[5], &["get", "{tag}a"]), "1");

    let killed = cluster.kill_master();
    assert!(!cluster.is_running(killed));
    assert!(!cluster.masters().contains(&killed));
    let took = cluster.wait_for_failover(killed);
    println!("failover of {killed} took {took:?}");

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    assert!(!masters.contains(&killed));
    for port in ports.iter().copied().filter(|&p| p != killed) {
        assert_eq!(cluster_state(port), "ok", "node {port}");
    }
    let survivor = masters[0];
    assert_eq!(redis_cli(survivor, &["set", "{tag}b", "2"]), "OK");
    assert_eq!(redis_cli(survivor, &["get", "{tag}b"]), "2");

    let restarted = Instant::now();
    cluster.restart_node(killed);
    println!("node {killed} rejoined in {:?}", restarted.elapsed());
    assert!(cluster.replicas().contains(&killed));
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
}

#[test]
fn dropping_the_cluster_kills_its_nodes() {
    let cluster = RedisCluster::start();
    let ports = cluster.ports();
    drop(cluster);
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "node {port} still listens"
        );
    }
}
