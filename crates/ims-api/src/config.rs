//! Settings, read once at start from the environment (and a `.env` file, loaded by the
//! binary). Every variable of contract §1 is here; a bad value stops start-up with one line
//! naming the variable.

use std::net::SocketAddr;
use std::time::Duration;

pub use ims_redis::ConfigError;
use ims_redis::RedisConfig;
use rand::RngCore;

/// Upper bound of `HTTP_HEADER_TIMEOUT_MS` (one hour): a longer time-out defeats its purpose,
/// and hyper adds it to `Instant::now()`, which must not overflow.
const MAX_HEADER_TIMEOUT_MS: u64 = 3_600_000;

/// Upper bound of `HTTP_MAX_CONNECTIONS`; far above what a file-descriptor limit allows.
const MAX_CONNECTIONS: usize = 1_000_000;

/// A `requests/seconds` limit, as in `RATE_LIMIT_GLOBAL=100/60`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests admitted per window.
    pub requests: u32,
    /// Window length.
    pub window: Duration,
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `IMS_BIND`: listen address.
    pub bind: SocketAddr,
    /// `DATABASE_URL`: `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// `REDIS_*`.
    pub redis: RedisConfig,
    /// `JWT_SECRET`, or a random one generated at start.
    pub jwt_secret: String,
    /// True when the secret was generated: tokens die with the process.
    pub jwt_secret_generated: bool,
    /// A `TRUST_PROXY` value that is neither `true`, `false` nor a number: the header is
    /// ignored, as contract §1 says, and start-up warns that the value means nothing.
    pub trust_proxy_ignored: Option<String>,
    /// `ACCESS_TOKEN_TTL`.
    pub access_token_ttl: Duration,
    /// `REFRESH_TOKEN_TTL`.
    pub refresh_token_ttl: Duration,
    /// `RATE_LIMIT_GLOBAL`.
    pub rate_limit_global: RateLimit,
    /// `RATE_LIMIT_AUTH`.
    pub rate_limit_auth: RateLimit,
    /// `RATE_LIMIT_USER`: per authenticated user, over all routes and addresses.
    pub rate_limit_user: RateLimit,
    /// `RATE_LIMIT_ENABLED=false` turns rate limiting off (benchmarks, or a gateway that
    /// limits already).
    pub rate_limit_enabled: bool,
    /// `TRUST_PROXY` and `TRUSTED_PROXIES`: how far `X-Forwarded-For` is trusted (see
    /// [`crate::client_ip`]).
    pub proxy_trust: crate::client_ip::ProxyTrust,
    /// `LOG_FORMAT=json`: one JSON object per log line.
    pub log_json: bool,
    /// `CACHE_TTL_JITTER`: entries live between (1 - jitter) and 1 times their TTL.
    pub cache_ttl_jitter: f64,
    /// `HTTP_HEADER_TIMEOUT_MS`: how long a connection may take to send a request's headers,
    /// and how long a keep-alive connection may sit idle between requests (one timer in
    /// hyper; see `docs/http.md`).
    pub http_header_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open connections at most. `None` (unset): derived at start from
    /// the file-descriptor limit, see [`crate::serve::max_connections`].
    pub http_max_connections: Option<usize>,
    /// `CACHE_L1_MAX_BYTES` and `CACHE_L1_MAX_STALE_MS`: the in-process cache tier.
    pub cache_l1: ims_redis::cache::L1Settings,
    /// `CACHE_OUTBOX` (default `true`): record invalidations in SQL so none is lost to a
    /// crash or a partition (`docs/caching.md`); `false` for a single instance that wants
    /// no extra insert per write.
    pub cache_outbox: bool,
    /// `CACHE_WARM_INTERVAL` (seconds; `None` for `0`, the default): how often one
    /// instance warms recently active organizations' dashboards.
    pub cache_warm_interval: Option<Duration>,
    /// `REDIS_CACHE_URL`: a separate Redis for response-cache entries (run it
    /// `volatile-lru`); `None`: the main Redis holds them.
    pub redis_cache: Option<RedisConfig>,
    /// `REFRESH_REUSE_GRACE`: a rotated refresh token presented again this soon (and
    /// before its successor is used) gets the same new pair instead of revoking the
    /// session. Zero: off.
    pub refresh_reuse_grace: Duration,
    /// `SESSION_MAX_AGE`: a session ends this long after login, however often refreshed.
    pub session_max_age: Duration,
    /// `SESSION_MAX_PER_USER`: live sessions a user may hold; a login past it ends the
    /// least recently used.
    pub session_max_per_user: u64,
    /// `CACHE_GRACE`: how long past its TTL a cached entry is kept to answer when the
    /// handler fails with a 5xx (`X-Cache: STALE`); zero: off.
    pub cache_grace: Duration,
    /// `CACHE_MAX_ENTRY_BYTES`: responses larger than this are served but not cached.
    pub cache_max_entry_bytes: usize,
    /// `REQUEST_TIMEOUT_MS`: a request running longer is answered 503.
    pub request_timeout: Duration,
    /// `CORS_ALLOWED_ORIGINS`: browser origins allowed to call the API (none by default).
    pub cors_allowed_origins: Vec<String>,
    /// `MIGRATE_ON_START`: apply migrations when the server starts (else `ims-api migrate`).
    pub migrate_on_start: bool,
    /// `DATABASE_MAX_CONNECTIONS`: the pool size (engine default when unset).
    pub database_max_connections: Option<u32>,
    /// `SHUTDOWN_DELAY_MS`: after SIGTERM, keep serving (with `/health/ready` at 503) this
    /// long before closing the listener, so a load balancer stops sending first.
    pub shutdown_delay: Duration,
}

/// Parses a whole number of `var` within `range`, or the default when unset.
fn bounded(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    var,
                    format!(
                        "{v:?} (expected a whole number, {} to {})",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let redis = RedisConfig::from_lookup(&lookup)?;
        let bind = match get("IMS_BIND") {
            Some(v) => listen_address(v.trim())
                .map_err(|e| ConfigError::new("IMS_BIND", format!("{v:?}: {e}")))?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        };
        let database_url = get("DATABASE_URL").unwrap_or_else(|| "sqlite://ims.db?mode=rwc".into());
        crate::db::Backend::from_url(&database_url).ok_or_else(|| {
            ConfigError::new(
                "DATABASE_URL",
                format!("unknown scheme in {database_url:?} (expected sqlite:// or postgres://)"),
            )
        })?;
        let trust_proxy = get("TRUST_PROXY");
        let hops = trust_proxy_hops(trust_proxy.as_deref());
        let (jwt_secret, jwt_secret_generated) = match get("JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    "must be at least 32 characters",
                ))
            }
            Some(secret) => (secret, false),
            None => {
                let mut bytes = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                (hex::encode(bytes), true)
            }
        };
        let redis_cache = match get("REDIS_CACHE_URL") {
            None => None,
            Some(url) => {
                let url = url.trim().to_string();
                let scheme = url.split("://").next().unwrap_or_default();
                if !matches!(scheme, "redis" | "rediss") || !url.contains("://") {
                    return Err(ConfigError::new(
                        "REDIS_CACHE_URL",
                        format!("unknown scheme in {url:?} (expected redis:// or rediss://)"),
                    ));
                }
                Some(RedisConfig {
                    url: Some(url),
                    cluster_nodes: Vec::new(),
                    ..redis.clone()
                })
            }
        };
        // A directive the filter cannot read used to be dropped in silence (the default filter
        // then ran instead of what was asked for; found by a probe).
        if let Some(filter) = get("RUST_LOG") {
            if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&filter) {
                return Err(ConfigError::new("RUST_LOG", format!("{filter:?}: {e}")));
            }
        }
        Ok(Self {
            bind,
            database_url,
            redis,
            jwt_secret,
            jwt_secret_generated,
            access_token_ttl: seconds(&get, "ACCESS_TOKEN_TTL", 900)?,
            refresh_token_ttl: seconds(&get, "REFRESH_TOKEN_TTL", 604_800)?,
            rate_limit_global: rate_limit(&get, "RATE_LIMIT_GLOBAL", 100, 60)?,
            rate_limit_auth: rate_limit(&get, "RATE_LIMIT_AUTH", 5, 900)?,
            rate_limit_user: rate_limit(&get, "RATE_LIMIT_USER", 1000, 3600)?,
            trust_proxy_ignored: trust_proxy.filter(|_| hops.is_none()),
            proxy_trust: crate::client_ip::ProxyTrust {
                hops: hops.unwrap_or(0),
                networks: match get("TRUSTED_PROXIES") {
                    None => Vec::new(),
                    Some(list) => list
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(|n| {
                            n.parse::<ipnet::IpNet>()
                                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                                .map_err(|_| {
                                    ConfigError::new(
                                        "TRUSTED_PROXIES",
                                        format!("{n:?} is not a CIDR network or address"),
                                    )
                                })
                        })
                        .collect::<Result<_, _>>()?,
                },
            },
            rate_limit_enabled: boolean(&get, "RATE_LIMIT_ENABLED", true)?,
            cache_ttl_jitter: match get("CACHE_TTL_JITTER") {
                None => 0.05,
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|j| (0.0..=0.5).contains(j))
                    .ok_or_else(|| {
                        ConfigError::new("CACHE_TTL_JITTER", format!("{v:?} (expected 0 to 0.5)"))
                    })?,
            },
            http_header_timeout: match get("HTTP_HEADER_TIMEOUT_MS") {
                None => Duration::from_secs(10),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=MAX_HEADER_TIMEOUT_MS).contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "HTTP_HEADER_TIMEOUT_MS",
                            format!("{v:?} (expected milliseconds, 1 to {MAX_HEADER_TIMEOUT_MS})"),
                        )
                    })?,
            },
            cache_outbox: boolean(&get, "CACHE_OUTBOX", true)?,
            cache_warm_interval: match bounded(&get, "CACHE_WARM_INTERVAL", 0, 0..=86_400)? {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
            cache_l1: ims_redis::cache::L1Settings {
                max_bytes: bounded(&get, "CACHE_L1_MAX_BYTES", 64 * 1024 * 1024, 0..=(1 << 40))?,
                max_stale: Duration::from_millis(bounded(
                    &get,
                    "CACHE_L1_MAX_STALE_MS",
                    1000,
                    0..=3_600_000,
                )?),
            },
            http_max_connections: match get("HTTP_MAX_CONNECTIONS") {
                None => None,
                Some(v) => Some(
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
                        .ok_or_else(|| {
                            ConfigError::new(
                                "HTTP_MAX_CONNECTIONS",
                                format!("{v:?} (expected a number, 1 to {MAX_CONNECTIONS})"),
                            )
                        })?,
                ),
            },
            redis_cache,
            cache_grace: Duration::from_secs(bounded(&get, "CACHE_GRACE", 3600, 0..=7 * 86_400)?),
            cache_max_entry_bytes: bounded(
                &get,
                "CACHE_MAX_ENTRY_BYTES",
                ims_redis::cache::DEFAULT_MAX_ENTRY_BYTES as u64,
                1..=(1 << 30),
            )? as usize,
            refresh_reuse_grace: Duration::from_secs(bounded(
                &get,
                "REFRESH_REUSE_GRACE",
                10,
                0..=300,
            )?),
            session_max_age: Duration::from_secs(bounded(
                &get,
                "SESSION_MAX_AGE",
                30 * 24 * 3600,
                1..=10 * 365 * 24 * 3600,
            )?),
            session_max_per_user: bounded(&get, "SESSION_MAX_PER_USER", 100, 1..=100_000)?,
            request_timeout: Duration::from_millis(bounded(
                &get,
                "REQUEST_TIMEOUT_MS",
                30_000,
                1..=3_600_000,
            )?),
            cors_allowed_origins: match get("CORS_ALLOWED_ORIGINS") {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(|o| {
                        let origin = o.trim_end_matches('/');
                        // Scheme, host and port only: a browser's `Origin` never has a path,
                        // so one written with a path would never match.
                        let host = origin
                            .strip_prefix("http://")
                            .or_else(|| origin.strip_prefix("https://"));
                        let valid = host.is_some_and(|host| {
                            !host.is_empty() && !host.contains(['/', '?', '#', '@', ' '])
                        }) && axum::http::HeaderValue::from_str(origin).is_ok();
                        if valid {
                            Ok(origin.to_string())
                        } else {
                            Err(ConfigError::new(
                                "CORS_ALLOWED_ORIGINS",
                                format!("{o:?} is not an origin (e.g. https://app.example.com)"),
                            ))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            },
            migrate_on_start: boolean(&get, "MIGRATE_ON_START", true)?,
            database_max_connections: match get("DATABASE_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(bounded(&get, "DATABASE_MAX_CONNECTIONS", 8, 1..=1000)? as u32),
            },
            shutdown_delay: Duration::from_millis(bounded(
                &get,
                "SHUTDOWN_DELAY_MS",
                0,
                0..=600_000,
            )?),
            log_json: match get("LOG_FORMAT").as_deref() {
                None | Some("text") | Some("pretty") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        "LOG_FORMAT",
                        format!("{other:?} (expected text or json)"),
                    ))
                }
            },
        })
    }
}

/// `host:port` as an address to listen on: an IP literal, or a name resolved once now
/// (`localhost:3000`; a probe found names refused), its first address.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    use std::net::ToSocketAddrs;
    let mut resolved = text.to_socket_addrs().map_err(|e| e.to_string())?;
    resolved
        .next()
        .ok_or_else(|| "the name resolves to no address".to_string())
}

fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match get(var) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(ConfigError::new(
                var,
                format!("{v:?} is not a number of seconds from 1 to {MAX_SECONDS} (ten years)"),
            )),
        },
    }
}

/// The longest duration any variable takes, in seconds: ten years. Token lifetimes and
/// rate-limit windows are added to clocks and counted in micro- or milliseconds; without a
/// bound, a value near `u64::MAX` wrapped (every access token born expired) or overflowed
/// (a panic on every login), and a huge window turned the limiter off.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

fn rate_limit(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    requests: u32,
    window: u64,
) -> Result<RateLimit, ConfigError> {
    let Some(v) = get(var) else {
        return Ok(RateLimit {
            requests,
            window: Duration::from_secs(window),
        });
    };
    let parsed = v.trim().split_once('/').and_then(|(r, w)| {
        let r = r.trim().parse::<u32>().ok().filter(|r| *r > 0)?;
        let w = w
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|w| (1..=MAX_SECONDS).contains(w))?;
        Some(RateLimit {
            requests: r,
            window: Duration::from_secs(w),
        })
    });
    parsed.ok_or_else(|| {
        ConfigError::new(
            var,
            format!(
                "{v:?} (expected requests/seconds, e.g. 100/60; at most {MAX_SECONDS} seconds)"
            ),
        )
    })
}

fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::new(var, format!("{v:?} is not a boolean"))),
    }
}

/// `TRUST_PROXY` as contract §1 reads it: `true` is one trusted proxy, a number that many
/// hops, anything else (`false` included) none: the header is ignored. `None` for a value
/// that is neither `true`, `false` nor a number, which start-up warns about (it used to be
/// refused; `yes` had once meant one proxy, found by a probe). Hops past 16 are read as 16:
/// no deployment has more, and the client is then the leftmost entry or the peer anyway.
fn trust_proxy_hops(value: Option<&str>) -> Option<usize> {
    let Some(value) = value.map(|v| v.trim().to_ascii_lowercase()) else {
        return Some(0);
    };
    match value.as_str() {
        "true" => Some(1),
        "false" | "" => Some(0),
        n => n.parse::<u64>().ok().map(|n| n.min(16) as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_listen_address_may_name_its_host() {
        let s = settings(&[("IMS_BIND", "localhost:4000")]).expect("a host name");
        assert!(s.bind.ip().is_loopback(), "{}", s.bind);
        assert_eq!(s.bind.port(), 4000);
        let s = settings(&[("IMS_BIND", "0.0.0.0:4001")]).expect("an address");
        assert_eq!(s.bind.to_string(), "0.0.0.0:4001");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(s.database_url, "sqlite://ims.db?mode=rwc");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(604_800));
        assert_eq!(s.rate_limit_global.requests, 100);
        assert_eq!(s.rate_limit_auth.window, Duration::from_secs(900));
        assert_eq!(
            (s.rate_limit_user.requests, s.rate_limit_user.window),
            (1000, Duration::from_secs(3600))
        );
        assert!(s.jwt_secret_generated && s.jwt_secret.len() == 64);
        assert_eq!(s.proxy_trust, crate::client_ip::ProxyTrust::default());
        assert_eq!(s.http_header_timeout, Duration::from_secs(10));
        assert_eq!(s.http_max_connections, None);
    }

    #[test]
    fn durations_past_ten_years_and_origins_with_paths_are_refused() {
        for (var, value) in [
            ("ACCESS_TOKEN_TTL", "18446744073709551615"),
            ("REFRESH_TOKEN_TTL", "9223372036854775807"),
            ("RATE_LIMIT_GLOBAL", "3/18446744073709551615"),
            ("RATE_LIMIT_USER", "3/315360001"),
            ("CORS_ALLOWED_ORIGINS", "https://a.com/path"),
            ("CORS_ALLOWED_ORIGINS", "https://"),
        ] {
            let error = settings(&[(var, value)])
                .err()
                .unwrap_or_else(|| panic!("{var}={value}"));
            assert!(error.to_string().contains(var), "{error}");
        }
        let s = settings(&[
            ("REFRESH_TOKEN_TTL", "315360000"),
            ("RATE_LIMIT_GLOBAL", "3/315360000"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://a.com/, http://localhost:5173",
            ),
        ])
        .expect("at the bounds");
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(315_360_000));
        assert_eq!(
            s.cors_allowed_origins,
            ["https://a.com", "http://localhost:5173"]
        );
    }

    #[test]
    fn http_settings_parse() {
        let s = settings(&[
            ("HTTP_HEADER_TIMEOUT_MS", "1500"),
            ("HTTP_MAX_CONNECTIONS", "20"),
        ])
        .expect("parses");
        assert_eq!(s.http_header_timeout, Duration::from_millis(1500));
        assert_eq!(s.http_max_connections, Some(20));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("IMS_BIND", "nowhere"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_PORT", "x"),
            ("ACCESS_TOKEN_TTL", "-5"),
            ("REFRESH_TOKEN_TTL", "soon"),
            ("RATE_LIMIT_GLOBAL", "100"),
            ("RATE_LIMIT_AUTH", "5/0"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("JWT_SECRET", "short"),
            ("LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,[bad"),
            ("RUST_LOG", "info,sqlx=verbose"),
            ("CACHE_TTL_JITTER", "0.9"),
            ("HTTP_HEADER_TIMEOUT_MS", "0"),
            ("HTTP_HEADER_TIMEOUT_MS", "10s"),
            ("HTTP_HEADER_TIMEOUT_MS", "18446744073709551615"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_CONNECTIONS", "-1"),
            ("HTTP_MAX_CONNECTIONS", "many"),
            ("CACHE_L1_MAX_BYTES", "-1"),
            ("CACHE_L1_MAX_STALE_MS", "1s"),
            ("CACHE_WARM_INTERVAL", "-5"),
        ] {
            let e = settings(&[(var, value)]).expect_err(var);
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().starts_with(&format!("invalid {var}")));
        }
    }

    #[test]
    fn rate_limits_parse() {
        let s = settings(&[("RATE_LIMIT_AUTH", "10/30")]).expect("parses");
        assert_eq!(
            s.rate_limit_auth,
            RateLimit {
                requests: 10,
                window: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn trust_proxy_other_than_true_or_a_number_ignores_the_header() {
        assert_eq!(trust_proxy_hops(None), Some(0));
        assert_eq!(trust_proxy_hops(Some("true")), Some(1));
        assert_eq!(trust_proxy_hops(Some(" TRUE ")), Some(1));
        assert_eq!(trust_proxy_hops(Some("false")), Some(0));
        assert_eq!(trust_proxy_hops(Some("2")), Some(2));
        assert_eq!(trust_proxy_hops(Some("17")), Some(16));
        for other in ["yes", "on", "perhaps", "-1", "1.5"] {
            assert_eq!(trust_proxy_hops(Some(other)), None, "{other}");
            let s = Settings::from_lookup(|k| (k == "TRUST_PROXY").then(|| other.to_string()))
                .expect("starts");
            assert_eq!(s.proxy_trust.hops, 0, "{other}");
            assert_eq!(s.trust_proxy_ignored.as_deref(), Some(other));
        }
    }
}
