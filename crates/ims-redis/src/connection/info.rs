//! Redis' own figures from `INFO`, summed over the masters of a cluster.

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
    pub(super) fn parse(text: &str) -> Self {
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

    pub(super) fn add(&mut self, other: &Self) {
        self.keys += other.keys;
        self.used_memory += other.used_memory;
        self.evicted_keys += other.evicted_keys;
        self.connected_clients += other.connected_clients;
    }
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
}
