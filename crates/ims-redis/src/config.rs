//! Connection settings, read from the conventional `REDIS_*` environment variables.
//!
//! Parsing takes a lookup function instead of reading the process environment directly, so
//! that applications can layer `.env` files or tests can pass a map. Every error names the
//! variable that is wrong, because a bad value must stop start-up with one clear line.

use std::time::Duration;

/// Settings for [`crate::RedisConnection`] and [`crate::RedisService`].
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Full connection URL (`redis://` or `rediss://` for TLS). When set it wins over the
    /// host, port, password and database fields.
    pub url: Option<String>,
    /// Host name used when no URL is given.
    pub host: String,
    /// Port used when no URL is given.
    pub port: u16,
    /// `AUTH` password used when no URL is given; empty means none.
    pub password: String,
    /// Logical database index used when no URL is given.
    pub db: i64,
    /// Prefix prepended to every key the service writes, e.g. `ims:`.
    pub key_prefix: String,
    /// `false` means never connect: every operation returns its degraded default at once.
    pub enabled: bool,
    /// Seed nodes for Redis Cluster mode (`host:port`), empty for a single server.
    pub cluster_nodes: Vec<String>,
    /// Upper bound on one command's round trip. Kept small because a slow Redis must cost a
    /// request no more than a cache miss would.
    pub command_timeout: Duration,
    /// Upper bound on establishing one TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How often the background probe pings Redis to notice outages and recoveries.
    pub probe_interval: Duration,
    /// The mean command round trip over half a second at which Redis counts as down, as
    /// for an outage, so that a slow Redis holds up no request; zero: never.
    pub slow_threshold: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            host: "localhost".into(),
            port: 6379,
            password: String::new(),
            db: 0,
            key_prefix: "ims:".into(),
            enabled: true,
            cluster_nodes: Vec::new(),
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_millis(500),
            slow_threshold: Duration::from_millis(50),
        }
    }
}

/// A configuration value that could not be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: String,
    /// What is wrong with its value.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `var` with a human-readable `message`.
    pub fn new(var: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }
}

impl RedisConfig {
    /// Reads `REDIS_URL`, `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`, `REDIS_DB`,
    /// `REDIS_KEY_PREFIX`, `REDIS_ENABLED`, `REDIS_CLUSTER_NODES`,
    /// `REDIS_COMMAND_TIMEOUT_MS`, `REDIS_CONNECT_TIMEOUT_MS` and `REDIS_SLOW_MS` through
    /// `lookup`; unset or empty variables keep their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::default();
        if let Some(url) = get("REDIS_URL") {
            let scheme = url.split("://").next().unwrap_or_default();
            if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") || !url.contains("://")
            {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    format!("unknown scheme in {url:?} (expected redis:// or rediss://)"),
                ));
            }
            redis::Client::open(url.as_str())
                .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
            config.url = Some(url);
        }
        if let Some(host) = get("REDIS_HOST") {
            config.host = host;
        }
        if let Some(port) = get("REDIS_PORT") {
            config.port = parse("REDIS_PORT", &port)?;
            if config.port == 0 {
                return Err(ConfigError::new(
                    "REDIS_PORT",
                    "0 is not a port".to_string(),
                ));
            }
        }
        if let Some(password) = lookup("REDIS_PASSWORD") {
            config.password = password;
        }
        if let Some(db) = get("REDIS_DB") {
            config.db = parse("REDIS_DB", &db)?;
            if config.db < 0 {
                return Err(ConfigError::new("REDIS_DB", format!("{db:?} is negative")));
            }
            // Redis numbers its databases with an `int`; past it `SELECT` always fails and
            // the server would run "Redis unreachable" for good.
            if config.db > i64::from(i32::MAX) {
                return Err(ConfigError::new(
                    "REDIS_DB",
                    format!("{db:?} (expected 0 to {})", i32::MAX),
                ));
            }
        }
        if let Some(prefix) = lookup("REDIS_KEY_PREFIX") {
            config.key_prefix = prefix;
        }
        if let Some(enabled) = get("REDIS_ENABLED") {
            config.enabled = parse_bool("REDIS_ENABLED", &enabled)?;
        }
        if let Some(nodes) = get("REDIS_CLUSTER_NODES") {
            config.cluster_nodes = nodes
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            // Set but naming no node (`,,`): a typo, not a request for a single server (it
            // fell back to `REDIS_URL`'s default, whatever answered on localhost; a probe).
            if config.cluster_nodes.is_empty() && !nodes.trim().is_empty() {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_NODES",
                    format!("{nodes:?} names no node (expected host:port, comma-separated)"),
                ));
            }
        }
        if let Some(ms) = get("REDIS_COMMAND_TIMEOUT_MS") {
            config.command_timeout = positive_millis("REDIS_COMMAND_TIMEOUT_MS", &ms)?;
        }
        if let Some(ms) = get("REDIS_CONNECT_TIMEOUT_MS") {
            config.connect_timeout = positive_millis("REDIS_CONNECT_TIMEOUT_MS", &ms)?;
        }
        if let Some(ms) = get("REDIS_SLOW_MS") {
            config.slow_threshold = match parse::<u64>("REDIS_SLOW_MS", &ms)? {
                ms @ 0..=MAX_TIMEOUT_MS => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::new(
                        "REDIS_SLOW_MS",
                        format!("{ms:?} (expected milliseconds, 0 to {MAX_TIMEOUT_MS}; 0: never)"),
                    ))
                }
            };
        }
        // The URL the fields make must be one (`REDIS_HOST='bad host!'` is not).
        if config.url.is_none()
            && config.cluster_nodes.is_empty()
            && redis::Client::open(config.connection_url().as_str()).is_err()
        {
            return Err(ConfigError::new(
                "REDIS_HOST",
                format!("{:?} does not make a Redis address", config.host),
            ));
        }
        // Checked here, with the scheme and password they take from the other variables: a
        // node that is no address would otherwise surface only at connect time, as a
        // server running without Redis.
        for (node, url) in config.cluster_nodes.iter().zip(config.cluster_urls()) {
            let port = node
                .rsplit_once(':')
                .map(|(_, port)| port.trim_end_matches('/'));
            let numbered = node.contains("://") || port.is_some_and(|p| p.parse::<u16>().is_ok());
            if !numbered || redis::Client::open(url.as_str()).is_err() {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_NODES",
                    format!("{node:?} is not a node address (expected host:port, comma-separated)"),
                ));
            }
        }
        Ok(config)
    }

    /// The URL the client connects to: `url` when set, else one built from the fields.
    pub fn connection_url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let auth = if self.password.is_empty() {
            String::new()
        } else {
            format!(":{}@", percent_encode(&self.password))
        };
        format!("redis://{auth}{}:{}/{}", self.host, self.port, self.db)
    }

    /// True when [`cluster_nodes`](Self::cluster_nodes) selects Redis Cluster mode.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// The URLs of the cluster's seed nodes. An entry that is already a `redis://` or
    /// `rediss://` URL is used as it is; a bare `host:port` takes the scheme of `REDIS_URL`
    /// (so `REDIS_URL=rediss://…` turns TLS on for the whole cluster) and the password of
    /// `REDIS_URL` or `REDIS_PASSWORD`. Cluster nodes have no databases, so none is set.
    pub fn cluster_urls(&self) -> Vec<String> {
        let (scheme, auth) = match &self.url {
            Some(url) => {
                let scheme = url.split("://").next().unwrap_or("redis").to_string();
                let auth = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.rsplit_once('@'))
                    .map(|(auth, _)| format!("{auth}@"))
                    .unwrap_or_default();
                (scheme, auth)
            }
            None => ("redis".to_string(), String::new()),
        };
        let auth = if auth.is_empty() && !self.password.is_empty() {
            format!(":{}@", percent_encode(&self.password))
        } else {
            auth
        };
        self.cluster_nodes
            .iter()
            .map(|node| {
                if node.contains("://") {
                    node.clone()
                } else {
                    format!("{scheme}://{auth}{node}")
                }
            })
            .collect()
    }

    /// The connection URL with any password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        if self.is_cluster() {
            return format!("cluster {}", self.cluster_nodes.join(","));
        }
        let url = self.connection_url();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
            }
            _ => url,
        }
    }
}

fn parse<T: std::str::FromStr>(var: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| ConfigError::new(var, format!("{value:?}: {e}")))
}

/// The longest Redis time-out accepted: a command or connection that may take longer would
/// hold every request that waits on it (contract §8: none may wait on a dead Redis), and a
/// probe set `u64::MAX` and saw every request wait 30 s for its own time-out instead.
const MAX_TIMEOUT_MS: u64 = 60_000;

fn positive_millis(var: &str, value: &str) -> Result<Duration, ConfigError> {
    match parse::<u64>(var, value)? {
        ms @ 1..=MAX_TIMEOUT_MS => Ok(Duration::from_millis(ms)),
        _ => Err(ConfigError::new(
            var,
            format!("{value:?} (expected milliseconds, 1 to {MAX_TIMEOUT_MS})"),
        )),
    }
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            var,
            format!("{value:?} is not a boolean (true or false)"),
        )),
    }
}

// A password may contain URL delimiters; the client parses the URL, so they must be escaped.
fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<RedisConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RedisConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = config(&[]).expect("defaults parse");
        assert_eq!(c.connection_url(), "redis://localhost:6379/0");
        assert_eq!(c.key_prefix, "ims:");
        assert!(c.enabled);
    }

    #[test]
    fn fields_build_the_url_and_url_wins() {
        let c = config(&[
            ("REDIS_HOST", "cache"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "p@ss:w/rd"),
            ("REDIS_DB", "2"),
        ])
        .expect("parses");
        assert_eq!(c.connection_url(), "redis://:p%40ss%3Aw%2Frd@cache:6380/2");
        assert_eq!(c.redacted_url(), "redis://***@cache:6380/2");
        let c = config(&[
            ("REDIS_URL", "rediss://:p%40ss@h:1/3"),
            ("REDIS_CLUSTER_NODES", "a:1, redis://b:2 ,"),
        ])
        .expect("parses");
        assert_eq!(c.cluster_urls(), ["rediss://:p%40ss@a:1", "redis://b:2"]);
        let c =
            config(&[("REDIS_CLUSTER_NODES", "a:1"), ("REDIS_PASSWORD", "pw")]).expect("parses");
        assert_eq!(c.cluster_urls(), ["redis://:pw@a:1"]);
        assert_eq!(c.redacted_url(), "cluster a:1");
        let c = config(&[("REDIS_URL", "rediss://h:1/3"), ("REDIS_HOST", "x")]).expect("parses");
        assert_eq!(c.connection_url(), "rediss://h:1/3");
        for (var, bad) in [
            ("REDIS_PORT", "0"),
            ("REDIS_DB", "-1"),
            ("REDIS_HOST", "bad host!"),
        ] {
            let error = config(&[(var, bad)]).expect_err(bad);
            assert!(error.to_string().contains(var), "{error}");
        }
        for bad in [":::", "foo:bar", "host", "a:1,b", "a:99999", ",,", " , "] {
            let error = config(&[("REDIS_CLUSTER_NODES", bad)]).expect_err(bad);
            assert!(error.to_string().contains("REDIS_CLUSTER_NODES"), "{error}");
        }
        assert!(config(&[("REDIS_CLUSTER_NODES", "10.0.0.1:7000,[::1]:7001")]).is_ok());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("REDIS_PORT", "sixty")]).expect_err("must fail");
        assert_eq!(e.var, "REDIS_PORT");
        let e = config(&[("REDIS_URL", "http://x")]).expect_err("must fail");
        assert_eq!(e.var, "REDIS_URL");
        let e = config(&[("REDIS_ENABLED", "maybe")]).expect_err("must fail");
        assert_eq!(e.var, "REDIS_ENABLED");
        assert!(
            !config(&[("REDIS_ENABLED", "false")])
                .expect("parses")
                .enabled
        );
        let e = config(&[("REDIS_COMMAND_TIMEOUT_MS", "0")]).expect_err("must fail");
        assert_eq!(e.var, "REDIS_COMMAND_TIMEOUT_MS");
        for (var, value) in [
            ("REDIS_COMMAND_TIMEOUT_MS", "18446744073709551615"),
            ("REDIS_CONNECT_TIMEOUT_MS", "60001"),
            ("REDIS_DB", "4294967296"),
            ("REDIS_SLOW_MS", "60001"),
            ("REDIS_SLOW_MS", "-1"),
        ] {
            let e = config(&[(var, value)]).expect_err("must fail");
            assert_eq!(e.var, var);
        }
        assert!(config(&[("REDIS_COMMAND_TIMEOUT_MS", "60000")]).is_ok());
        let slow = |value| config(&[("REDIS_SLOW_MS", value)]).map(|c| c.slow_threshold);
        assert_eq!(slow("0").expect("0 turns it off"), Duration::ZERO);
        assert_eq!(slow("120").expect("parses"), Duration::from_millis(120));
        assert_eq!(slow("").expect("empty"), Duration::from_millis(50));
    }
}
