//! Daemon configuration: one list of settings, read from defaults, then `herald.toml`, then
//! `HERALD_*` environment variables, then `herald serve --flags` (each overriding the one before).
//!
//! Every setting is declared once, in the `settings!` list at the bottom of this file: its
//! doc comment, type and default. From that one entry come the field of [`Config`], the
//! `HERALD_<KEY>` variable, the `--key` flag with its help (`herald serve --help`), and the row
//! of the README's configuration table (a test checks the README against [`markdown_table`]).
//! Adding a setting is adding an entry there.
//!
//! Merging is done by `figment`: defaults, the TOML file, the environment and the flags are
//! providers in that order. The file is also read by the `toml` crate first, which refuses
//! unknown keys and wrong types with the line they are on.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables: `HERALD_LISTEN` sets `listen`.
pub const ENV_PREFIX: &str = "HERALD_";

/// One setting as the outside world sees it: its key, variable, flag and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in `herald.toml`, e.g. `data_dir`.
    pub key: &'static str,
    /// The field's doc comment: what the setting means.
    pub doc: &'static str,
    /// Tokens and keys: their values are never shown (`--help` hides the environment's value).
    pub secret: bool,
}

impl Setting {
    /// `HERALD_DATA_DIR`.
    pub fn env_var(&self) -> String {
        format!("{ENV_PREFIX}{}", self.key.to_ascii_uppercase())
    }

    /// `data-dir`, as in `herald serve --data-dir`.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The doc comment on one line.
    pub fn meaning(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The default as it would be written in `herald.toml`; `None` when there is none.
    pub fn default_value(&self) -> Option<String> {
        let defaults = toml::Table::try_from(Config::default()).ok()?;
        match defaults.get(self.key)? {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Array(a) if a.is_empty() => None,
            other => Some(other.to_string()),
        }
    }

    /// Whether the setting is a yes/no switch (`--allow-private-targets` alone means true).
    pub fn is_switch(&self) -> bool {
        toml::Table::try_from(Config::default())
            .ok()
            .and_then(|t| t.get(self.key).map(toml::Value::is_bool))
            .unwrap_or(false)
    }
}

/// Declares [`Config`], its `Default`, and [`SETTINGS`] from one list.
///
/// Each entry: doc comment (required: it is the help text and the README's "meaning"), any
/// `#[serde(...)]` attributes, an optional `[secret]` marker, then `name: Type = default`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $(#[serde($($serde:tt)+)])*
        $([$secret:ident])?
        $name:ident: $ty:ty = $default:expr
    ),+ $(,)?) => {
        /// Everything `herald serve` can be told. See the module documentation for where each
        /// value may come from.
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)+)])*
                pub $name: $ty,
            )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($name: $default,)+ }
            }
        }

        /// Every setting, in the order of the README's table and of `herald serve --help`.
        pub const SETTINGS: &[Setting] = &[
            $(Setting {
                key: stringify!($name),
                doc: concat!($($doc, "\n"),+),
                secret: false $(|| !stringify!($secret).is_empty())?,
            },)+
        ];

        impl fmt::Debug for Config {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = f.debug_struct("Config");
                $(
                    let secret = false $(|| !stringify!($secret).is_empty())?;
                    if secret {
                        out.field(stringify!($name), &"<redacted>");
                    } else {
                        out.field(stringify!($name), &self.$name);
                    }
                )+
                out.finish()
            }
        }
    };
}

settings! {
    /// Address the API listens on (port 0: one the system picks, named by the `herald
    /// serving` log line). A non-loopback address needs `admin_token` or `producer_token`.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8088)),
    /// Store directory (created if missing).
    data_dir: PathBuf = PathBuf::from("./herald-data"),
    /// `sled` (embedded in `data_dir`, the default) or a `postgres://` URL: several nodes
    /// given the same URL form one cluster sharing one queue.
    [secret]
    store: String = "sled".into(),
    /// Extra policy files, loaded on top of the built-in ones (a missing directory is fine).
    policies_dir: PathBuf = PathBuf::from("./policies"),
    /// Bearer token for everything (at least 16 characters).
    [secret]
    admin_token: Option<String> = None,
    /// Bearer token for `/v1/messages` only (at least 16 characters).
    [secret]
    producer_token: Option<String> = None,
    /// Where operator notifications such as `endpoint.disabled` go (through herald's own
    /// queue, policy `herald-notify`).
    notify_url: Option<String> = None,
    /// Egress proxy for every delivery, e.g. `http://proxy:3128`.
    [secret]
    proxy: Option<String> = None,
    /// Hosts reached directly despite `proxy`: names, `.suffix`, IPs, CIDRs, comma-separated
    /// (still checked by the SSRF guard).
    no_proxy: Option<String> = None,
    /// Base64 of 32 bytes sealing endpoint secrets at rest; without it `secret.key` (mode 0600)
    /// is created in the data directory.
    [secret]
    secret_key: Option<String> = None,
    /// Allow deliveries to loopback and private addresses: turns the SSRF guard off (local
    /// testing, trusted networks).
    allow_private_targets: bool = false,
    /// Private networks allowed all the same, comma-separated: `10.1.2.0/24,fd00::/64`.
    #[serde(deserialize_with = "comma_separated")]
    allow_cidrs: Vec<ipnet::IpNet> = Vec::new(),
    /// Log filter (`tracing` syntax): `info`, `debug`, `herald=debug,info`. Lines about one
    /// message or attempt name its `message_id`, `delivery_id` and `endpoint_id`; the
    /// per-message `accept` and `attempt` spans are `debug` level, so `herald=debug` also
    /// prefixes every line with them.
    log: String = "info,tokio_cron_scheduler=warn,sqlx::postgres::notice=warn".into(),
    /// Finished messages, attempts and daily stats older than this are purged.
    #[serde(with = "humantime_serde")]
    retention: Duration = Duration::from_secs(14 * 24 * 3600),
    /// When the purge runs: cron with seconds, UTC.
    housekeeping_cron: String = "0 17 3 * * *".into(),
    /// Claimed deliveries over all endpoints, at most.
    max_in_flight: usize = 1024,
    /// Attempts in flight per endpoint, at most.
    endpoint_concurrency: usize = 16,
    /// How much lower the delivery threads' CPU priority is than the API's, in Linux `nice`
    /// steps (0–19). On a saturated machine producers' messages are then accepted at nearly
    /// full speed and deliveries catch up afterwards: at 10 a delivery thread gets about a
    /// tenth of what a normal thread gets while both want the CPU, and all of an idle one.
    /// 0: equal shares.
    delivery_niceness: u8 = 10,
    /// Store page cache in bytes.
    cache_bytes: u64 = 64 * 1024 * 1024,
    /// How long SIGTERM waits for HTTP requests being answered, then for attempts in flight.
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration = Duration::from_secs(10),
    /// A message no endpoint takes: `accept` (stored; the answer carries `unrouted` with the
    /// reason, `herald_messages_unrouted_total` counts it, a warning is logged once per tenant)
    /// or `reject` (422 `unrouted`, nothing stored).
    unrouted: crate::Unrouted = crate::Unrouted::Accept,
    /// OTLP/HTTP collector that spans are exported to (`{otlp_endpoint}/v1/traces`), e.g.
    /// `http://collector:4318`; unset: no exporter runs.
    otlp_endpoint: Option<String> = None,
    /// A request's head (request line and headers) must arrive within this, counted from
    /// accept or from the request's first byte on a kept-alive connection; otherwise the
    /// connection is closed.
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration = Duration::from_secs(10),
    /// A request body must arrive within this after its head; otherwise `408 request_timeout`
    /// and the connection is closed.
    #[serde(with = "humantime_serde")]
    body_read_timeout: Duration = Duration::from_secs(30),
    /// A kept-alive connection waiting this long for its next request is closed.
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration = Duration::from_secs(60),
    /// Client connections open at once; further ones wait in the listen backlog until one
    /// closes.
    max_connections: usize = 512,
}

/// The largest `delivery_niceness`: Linux's lowest priority.
const MAX_NICENESS: u8 = 19;

/// The largest `max_connections`: far above any file-descriptor limit, and small enough to
/// count in a semaphore.
const MAX_CONNECTIONS: usize = 1_000_000;

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
    /// A value from the environment or a flag has the wrong shape.
    #[error("{origin}: {reason}")]
    Invalid {
        /// The variable (`HERALD_LISTEN`), flag (`--listen`) or file that gave the value.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The combination is unsafe (e.g. a public address without tokens).
    #[error("{0}")]
    Unsafe(String),
}

impl Config {
    /// Reads `file` (if given), then applies `HERALD_*` variables from `env` (pairs as
    /// `std::env::vars()` yields them) and then `flags` (setting key, value), and checks the
    /// result.
    ///
    /// Variables that name no setting (`HERALD_URL`, used by the CLI) are ignored; an empty
    /// variable counts as unset.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
            // Line-precise refusal of unknown keys and wrong types; figment merges afterwards.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                path: shown,
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        let env = env.into_iter().filter_map(|(var, value)| {
            let key = var.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            Some((key, value))
        });
        figment = figment
            .merge(Overrides::new(Origin::Environment, env))
            .merge(Overrides::new(Origin::Flags, flags.iter().cloned()));
        // Lossy: the environment and flags give text, so "true" and "1024" are read as the
        // setting's type; a token made of digits stays text.
        let config: Config = figment.extract_lossy().map_err(|e| explain(e, file))?;
        config.check()?;
        Ok(config)
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
        if self.delivery_niceness > MAX_NICENESS {
            return Err(ConfigError::Unsafe(format!(
                "delivery_niceness must be 0-{MAX_NICENESS}"
            )));
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
        // Parsed as the scheduler will parse it, so that a mistake stops the start here,
        // saying what is wanted, rather than after the store has opened.
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&self.housekeeping_cron);
        if let Err(e) = cron {
            return Err(ConfigError::Unsafe(format!(
                "housekeeping_cron {:?}: {}; it takes six fields, seconds first (second minute \
                 hour day-of-month month day-of-week, UTC), e.g. \"0 17 3 * * *\" for 03:17:00 \
                 every day",
                self.housekeeping_cron,
                e.to_string().trim_end_matches('.')
            )));
        }
        Ok(())
    }

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

/// The README's configuration table, generated from [`SETTINGS`].
pub fn markdown_table() -> String {
    let mut table = String::from("| key / variable | default | meaning |\n|---|---|---|\n");
    for setting in SETTINGS {
        let default = setting
            .default_value()
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| "—".into());
        table.push_str(&format!(
            "| `{}` / `{}` | {default} | {} |\n",
            setting.key,
            setting.env_var(),
            setting.meaning().replace('|', "\\|")
        ));
    }
    table
}

/// Where an override came from; names the variable or flag in errors.
#[derive(Clone, Copy)]
enum Origin {
    Environment,
    Flags,
}

/// Values given as text by the environment or the command line, keyed by setting. Only keys
/// that name a setting are taken; `a__b` reaches a nested key `a.b`, as figment's
/// `Env::split("__")` does.
struct Overrides {
    origin: Origin,
    values: Vec<(String, String)>,
}

impl Overrides {
    fn new(origin: Origin, values: impl IntoIterator<Item = (String, String)>) -> Overrides {
        let values = values
            .into_iter()
            .filter(|(key, value)| {
                let top = key.split("__").next().unwrap_or_default();
                !value.is_empty() && SETTINGS.iter().any(|s| s.key == top)
            })
            .collect();
        Overrides { origin, values }
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        match self.origin {
            Origin::Environment => Metadata::named("environment").interpolater(|_, path| {
                format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
            }),
            Origin::Flags => Metadata::named("command line")
                .interpolater(|_, path| format!("--{}", path.join(".").replace('_', "-"))),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.values {
            let path: Vec<&str> = key.split("__").collect();
            insert(&mut dict, &path, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// A figment error as "HERALD_LISTEN: invalid socket address syntax".
fn explain(error: figment::Error, file: Option<&Path>) -> ConfigError {
    let origin = match (&error.metadata, &error.profile) {
        (Some(metadata), profile) if metadata.name != "Serialized" => {
            let profile = profile.clone().unwrap_or_default();
            if metadata.name.contains("TOML") {
                let file = file.map(|f| f.display().to_string()).unwrap_or_default();
                format!("{file}: {}", error.path.join("."))
            } else {
                metadata.interpolate(&profile, &error.path)
            }
        }
        _ => error.path.join("."),
    };
    // serde's words for what was expected, in an operator's.
    let mut reason = error.kind.to_string().replace("``", "`").replace(
        "expected a duration",
        "expected a duration such as 30s, 10m, 2h or 14days",
    );
    for integer in ["usize", "u64", "u32", "u16", "u8"] {
        if let Some(said) = reason.strip_suffix(&format!("expected {integer}")) {
            reason = format!("{said}expected a whole number");
        }
    }
    if reason == "invalid socket address syntax" {
        // `localhost:8088` reads as an address to people; say what is wanted.
        reason.push_str(": an IP address and a port, such as 127.0.0.1:8088 or 0.0.0.0:8088");
    }
    ConfigError::Invalid { origin, reason }
}

/// A list from TOML (`["10.0.0.0/8"]`) or from text (`10.0.0.0/8, fd00::/64`).
fn comma_separated<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    struct Items<T>(std::marker::PhantomData<T>);
    impl<'de, T> serde::de::Visitor<'de> for Items<T>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list, or comma-separated text")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<T>, E> {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse()
                        .map_err(|e| E::custom(format!("{item:?}: {e}")))
                })
                .collect()
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(
                    item.trim()
                        .parse()
                        .map_err(|e| serde::de::Error::custom(format!("{item:?}: {e}")))?,
                );
            }
            Ok(items)
        }
    }
    deserializer.deserialize_any(Items(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn connection_limits_come_from_the_file_and_the_environment() {
        let defaults = Config::load(None, env(&[]), &[]).unwrap();
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
        let vars = env(&[
            ("HERALD_BODY_READ_TIMEOUT", "1m"),
            ("HERALD_MAX_CONNECTIONS", "128"),
        ]);
        let config = Config::load(Some(&file), vars, &[]).unwrap();
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
            (
                &[("HERALD_DELIVERY_NICENESS", "20")],
                "delivery_niceness must be 0-19",
            ),
            (
                &[("HERALD_DELIVERY_NICENESS", "-1")],
                "HERALD_DELIVERY_NICENESS",
            ),
        ];
        for (vars, needle) in table {
            let err = Config::load(None, env(vars), &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, env(&[]), &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(config.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(config.retention, Duration::from_secs(14 * 86400));
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nretention = \"7d\"\nlog = \"debug\"\nmax_in_flight = 8\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("HERALD_LISTEN", "127.0.0.1:9100"),
                ("HERALD_RETENTION", "1h"),
                ("HERALD_MAX_IN_FLIGHT", "64"),
            ]),
            &[("max_in_flight".into(), "128".into())],
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.retention, Duration::from_secs(3600));
        assert_eq!(config.log, "debug");
        assert_eq!(config.max_in_flight, 128);
    }

    #[test]
    fn text_values_keep_their_type() {
        let config = Config::load(
            None,
            env(&[
                ("HERALD_ADMIN_TOKEN", "12345678901234567890"),
                ("HERALD_ALLOW_PRIVATE_TARGETS", "true"),
                ("HERALD_ALLOW_CIDRS", "10.1.2.0/24, fd00::/64"),
                ("HERALD_LOG", "info,herald=debug"),
                ("HERALD_URL", "http://127.0.0.1:8088"),
                ("HERALD_NOTIFY_URL", ""),
                ("PATH", "/usr/bin"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("12345678901234567890"));
        assert!(config.allow_private_targets);
        assert_eq!(config.allow_cidrs.len(), 2);
        assert_eq!(config.log, "info,herald=debug");
        assert_eq!(config.notify_url, None);
        assert!(!format!("{config:?}").contains("12345678901234567890"));
    }

    #[test]
    fn unsafe_or_malformed_configurations_are_refused() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[("HERALD_LISTEN", "0.0.0.0:8088")], "without tokens"),
            (&[("HERALD_LISTEN", "nope")], "HERALD_LISTEN"),
            (
                &[("HERALD_LISTEN", "localhost:8088")],
                "an IP address and a port, such as 127.0.0.1:8088",
            ),
            (&[("HERALD_RETENTION", "forever")], "HERALD_RETENTION"),
            (&[("HERALD_ADMIN_TOKEN", "short")], "at least 16"),
            (
                &[("HERALD_ALLOW_PRIVATE_TARGETS", "yes please")],
                "HERALD_ALLOW_PRIVATE_TARGETS",
            ),
            (&[("HERALD_MAX_IN_FLIGHT", "0")], "at least 1"),
            (
                &[("HERALD_MAX_IN_FLIGHT", "many")],
                "expected a whole number",
            ),
            (
                &[("HERALD_UNROUTED", "maybe")],
                "expected `accept` or `reject`",
            ),
            (&[("HERALD_RETENTION", "forever")], "such as 30s, 10m"),
            (
                &[("HERALD_HOUSEKEEPING_CRON", "0 0 3 * *")],
                "six fields, seconds first",
            ),
            (
                &[("HERALD_ALLOW_CIDRS", "10.0.0.0/33")],
                "HERALD_ALLOW_CIDRS",
            ),
        ];
        for (vars, needle) in table {
            let err = Config::load(None, env(vars), &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
        let flag = Config::load(None, env(&[]), &[("listen".into(), "nope".into())])
            .unwrap_err()
            .to_string();
        assert!(flag.starts_with("--listen:"), "{flag}");
        let public_with_token = Config::load(
            None,
            env(&[
                ("HERALD_LISTEN", "0.0.0.0:8088"),
                ("HERALD_ADMIN_TOKEN", "0123456789abcdef"),
            ]),
            &[],
        );
        assert!(public_with_token.is_ok());
    }

    #[test]
    fn unknown_or_mistyped_file_keys_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        for (text, needles) in [
            (
                "listen = \"127.0.0.1:9000\"\nlisten_adress = \"x\"\n",
                &["line 2", "listen_adress"][..],
            ),
            (
                "\n\nmax_in_flight = \"lots\"\n",
                &["line 3", "max_in_flight"][..],
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Config::load(Some(&file), env(&[]), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("herald.toml"), "{err}");
            for needle in needles {
                assert!(err.contains(needle), "{err}");
            }
        }
    }

    #[test]
    fn every_setting_has_a_variable_a_flag_and_a_meaning() {
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for setting in SETTINGS {
            assert!(!setting.meaning().is_empty(), "{}", setting.key);
            assert!(setting.env_var().starts_with("HERALD_"));
            assert!(!setting.flag().contains('_'));
        }
        // The list and the struct agree (every serialized field is a listed setting).
        for key in defaults.keys() {
            assert!(SETTINGS.iter().any(|s| s.key == key), "{key} not listed");
        }
        let secrets: Vec<_> = SETTINGS
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.key)
            .collect();
        assert_eq!(
            secrets,
            [
                "store",
                "admin_token",
                "producer_token",
                "proxy",
                "secret_key"
            ],
            "a database URL may carry a password"
        );
    }

    #[test]
    fn the_readme_configuration_table_is_generated_from_the_settings() {
        let readme = include_str!("../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's configuration table is out of date; replace it with:\n\n{table}"
        );
    }
}
