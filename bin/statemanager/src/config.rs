//! The daemon's configuration: command-line flags, `STATEMANAGER_*`
//! environment variables and an optional TOML file, resolved into
//! [`Settings`].
//!
//! Precedence is flags > environment > file > defaults. clap reads the flags
//! and the environment into [`Options`], whose fields are all `Option`s with
//! no clap default, so a `None` means "neither a flag nor a variable gave it".
//! The file is read into the same [`Options`] type (its keys are the flag
//! names), and [`Options::over`] fills only what the command line left
//! `None`. [`Options::resolve`] then applies the defaults and checks the
//! combination.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use engine::EngineConfig;
use serde::Deserialize;
use statemachine_core::PackageState;
use statemachine_core::keys::DEFAULT_BOOKKEEPING_PREFIX;
use store_etcd::{Credentials, EtcdConfig, TlsConfig};
use transport_grpc::{ActionControllerOptions, ServeOptions};

/// The gRPC address Pullpiri's StateManager listens on.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:47006";
/// The ActionController Pullpiri's components call.
pub const DEFAULT_ACTION_CONTROLLER: &str = "http://127.0.0.1:47001";
/// The only config file version this daemon reads.
pub const CONFIG_VERSION: i64 = 1;

/// The command line: an optional config file and the options.
#[derive(Debug, clap::Parser)]
#[command(
    name = "statemanager",
    version,
    about = "The PICCOLO StateManager: derives and validates the states of containers, \
             models, packages and scenarios, stores them in etcd and asks the \
             ActionController to reconcile failed packages.",
    after_help = "Every option can also be given as an environment variable (shown as [env: ...]) \
                  or as a key of the --config file (the flag name without the dashes, e.g. \
                  `etcd-endpoints = [\"http://10.0.0.1:2379\"]`). Flags beat the environment, \
                  which beats the file, which beats the defaults. RUST_LOG sets the log filter \
                  (default `info`)."
)]
pub struct Cli {
    /// Read options from this TOML file; flags and environment variables override it.
    #[arg(long, env = "STATEMANAGER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The options.
    #[command(flatten)]
    pub options: Options,
}

/// Where the states are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// etcd, shared with the other PICCOLO components (needs `--etcd-endpoints`).
    Etcd,
    /// The embedded in-memory store: nothing survives a restart.
    Memory,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Every option, as given on the command line, in the environment or in the
/// file. `None`: not given there.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Options {
    /// gRPC address to serve StateManagerConnection on [default: 0.0.0.0:47006].
    #[arg(long, env = "STATEMANAGER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Where states are kept: `etcd` or `memory` [default: etcd when
    /// --etcd-endpoints is given, memory otherwise].
    #[arg(long, env = "STATEMANAGER_STORE", value_name = "STORE")]
    pub store: Option<StoreKind>,

    /// etcd client URLs, comma-separated (e.g. `http://10.0.0.1:2379,http://10.0.0.2:2379`);
    /// implies --store etcd.
    #[arg(long, env = "STATEMANAGER_ETCD_ENDPOINTS", value_name = "URLS")]
    pub etcd_endpoints: Option<List>,

    /// CA certificate (PEM) that signed etcd's server certificate; enables TLS.
    #[arg(long, env = "STATEMANAGER_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with etcd (with --etcd-key).
    #[arg(long, env = "STATEMANAGER_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,

    /// Private key (PEM) of --etcd-cert.
    #[arg(long, env = "STATEMANAGER_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,

    /// Name to verify etcd's certificate against, when it differs from the endpoint's host.
    #[arg(long, env = "STATEMANAGER_ETCD_DOMAIN", value_name = "NAME")]
    pub etcd_domain: Option<String>,

    /// etcd user name (with --etcd-password).
    #[arg(long, env = "STATEMANAGER_ETCD_USER", value_name = "USER")]
    pub etcd_user: Option<String>,

    /// etcd password; prefer the environment variable, command lines are visible to other users.
    #[arg(
        long,
        env = "STATEMANAGER_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<Secret>,

    /// Deadline of one etcd call, retries included [default: 5s].
    #[arg(long, env = "STATEMANAGER_ETCD_TIMEOUT", value_name = "DURATION")]
    pub etcd_timeout: Option<HumanDuration>,

    /// Deadline for opening a connection to one etcd member [default: 2s].
    #[arg(
        long,
        env = "STATEMANAGER_ETCD_CONNECT_TIMEOUT",
        value_name = "DURATION"
    )]
    pub etcd_connect_timeout: Option<HumanDuration>,

    /// Prefix of the StateManager's own keys (history, outbox, nodes) [default: /statemanager/].
    #[arg(long, env = "STATEMANAGER_BOOKKEEPING_PREFIX", value_name = "PREFIX")]
    pub bookkeeping_prefix: Option<String>,

    /// ActionController gRPC URL [default: http://127.0.0.1:47001].
    #[arg(long, env = "STATEMANAGER_ACTION_CONTROLLER", value_name = "URL")]
    pub action_controller: Option<String>,

    /// Deadline of one call to the ActionController [default: 5s].
    #[arg(
        long,
        env = "STATEMANAGER_ACTION_CONTROLLER_TIMEOUT",
        value_name = "DURATION"
    )]
    pub action_controller_timeout: Option<HumanDuration>,

    /// How long a container may stay Unknown (or missing) before its model counts
    /// as Dead, e.g. `0s`, `500ms`, `10s` [default: 10s].
    #[arg(long, env = "STATEMANAGER_INFO_FAILURE_GRACE", value_name = "DURATION")]
    pub info_failure_grace: Option<HumanDuration>,

    /// Silence after which a node's containers count as an information failure,
    /// or `off` [default: off].
    #[arg(long, env = "STATEMANAGER_NODE_TIMEOUT", value_name = "DURATION|off")]
    pub node_timeout: Option<NodeTimeout>,

    /// Package states whose entering asks the ActionController to reconcile,
    /// comma-separated (e.g. `error,degraded`) [default: error].
    #[arg(long, env = "STATEMANAGER_RECONCILE_ON", value_name = "STATES")]
    pub reconcile_on: Option<ReconcileOn>,

    /// Allow scenarios to go back to Waiting from Completed and Denied [default: false].
    #[arg(long, env = "STATEMANAGER_ALLOW_REARM", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub allow_rearm: Option<bool>,

    /// Reject a scenario change whose current_state disagrees with the record
    /// (PRECONDITION_FAILED) [default: false].
    #[arg(long, env = "STATEMANAGER_STRICT_CURRENT_STATE", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub strict_current_state: Option<bool>,

    /// Check a scenario change's source against the components allowed to make
    /// it (PERMISSION_DENIED otherwise) [default: false].
    #[arg(long, env = "STATEMANAGER_ENFORCE_SOURCES", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub enforce_sources: Option<bool>,

    /// History entries kept per resource [default: 100].
    #[arg(long, env = "STATEMANAGER_HISTORY_LIMIT", value_name = "N")]
    pub history_limit: Option<usize>,

    /// How long one store commit may take before its requests are answered
    /// RESOURCE_UNAVAILABLE [default: 5s].
    #[arg(long, env = "STATEMANAGER_COMMIT_TIMEOUT", value_name = "DURATION")]
    pub commit_timeout: Option<HumanDuration>,

    /// Removed: one batch commits at a time (its independent inputs
    /// concurrently). Kept only to refuse the setting with a clear error.
    #[arg(
        long,
        env = "STATEMANAGER_MAX_COMMITS_IN_FLIGHT",
        value_name = "N",
        hide = true
    )]
    pub max_commits_in_flight: Option<usize>,

    /// The longest a unary gRPC request may take; clients may ask for less
    /// with their deadline [default: 30s].
    #[arg(long, env = "STATEMANAGER_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<HumanDuration>,

    /// HTTP address for Prometheus `/metrics` and `/healthz` [default: off].
    #[arg(long, env = "STATEMANAGER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log format on stderr: `pretty` or `json` [default: pretty].
    #[arg(long, env = "STATEMANAGER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// How long a shutdown waits for in-flight requests, then for the engine [default: 10s].
    #[arg(long, env = "STATEMANAGER_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,

    /// Threads serving gRPC, the engine and the store client [default: one
    /// per CPU core]. One thread answers a lone caller sooner; more decode
    /// concurrent node reports in parallel (docs/benchmarks.md).
    #[arg(long, env = "STATEMANAGER_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
}

impl Options {
    /// These options, with what they leave unset taken from `lower` (a
    /// source of lower precedence).
    pub fn over(self, lower: Options) -> Options {
        // Destructured so that a new field cannot be forgotten here.
        let Options {
            listen,
            store,
            etcd_endpoints,
            etcd_ca,
            etcd_cert,
            etcd_key,
            etcd_domain,
            etcd_user,
            etcd_password,
            etcd_timeout,
            etcd_connect_timeout,
            bookkeeping_prefix,
            action_controller,
            action_controller_timeout,
            info_failure_grace,
            node_timeout,
            reconcile_on,
            allow_rearm,
            strict_current_state,
            enforce_sources,
            history_limit,
            commit_timeout,
            max_commits_in_flight,
            request_timeout,
            metrics_listen,
            log_format,
            shutdown_timeout,
            worker_threads,
        } = self;
        Options {
            listen: listen.or(lower.listen),
            store: store.or(lower.store),
            etcd_endpoints: etcd_endpoints.or(lower.etcd_endpoints),
            etcd_ca: etcd_ca.or(lower.etcd_ca),
            etcd_cert: etcd_cert.or(lower.etcd_cert),
            etcd_key: etcd_key.or(lower.etcd_key),
            etcd_domain: etcd_domain.or(lower.etcd_domain),
            etcd_user: etcd_user.or(lower.etcd_user),
            etcd_password: etcd_password.or(lower.etcd_password),
            etcd_timeout: etcd_timeout.or(lower.etcd_timeout),
            etcd_connect_timeout: etcd_connect_timeout.or(lower.etcd_connect_timeout),
            bookkeeping_prefix: bookkeeping_prefix.or(lower.bookkeeping_prefix),
            action_controller: action_controller.or(lower.action_controller),
            action_controller_timeout: action_controller_timeout
                .or(lower.action_controller_timeout),
            info_failure_grace: info_failure_grace.or(lower.info_failure_grace),
            node_timeout: node_timeout.or(lower.node_timeout),
            reconcile_on: reconcile_on.or(lower.reconcile_on),
            allow_rearm: allow_rearm.or(lower.allow_rearm),
            strict_current_state: strict_current_state.or(lower.strict_current_state),
            enforce_sources: enforce_sources.or(lower.enforce_sources),
            history_limit: history_limit.or(lower.history_limit),
            commit_timeout: commit_timeout.or(lower.commit_timeout),
            max_commits_in_flight: max_commits_in_flight.or(lower.max_commits_in_flight),
            request_timeout: request_timeout.or(lower.request_timeout),
            metrics_listen: metrics_listen.or(lower.metrics_listen),
            log_format: log_format.or(lower.log_format),
            shutdown_timeout: shutdown_timeout.or(lower.shutdown_timeout),
            worker_threads: worker_threads.or(lower.worker_threads),
        }
    }

    /// Applies the defaults and checks the combination.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let listen = match self.listen {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .context("the default listen address")?,
        };
        let bookkeeping_prefix = self
            .bookkeeping_prefix
            .unwrap_or_else(|| DEFAULT_BOOKKEEPING_PREFIX.to_owned());
        if bookkeeping_prefix.trim().is_empty() {
            bail!("--bookkeeping-prefix must not be empty");
        }

        let etcd_only = [
            ("--etcd-ca", self.etcd_ca.is_some()),
            ("--etcd-cert", self.etcd_cert.is_some()),
            ("--etcd-key", self.etcd_key.is_some()),
            ("--etcd-domain", self.etcd_domain.is_some()),
            ("--etcd-user", self.etcd_user.is_some()),
            ("--etcd-password", self.etcd_password.is_some()),
            ("--etcd-timeout", self.etcd_timeout.is_some()),
            (
                "--etcd-connect-timeout",
                self.etcd_connect_timeout.is_some(),
            ),
        ];
        let store = match (self.store, self.etcd_endpoints) {
            (Some(StoreKind::Memory), Some(endpoints)) => bail!(
                "--store memory conflicts with --etcd-endpoints '{}': give one or the other",
                endpoints.0.join(",")
            ),
            (Some(StoreKind::Etcd), None) => bail!(
                "--store etcd needs --etcd-endpoints (comma-separated URLs, e.g. \
                 http://127.0.0.1:2379)"
            ),
            (Some(StoreKind::Memory) | None, None) => {
                if let Some((flag, _)) = etcd_only.iter().find(|(_, given)| *given) {
                    bail!("{flag} applies only to the etcd store: give --etcd-endpoints too");
                }
                StoreSettings::Memory
            }
            (Some(StoreKind::Etcd) | None, Some(List(endpoints))) => {
                let mut etcd = EtcdConfig::new(endpoints);
                if let Some(timeout) = self.etcd_timeout {
                    etcd.request_timeout = positive("--etcd-timeout", timeout)?;
                    etcd.attempt_timeout = etcd.attempt_timeout.min(etcd.request_timeout);
                }
                if let Some(timeout) = self.etcd_connect_timeout {
                    etcd.connect_timeout = positive("--etcd-connect-timeout", timeout)?;
                }
                if self.etcd_ca.is_some()
                    || self.etcd_cert.is_some()
                    || self.etcd_key.is_some()
                    || self.etcd_domain.is_some()
                {
                    if self.etcd_cert.is_some() != self.etcd_key.is_some() {
                        bail!("--etcd-cert and --etcd-key go together");
                    }
                    etcd.tls = Some(TlsConfig {
                        ca_cert: self.etcd_ca,
                        client_cert: self.etcd_cert,
                        client_key: self.etcd_key,
                        domain_name: self.etcd_domain,
                    });
                }
                etcd.credentials = match (self.etcd_user, self.etcd_password) {
                    (Some(user), Some(Secret(password))) => Some(Credentials { user, password }),
                    (None, None) => None,
                    (Some(_), None) => {
                        bail!("--etcd-user needs --etcd-password (or STATEMANAGER_ETCD_PASSWORD)")
                    }
                    (None, Some(_)) => bail!("--etcd-password needs --etcd-user"),
                };
                etcd.bookkeeping_prefix = bookkeeping_prefix.clone();
                etcd.validate()?;
                StoreSettings::Etcd(Box::new(etcd))
            }
        };

        let mut engine = EngineConfig {
            bookkeeping_prefix,
            ..EngineConfig::default()
        };
        if let Some(grace) = self.info_failure_grace {
            engine.core.info_failure_grace = grace.0;
        }
        if let Some(NodeTimeout(timeout)) = self.node_timeout {
            engine.core.node_timeout = timeout;
        }
        if let Some(ReconcileOn(states)) = self.reconcile_on {
            engine.core.reconcile_on = states;
        }
        let policy = &mut engine.core.scenario_policy;
        policy.allow_rearm = self.allow_rearm.unwrap_or(policy.allow_rearm);
        policy.strict_current_state = self
            .strict_current_state
            .unwrap_or(policy.strict_current_state);
        policy.enforce_sources = self.enforce_sources.unwrap_or(policy.enforce_sources);
        if let Some(limit) = self.history_limit {
            if limit == 0 {
                bail!("--history-limit must be at least 1");
            }
            engine.history_limit = limit;
        }
        if let Some(timeout) = self.commit_timeout {
            engine.commit_timeout = positive("--commit-timeout", timeout)?;
        }
        if self.max_commits_in_flight.is_some() {
            bail!(
                "the setting max-commits-in-flight (--max-commits-in-flight, \
                 STATEMANAGER_MAX_COMMITS_IN_FLIGHT) was removed: one batch commits at a \
                 time, its independent inputs concurrently; remove it from the command \
                 line, the environment or the config file"
            );
        }

        let mut serve = ServeOptions::default();
        if let Some(timeout) = self.request_timeout {
            serve.request_timeout = positive("--request-timeout", timeout)?;
        }
        let mut action = ActionControllerOptions::default();
        if let Some(timeout) = self.action_controller_timeout {
            action.request_timeout = positive("--action-controller-timeout", timeout)?;
            action.connect_timeout = action.connect_timeout.min(action.request_timeout);
        }
        let action_controller = self
            .action_controller
            .unwrap_or_else(|| DEFAULT_ACTION_CONTROLLER.to_owned());
        if action_controller.trim().is_empty() {
            bail!("--action-controller must not be empty");
        }

        Ok(Settings {
            listen,
            store,
            action_controller,
            action,
            engine,
            serve,
            metrics_listen: self.metrics_listen,
            log_format: self.log_format.unwrap_or_default(),
            shutdown_timeout: match self.shutdown_timeout {
                Some(timeout) => positive("--shutdown-timeout", timeout)?,
                None => Duration::from_secs(10),
            },
            worker_threads: match self.worker_threads {
                Some(0) => bail!("--worker-threads must be at least 1"),
                threads => threads,
            },
        })
    }
}

fn positive(flag: &str, duration: HumanDuration) -> anyhow::Result<Duration> {
    if duration.0.is_zero() {
        bail!("{flag} must be longer than 0s");
    }
    Ok(duration.0)
}

/// Which store the daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// The embedded in-memory store.
    Memory,
    /// etcd, with this client configuration.
    Etcd(Box<EtcdConfig>),
}

/// The resolved configuration: every default applied, every combination checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// The store.
    pub store: StoreSettings,
    /// The ActionController's URL.
    pub action_controller: String,
    /// The ActionController client's timeouts.
    pub action: ActionControllerOptions,
    /// The engine's knobs.
    pub engine: EngineConfig,
    /// The gRPC server's knobs.
    pub serve: ServeOptions,
    /// The metrics and health HTTP address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// The log format.
    pub log_format: LogFormat,
    /// How long each shutdown step may take.
    pub shutdown_timeout: Duration,
    /// Runtime worker threads (`None`: one per CPU core).
    pub worker_threads: Option<usize>,
}

/// Reads the configuration: the command line (flags and environment), then
/// the file it names, if any, below it.
pub fn load(cli: Cli) -> anyhow::Result<Settings> {
    let file = match &cli.config {
        Some(path) => read_file(path)?,
        None => Options::default(),
    };
    cli.options.over(file).resolve()
}

/// Reads a TOML config file into [`Options`].
pub fn read_file(path: &Path) -> anyhow::Result<Options> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file '{}'", path.display()))?;
    parse_file(&text).with_context(|| format!("in the config file '{}'", path.display()))
}

/// Parses the text of a TOML config file: an optional `version = 1`, then
/// the options under their flag names (`listen = "0.0.0.0:47006"`).
pub fn parse_file(text: &str) -> anyhow::Result<Options> {
    let mut table: toml::Table = toml::from_str(text)?;
    match table.remove("version") {
        None => {}
        Some(toml::Value::Integer(CONFIG_VERSION)) => {}
        Some(other) => bail!("unsupported config version {other}: this daemon reads version 1"),
    }
    Ok(Options::deserialize(table)?)
}

/// A duration written for people: `0s`, `500ms`, `10s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|error| {
                format!(
                    "'{}' is not a duration ({error}); write e.g. 0s, 500ms, 10s or 2m",
                    text.escape_debug()
                )
            })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `--node-timeout`: a duration, or `off` (also `0s`) for no node timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimeout(pub Option<Duration>);

impl FromStr for NodeTimeout {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if matches!(text.to_ascii_lowercase().as_str(), "off" | "none" | "never") {
            return Ok(NodeTimeout(None));
        }
        let HumanDuration(duration) = text
            .parse()
            .map_err(|error: String| format!("{error}, or off"))?;
        Ok(NodeTimeout((!duration.is_zero()).then_some(duration)))
    }
}

impl<'de> Deserialize<'de> for NodeTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A comma-separated list on the command line; a list (or such a string) in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl FromStr for List {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
        if items.iter().any(String::is_empty) {
            return Err(format!(
                "'{}' has an empty item; write a comma-separated list such as \
                 http://10.0.0.1:2379,http://10.0.0.2:2379",
                text.escape_debug()
            ));
        }
        Ok(List(items))
    }
}

/// A string or a list of strings, as the file may give a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn joined(self) -> String {
        match self {
            OneOrMany::One(one) => one,
            OneOrMany::Many(many) => many.join(","),
        }
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let given = OneOrMany::deserialize(deserializer)?;
        given.joined().parse().map_err(serde::de::Error::custom)
    }
}

/// `--reconcile-on`: package states, any spelling (`error`, `Degraded`,
/// `PACKAGE_STATE_ERROR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileOn(pub Vec<PackageState>);

impl FromStr for ReconcileOn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let List(names) = text.parse()?;
        let mut states = Vec::with_capacity(names.len());
        for name in names {
            let state = PackageState::parse(&name).map_err(|error| error.to_string())?;
            if !states.contains(&state) {
                states.push(state);
            }
        }
        Ok(ReconcileOn(states))
    }
}

impl<'de> Deserialize<'de> for ReconcileOn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let given = OneOrMany::deserialize(deserializer)?;
        given.joined().parse().map_err(serde::de::Error::custom)
    }
}

/// A password: never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["statemanager"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("the arguments parse")
    }

    fn resolve(args: &[&str], file: &str) -> anyhow::Result<Settings> {
        cli(args)
            .options
            .over(parse_file(file).expect("the file parses"))
            .resolve()
    }

    #[test]
    fn durations_are_humane_and_strict() {
        for (text, expected) in [
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h 30m", Duration::from_secs(5400)),
            (" 3s ", Duration::from_secs(3)),
        ] {
            assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(expected)));
        }
        for bad in ["", "10", "ten seconds", "10x", "-1s", "1.5.2s"] {
            let error = bad.parse::<HumanDuration>().expect_err(bad);
            assert!(error.contains("is not a duration"), "{error}");
        }
    }

    #[test]
    fn node_timeout_is_off_by_default_and_when_zero() {
        assert_eq!(resolve(&[], "").unwrap().engine.core.node_timeout, None);
        for off in ["off", "OFF", "none", "0s"] {
            assert_eq!(off.parse::<NodeTimeout>(), Ok(NodeTimeout(None)), "{off}");
        }
        assert_eq!(
            "30s".parse::<NodeTimeout>(),
            Ok(NodeTimeout(Some(Duration::from_secs(30))))
        );
        let error = "soon".parse::<NodeTimeout>().unwrap_err();
        assert!(error.ends_with("or off"), "{error}");
    }

    #[test]
    fn reconcile_states_are_lenient_and_checked() {
        assert_eq!(
            "error, Degraded,PACKAGE_STATE_ERROR".parse::<ReconcileOn>(),
            Ok(ReconcileOn(vec![
                PackageState::Error,
                PackageState::Degraded
            ]))
        );
        let error = "error,broken".parse::<ReconcileOn>().unwrap_err();
        assert!(error.contains("broken"), "{error}");
        assert!("error,,degraded".parse::<ReconcileOn>().is_err());
    }

    #[test]
    fn defaults_follow_the_design() {
        let settings = resolve(&[], "").unwrap();
        assert_eq!(settings.listen, "0.0.0.0:47006".parse().unwrap());
        assert_eq!(settings.store, StoreSettings::Memory);
        assert_eq!(settings.action_controller, "http://127.0.0.1:47001");
        assert_eq!(
            settings.engine.core.info_failure_grace,
            Duration::from_secs(10)
        );
        assert_eq!(settings.engine.core.reconcile_on, vec![PackageState::Error]);
        assert_eq!(settings.engine.history_limit, 100);
        assert_eq!(settings.metrics_listen, None);
        assert_eq!(settings.log_format, LogFormat::Pretty);
        assert_eq!(settings.engine.bookkeeping_prefix, "/statemanager/");
    }

    #[test]
    fn flags_fill_every_knob() {
        let settings = resolve(
            &[
                "--listen=127.0.0.1:0",
                "--etcd-endpoints",
                "http://a:2379, http://b:2379",
                "--etcd-ca=/ca.pem",
                "--etcd-user=sm",
                "--etcd-password=pw",
                "--etcd-timeout=3s",
                "--bookkeeping-prefix=/sm-test/",
                "--action-controller=http://ac:47001",
                "--info-failure-grace=0s",
                "--node-timeout=2m",
                "--reconcile-on=error,degraded",
                "--allow-rearm",
                "--strict-current-state=false",
                "--enforce-sources=yes",
                "--history-limit=7",
                "--commit-timeout=1s",
                "--request-timeout=500ms",
                "--metrics-listen=127.0.0.1:0",
                "--log-format=json",
                "--shutdown-timeout=3s",
            ],
            "",
        )
        .unwrap();
        let StoreSettings::Etcd(etcd) = &settings.store else {
            panic!("endpoints imply etcd");
        };
        assert_eq!(etcd.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(etcd.request_timeout, Duration::from_secs(3));
        assert_eq!(etcd.attempt_timeout, Duration::from_secs(2));
        assert_eq!(
            etcd.tls.as_ref().and_then(|t| t.ca_cert.clone()),
            Some("/ca.pem".into())
        );
        assert_eq!(
            etcd.credentials.as_ref().map(|c| c.password.as_str()),
            Some("pw")
        );
        assert_eq!(etcd.bookkeeping_prefix, "/sm-test/");
        assert_eq!(settings.engine.bookkeeping_prefix, "/sm-test/");
        assert_eq!(settings.action_controller, "http://ac:47001");
        let core = &settings.engine.core;
        assert_eq!(core.info_failure_grace, Duration::ZERO);
        assert_eq!(core.node_timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            core.reconcile_on,
            [PackageState::Error, PackageState::Degraded]
        );
        assert!(core.scenario_policy.allow_rearm);
        assert!(!core.scenario_policy.strict_current_state);
        assert!(core.scenario_policy.enforce_sources);
        assert_eq!(settings.engine.history_limit, 7);
        assert_eq!(settings.engine.commit_timeout, Duration::from_secs(1));
        assert_eq!(settings.serve.request_timeout, Duration::from_millis(500));
        assert_eq!(
            settings.metrics_listen,
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(3));
    }

    #[test]
    fn store_choice_is_checked() {
        let error = |args: &[&str]| resolve(args, "").unwrap_err().to_string();
        assert!(error(&["--store=etcd"]).contains("--store etcd needs --etcd-endpoints"));
        assert!(error(&["--store=memory", "--etcd-endpoints=http://a:2379"]).contains("conflicts"));
        assert!(error(&["--etcd-ca=/ca.pem"]).contains("--etcd-ca applies only to the etcd"));
        assert!(
            error(&["--etcd-endpoints=http://a:2379", "--etcd-cert=/c.pem"])
                .contains("--etcd-cert and --etcd-key go together")
        );
        assert!(
            error(&["--etcd-endpoints=http://a:2379", "--etcd-user=u"])
                .contains("--etcd-user needs --etcd-password")
        );
        assert!(error(&["--history-limit=0"]).contains("at least 1"));
        assert!(error(&["--worker-threads=0"]).contains("--worker-threads must be at least 1"));
        assert_eq!(resolve(&[], "").unwrap().worker_threads, None);
        assert_eq!(
            resolve(&["--worker-threads=1"], "worker-threads = 4")
                .unwrap()
                .worker_threads,
            Some(1),
            "the flag wins over the file"
        );
        assert_eq!(
            resolve(&[], "worker-threads = 4").unwrap().worker_threads,
            Some(4)
        );
        for (args, file) in [
            (&["--max-commits-in-flight=1"][..], ""),
            (&[][..], "max-commits-in-flight = 8"),
        ] {
            let message = format!("{:#}", resolve(args, file).unwrap_err());
            assert!(
                message.contains("max-commits-in-flight") && message.contains("was removed"),
                "{message}"
            );
        }
        assert!(error(&["--request-timeout=0s"]).contains("longer than 0s"));
        assert!(matches!(
            resolve(&["--store=etcd", "--etcd-endpoints=http://a:2379"], "")
                .unwrap()
                .store,
            StoreSettings::Etcd(_)
        ));
        assert_eq!(
            resolve(&["--store=memory"], "").unwrap().store,
            StoreSettings::Memory
        );
    }

    #[test]
    fn bad_flag_values_are_refused_by_name() {
        let refused = |args: &[&str]| {
            let mut argv = vec!["statemanager"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap_err().to_string()
        };
        let message = refused(&["--info-failure-grace=10"]);
        assert!(message.contains("--info-failure-grace"), "{message}");
        assert!(message.contains("not a duration"), "{message}");
        assert!(refused(&["--store=disk"]).contains("--store"));
        assert!(refused(&["--listen=localhost"]).contains("--listen"));
        assert!(refused(&["--reconcile-on=oops"]).contains("oops"));
        assert!(refused(&["--allow-rearm=maybe"]).contains("--allow-rearm"));
    }

    #[test]
    fn the_file_takes_flag_names_and_lists() {
        let file = r#"
            version = 1
            listen = "127.0.0.1:7000"
            etcd-endpoints = ["http://a:2379", "http://b:2379"]
            reconcile-on = "error,degraded"
            node-timeout = "off"
            allow-rearm = true
            history-limit = 50
        "#;
        let options = parse_file(file).unwrap();
        assert_eq!(options.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(
            options.etcd_endpoints,
            Some(List(vec!["http://a:2379".into(), "http://b:2379".into()]))
        );
        assert_eq!(
            options.reconcile_on,
            Some(ReconcileOn(vec![
                PackageState::Error,
                PackageState::Degraded
            ]))
        );
        assert_eq!(options.node_timeout, Some(NodeTimeout(None)));
        assert_eq!(options.allow_rearm, Some(true));
        assert_eq!(options.history_limit, Some(50));

        for (bad, says) in [
            ("version = 2", "unsupported config version 2"),
            ("lisen = \"127.0.0.1:1\"", "unknown field `lisen`"),
            ("info-failure-grace = \"10\"", "not a duration"),
            ("store = \"disk\"", "unknown variant `disk`"),
            ("listen = [", "TOML parse error"),
            ("config = \"other.toml\"", "unknown field `config`"),
        ] {
            let error = format!("{:#}", parse_file(bad).unwrap_err());
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn over_keeps_every_field_of_the_lower_source() {
        // A file that sets every option, under an empty command line, must
        // come through whole: no field is forgotten by `over`.
        let file = r#"
            listen = "127.0.0.1:1"
            store = "etcd"
            etcd-endpoints = "http://a:2379"
            etcd-ca = "/ca.pem"
            etcd-cert = "/c.pem"
            etcd-key = "/k.pem"
            etcd-domain = "etcd.local"
            etcd-user = "u"
            etcd-password = "p"
            etcd-timeout = "4s"
            etcd-connect-timeout = "1s"
            bookkeeping-prefix = "/x/"
            action-controller = "http://ac:1"
            action-controller-timeout = "2s"
            info-failure-grace = "3s"
            node-timeout = "4s"
            reconcile-on = ["degraded"]
            allow-rearm = true
            strict-current-state = true
            enforce-sources = true
            history-limit = 9
            commit-timeout = "6s"
            request-timeout = "7s"
            metrics-listen = "127.0.0.1:2"
            log-format = "json"
            shutdown-timeout = "8s"
        "#;
        let from_file = parse_file(file).unwrap();
        assert_eq!(Options::default().over(from_file.clone()), from_file);
        assert_eq!(from_file.clone().over(Options::default()), from_file);
        assert!(from_file.resolve().is_ok());
    }

    #[test]
    fn flags_beat_the_file() {
        let file = r#"
            listen = "127.0.0.1:7000"
            info-failure-grace = "30s"
            log-format = "json"
        "#;
        let settings = resolve(&["--listen=127.0.0.1:7001"], file).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(
            settings.engine.core.info_failure_grace,
            Duration::from_secs(30)
        );
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    /// Runs inside a child process started by
    /// [`flags_beat_env_beat_file_beat_defaults`] with a prepared
    /// environment (which a test cannot set in its own process without
    /// `unsafe`); does nothing when run on its own.
    #[test]
    fn precedence_child() {
        let Some(file) = std::env::var_os("STATEMANAGER_TEST_PRECEDENCE_FILE") else {
            return;
        };
        let cli = Cli::try_parse_from([
            "statemanager",
            "--config",
            file.to_str().expect("a UTF-8 path"),
            "--listen=127.0.0.1:1001",
        ])
        .expect("the arguments parse");
        let settings = load(cli).expect("the configuration resolves");
        // Flag beats env beats file.
        assert_eq!(settings.listen, "127.0.0.1:1001".parse().unwrap());
        // Env beats file.
        assert_eq!(
            settings.engine.core.info_failure_grace,
            Duration::from_millis(1500)
        );
        assert_eq!(
            settings.engine.core.reconcile_on,
            [PackageState::Error, PackageState::Degraded]
        );
        assert!(settings.engine.core.scenario_policy.allow_rearm);
        // File beats default.
        assert_eq!(settings.engine.history_limit, 42);
        assert_eq!(settings.log_format, LogFormat::Json);
        // Default where nobody said anything.
        assert_eq!(settings.action_controller, DEFAULT_ACTION_CONTROLLER);
        println!("precedence-child-ok");
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("statemanager.toml");
        std::fs::write(
            &file,
            r#"
                version = 1
                listen = "127.0.0.1:3003"
                info-failure-grace = "30s"
                reconcile-on = "error"
                allow-rearm = false
                history-limit = 42
                log-format = "json"
            "#,
        )
        .unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "config::tests::precedence_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_clear()
            .env("STATEMANAGER_TEST_PRECEDENCE_FILE", &file)
            .env("STATEMANAGER_LISTEN", "127.0.0.1:2002")
            .env("STATEMANAGER_INFO_FAILURE_GRACE", "1500ms")
            .env("STATEMANAGER_RECONCILE_ON", "error,degraded")
            .env("STATEMANAGER_ALLOW_REARM", "true")
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("precedence-child-ok"),
            "child failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
