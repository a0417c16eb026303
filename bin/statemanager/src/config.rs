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
//!
//! Self-healing is the exception to "file keys are flag names": its scalar
//! options are `--recovery-X` flags and `X` keys of the file's `[recovery]`
//! table ([`RecoveryOptions`]), and the strategy ladders exist only in the
//! file (`[recovery.strategy.<issue type>]`). That table is read by hand so
//! every error names the full key (`recovery.strategy.package_error.actions[2]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use engine::{EngineConfig, HealingConfig};
use pullpiri_kv::{BridgeConfig, ParseValueFormatError, ValueFormat};
use serde::Deserialize;
use statemachine_core::access::{Policy, PolicyFile};
use statemachine_core::healing::{
    IssueRules, IssueType, RecoveryAction, Strategy, StrategyError, StrategyTable,
};
use statemachine_core::keys::DEFAULT_BOOKKEEPING_PREFIX;
use statemachine_core::{CoreConfig, PackageState};
use store_etcd::{Credentials, EtcdConfig, TlsConfig};
use transport_grpc::{ActionControllerOptions, ServeOptions};

/// The gRPC address Pullpiri's StateManager listens on.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:47006";
/// The ActionController Pullpiri's components call.
pub const DEFAULT_ACTION_CONTROLLER: &str = "http://127.0.0.1:47001";
/// How long a shutdown waits for in-flight requests, then for the engine.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
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
                  `etcd-endpoints = [\"http://10.0.0.1:2379\"]`); the --recovery-* options are keys of \
                  its [recovery] table (`flap-threshold = 5`), which also holds the strategy \
                  ladders ([recovery.strategy.package_error]). Flags beat the environment, \
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

impl Cli {
    /// The command line, each option's help ending in its default
    /// (`[default: 5s]`) as [`shown_defaults`] reads it from the resolved
    /// settings. The options keep no clap default: an option not given is
    /// still `None`, so the file and the environment can fill it.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = shown_defaults();
        <Cli as clap::CommandFactory>::command().mut_args(|arg| {
            let id = arg.get_id().as_str();
            match defaults.iter().find(|(name, _)| *name == id) {
                Some((_, value)) => {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    arg.help(format!("{help} [default: {value}]"))
                }
                None => arg,
            }
        })
    }

    /// Parses the process's arguments and environment against
    /// [`Cli::command_with_defaults`].
    pub fn try_parse_with_defaults() -> Result<Cli, clap::Error> {
        let matches = Cli::command_with_defaults().try_get_matches()?;
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
    }
}

/// Each option's default as `--help` shows it, by clap argument id: the
/// values [`Options::resolve`] applies when nothing is given (with etcd
/// endpoints and a RocksDbService URL, so that their options resolve too).
/// The options whose default is a rule rather than a value (`--store`,
/// `--data-dir`, `--worker-threads`, ...) say so in their doc comment.
pub fn shown_defaults() -> Vec<(&'static str, String)> {
    let base = Options {
        etcd_endpoints: Some(List(vec!["http://127.0.0.1:2379".into()])),
        pullpiri_kv: Some("http://127.0.0.1:47007".into()),
        ..Options::default()
    };
    let Ok(settings) = base.resolve() else {
        return Vec::new();
    };
    let (StoreSettings::Etcd(etcd), Some(kv)) = (&settings.store, &settings.pullpiri_kv) else {
        return Vec::new();
    };
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let engine = &settings.engine;
    let core = &engine.core;
    let healing = &engine.healing;
    let reconcile_on: Vec<String> = core
        .reconcile_on
        .iter()
        .map(|state| state.as_str().to_ascii_lowercase())
        .collect();
    let log_format = clap::ValueEnum::to_possible_value(&settings.log_format)
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default();
    vec![
        ("listen", settings.listen.to_string()),
        ("etcd_timeout", duration(etcd.request_timeout)),
        ("etcd_connect_timeout", duration(etcd.connect_timeout)),
        ("bookkeeping_prefix", engine.bookkeeping_prefix.clone()),
        ("action_controller", settings.action_controller.clone()),
        (
            "action_controller_timeout",
            duration(settings.action.request_timeout),
        ),
        ("info_failure_grace", duration(core.info_failure_grace)),
        (
            "node_timeout",
            core.node_timeout.map_or_else(|| "off".to_owned(), duration),
        ),
        ("reconcile_on", reconcile_on.join(",")),
        ("allow_rearm", core.scenario_policy.allow_rearm.to_string()),
        (
            "strict_current_state",
            core.scenario_policy.strict_current_state.to_string(),
        ),
        (
            "enforce_sources",
            core.scenario_policy.enforce_sources.to_string(),
        ),
        ("history_limit", engine.history_limit.to_string()),
        ("commit_timeout", duration(engine.commit_timeout)),
        ("request_timeout", duration(settings.serve.request_timeout)),
        ("log_format", log_format),
        ("shutdown_timeout", duration(settings.shutdown_timeout)),
        ("pullpiri_kv_poll", duration(kv.poll)),
        ("pullpiri_kv_values", kv.values.to_string()),
        ("ha_lease_ttl", duration(election::DEFAULT_TTL)),
        ("degraded_after", duration(healing.issues.degraded_after)),
        (
            "model_dead_after",
            duration(healing.issues.model_dead_after),
        ),
        ("model_dead", healing.issues.model_dead.to_string()),
        (
            "repair_foreign_writes",
            healing.repair_foreign_writes.to_string(),
        ),
        ("flap_threshold", healing.tracker.flap_threshold.to_string()),
        ("flap_window", duration(healing.tracker.flap_window)),
        ("alert_ttl", duration(healing.alert_ttl)),
        ("incidents_kept", healing.incidents_kept.to_string()),
        ("alerts_kept", healing.alerts_kept.to_string()),
        ("live_node_within", duration(healing.live_node_within)),
    ]
}

/// Where the states are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// etcd, shared with the other PICCOLO components (needs `--etcd-endpoints`).
    Etcd,
    /// The embedded database in `--data-dir`: durable, owned by this daemon.
    Embedded,
    /// In memory only, for tests: nothing survives a restart.
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
    /// gRPC address to serve StateManagerConnection on.
    #[arg(long, env = "STATEMANAGER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Where states are kept: `embedded`, `etcd` or `memory` [default: etcd
    /// when --etcd-endpoints is given, embedded otherwise].
    #[arg(long, env = "STATEMANAGER_STORE", value_name = "STORE")]
    pub store: Option<StoreKind>,

    /// The embedded store's directory [default: $XDG_STATE_HOME/statemanager,
    /// else ./statemanager-data].
    #[arg(long, env = "STATEMANAGER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

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

    /// Deadline of one etcd call, retries included.
    #[arg(long, env = "STATEMANAGER_ETCD_TIMEOUT", value_name = "DURATION")]
    pub etcd_timeout: Option<HumanDuration>,

    /// Deadline for opening a connection to one etcd member.
    #[arg(
        long,
        env = "STATEMANAGER_ETCD_CONNECT_TIMEOUT",
        value_name = "DURATION"
    )]
    pub etcd_connect_timeout: Option<HumanDuration>,

    /// Prefix of the StateManager's own keys (history, outbox, nodes).
    #[arg(long, env = "STATEMANAGER_BOOKKEEPING_PREFIX", value_name = "PREFIX")]
    pub bookkeeping_prefix: Option<String>,

    /// ActionController gRPC URL.
    #[arg(long, env = "STATEMANAGER_ACTION_CONTROLLER", value_name = "URL")]
    pub action_controller: Option<String>,

    /// Deadline of one call to the ActionController.
    #[arg(
        long,
        env = "STATEMANAGER_ACTION_CONTROLLER_TIMEOUT",
        value_name = "DURATION"
    )]
    pub action_controller_timeout: Option<HumanDuration>,

    /// How long a container may stay Unknown (or missing) before its model counts
    /// as Dead, e.g. `0s`, `500ms`, `10s`.
    #[arg(long, env = "STATEMANAGER_INFO_FAILURE_GRACE", value_name = "DURATION")]
    pub info_failure_grace: Option<HumanDuration>,

    /// Silence after which a node's containers count as an information failure,
    /// or `off`.
    #[arg(long, env = "STATEMANAGER_NODE_TIMEOUT", value_name = "DURATION|off")]
    pub node_timeout: Option<NodeTimeout>,

    /// Package states whose entering asks the ActionController to reconcile,
    /// comma-separated (e.g. `error,degraded`).
    #[arg(long, env = "STATEMANAGER_RECONCILE_ON", value_name = "STATES")]
    pub reconcile_on: Option<ReconcileOn>,

    /// Allow scenarios to go back to Waiting from Completed and Denied.
    #[arg(long, env = "STATEMANAGER_ALLOW_REARM", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub allow_rearm: Option<bool>,

    /// Reject a scenario change whose current_state disagrees with the record
    /// (PRECONDITION_FAILED).
    #[arg(long, env = "STATEMANAGER_STRICT_CURRENT_STATE", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub strict_current_state: Option<bool>,

    /// Check a scenario change's source against the components allowed to make
    /// it (PERMISSION_DENIED otherwise).
    #[arg(long, env = "STATEMANAGER_ENFORCE_SOURCES", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub enforce_sources: Option<bool>,

    /// History entries kept per resource.
    #[arg(long, env = "STATEMANAGER_HISTORY_LIMIT", value_name = "N")]
    pub history_limit: Option<usize>,

    /// How long one store commit may take before its requests are answered
    /// RESOURCE_UNAVAILABLE.
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
    /// with their deadline.
    #[arg(long, env = "STATEMANAGER_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<HumanDuration>,

    /// HTTP address for Prometheus `/metrics` and `/healthz` [default: off].
    #[arg(long, env = "STATEMANAGER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log format on stderr: `pretty` or `json`.
    #[arg(long, env = "STATEMANAGER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// How long a shutdown waits for in-flight requests, then for the engine.
    #[arg(long, env = "STATEMANAGER_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,

    /// Threads serving gRPC, the engine and the store client [default: one
    /// per CPU core]. One thread answers a lone caller sooner; more decode
    /// concurrent node reports in parallel (docs/benchmarks.md).
    #[arg(long, env = "STATEMANAGER_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,

    /// Certificate chain (PEM) the gRPC server presents; with --tls-key turns
    /// TLS on. Re-read on SIGHUP.
    #[arg(long, env = "STATEMANAGER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert. Re-read on SIGHUP.
    #[arg(long, env = "STATEMANAGER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// CA (PEM) that signs client certificates: clients must present one
    /// (mutual TLS), and their identity comes from it. Re-read on SIGHUP.
    #[arg(long, env = "STATEMANAGER_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Authorization policy (TOML, docs/security.md): which identity may do
    /// what; anything else is denied [default with --tls-client-ca: the
    /// components of STATE-MACHINES.md §4].
    #[arg(long, env = "STATEMANAGER_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// CA (PEM) to verify an `https://` ActionController with.
    #[arg(long, env = "STATEMANAGER_ACTION_CONTROLLER_CA", value_name = "FILE")]
    pub action_controller_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with the ActionController
    /// (with --action-controller-key).
    #[arg(long, env = "STATEMANAGER_ACTION_CONTROLLER_CERT", value_name = "FILE")]
    pub action_controller_cert: Option<PathBuf>,

    /// Private key (PEM) of --action-controller-cert.
    #[arg(long, env = "STATEMANAGER_ACTION_CONTROLLER_KEY", value_name = "FILE")]
    pub action_controller_key: Option<PathBuf>,

    /// Current upstream Pullpiri's RocksDbService (e.g. `http://127.0.0.1:47007`):
    /// read definitions from it and mirror states to it [default: off].
    #[arg(long = "pullpiri-kv", env = "ROCKSDB_SERVICE_URL", value_name = "URL")]
    pub pullpiri_kv: Option<String>,

    /// How often definitions are read from the RocksDbService.
    #[arg(long, env = "STATEMANAGER_PULLPIRI_KV_POLL", value_name = "DURATION")]
    pub pullpiri_kv_poll: Option<HumanDuration>,

    /// State values written to the RocksDbService: `upstream`
    /// (`SCENARIO_STATE_WAITING`, as upstream's StateManager writes them) or
    /// `canonical` (`Waiting`).
    #[arg(long, env = "STATEMANAGER_PULLPIRI_KV_VALUES", value_name = "FORMAT")]
    pub pullpiri_kv_values: Option<KvValues>,

    /// High availability with the default group name (`default`): the
    /// same as --ha-group=default.
    #[arg(long, env = "STATEMANAGER_HA", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub ha: Option<bool>,

    /// High availability: join the group NAME of daemons on the same etcd;
    /// one leads and writes, the others follow and forward writes to it
    /// (docs/operations.md) [default: off].
    #[arg(long, env = "STATEMANAGER_HA_GROUP", value_name = "NAME")]
    pub ha_group: Option<String>,

    /// The leader's lease in etcd: a leader that dies is replaced about
    /// this long after.
    #[arg(long, env = "STATEMANAGER_HA_LEASE_TTL", value_name = "DURATION")]
    pub ha_lease_ttl: Option<HumanDuration>,

    /// The gRPC URL other members reach this one at (default: from --listen,
    /// which must then name an address, not 0.0.0.0).
    #[arg(long, env = "STATEMANAGER_HA_ADVERTISE", value_name = "URL")]
    pub ha_advertise: Option<String>,

    /// Self-healing: the `--recovery-*` flags and the file's `[recovery]`
    /// table (not top-level keys of the file).
    #[command(flatten)]
    #[serde(skip)]
    pub recovery: RecoveryOptions,
}

/// The self-healing options (docs/recovery.md, RECOVERY.md): `--recovery-X`
/// on the command line, `STATEMANAGER_RECOVERY_X` in the environment, `X`
/// in the file's `[recovery]` table. The strategy ladders are file-only
/// (`[recovery.strategy.<issue type>]`).
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
#[command(next_help_heading = "Recovery (also the [recovery] table of the file)")]
pub struct RecoveryOptions {
    /// How long a package stays Degraded before its incident opens (only
    /// when --reconcile-on holds degraded).
    #[arg(
        long = "recovery-degraded-after",
        env = "STATEMANAGER_RECOVERY_DEGRADED_AFTER",
        value_name = "DURATION"
    )]
    pub degraded_after: Option<HumanDuration>,

    /// How long a model stays Dead before its incident opens (only with
    /// --recovery-model-dead).
    #[arg(
        long = "recovery-model-dead-after",
        env = "STATEMANAGER_RECOVERY_MODEL_DEAD_AFTER",
        value_name = "DURATION"
    )]
    pub model_dead_after: Option<HumanDuration>,

    /// Open ModelDead incidents for Dead models whose package has none.
    #[arg(long = "recovery-model-dead", env = "STATEMANAGER_RECOVERY_MODEL_DEAD",
          value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub model_dead: Option<bool>,

    /// Re-derive at once a model or package key that another writer changed
    /// to a value the reports do not derive.
    #[arg(long = "recovery-repair-foreign-writes", env = "STATEMANAGER_RECOVERY_REPAIR_FOREIGN_WRITES",
          value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub repair_foreign_writes: Option<bool>,

    /// Transitions within --recovery-flap-window that make a resource flap,
    /// 1 to 64.
    #[arg(
        long = "recovery-flap-threshold",
        env = "STATEMANAGER_RECOVERY_FLAP_THRESHOLD",
        value_name = "N"
    )]
    pub flap_threshold: Option<u32>,

    /// The flapping window, and how long a flapping resource must be stable
    /// before its incident acts again.
    #[arg(
        long = "recovery-flap-window",
        env = "STATEMANAGER_RECOVERY_FLAP_WINDOW",
        value_name = "DURATION"
    )]
    pub flap_window: Option<HumanDuration>,

    /// How long an open alert lives before it expires.
    #[arg(
        long = "recovery-alert-ttl",
        env = "STATEMANAGER_RECOVERY_ALERT_TTL",
        value_name = "DURATION"
    )]
    pub alert_ttl: Option<HumanDuration>,

    /// Ended incidents kept for GetRecoveryStatus.
    #[arg(
        long = "recovery-incidents-kept",
        env = "STATEMANAGER_RECOVERY_INCIDENTS_KEPT",
        value_name = "N"
    )]
    pub incidents_kept: Option<usize>,

    /// Resolved and expired alerts kept.
    #[arg(
        long = "recovery-alerts-kept",
        env = "STATEMANAGER_RECOVERY_ALERTS_KEPT",
        value_name = "N"
    )]
    pub alerts_kept: Option<usize>,

    /// How recently a node must have reported to be a Relocate target.
    #[arg(
        long = "recovery-live-node-within",
        env = "STATEMANAGER_RECOVERY_LIVE_NODE_WITHIN",
        value_name = "DURATION"
    )]
    pub live_node_within: Option<HumanDuration>,

    /// The file's `[recovery.strategy.*]` tables: each a default strategy
    /// with the given keys in place.
    #[arg(skip)]
    pub strategies: Option<Vec<(IssueType, Strategy)>>,
}

impl Options {
    /// These options, with what they leave unset taken from `lower` (a
    /// source of lower precedence).
    pub fn over(self, lower: Options) -> Options {
        // Destructured so that a new field cannot be forgotten here.
        let Options {
            listen,
            store,
            data_dir,
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
            tls_cert,
            tls_key,
            tls_client_ca,
            policy,
            action_controller_ca,
            action_controller_cert,
            action_controller_key,
            pullpiri_kv,
            pullpiri_kv_poll,
            pullpiri_kv_values,
            ha,
            ha_group,
            ha_lease_ttl,
            ha_advertise,
            recovery,
        } = self;
        Options {
            listen: listen.or(lower.listen),
            store: store.or(lower.store),
            data_dir: data_dir.or(lower.data_dir),
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
            tls_cert: tls_cert.or(lower.tls_cert),
            tls_key: tls_key.or(lower.tls_key),
            tls_client_ca: tls_client_ca.or(lower.tls_client_ca),
            policy: policy.or(lower.policy),
            action_controller_ca: action_controller_ca.or(lower.action_controller_ca),
            action_controller_cert: action_controller_cert.or(lower.action_controller_cert),
            action_controller_key: action_controller_key.or(lower.action_controller_key),
            pullpiri_kv: pullpiri_kv.or(lower.pullpiri_kv),
            pullpiri_kv_poll: pullpiri_kv_poll.or(lower.pullpiri_kv_poll),
            pullpiri_kv_values: pullpiri_kv_values.or(lower.pullpiri_kv_values),
            ha: ha.or(lower.ha),
            ha_group: ha_group.or(lower.ha_group),
            ha_lease_ttl: ha_lease_ttl.or(lower.ha_lease_ttl),
            ha_advertise: ha_advertise.or(lower.ha_advertise),
            recovery: recovery.over(lower.recovery),
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
        let kind = match (self.store, &self.etcd_endpoints) {
            (Some(kind @ (StoreKind::Memory | StoreKind::Embedded)), Some(endpoints)) => bail!(
                "--store {} conflicts with --etcd-endpoints '{}': give one or the other",
                kind.name(),
                endpoints.0.join(",")
            ),
            (Some(StoreKind::Etcd), None) => bail!(
                "--store etcd needs --etcd-endpoints (comma-separated URLs, e.g. \
                 http://127.0.0.1:2379)"
            ),
            (Some(kind), _) => kind,
            (None, Some(_)) => StoreKind::Etcd,
            (None, None) => StoreKind::Embedded,
        };
        if kind != StoreKind::Etcd
            && let Some((flag, _)) = etcd_only.iter().find(|(_, given)| *given)
        {
            bail!("{flag} applies only to the etcd store: give --etcd-endpoints too");
        }
        if kind != StoreKind::Embedded && self.data_dir.is_some() {
            bail!(
                "--data-dir applies only to the embedded store, not --store {}",
                kind.name()
            );
        }
        let store = match (kind, self.etcd_endpoints) {
            (StoreKind::Memory, _) => StoreSettings::Memory,
            (StoreKind::Embedded, _) => StoreSettings::Embedded(match self.data_dir {
                Some(dir) if dir.as_os_str().is_empty() => bail!("--data-dir must not be empty"),
                Some(dir) => dir,
                None => default_data_dir(std::env::var_os("XDG_STATE_HOME")),
            }),
            (StoreKind::Etcd, None) => bail!("--store etcd needs --etcd-endpoints"),
            (StoreKind::Etcd, Some(List(endpoints))) => {
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

        let pullpiri_kv = match self.pullpiri_kv {
            None => {
                if self.pullpiri_kv_poll.is_some() || self.pullpiri_kv_values.is_some() {
                    bail!(
                        "--pullpiri-kv-poll and --pullpiri-kv-values apply only to the \
                         RocksDbService bridge: give --pullpiri-kv (or ROCKSDB_SERVICE_URL) too"
                    );
                }
                None
            }
            Some(url) => {
                let mut bridge = BridgeConfig {
                    url,
                    ..BridgeConfig::default()
                };
                if let Some(poll) = self.pullpiri_kv_poll {
                    bridge.poll = positive("--pullpiri-kv-poll", poll)?;
                }
                if let Some(KvValues(values)) = self.pullpiri_kv_values {
                    bridge.values = values;
                }
                let host = bridge.url.strip_prefix("http://").unwrap_or_default();
                if host.is_empty() || host.contains(char::is_whitespace) {
                    bail!(
                        "--pullpiri-kv '{}' is not an http://host:port URL \
                         (upstream's RocksDbService speaks plain HTTP/2)",
                        bridge.url
                    );
                }
                Some(bridge)
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
        // After the core settings are final: the issue rules derive from them.
        engine.healing = self.recovery.resolve(&engine.core)?;
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

        let ha = ha_settings(
            HaOptions {
                ha: self.ha,
                group: self.ha_group.clone(),
                lease_ttl: self.ha_lease_ttl,
                advertise: self.ha_advertise.clone(),
            },
            listen,
            &store,
            self.tls_cert.is_some(),
        )?;
        if ha.is_some() && pullpiri_kv.is_some() {
            bail!(
                "--pullpiri-kv does not go with --ha yet: run the RocksDbService bridge on a \
                 daemon outside the group"
            );
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert,
                key,
                client_ca: self.tls_client_ca,
            }),
            (None, None) => {
                if self.tls_client_ca.is_some() {
                    bail!(
                        "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first"
                    );
                }
                None
            }
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        if self.policy.is_some() && tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            bail!(
                "--policy needs --tls-client-ca: identities come from client certificates, \
                 and without them there is nobody to authorize"
            );
        }
        if self.action_controller_cert.is_some() != self.action_controller_key.is_some() {
            bail!("--action-controller-cert and --action-controller-key go together");
        }
        let action_tls = [
            &self.action_controller_ca,
            &self.action_controller_cert,
            &self.action_controller_key,
        ];
        if action_tls.iter().any(|file| file.is_some())
            && !action_controller.starts_with("https://")
        {
            bail!(
                "the --action-controller-ca/-cert/-key options need an https:// \
                 --action-controller URL, not '{action_controller}'"
            );
        }
        let mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        engine.core.access = match (&self.policy, mutual_tls) {
            (Some(path), _) => Some(Arc::new(read_policy(path)?)),
            (None, true) => Some(Arc::new(Policy::default_for_sources(
                &engine.core.scenario_policy,
            ))),
            (None, false) => None,
        };
        if ha.is_some() {
            // The fence is one more compare in every transaction.
            engine.max_txn_ops = engine.max_txn_ops.saturating_sub(1).max(1);
        }
        let action_controller_tls = ActionControllerTls {
            ca: self.action_controller_ca,
            cert: self.action_controller_cert,
            key: self.action_controller_key,
        };

        Ok(Settings {
            listen,
            store,
            tls,
            policy: self.policy,
            action_controller_tls,
            action_controller,
            action,
            engine,
            serve,
            metrics_listen: self.metrics_listen,
            log_format: self.log_format.unwrap_or_default(),
            shutdown_timeout: match self.shutdown_timeout {
                Some(timeout) => positive("--shutdown-timeout", timeout)?,
                None => DEFAULT_SHUTDOWN_TIMEOUT,
            },
            worker_threads: match self.worker_threads {
                Some(0) => bail!("--worker-threads must be at least 1"),
                threads => threads,
            },
            pullpiri_kv,
            ha,
        })
    }
}

/// `--ha`/`--ha-group` and their companions, checked.
fn ha_settings(
    options: HaOptions,
    listen: SocketAddr,
    store: &StoreSettings,
    tls: bool,
) -> anyhow::Result<Option<HaSettings>> {
    let group = match (&options.group, options.ha) {
        (Some(group), Some(false)) => bail!("--ha=false and --ha-group '{group}' disagree"),
        (Some(group), _) => Some(group.clone()),
        (None, Some(true)) => Some(DEFAULT_HA_GROUP.to_owned()),
        (None, _) => None,
    };
    let Some(group) = group else {
        if options.lease_ttl.is_some() || options.advertise.is_some() {
            bail!("--ha-lease-ttl and --ha-advertise apply only with --ha or --ha-group");
        }
        return Ok(None);
    };
    if group.is_empty()
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("--ha-group '{group}' must be letters, digits, '-', '_' or '.'");
    }
    if !matches!(store, StoreSettings::Etcd(_)) {
        bail!(
            "--ha needs --store etcd: the members of a group share one etcd, \
             which elects their leader"
        );
    }
    let lease_ttl = match options.lease_ttl {
        Some(ttl) if ttl.0 < Duration::from_secs(1) || ttl.0.subsec_nanos() != 0 => {
            bail!("--ha-lease-ttl must be whole seconds, at least 1s (etcd leases count seconds)")
        }
        Some(ttl) => ttl.0,
        None => election::DEFAULT_TTL,
    };
    let advertise = match &options.advertise {
        Some(url) => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or_default();
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                bail!("--ha-advertise '{url}' is not an http:// or https:// URL");
            }
            Some(url.clone())
        }
        None if listen.ip().is_unspecified() => bail!(
            "--listen {listen} names no address the other members can reach: \
             give --ha-advertise (e.g. {}://this-host:{})",
            if tls { "https" } else { "http" },
            listen.port()
        ),
        None => None,
    };
    Ok(Some(HaSettings {
        group,
        lease_ttl,
        advertise,
    }))
}

/// The HA options as given.
struct HaOptions {
    ha: Option<bool>,
    group: Option<String>,
    lease_ttl: Option<HumanDuration>,
    advertise: Option<String>,
}

/// The group `--ha` joins.
pub const DEFAULT_HA_GROUP: &str = "default";

/// High availability: the group, the lease and where this member serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// The group's name (its election key is `{prefix}leader/{group}`).
    pub group: String,
    /// The leader's lease TTL.
    pub lease_ttl: Duration,
    /// This member's gRPC URL, for the others to forward writes to
    /// (`None`: the address it listens on).
    pub advertise: Option<String>,
}

fn positive(flag: &str, duration: HumanDuration) -> anyhow::Result<Duration> {
    if duration.0.is_zero() {
        bail!("{flag} must be longer than 0s");
    }
    Ok(duration.0)
}

/// The embedded store's directory when `--data-dir` is not given:
/// `$XDG_STATE_HOME/statemanager` when that is an absolute path (as the XDG
/// base directory specification requires), else `./statemanager-data`.
pub fn default_data_dir(xdg_state_home: Option<std::ffi::OsString>) -> PathBuf {
    match xdg_state_home.map(PathBuf::from) {
        Some(home) if home.is_absolute() => home.join("statemanager"),
        _ => PathBuf::from("statemanager-data"),
    }
}

impl StoreKind {
    /// The name `--store` takes.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Etcd => "etcd",
            StoreKind::Embedded => "embedded",
            StoreKind::Memory => "memory",
        }
    }
}

/// Which store the daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// The embedded database in this directory.
    Embedded(PathBuf),
    /// In memory only (tests).
    Memory,
    /// etcd, with this client configuration.
    Etcd(Box<EtcdConfig>),
}

impl StoreSettings {
    /// Which kind of store these settings open.
    pub fn kind(&self) -> StoreKind {
        match self {
            StoreSettings::Embedded(_) => StoreKind::Embedded,
            StoreSettings::Memory => StoreKind::Memory,
            StoreSettings::Etcd(_) => StoreKind::Etcd,
        }
    }
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
    /// The RocksDbService bridge, when `--pullpiri-kv` is given.
    pub pullpiri_kv: Option<BridgeConfig>,
    /// The gRPC server's TLS, when `--tls-cert` and `--tls-key` are given.
    pub tls: Option<TlsSettings>,
    /// The authorization policy file.
    pub policy: Option<PathBuf>,
    /// TLS files for an `https://` ActionController.
    pub action_controller_tls: ActionControllerTls,
    /// High availability, when `--ha` or `--ha-group` is given.
    pub ha: Option<HaSettings>,
}

/// The gRPC server's certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA of client certificates: mutual TLS when given.
    pub client_ca: Option<PathBuf>,
}

/// TLS files for the ActionController client (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionControllerTls {
    /// CA to verify the ActionController with.
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
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
    let recovery = table.remove("recovery");
    let mut options = Options::deserialize(table)?;
    if let Some(recovery) = recovery {
        options.recovery = RecoveryOptions::from_toml(recovery)?;
    }
    Ok(options)
}

/// The keys of the file's `[recovery]` table.
const RECOVERY_KEYS: [&str; 11] = [
    "degraded-after",
    "model-dead-after",
    "model-dead",
    "repair-foreign-writes",
    "flap-threshold",
    "flap-window",
    "alert-ttl",
    "incidents-kept",
    "alerts-kept",
    "live-node-within",
    "strategy",
];
/// The keys of one `[recovery.strategy.<issue type>]` table.
const STRATEGY_KEYS: [&str; 6] = [
    "actions",
    "max-retry-count",
    "escalation-threshold",
    "validation-timeout",
    "initial-delay",
    "backoff",
];
/// The keys of a strategy's `backoff` table.
const BACKOFF_KEYS: [&str; 4] = ["base", "cap", "jitter-min", "jitter-max"];

impl RecoveryOptions {
    /// These options, with what they leave unset taken from `lower`.
    pub fn over(self, lower: RecoveryOptions) -> RecoveryOptions {
        // Destructured so that a new field cannot be forgotten here.
        let RecoveryOptions {
            degraded_after,
            model_dead_after,
            model_dead,
            repair_foreign_writes,
            flap_threshold,
            flap_window,
            alert_ttl,
            incidents_kept,
            alerts_kept,
            live_node_within,
            strategies,
        } = self;
        RecoveryOptions {
            degraded_after: degraded_after.or(lower.degraded_after),
            model_dead_after: model_dead_after.or(lower.model_dead_after),
            model_dead: model_dead.or(lower.model_dead),
            repair_foreign_writes: repair_foreign_writes.or(lower.repair_foreign_writes),
            flap_threshold: flap_threshold.or(lower.flap_threshold),
            flap_window: flap_window.or(lower.flap_window),
            alert_ttl: alert_ttl.or(lower.alert_ttl),
            incidents_kept: incidents_kept.or(lower.incidents_kept),
            alerts_kept: alerts_kept.or(lower.alerts_kept),
            live_node_within: live_node_within.or(lower.live_node_within),
            strategies: strategies.or(lower.strategies),
        }
    }

    /// The healer's configuration: the defaults, the issue rules derived
    /// from the final `core` settings, then these options; every bound and
    /// every strategy checked.
    pub fn resolve(self, core: &CoreConfig) -> anyhow::Result<HealingConfig> {
        let mut healing = HealingConfig {
            issues: IssueRules::from_config(core, self.model_dead.unwrap_or(false)),
            ..HealingConfig::default()
        };
        if let Some(HumanDuration(after)) = self.degraded_after {
            healing.issues.degraded_after = after;
        }
        if let Some(HumanDuration(after)) = self.model_dead_after {
            healing.issues.model_dead_after = after;
        }
        if let Some(repair) = self.repair_foreign_writes {
            healing.repair_foreign_writes = repair;
        }
        if let Some(threshold) = self.flap_threshold {
            let capacity = healing.tracker.capacity;
            if threshold == 0 || usize::try_from(threshold).map_or(true, |t| t > capacity) {
                bail!(
                    "recovery.flap-threshold (--recovery-flap-threshold) must be from 1 to \
                     {capacity} (the transitions kept per resource), not {threshold}"
                );
            }
            healing.tracker.flap_threshold = threshold;
        }
        if let Some(window) = self.flap_window {
            healing.tracker.flap_window =
                positive("recovery.flap-window (--recovery-flap-window)", window)?;
        }
        if let Some(ttl) = self.alert_ttl {
            healing.alert_ttl = positive("recovery.alert-ttl (--recovery-alert-ttl)", ttl)?;
        }
        if let Some(kept) = self.incidents_kept {
            if kept == 0 {
                bail!(
                    "recovery.incidents-kept (--recovery-incidents-kept) must be at least 1: \
                     GetRecoveryStatus reads an incident after it ended"
                );
            }
            healing.incidents_kept = kept;
        }
        if let Some(kept) = self.alerts_kept {
            healing.alerts_kept = kept;
        }
        if let Some(within) = self.live_node_within {
            healing.live_node_within = positive(
                "recovery.live-node-within (--recovery-live-node-within)",
                within,
            )?;
        }

        healing.strategies = StrategyTable::with(self.strategies.unwrap_or_default());
        healing
            .strategies
            .validate("recovery.strategy")
            .map_err(file_spelling)?;
        let package_error = healing.strategies.get(IssueType::PackageError);
        if package_error.actions.first() != Some(&RecoveryAction::Restart) {
            bail!(
                "recovery.strategy.package_error.actions[0]: the PackageError ladder must start \
                 with Restart: its first rung is the Reconcile committed with the transition \
                 that entered Error"
            );
        }
        Ok(healing)
    }

    /// Reads the file's `[recovery]` table; errors name the full key.
    fn from_toml(value: toml::Value) -> anyhow::Result<RecoveryOptions> {
        let mut options = RecoveryOptions::default();
        for (key, value) in table("recovery", value)? {
            let at = format!("recovery.{key}");
            match key.as_str() {
                "degraded-after" => options.degraded_after = Some(duration(&at, value)?),
                "model-dead-after" => options.model_dead_after = Some(duration(&at, value)?),
                "model-dead" => options.model_dead = Some(boolean(&at, value)?),
                "repair-foreign-writes" => {
                    options.repair_foreign_writes = Some(boolean(&at, value)?)
                }
                "flap-threshold" => options.flap_threshold = Some(whole(&at, value)?),
                "flap-window" => options.flap_window = Some(duration(&at, value)?),
                "alert-ttl" => options.alert_ttl = Some(duration(&at, value)?),
                "incidents-kept" => options.incidents_kept = Some(whole(&at, value)?),
                "alerts-kept" => options.alerts_kept = Some(whole(&at, value)?),
                "live-node-within" => options.live_node_within = Some(duration(&at, value)?),
                "strategy" => options.strategies = Some(strategies(value)?),
                _ => return Err(unknown_key(&at, &key, &RECOVERY_KEYS)),
            }
        }
        Ok(options)
    }
}

/// The `[recovery.strategy.*]` tables.
fn strategies(value: toml::Value) -> anyhow::Result<Vec<(IssueType, Strategy)>> {
    let mut strategies = Vec::new();
    for (name, value) in table("recovery.strategy", value)? {
        let at = format!("recovery.strategy.{name}");
        let Some(issue) = IssueType::ALL.into_iter().find(|i| i.as_key() == name) else {
            let allowed: Vec<_> = IssueType::ALL.iter().map(|i| i.as_key()).collect();
            bail!(
                "{at}: unknown issue type '{}'; allowed: {}",
                name.escape_debug(),
                allowed.join(", ")
            );
        };
        strategies.push((issue, strategy(&at, issue, value)?));
    }
    Ok(strategies)
}

/// One `[recovery.strategy.<issue type>]` table over the issue type's defaults.
fn strategy(at: &str, issue: IssueType, value: toml::Value) -> anyhow::Result<Strategy> {
    let mut strategy = Strategy::default_for(issue);
    for (key, value) in table(at, value)? {
        let at = format!("{at}.{key}");
        match key.as_str() {
            "actions" => strategy.actions = actions(&at, value)?,
            "max-retry-count" => strategy.max_retry_count = whole(&at, value)?,
            "escalation-threshold" => strategy.escalation_threshold = whole(&at, value)?,
            "validation-timeout" => strategy.validation_timeout = duration(&at, value)?.0,
            "initial-delay" => strategy.initial_delay = duration(&at, value)?.0,
            "backoff" => {
                for (key, value) in table(&at, value)? {
                    let at = format!("{at}.{key}");
                    let backoff = &mut strategy.backoff;
                    match key.as_str() {
                        "base" => backoff.base = duration(&at, value)?.0,
                        "cap" => backoff.cap = duration(&at, value)?.0,
                        "jitter-min" => backoff.jitter_min = fraction(&at, value)?,
                        "jitter-max" => backoff.jitter_max = fraction(&at, value)?,
                        _ => return Err(unknown_key(&at, &key, &BACKOFF_KEYS)),
                    }
                }
            }
            _ => return Err(unknown_key(&at, &key, &STRATEGY_KEYS)),
        }
    }
    Ok(strategy)
}

/// A ladder: a TOML array of action names, or such a comma-separated
/// string, any case (`restart`, `Restart`).
fn actions(at: &str, value: toml::Value) -> anyhow::Result<Vec<RecoveryAction>> {
    let names: Vec<toml::Value> = match value {
        toml::Value::Array(names) => names,
        toml::Value::String(text) if text.trim().is_empty() => Vec::new(),
        toml::Value::String(text) => text
            .split(',')
            .map(|name| toml::Value::String(name.trim().to_owned()))
            .collect(),
        other => bail!(
            "{at}: expected a list of actions such as [\"Restart\", \"Notify\"], found {}",
            other.type_str()
        ),
    };
    names
        .into_iter()
        .enumerate()
        .map(|(index, name)| {
            let at = format!("{at}[{index}]");
            let toml::Value::String(name) = name else {
                bail!("{at}: expected an action name, found {}", name.type_str());
            };
            let wanted = name.trim();
            RecoveryAction::ALL
                .into_iter()
                .find(|action| action.as_str().eq_ignore_ascii_case(wanted))
                .ok_or_else(|| {
                    let allowed: Vec<_> = RecoveryAction::ALL.iter().map(|a| a.as_str()).collect();
                    anyhow::anyhow!(
                        "{at}: unknown action '{}'; allowed: {}",
                        wanted.escape_debug(),
                        allowed.join(", ")
                    )
                })
        })
        .collect()
}

/// A table of the file, or an error naming `at`.
fn table(at: &str, value: toml::Value) -> anyhow::Result<toml::Table> {
    match value {
        toml::Value::Table(table) => Ok(table),
        other => bail!("{at}: expected a table, found {}", other.type_str()),
    }
}

/// A duration string (`60s`, `7d`).
fn duration(at: &str, value: toml::Value) -> anyhow::Result<HumanDuration> {
    match value {
        toml::Value::String(text) => text
            .parse()
            .map_err(|error| anyhow::anyhow!("{at}: {error}")),
        other => bail!(
            "{at}: expected a duration string such as \"60s\", found {}",
            other.type_str()
        ),
    }
}

/// `true` or `false`.
fn boolean(at: &str, value: toml::Value) -> anyhow::Result<bool> {
    match value {
        toml::Value::Boolean(value) => Ok(value),
        other => bail!("{at}: expected true or false, found {}", other.type_str()),
    }
}

/// A whole number that fits `T` (no negatives).
fn whole<T: TryFrom<i64>>(at: &str, value: toml::Value) -> anyhow::Result<T> {
    match value {
        toml::Value::Integer(number) => T::try_from(number)
            .map_err(|_| anyhow::anyhow!("{at}: {number} is out of range (a whole number >= 0)")),
        other => bail!("{at}: expected a whole number, found {}", other.type_str()),
    }
}

/// A number such as `0.5` (a whole number is taken too).
fn fraction(at: &str, value: toml::Value) -> anyhow::Result<f64> {
    match value {
        toml::Value::Float(number) => Ok(number),
        // Whole numbers this small are exact as f64.
        toml::Value::Integer(number @ -1_000_000..=1_000_000) => Ok(number as f64),
        other => bail!(
            "{at}: expected a number such as 0.5, found {}",
            other.type_str()
        ),
    }
}

/// An unknown key, with the allowed ones and, for `snake_case`, the
/// spelling the file uses.
fn unknown_key(at: &str, key: &str, allowed: &[&str]) -> anyhow::Error {
    let kebab = key.replace('_', "-");
    if kebab != key && allowed.contains(&kebab.as_str()) {
        return anyhow::anyhow!("{at}: unknown key; keys are written with dashes: '{kebab}'");
    }
    anyhow::anyhow!(
        "{at}: unknown key '{}'; allowed: {}",
        key.escape_debug(),
        allowed.join(", ")
    )
}

/// The core names strategy fields in snake_case
/// (`recovery.strategy.node_silent.max_retry_count`); the file spells them
/// with dashes, as every other key (`max-retry-count`). The issue type keeps
/// its name (`node_silent`).
fn file_spelling(error: StrategyError) -> anyhow::Error {
    let field = match error.field.strip_prefix("recovery.strategy.") {
        Some(rest) => match rest.split_once('.') {
            Some((issue, key)) => format!("recovery.strategy.{issue}.{}", key.replace('_', "-")),
            None => error.field.clone(),
        },
        None => error.field.clone(),
    };
    anyhow::Error::new(StrategyError {
        field,
        problem: error.problem.replace("jitter_min", "jitter-min"),
    })
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

/// Reads and checks the `--policy` file (docs/security.md).
pub fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy file {}", path.display()))?;
    let file: PolicyFile = toml::from_str(&text)
        .with_context(|| format!("the policy file {} is not valid", path.display()))?;
    Policy::try_from(file)
        .with_context(|| format!("the policy file {} is not valid", path.display()))
}

/// `--pullpiri-kv-values`: `upstream` or `canonical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvValues(pub ValueFormat);

impl FromStr for KvValues {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse()
            .map(KvValues)
            .map_err(|e: ParseValueFormatError| e.to_string())
    }
}

impl<'de> Deserialize<'de> for KvValues {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
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
    fn ha_is_off_unless_asked_and_needs_etcd_and_a_reachable_address() {
        let etcd = [
            "--store=etcd",
            "--etcd-endpoints=http://e:2379",
            "--listen=10.0.0.5:47006",
        ];
        assert_eq!(resolve(&etcd, "").unwrap().ha, None);
        let on = |args: &[&str], file: &str| {
            let mut all = etcd.to_vec();
            all.extend_from_slice(args);
            resolve(&all, file).unwrap().ha.expect("HA is on")
        };
        let ha = on(&["--ha"], "");
        assert_eq!(
            ha,
            HaSettings {
                group: DEFAULT_HA_GROUP.to_owned(),
                lease_ttl: election::DEFAULT_TTL,
                advertise: None,
            }
        );
        let ha = on(
            &["--ha-group=master-a", "--ha-lease-ttl=3s"],
            "ha-advertise = \"https://m1:47006\"",
        );
        assert_eq!(
            (ha.group.as_str(), ha.lease_ttl, ha.advertise.as_deref()),
            ("master-a", Duration::from_secs(3), Some("https://m1:47006"))
        );
        let settings = resolve(&[&etcd[..], &["--ha"]].concat(), "").unwrap();
        assert_eq!(
            settings.engine.max_txn_ops,
            EngineConfig::default().max_txn_ops - 1,
            "the fence takes one compare of each transaction"
        );

        let error = |args: &[&str]| resolve(args, "").unwrap_err().to_string();
        assert!(error(&["--ha"]).contains("--ha needs --store etcd"));
        assert!(error(&["--store=memory", "--ha-group=g"]).contains("--ha needs --store etcd"));
        fn with<'a>(more: &[&'a str]) -> Vec<&'a str> {
            [
                &[
                    "--store=etcd",
                    "--etcd-endpoints=http://e:2379",
                    "--listen=10.0.0.5:47006",
                ][..],
                more,
            ]
            .concat()
        }
        assert!(error(&with(&["--ha-lease-ttl=3s"])).contains("only with --ha"));
        assert!(error(&with(&["--ha", "--ha-lease-ttl=500ms"])).contains("whole seconds"));
        assert!(error(&with(&["--ha", "--ha-lease-ttl=1500ms"])).contains("whole seconds"));
        assert!(error(&with(&["--ha-group=a b"])).contains("letters, digits"));
        assert!(error(&with(&["--ha=false", "--ha-group=g"])).contains("disagree"));
        assert!(error(&with(&["--ha", "--ha-advertise=m1:47006"])).contains("not an http://"));
        assert!(
            error(&[
                "--store=etcd",
                "--etcd-endpoints=http://e:2379",
                "--listen=0.0.0.0:47006",
                "--ha"
            ])
            .contains("--ha-advertise")
        );
        assert!(
            error(&with(&["--ha", "--pullpiri-kv=http://kv:47007"]))
                .contains("does not go with --ha")
        );
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
        assert_eq!(
            settings.store,
            StoreSettings::Embedded(default_data_dir(std::env::var_os("XDG_STATE_HOME")))
        );
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

    /// docs/security.md writes the default policy out as a file: it must
    /// say what the code does.
    #[test]
    fn the_default_policy_in_docs_security_md_is_the_one_in_force() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md"),
        )
        .unwrap();
        let (_, after) = doc
            .split_once("With mutual TLS and no `--policy`, this default applies")
            .expect("the default policy's section");
        let (_, block) = after.split_once("```toml\n").expect("its TOML block");
        let (block, _) = block.split_once("```").expect("the block's end");
        let file: PolicyFile = toml::from_str(block).unwrap();
        let documented = Policy::try_from(file).unwrap();
        let in_force = Policy::default_for_sources(&Default::default());
        assert_eq!(documented, in_force);
    }

    /// The etcd password never shows: not in the settings the daemon may
    /// log, not in `--help` (the binary's test checks the environment).
    #[test]
    fn the_etcd_password_is_never_shown() {
        let settings = resolve(
            &[
                "--etcd-endpoints=http://a:2379",
                "--etcd-user=u",
                "--etcd-password=hunter2-secret",
            ],
            "",
        )
        .unwrap();
        let shown = format!("{settings:?} {settings:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let options = format!("{:?}", cli(&["--etcd-password=hunter2-secret"]));
        assert!(!options.contains("hunter2"), "{options}");
    }

    #[test]
    fn tls_and_the_policy_are_checked_together() {
        let error = |args: &[&str]| resolve(args, "").unwrap_err().to_string();
        let settings = resolve(&[], "").unwrap();
        assert_eq!((settings.tls, settings.policy), (None, None));

        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[[rule]]\nname = \"readers\"\nidentities = [\"*\"]\nread = true\n",
        )
        .unwrap();
        let mutual = [
            "--tls-cert=/c.pem",
            "--tls-key=/k.pem",
            "--tls-client-ca=/ca.pem",
        ];
        let settings = resolve(&mutual, &format!("policy = \"{}\"", policy.display())).unwrap();
        let access = settings.engine.core.access.as_ref().expect("a policy");
        assert_eq!(access.rules().len(), 1);
        assert_eq!(
            settings.tls,
            Some(TlsSettings {
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
                client_ca: Some("/ca.pem".into()),
            })
        );
        assert_eq!(settings.policy, Some(policy.clone()));

        // Mutual TLS without a file: the default policy; TLS alone: none.
        assert!(resolve(&mutual, "").unwrap().engine.core.access.is_some());
        let server_only = resolve(&["--tls-cert=/c.pem", "--tls-key=/k.pem"], "").unwrap();
        assert!(server_only.engine.core.access.is_none());

        std::fs::write(
            &policy,
            "[[rule]]\nname = \"x\"\nidentities = [\"*\"]\nwrite = true\n",
        )
        .unwrap();
        let flag = format!("--policy={}", policy.display());
        let mut args = mutual.to_vec();
        args.push(&flag);
        let message = format!("{:#}", resolve(&args, "").unwrap_err());
        assert!(
            message.contains(&policy.display().to_string()) && message.contains("write"),
            "{message}"
        );

        assert!(error(&["--tls-cert=/c.pem"]).contains("--tls-cert and --tls-key go together"));
        assert!(error(&["--tls-client-ca=/ca.pem"]).contains("needs --tls-cert and --tls-key"));
        assert!(
            error(&["--tls-cert=/c", "--tls-key=/k", "--policy=/p.toml"])
                .contains("--policy needs --tls-client-ca")
        );
        assert!(
            error(&["--action-controller-ca=/ca.pem"])
                .contains("need an https:// --action-controller")
        );
        assert!(
            error(&[
                "--action-controller=https://ac:47001",
                "--action-controller-cert=/c.pem"
            ])
            .contains("--action-controller-cert and --action-controller-key go together")
        );
        let settings = resolve(
            &[
                "--action-controller=https://ac:47001",
                "--action-controller-ca=/ca.pem",
            ],
            "",
        )
        .unwrap();
        assert_eq!(settings.action_controller_tls.ca, Some("/ca.pem".into()));
    }

    #[test]
    fn the_rocksdb_service_bridge_is_off_unless_given_a_url() {
        assert_eq!(resolve(&[], "").unwrap().pullpiri_kv, None);
        let bridge = resolve(&["--pullpiri-kv=http://127.0.0.1:47007"], "")
            .unwrap()
            .pullpiri_kv
            .expect("the bridge is on");
        assert_eq!(bridge.url, "http://127.0.0.1:47007");
        assert_eq!(bridge.poll, Duration::from_secs(1));
        assert_eq!(bridge.values, ValueFormat::Upstream);

        let bridge = resolve(
            &["--pullpiri-kv-poll=250ms"],
            "pullpiri-kv = \"http://kv:47007\"\npullpiri-kv-values = \"canonical\"",
        )
        .unwrap()
        .pullpiri_kv
        .expect("the bridge is on");
        assert_eq!(
            (bridge.url.as_str(), bridge.poll, bridge.values),
            (
                "http://kv:47007",
                Duration::from_millis(250),
                ValueFormat::Canonical
            )
        );

        let error = |args: &[&str], file: &str| resolve(args, file).unwrap_err().to_string();
        assert!(error(&["--pullpiri-kv-poll=1s"], "").contains("give --pullpiri-kv"));
        assert!(error(&["--pullpiri-kv=kv:47007"], "").contains("not an http://host:port URL"));
        assert!(
            error(&["--pullpiri-kv=http://kv", "--pullpiri-kv-poll=0s"], "")
                .contains("longer than 0s")
        );
        let file = parse_file("pullpiri-kv-values = \"loud\"").unwrap_err();
        assert!(
            format!("{file:#}").contains("'upstream' or 'canonical'"),
            "{file:#}"
        );
        let refused = Cli::try_parse_from(["statemanager", "--pullpiri-kv-values=loud"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--pullpiri-kv-values"), "{refused}");
    }

    #[test]
    fn the_embedded_store_is_the_default_and_takes_a_data_dir() {
        let error = |args: &[&str]| resolve(args, "").unwrap_err().to_string();
        assert_eq!(
            resolve(&["--data-dir=/var/lib/sm"], "").unwrap().store,
            StoreSettings::Embedded("/var/lib/sm".into())
        );
        assert_eq!(
            resolve(&["--store=embedded"], "data-dir = \"/srv/sm\"")
                .unwrap()
                .store,
            StoreSettings::Embedded("/srv/sm".into())
        );
        assert!(
            error(&["--store=embedded", "--etcd-endpoints=http://a:2379"])
                .contains("--store embedded conflicts with --etcd-endpoints")
        );
        assert!(
            error(&["--etcd-endpoints=http://a:2379", "--data-dir=/d"])
                .contains("--data-dir applies only to the embedded store, not --store etcd")
        );
        assert!(error(&["--store=memory", "--data-dir=/d"]).contains("not --store memory"));
        assert!(
            resolve(&[], "data-dir = \"\"")
                .unwrap_err()
                .to_string()
                .contains("must not be empty")
        );
        assert!(error(&["--etcd-user=u"]).contains("applies only to the etcd store"));

        let cases: [(Option<&str>, &str); 4] = [
            (
                Some("/home/u/.local/state"),
                "/home/u/.local/state/statemanager",
            ),
            (Some("relative/state"), "statemanager-data"),
            (Some(""), "statemanager-data"),
            (None, "statemanager-data"),
        ];
        for (xdg, expected) in cases {
            assert_eq!(
                default_data_dir(xdg.map(Into::into)),
                PathBuf::from(expected),
                "{xdg:?}"
            );
        }
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

            [recovery]
            degraded-after = "1s"
            model-dead-after = "2s"
            model-dead = true
            repair-foreign-writes = false
            flap-threshold = 3
            flap-window = "4s"
            alert-ttl = "5s"
            incidents-kept = 6
            alerts-kept = 7
            live-node-within = "8s"
            strategy.manual.actions = ["notify"]
        "#;
        let from_file = parse_file(file).unwrap();
        let RecoveryOptions {
            degraded_after,
            model_dead_after,
            model_dead,
            repair_foreign_writes,
            flap_threshold,
            flap_window,
            alert_ttl,
            incidents_kept,
            alerts_kept,
            live_node_within,
            strategies,
        } = &from_file.recovery;
        assert!(
            degraded_after.is_some()
                && model_dead_after.is_some()
                && model_dead.is_some()
                && repair_foreign_writes.is_some()
                && flap_threshold.is_some()
                && flap_window.is_some()
                && alert_ttl.is_some()
                && incidents_kept.is_some()
                && alerts_kept.is_some()
                && live_node_within.is_some()
                && strategies.is_some(),
            "the file sets every recovery option: {:?}",
            from_file.recovery
        );
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
        assert!(settings.engine.healing.issues.model_dead);
        assert!(
            settings.engine.healing.issues.degraded,
            "from the env's reconcile-on"
        );
        // File beats default.
        assert_eq!(settings.engine.history_limit, 42);
        assert_eq!(settings.engine.healing.tracker.flap_threshold, 7);
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

                [recovery]
                model-dead = false
                flap-threshold = 7
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
            .env("STATEMANAGER_RECOVERY_MODEL_DEAD", "true")
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

    #[test]
    fn recovery_defaults_are_the_engines() {
        let settings = resolve(&[], "").unwrap();
        let expected = HealingConfig {
            issues: IssueRules::from_config(&settings.engine.core, false),
            ..HealingConfig::default()
        };
        assert_eq!(settings.engine.healing, expected);
        assert_eq!(settings.engine.healing, HealingConfig::default());
        assert_eq!(
            resolve(&[], "[recovery]").unwrap().engine.healing,
            expected,
            "an empty [recovery] table changes nothing"
        );

        // The issue rules follow the final core settings, whichever source
        // gave them.
        let settings = resolve(
            &["--reconcile-on=error,degraded"],
            "node-timeout = \"30s\"\n[recovery]\nmodel-dead = true",
        )
        .unwrap();
        let issues = &settings.engine.healing.issues;
        assert!(issues.degraded && issues.node_silent && issues.model_dead);
        assert_eq!(issues.degraded_after, Duration::from_secs(60));
        assert_eq!(
            *issues,
            IssueRules {
                model_dead: true,
                ..IssueRules::from_config(&settings.engine.core, true)
            }
        );
    }

    #[test]
    fn a_full_recovery_table_parses() {
        let file = r#"
            [recovery]
            degraded-after = "90s"
            model-dead-after = "45s"
            model-dead = true
            flap-threshold = 6
            flap-window = "2m"
            alert-ttl = "1d"
            incidents-kept = 100
            alerts-kept = 50
            live-node-within = "20s"
            repair-foreign-writes = false

            [recovery.strategy.package_error]
            actions = ["Restart", "restart", "RECREATE", "Notify", "isolate"]
            max-retry-count = 9
            escalation-threshold = 2
            validation-timeout = "40s"
            initial-delay = "3s"
            backoff = { base = "1s", cap = "30s", jitter-min = 0.6, jitter-max = 1 }

            [recovery.strategy.node_silent]
            actions = "relocate, rollbackversion, notify"

            [recovery.strategy.model_dead.backoff]
            cap = "2m"
        "#;
        let healing = resolve(&[], file).unwrap().engine.healing;
        use RecoveryAction::*;
        let mut package_error = Strategy::default_for(IssueType::PackageError);
        package_error.actions = vec![Restart, Restart, Recreate, Notify, Isolate];
        package_error.max_retry_count = 9;
        package_error.escalation_threshold = 2;
        package_error.validation_timeout = Duration::from_secs(40);
        package_error.initial_delay = Duration::from_secs(3);
        package_error.backoff = statemachine_core::healing::Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            jitter_min: 0.6,
            jitter_max: 1.0,
        };
        let mut node_silent = Strategy::default_for(IssueType::NodeSilent);
        node_silent.actions = vec![Relocate, RollbackVersion, Notify];
        let mut model_dead = Strategy::default_for(IssueType::ModelDead);
        model_dead.backoff.cap = Duration::from_secs(120);
        let expected = HealingConfig {
            strategies: StrategyTable::with([
                (IssueType::PackageError, package_error),
                (IssueType::NodeSilent, node_silent),
                (IssueType::ModelDead, model_dead),
            ]),
            issues: IssueRules {
                degraded_after: Duration::from_secs(90),
                model_dead_after: Duration::from_secs(45),
                degraded: false,
                model_dead: true,
                node_silent: false,
            },
            tracker: statemachine_core::healing::TrackerRules {
                flap_threshold: 6,
                flap_window: Duration::from_secs(120),
                ..Default::default()
            },
            alert_ttl: Duration::from_secs(24 * 3600),
            incidents_kept: 100,
            alerts_kept: 50,
            live_node_within: Duration::from_secs(20),
            repair_foreign_writes: false,
        };
        assert_eq!(healing, expected);
        assert_eq!(
            healing.strategies.get(IssueType::Flapping),
            &Strategy::default_for(IssueType::Flapping),
            "an issue type without a table keeps its defaults"
        );
    }

    #[test]
    fn recovery_flags_beat_the_file() {
        let file = "[recovery]\nflap-threshold = 3\nalert-ttl = \"1h\"\nalerts-kept = 0";
        let settings = resolve(
            &[
                "--recovery-flap-threshold=8",
                "--recovery-model-dead",
                "--recovery-degraded-after=5s",
                "--recovery-model-dead-after=6s",
                "--recovery-flap-window=7s",
                "--recovery-incidents-kept=9",
                "--recovery-live-node-within=10s",
            ],
            file,
        )
        .unwrap();
        let healing = &settings.engine.healing;
        assert_eq!(healing.tracker.flap_threshold, 8);
        assert!(healing.issues.model_dead);
        assert_eq!(healing.issues.degraded_after, Duration::from_secs(5));
        assert_eq!(healing.issues.model_dead_after, Duration::from_secs(6));
        assert_eq!(healing.tracker.flap_window, Duration::from_secs(7));
        assert_eq!(healing.incidents_kept, 9);
        assert_eq!(healing.live_node_within, Duration::from_secs(10));
        // From the file, where no flag spoke.
        assert_eq!(healing.alert_ttl, Duration::from_secs(3600));
        assert_eq!(healing.alerts_kept, 0);
    }

    #[test]
    fn recovery_refusals_name_the_key() {
        let message = |file: &str| match parse_file(file) {
            Ok(options) => format!("{:#}", options.resolve().unwrap_err()),
            Err(error) => format!("{error:#}"),
        };
        for (file, key, says) in [
            (
                "[recovery]\nflap-threshold = 0",
                "recovery.flap-threshold",
                "must be from 1 to 64",
            ),
            (
                "[recovery]\nflap-threshold = 65",
                "recovery.flap-threshold",
                "must be from 1 to 64",
            ),
            (
                "[recovery]\nflap-window = \"0s\"",
                "recovery.flap-window",
                "longer than 0s",
            ),
            (
                "[recovery]\nincidents-kept = 0",
                "recovery.incidents-kept",
                "at least 1",
            ),
            (
                "[recovery]\nalert-ttl = \"0s\"",
                "recovery.alert-ttl",
                "longer than 0s",
            ),
            (
                "[recovery]\nlive-node-within = \"0s\"",
                "recovery.live-node-within",
                "longer than 0s",
            ),
            (
                "[recovery]\nflap-treshold = 5",
                "recovery.flap-treshold",
                "unknown key 'flap-treshold'; allowed: degraded-after,",
            ),
            (
                "[recovery]\nflap_threshold = 5",
                "recovery.flap_threshold",
                "written with dashes: 'flap-threshold'",
            ),
            (
                "[recovery]\nincidents-kept = -1",
                "recovery.incidents-kept",
                "out of range",
            ),
            (
                "[recovery]\nmodel-dead = \"yes\"",
                "recovery.model-dead",
                "expected true or false, found string",
            ),
            (
                "[recovery]\ndegraded-after = 60",
                "recovery.degraded-after",
                "expected a duration string",
            ),
            (
                "[recovery]\nmodel-dead-after = \"30\"",
                "recovery.model-dead-after",
                "not a duration",
            ),
            (
                "recovery = 5",
                "recovery",
                "expected a table, found integer",
            ),
            (
                "[recovery.strategy.package_eror]\nmax-retry-count = 3",
                "recovery.strategy.package_eror",
                "unknown issue type 'package_eror'; allowed: package_error, package_degraded, \
                 model_dead, node_silent, flapping, diff, manual",
            ),
            (
                "[recovery.strategy.package_error]\nactions = [\"Restart\", \"Notify\", \"Reboot\"]",
                "recovery.strategy.package_error.actions[2]",
                "unknown action 'Reboot'; allowed: Restart, Recreate, Relocate, \
                 RollbackVersion, ResetConfig, Notify, Isolate",
            ),
            (
                "[recovery.strategy.diff]\nactions = [\"notify\", 3]",
                "recovery.strategy.diff.actions[1]",
                "expected an action name, found integer",
            ),
            (
                "[recovery.strategy.diff]\nactions = 3",
                "recovery.strategy.diff.actions",
                "expected a list of actions",
            ),
            (
                "[recovery.strategy.diff]\nretries = 3",
                "recovery.strategy.diff.retries",
                "unknown key 'retries'; allowed: actions, max-retry-count,",
            ),
            (
                "[recovery.strategy.diff]\nbackoff = { base = \"1s\", ceiling = \"2s\" }",
                "recovery.strategy.diff.backoff.ceiling",
                "unknown key 'ceiling'; allowed: base, cap, jitter-min, jitter-max",
            ),
            (
                "[recovery.strategy.diff]\nbackoff = { jitter-min = \"half\" }",
                "recovery.strategy.diff.backoff.jitter-min",
                "expected a number",
            ),
            (
                "[recovery.strategy.package_error]\nactions = [\"Recreate\", \"Notify\"]",
                "recovery.strategy.package_error.actions[0]",
                "must start with Restart",
            ),
        ] {
            let message = message(file);
            assert!(
                message.contains(&format!("{key}:")) || message.contains(&format!("{key} ")),
                "{file}: the key {key} is not named in: {message}"
            );
            assert!(message.contains(says), "{file}: {message}");
        }
        // The flags are refused by the same rules, naming both spellings.
        let message = format!(
            "{:#}",
            resolve(&["--recovery-flap-window=0s"], "").unwrap_err()
        );
        assert!(
            message.contains("recovery.flap-window (--recovery-flap-window)"),
            "{message}"
        );
        let error = Cli::try_parse_from(["statemanager", "--recovery-flap-threshold=-1"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--recovery-flap-threshold"), "{error}");
        // Only the [recovery] table takes them, not the top level.
        let error = format!(
            "{:#}",
            parse_file("recovery-flap-threshold = 5").unwrap_err()
        );
        assert!(
            error.contains("unknown field `recovery-flap-threshold`"),
            "{error}"
        );
    }

    #[test]
    fn strategy_validation_of_the_core_reaches_the_user() {
        for (file, key, says) in [
            (
                "[recovery.strategy.node_silent]\nbackoff = { base = \"10s\", cap = \"5s\" }",
                "recovery.strategy.node_silent.backoff.cap",
                "is shorter than backoff.base",
            ),
            (
                "[recovery.strategy.package_error]\nmax-retry-count = 0",
                "recovery.strategy.package_error.max-retry-count",
                "must be at least 1",
            ),
            (
                "[recovery.strategy.manual]\nescalation-threshold = 0",
                "recovery.strategy.manual.escalation-threshold",
                "must be at least 1",
            ),
            (
                "[recovery.strategy.flapping]\nvalidation-timeout = \"0s\"",
                "recovery.strategy.flapping.validation-timeout",
                "must be longer than 0",
            ),
            (
                "[recovery.strategy.diff]\nactions = []",
                "recovery.strategy.diff.actions",
                "the ladder is empty",
            ),
            (
                "[recovery.strategy.model_dead.backoff]\njitter-min = 0.2",
                "recovery.strategy.model_dead.backoff.jitter-min",
                "must be within 0.5..=1.0",
            ),
            (
                "[recovery.strategy.model_dead.backoff]\njitter-min = 0.9\njitter-max = 0.7",
                "recovery.strategy.model_dead.backoff.jitter-max",
                "must be within jitter-min..=1.0",
            ),
        ] {
            let message = format!("{:#}", resolve(&[], file).unwrap_err());
            assert!(message.contains(&format!("'{key}'")), "{file}: {message}");
            assert!(message.contains(says), "{file}: {message}");
        }
    }

    /// Every `[default: X]` that `--help` shows is what the daemon does
    /// without the option: giving X explicitly resolves to the same
    /// settings. The defaults that are rules, not values, hold as written.
    #[test]
    fn help_shows_the_resolved_defaults() {
        // So that the etcd and RocksDbService options apply.
        let base_args = [
            "--etcd-endpoints=http://127.0.0.1:2379",
            "--pullpiri-kv=http://127.0.0.1:47007",
        ];
        let base = cli(&base_args)
            .options
            .resolve()
            .expect("the defaults resolve");
        // The HA options apply only to a member of a group (and not with the bridge).
        let ha_args = [
            "--etcd-endpoints=http://127.0.0.1:2379",
            "--ha",
            "--ha-advertise=http://m1:47006",
        ];
        let ha_base = cli(&ha_args)
            .options
            .resolve()
            .expect("the HA defaults resolve");
        let described = [
            "store",
            "data_dir",
            "metrics_listen",
            "worker_threads",
            "policy",
            "pullpiri_kv",
            "ha_group",
        ];
        let mut command = Cli::command_with_defaults();
        let help = command.render_long_help().to_string();
        let mut checked = Vec::new();
        for arg in command.get_arguments() {
            let text = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let Some((_, shown)) = text.split_once("[default: ") else {
                continue;
            };
            let id = arg.get_id().as_str();
            if described.contains(&id) {
                continue;
            }
            let shown = shown.strip_suffix(']').expect("the default ends the help");
            assert!(help.contains(&format!("[default: {shown}]")), "{help}");
            let long = arg.get_long().expect("every option has a long flag");
            let given = format!("--{long}={shown}");
            let (mut argv, expected) = if id.starts_with("ha_") {
                (ha_args.to_vec(), &ha_base)
            } else {
                (base_args.to_vec(), &base)
            };
            argv.push(&given);
            let settings = cli(&argv)
                .options
                .resolve()
                .unwrap_or_else(|e| panic!("{given}: {e:#}"));
            assert_eq!(&settings, expected, "--help shows {given} as the default");
            checked.push(id.to_owned());
        }
        let mut generated: Vec<String> = shown_defaults()
            .into_iter()
            .map(|(id, _)| id.to_owned())
            .collect();
        generated.sort();
        checked.sort();
        assert_eq!(checked, generated, "every generated default is shown once");
        assert!(checked.len() >= 25, "{checked:?}");

        let defaults = Options::default().resolve().expect("the defaults resolve");
        assert_eq!(
            defaults.store,
            StoreSettings::Embedded(default_data_dir(std::env::var_os("XDG_STATE_HOME")))
        );
        assert_eq!(defaults.metrics_listen, None);
        assert_eq!(defaults.worker_threads, None);
        assert_eq!(defaults.pullpiri_kv, None);
        assert_eq!(defaults.policy, None);
        assert!(
            help.contains("[default: etcd when --etcd-endpoints is given, embedded otherwise]")
        );
        for id in described {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .expect("a described option");
            let text = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(text.contains("[default"), "{id}: {text}");
        }
    }
}
