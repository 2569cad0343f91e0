//! Daemon configuration: `herald.toml`, then `HERALD_*` environment variables, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `herald serve` can be told. Every key may be overridden by the environment
/// variable `HERALD_<KEY>` (upper case), e.g. `HERALD_LISTEN=0.0.0.0:8088`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Store directory.
    pub data_dir: PathBuf,
    /// Policy files loaded on top of the built-in ones (a missing directory is fine).
    pub policies_dir: PathBuf,
    /// Bearer token for everything.
    pub admin_token: Option<String>,
    /// Bearer token for `/v1/messages` only.
    pub producer_token: Option<String>,
    /// Where operator notifications (`endpoint.disabled`) go.
    pub notify_url: Option<String>,
    /// Egress proxy for every delivery.
    pub proxy: Option<String>,
    /// Hosts reached directly despite `proxy` (comma-separated names, `.suffix`, IPs, CIDRs).
    pub no_proxy: Option<String>,
    /// Key sealing endpoint secrets at rest: base64 of 32 bytes. Without it, `secret.key` in
    /// the data directory is used (created with mode 0600 on first start).
    pub secret_key: Option<String>,
    /// Allow deliveries to loopback and private addresses (tests, trusted networks).
    pub allow_private_targets: bool,
    /// Private networks allowed all the same, e.g. `["10.1.2.0/24"]`
    /// (`HERALD_ALLOW_CIDRS=10.1.2.0/24,fd00::/64`).
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// `tracing` filter, e.g. `info` or `herald=debug`.
    pub log: String,
    /// How long attempts and finished messages are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// When housekeeping (the retention purge) runs: a cron expression with seconds, UTC.
    pub housekeeping_cron: String,
    /// Claimed deliveries over all endpoints, at most.
    pub max_in_flight: usize,
    /// Attempts in flight per endpoint, at most.
    pub endpoint_concurrency: usize,
    /// sled page cache in bytes.
    pub cache_bytes: u64,
    /// How long shutdown waits for attempts in flight (and, before that, for HTTP requests
    /// being answered).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A message no endpoint takes: `accept` (stored, and said so in the answer) or `reject`
    /// (422 `unrouted`, nothing stored).
    pub unrouted: crate::Unrouted,
    /// How long a client may take to send a request's head (request line and headers),
    /// counted from the connection's accept, or from the first byte of a request on a
    /// kept-alive connection. A connection that runs out of it is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body, counted from the end of its head;
    /// a slower one is answered 408 and the connection closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Client connections open at once, at most; further ones wait in the listen backlog
    /// until a connection closes.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            data_dir: PathBuf::from("./herald-data"),
            policies_dir: PathBuf::from("./policies"),
            admin_token: None,
            producer_token: None,
            notify_url: None,
            proxy: None,
            no_proxy: None,
            secret_key: None,
            allow_private_targets: false,
            allow_cidrs: Vec::new(),
            log: "info".into(),
            retention: Duration::from_secs(14 * 24 * 3600),
            housekeeping_cron: "0 17 3 * * *".into(),
            max_in_flight: 1024,
            endpoint_concurrency: 16,
            cache_bytes: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            unrouted: crate::Unrouted::Accept,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid (toml's message carries the line).
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An environment variable has a value of the wrong shape.
    #[error("{var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Why.
        reason: String,
    },
    /// The combination is unsafe (e.g. a public address without tokens).
    #[error("{0}")]
    Unsafe(String),
}

impl Config {
    /// Reads `path` (if given), then applies `HERALD_*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.check()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                var: var.to_string(),
                reason: e.to_string(),
            })
        }
        fn duration(var: &str, value: &str) -> Result<Duration, ConfigError> {
            humantime::parse_duration(value).map_err(|e| ConfigError::Env {
                var: var.to_string(),
                reason: e.to_string(),
            })
        }
        let optional = |value: String| (!value.is_empty()).then_some(value);
        for (var, key) in ENV_KEYS {
            let Some(value) = env(var) else { continue };
            match *key {
                "listen" => self.listen = parse(var, &value)?,
                "data_dir" => self.data_dir = PathBuf::from(value),
                "policies_dir" => self.policies_dir = PathBuf::from(value),
                "admin_token" => self.admin_token = optional(value),
                "producer_token" => self.producer_token = optional(value),
                "notify_url" => self.notify_url = optional(value),
                "proxy" => self.proxy = optional(value),
                "no_proxy" => self.no_proxy = optional(value),
                "secret_key" => self.secret_key = optional(value),
                "allow_private_targets" => self.allow_private_targets = parse(var, &value)?,
                "allow_cidrs" => {
                    self.allow_cidrs = value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| parse(var, v))
                        .collect::<Result<_, _>>()?
                }
                "log" => self.log = value,
                "retention" => self.retention = duration(var, &value)?,
                "housekeeping_cron" => self.housekeeping_cron = value,
                "max_in_flight" => self.max_in_flight = parse(var, &value)?,
                "endpoint_concurrency" => self.endpoint_concurrency = parse(var, &value)?,
                "cache_bytes" => self.cache_bytes = parse(var, &value)?,
                "shutdown_grace" => self.shutdown_grace = duration(var, &value)?,
                "unrouted" => {
                    self.unrouted = match value.as_str() {
                        "accept" => crate::Unrouted::Accept,
                        "reject" => crate::Unrouted::Reject,
                        other => {
                            return Err(ConfigError::Env {
                                var: var.to_string(),
                                reason: format!("must be accept or reject, not {other:?}"),
                            });
                        }
                    }
                }
                "header_read_timeout" => self.header_read_timeout = duration(var, &value)?,
                "body_read_timeout" => self.body_read_timeout = duration(var, &value)?,
                "idle_timeout" => self.idle_timeout = duration(var, &value)?,
                "max_connections" => self.max_connections = parse(var, &value)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses to serve a non-loopback address without tokens.
    fn check(&self) -> Result<(), ConfigError> {
        let open = self.admin_token.is_none() && self.producer_token.is_none();
        if open && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Unsafe(format!(
                "refusing to listen on {} without tokens: set HERALD_ADMIN_TOKEN (and \
                 HERALD_PRODUCER_TOKEN for producers), or listen on 127.0.0.1",
                self.listen
            )));
        }
        for (name, token) in [
            ("admin_token", &self.admin_token),
            ("producer_token", &self.producer_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(ConfigError::Unsafe(format!(
                    "{name} must be at least 16 characters"
                )));
            }
        }
        if self.secret_key.is_some() {
            self.secret_key_bytes()?;
        }
        if self.max_in_flight == 0 || self.endpoint_concurrency == 0 {
            return Err(ConfigError::Unsafe(
                "max_in_flight and endpoint_concurrency must be at least 1".into(),
            ));
        }
        for (name, timeout) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ConfigError::Unsafe(format!(
                    "{name} must be longer than zero"
                )));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::Unsafe(format!(
                "max_connections must be 1-{MAX_CONNECTIONS}"
            )));
        }
        Ok(())
    }
}

/// The largest `max_connections`: far above any file-descriptor limit, and small enough to
/// count in a semaphore.
const MAX_CONNECTIONS: usize = 1_000_000;

impl Config {
    /// The configured secret key, decoded.
    pub fn secret_key_bytes(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        use base64::Engine as _;
        let Some(text) = &self.secret_key else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| ConfigError::Unsafe(format!("secret_key is not base64: {e}")))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            ConfigError::Unsafe("secret_key must decode to exactly 32 bytes".into())
        })?;
        Ok(Some(key))
    }
}

/// Environment variables and the keys they override.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("HERALD_LISTEN", "listen"),
    ("HERALD_DATA_DIR", "data_dir"),
    ("HERALD_POLICIES_DIR", "policies_dir"),
    ("HERALD_ADMIN_TOKEN", "admin_token"),
    ("HERALD_PRODUCER_TOKEN", "producer_token"),
    ("HERALD_NOTIFY_URL", "notify_url"),
    ("HERALD_PROXY", "proxy"),
    ("HERALD_NO_PROXY", "no_proxy"),
    ("HERALD_SECRET_KEY", "secret_key"),
    ("HERALD_ALLOW_PRIVATE_TARGETS", "allow_private_targets"),
    ("HERALD_ALLOW_CIDRS", "allow_cidrs"),
    ("HERALD_LOG", "log"),
    ("HERALD_RETENTION", "retention"),
    ("HERALD_HOUSEKEEPING_CRON", "housekeeping_cron"),
    ("HERALD_MAX_IN_FLIGHT", "max_in_flight"),
    ("HERALD_ENDPOINT_CONCURRENCY", "endpoint_concurrency"),
    ("HERALD_CACHE_BYTES", "cache_bytes"),
    ("HERALD_SHUTDOWN_GRACE", "shutdown_grace"),
    ("HERALD_UNROUTED", "unrouted"),
    ("HERALD_HEADER_READ_TIMEOUT", "header_read_timeout"),
    ("HERALD_BODY_READ_TIMEOUT", "body_read_timeout"),
    ("HERALD_IDLE_TIMEOUT", "idle_timeout"),
    ("HERALD_MAX_CONNECTIONS", "max_connections"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(config.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(config.retention, Duration::from_secs(14 * 86400));
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nretention = \"7d\"\nlog = \"debug\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("HERALD_LISTEN", "127.0.0.1:9100"),
                ("HERALD_RETENTION", "1h"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.retention, Duration::from_secs(3600));
        assert_eq!(config.log, "debug");
    }

    #[test]
    fn unsafe_or_malformed_configurations_are_refused() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[("HERALD_LISTEN", "0.0.0.0:8088")], "without tokens"),
            (&[("HERALD_LISTEN", "nope")], "HERALD_LISTEN"),
            (&[("HERALD_RETENTION", "forever")], "HERALD_RETENTION"),
            (&[("HERALD_ADMIN_TOKEN", "short")], "at least 16"),
            (
                &[("HERALD_ALLOW_PRIVATE_TARGETS", "yes please")],
                "HERALD_ALLOW_PRIVATE_TARGETS",
            ),
            (&[("HERALD_MAX_IN_FLIGHT", "0")], "at least 1"),
            (
                &[("HERALD_ALLOW_CIDRS", "10.0.0.0/33")],
                "HERALD_ALLOW_CIDRS",
            ),
        ];
        for (vars, needle) in table {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
        let public_with_token = Config::load(
            None,
            env(&[
                ("HERALD_LISTEN", "0.0.0.0:8088"),
                ("HERALD_ADMIN_TOKEN", "0123456789abcdef"),
            ]),
        );
        assert!(public_with_token.is_ok());
    }

    #[test]
    fn connection_limits_come_from_the_file_and_the_environment() {
        let defaults = Config::load(None, env(&[])).unwrap();
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.body_read_timeout, Duration::from_secs(30));
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_connections, 512);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "header_read_timeout = \"5s\"\nidle_timeout = \"2m\"\nmax_connections = 64\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("HERALD_BODY_READ_TIMEOUT", "1m"),
                ("HERALD_MAX_CONNECTIONS", "128"),
            ]),
        )
        .unwrap();
        assert_eq!(config.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.body_read_timeout, Duration::from_secs(60));
        assert_eq!(config.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.max_connections, 128);

        let table: &[(&[(&str, &str)], &str)] = &[
            (
                &[("HERALD_HEADER_READ_TIMEOUT", "0s")],
                "header_read_timeout",
            ),
            (
                &[("HERALD_BODY_READ_TIMEOUT", "soon")],
                "HERALD_BODY_READ_TIMEOUT",
            ),
            (&[("HERALD_IDLE_TIMEOUT", "0s")], "idle_timeout"),
            (
                &[("HERALD_MAX_CONNECTIONS", "0")],
                "max_connections must be",
            ),
            (
                &[("HERALD_MAX_CONNECTIONS", "many")],
                "HERALD_MAX_CONNECTIONS",
            ),
        ];
        for (vars, needle) in table {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nlisten_adress = \"x\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("listen_adress"),
            "{err}"
        );
    }
}
