//! What the daemon configures: where the service is, how often to poll it,
//! which value format to write, and the limits of every loop.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How state values are written to the service (see
/// [`service_value`](crate::service_value) for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ValueFormat {
    /// As upstream's own StateManager writes them: scenario and package
    /// states as protobuf enum names (`SCENARIO_STATE_WAITING`,
    /// `PACKAGE_STATE_ERROR`), model and container states PascalCase
    /// (`Running`). Upstream readers understand these.
    #[default]
    Upstream,
    /// Our canonical PascalCase names, unchanged (`Waiting`, `Error`), as
    /// ETCD-CONTRACT.md writes them to etcd.
    Canonical,
}

impl ValueFormat {
    /// The name [`FromStr`] accepts: `upstream` or `canonical`.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueFormat::Upstream => "upstream",
            ValueFormat::Canonical => "canonical",
        }
    }
}

impl fmt::Display for ValueFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value format name that is neither `upstream` nor `canonical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value format '{given}'; expected 'upstream' or 'canonical'")]
pub struct ParseValueFormatError {
    /// The refused text (escaped).
    pub given: String,
}

impl FromStr for ValueFormat {
    type Err = ParseValueFormatError;

    /// `upstream` or `canonical`, in any case; anything else (whitespace
    /// included) is an error naming the allowed values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("upstream") {
            Ok(ValueFormat::Upstream)
        } else if s.eq_ignore_ascii_case("canonical") {
            Ok(ValueFormat::Canonical)
        } else {
            Err(ParseValueFormatError {
                given: s.escape_debug().to_string(),
            })
        }
    }
}

/// The bridge's configuration. [`Default`] gives upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The service's URL, `http://host:port` (upstream's
    /// `ROCKSDB_SERVICE_URL`, default `http://localhost:47007`). Only plain
    /// `http` is spoken: upstream's service has no TLS.
    pub url: String,
    /// How often definitions are read from the service (GetByPrefix per
    /// definition prefix). Default 1 s; at least 10 ms.
    pub poll: Duration,
    /// How state values are written to the service. Default
    /// [`ValueFormat::Upstream`].
    pub values: ValueFormat,
    /// The deadline of every gRPC call, connecting included. Default 2 s; at
    /// least 10 ms.
    pub request_timeout: Duration,
    /// The most state keys waiting to be sent. Beyond it the backlog is
    /// dropped and the service is brought up to date by a full resync instead.
    /// Default 10 000; at least 1.
    pub backlog_limit: usize,
    /// Read definitions from the service into our store. Default `true`.
    pub read_definitions: bool,
    /// Mirror our state keys to the service. Default `true`.
    pub mirror_states: bool,
    /// The most pairs in one BatchPut. Default 128; at least 1.
    pub batch_put_size: usize,
    /// The most ops (and, separately, guards) in one batch applied to our
    /// store: the store's limit (etcd's `--max-txn-ops`, default 128).
    /// At least 1.
    pub store_batch_ops: usize,
    /// The most bytes of keys and values in one batch applied to our store,
    /// kept under etcd's 1.5 MiB request limit. Default 1 MiB. A single
    /// definition larger than this travels alone.
    pub store_batch_bytes: usize,
    /// The first retry delay after a failure; each further failure doubles
    /// it, up to [`backoff_max`](Self::backoff_max), with jitter. Default
    /// 100 ms.
    pub backoff_initial: Duration,
    /// The longest retry delay. Default 5 s.
    pub backoff_max: Duration,
    /// The largest gRPC message accepted from the service (a GetByPrefix
    /// answer carries every definition of a kind). Default 16 MiB.
    pub max_message_bytes: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            poll: Duration::from_secs(1),
            values: ValueFormat::Upstream,
            request_timeout: Duration::from_secs(2),
            backlog_limit: 10_000,
            read_definitions: true,
            mirror_states: true,
            batch_put_size: 128,
            store_batch_ops: 128,
            store_batch_bytes: 1024 * 1024,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Upstream's default `ROCKSDB_SERVICE_URL`.
pub const DEFAULT_URL: &str = "http://localhost:47007";

const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl BridgeConfig {
    /// The configuration with every value raised to its documented minimum,
    /// so that no setting can make a loop spin or a limit refuse everything.
    pub(crate) fn clamped(mut self) -> Self {
        self.poll = self.poll.max(MIN_INTERVAL);
        self.request_timeout = self.request_timeout.max(MIN_INTERVAL);
        self.backlog_limit = self.backlog_limit.max(1);
        self.batch_put_size = self.batch_put_size.max(1);
        self.store_batch_ops = self.store_batch_ops.max(1);
        self.store_batch_bytes = self.store_batch_bytes.max(1);
        self.backoff_initial = self.backoff_initial.max(Duration::from_millis(1));
        self.backoff_max = self.backoff_max.max(self.backoff_initial);
        self.max_message_bytes = self.max_message_bytes.max(4 * 1024 * 1024);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_formats_parse_by_name_in_any_case() {
        let cases: &[(&str, Option<ValueFormat>)] = &[
            ("upstream", Some(ValueFormat::Upstream)),
            ("Upstream", Some(ValueFormat::Upstream)),
            ("canonical", Some(ValueFormat::Canonical)),
            ("CANONICAL", Some(ValueFormat::Canonical)),
            ("", None),
            (" upstream", None),
            ("pascal", None),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<ValueFormat>().ok(), *expected, "{text:?}");
        }
        for format in [ValueFormat::Upstream, ValueFormat::Canonical] {
            assert_eq!(format.to_string().parse::<ValueFormat>(), Ok(format));
        }
    }

    #[test]
    fn a_bad_value_format_names_what_is_allowed() {
        let error = "pascal\n".parse::<ValueFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown value format 'pascal\\n'; expected 'upstream' or 'canonical'"
        );
    }

    #[test]
    fn the_defaults_are_upstreams() {
        let config = BridgeConfig::default();
        assert_eq!(config.url, "http://localhost:47007");
        assert_eq!(config.poll, Duration::from_secs(1));
        assert_eq!(config.values, ValueFormat::Upstream);
        assert_eq!(config.store_batch_ops, 128);
        assert_eq!(config.clone().clamped(), config);
    }

    #[test]
    fn zero_limits_are_raised_to_their_minimum() {
        let config = BridgeConfig {
            poll: Duration::ZERO,
            request_timeout: Duration::ZERO,
            backlog_limit: 0,
            batch_put_size: 0,
            store_batch_ops: 0,
            store_batch_bytes: 0,
            backoff_initial: Duration::ZERO,
            backoff_max: Duration::ZERO,
            max_message_bytes: 0,
            ..BridgeConfig::default()
        }
        .clamped();
        assert_eq!(config.poll, MIN_INTERVAL);
        assert_eq!(config.request_timeout, MIN_INTERVAL);
        assert_eq!(config.backlog_limit, 1);
        assert_eq!(config.batch_put_size, 1);
        assert_eq!(config.store_batch_ops, 1);
        assert_eq!(config.store_batch_bytes, 1);
        assert_eq!(config.backoff_initial, Duration::from_millis(1));
        assert_eq!(config.backoff_max, Duration::from_millis(1));
        assert_eq!(config.max_message_bytes, 4 * 1024 * 1024);
    }
}
