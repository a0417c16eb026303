//! Prometheus `/metrics` and `/healthz` over HTTP/1.1, served by axum.
//!
//! The engine's atomics ([`engine::Metrics`]), the etcd store's watch counter
//! and the RocksDbService bridge's [`BridgeStats`] stay the source of truth:
//! [`Collector`]s read them at each scrape and hand the values to the
//! `prometheus-client` encoder. Nothing here runs on the engine's hot path.
//!
//! The page is the Prometheus text format 0.0.4, or OpenMetrics 1.0 when the
//! scraper's `Accept` asks for it (as Prometheus itself does). The sample
//! names are the same in both.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use election::Role;
use engine::{Histogram, Metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use pullpiri_kv::BridgeStats;
use statemachine_core::ResourceKind;
use statemachine_core::access::MethodClass;
use statemachine_core::alert::AlertSeverity;
use statemachine_core::healing::{Phase, RecoveryAction};
use store_etcd::EtcdStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tracing::warn;
use transport_grpc::Engines;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may stay silent (no byte from the client, or a
/// stalled write) before it is closed: a slow request or an idle keep-alive.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one connection is kept, keep-alive included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Every family's name starts with this and `_`.
const PREFIX: &str = "statemanager";
/// The `Content-Type` of an OpenMetrics 1.0 text page.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/metrics` and `/healthz` read.
#[derive(Clone)]
pub struct Sources {
    /// The engine's counters.
    pub metrics: Arc<Metrics>,
    /// The engine, for `/healthz`.
    pub engine: Engines,
    /// The HA member's role and figures, when it is one.
    pub ha: Option<Arc<crate::ha::Status>>,
    /// The etcd store, for its watch counters (none on the other stores).
    pub etcd: Option<EtcdStore>,
    /// The store's kind, as `--store` names it.
    pub store_kind: &'static str,
    /// The RocksDbService bridge's figures, when it runs.
    pub bridge: Option<Arc<BridgeStats>>,
    /// Set when the daemon starts shutting down: `/healthz` then answers 503.
    pub stopping: Arc<AtomicBool>,
}

/// The registry of everything the daemon exposes: collectors over
/// `sources`, read at each scrape.
pub fn registry(sources: &Sources) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(EngineCollector {
        metrics: sources.metrics.clone(),
        engine: sources.engine.clone(),
    }));
    registry.register_collector(Box::new(StoreCollector {
        etcd: sources.etcd.clone(),
        store_kind: sources.store_kind,
    }));
    if let Some(bridge) = &sources.bridge {
        registry.register_collector(Box::new(BridgeCollector(bridge.clone())));
    }
    if let Some(ha) = &sources.ha {
        registry.register_collector(Box::new(HaCollector(ha.clone())));
    }
    registry
}

/// Which text format a page is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (`text/plain`).
    Prometheus,
    /// OpenMetrics 1.0 text (counters' `# TYPE` without `_total`, `# EOF`).
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when an `Accept` header lists it, else the Prometheus text.
    fn negotiate(headers: &HeaderMap) -> Format {
        let asks = headers.get_all(ACCEPT).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.contains("application/openmetrics-text"))
        });
        if asks {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The page for one scrape.
pub fn render(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut page = String::with_capacity(8192);
    match format {
        Format::Prometheus => prometheus_text::encode(&mut page, registry)?,
        Format::OpenMetrics => text::encode(&mut page, registry)?,
    }
    Ok(page)
}

/// The engine's families (metrics.rs of the engine), read at each scrape.
struct EngineCollector {
    metrics: Arc<Metrics>,
    engine: Engines,
}

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let m = &*self.metrics;
        let kinds = ResourceKind::ALL
            .map(|kind| (kind.as_key_segment(), load(&m.transitions[kind as usize])));
        counters(
            &mut out,
            "transitions",
            "Committed state transitions, by resource kind.",
            "kind",
            &kinds,
        )?;
        let plain = [
            (
                "rejected",
                "Requests and reports rejected (invalid request, invalid transition, ...).",
                &m.rejected,
            ),
            (
                "unavailable",
                "Inputs answered RESOURCE_UNAVAILABLE (store down, commit failed).",
                &m.unavailable,
            ),
            (
                "expired",
                "Inputs whose deadline passed while queued (answered unavailable, never committed).",
                &m.expired,
            ),
            ("commits", "Store transactions committed.", &m.commits),
            (
                "guard_conflicts",
                "Guard failures (another writer changed a key) that caused a re-plan.",
                &m.guard_conflicts,
            ),
            (
                "reconcile_attempts",
                "Reconcile delivery attempts to the ActionController.",
                &m.reconcile_attempts,
            ),
            (
                "reconcile_failures",
                "Reconcile deliveries that failed (retried with backoff).",
                &m.reconcile_failures,
            ),
            (
                "reconciles_delivered",
                "Reconcile requests the ActionController acknowledged.",
                &m.reconciles_delivered,
            ),
            (
                "lost_reconciles",
                "Outbox records written at start-up for packages found failed without one.",
                &m.lost_reconciles,
            ),
            (
                "escalations",
                "Recoveries escalated (retries exhausted, recovery failed).",
                &m.escalations,
            ),
            (
                "reconcile_without_scenario",
                "Packages that entered a reconcile state with no scenario targeting them.",
                &m.no_scenario,
            ),
            (
                "undocumented_edges",
                "Derived transitions along edges the state diagrams do not document.",
                &m.undocumented_edges,
            ),
            (
                "unmapped_containers",
                "Reported containers that map to no model.",
                &m.unmapped_containers,
            ),
            (
                "invalid_model_names",
                "Model names in container annotations or config that are not valid resource names (skipped).",
                &m.invalid_model_names,
            ),
            (
                "reports_coalesced",
                "Node reports superseded by a newer one of the same node before planning.",
                &m.reports_coalesced,
            ),
            (
                "bad_definitions",
                "Artifact definitions that failed to parse.",
                &m.bad_definitions,
            ),
        ];
        for (name, help, value) in plain {
            counter(&mut out, name, help, load(value))?;
        }
        gauge(
            &mut out,
            "outbox_depth",
            "Reconcile requests waiting in the outbox for the ActionController.",
            load(&m.outbox_depth),
        )?;
        gauge(
            &mut out,
            "engine_running",
            "1 while the engine processes inputs.",
            u64::from(self.engine.current().is_running()),
        )?;
        let seconds = Unit::Seconds;
        let mut nodes = out.encode_descriptor(
            "node_last_seen",
            "When each node last sent its container list (Unix time; the start-up time for nodes known before it).",
            Some(&seconds),
            MetricType::Gauge,
        )?;
        for (node, at_ns) in m.node_last_seen() {
            // Milliseconds, as precise as a scrape needs.
            let at = (at_ns / 1_000_000) as f64 / 1e3;
            ConstGauge::new(at).encode(nodes.encode_family(&[("node", node.as_str())])?)?;
        }
        let denied = MethodClass::ALL.map(|class| (class.as_str(), m.denied(class)));
        counters(
            &mut out,
            "denied",
            "Calls the access policy denied (mutual TLS), by method class; each is also an audit log line.",
            "method",
            &denied,
        )?;
        healing(&mut out, m)?;
        histogram(
            &mut out,
            "commit_batch_size",
            "Inputs committed per store transaction (group commit).",
            None,
            &m.batch_size,
            1.0,
        )?;
        histogram(
            &mut out,
            "commit_latency",
            "Time one store commit took.",
            Some(&seconds),
            &m.commit_latency_us,
            1e6,
        )
    }
}

/// The self-healing families (RECOVERY.md): incidents, ladder rungs,
/// alerts and flapping.
fn healing(out: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    // Each array is indexed by its enum's declaration order, as the engine
    // counts (`metrics.alerts_raised[severity as usize]`).
    let at = |counters: &[AtomicU64], index: usize| counters.get(index).map_or(0, load);

    counter(
        out,
        "incidents_opened",
        "Recovery incidents opened (one per resource at a time; a second trigger joins the open one).",
        load(&m.incidents_opened),
    )?;
    counters(
        out,
        "incidents_ended",
        "Recovery incidents that ended, by outcome.",
        "outcome",
        &[
            ("completed", load(&m.incidents_completed)),
            ("failed", load(&m.incidents_failed)),
            ("aborted", load(&m.incidents_aborted)),
        ],
    )?;
    let phases = [
        (Phase::Initializing, "initializing"),
        (Phase::Executing, "executing"),
        (Phase::Validating, "validating"),
    ]
    .map(|(phase, label)| (label, at(&m.incidents_open, phase as usize)));
    gauges(
        out,
        "incidents_open",
        "Recovery incidents open now, by phase.",
        "phase",
        &phases,
    )?;
    let actions = RecoveryAction::ALL.map(|action| {
        let label = match action {
            RecoveryAction::Restart => "restart",
            RecoveryAction::Recreate => "recreate",
            RecoveryAction::Relocate => "relocate",
            RecoveryAction::RollbackVersion => "rollback_version",
            RecoveryAction::ResetConfig => "reset_config",
            RecoveryAction::Notify => "notify",
            RecoveryAction::Isolate => "isolate",
        };
        (label, at(&m.recovery_actions, action as usize))
    });
    counters(
        out,
        "recovery_actions",
        "Recovery ladder rungs taken, by action (unsupported ones are counted when recorded and passed over).",
        "action",
        &actions,
    )?;
    counter(
        out,
        "recovery_escalations",
        "Moves to the next rung of a recovery ladder after failed validations.",
        load(&m.recovery_escalations),
    )?;
    let severities = [
        (AlertSeverity::Info, "info"),
        (AlertSeverity::Warning, "warning"),
        (AlertSeverity::Error, "error"),
        (AlertSeverity::Critical, "critical"),
    ];
    counters(
        out,
        "alerts_raised",
        "Alerts raised, or raised again while open, by severity.",
        "severity",
        &severities.map(|(severity, label)| (label, at(&m.alerts_raised, severity as usize))),
    )?;
    gauges(
        out,
        "alerts_open",
        "Alerts open now (Active or Acknowledged), by severity.",
        "severity",
        &severities.map(|(severity, label)| (label, at(&m.alerts_open, severity as usize))),
    )?;
    gauge(
        out,
        "flapping_resources",
        "Resources flapping now (too many transitions within the flap window).",
        load(&m.flapping_resources),
    )?;
    counter(
        out,
        "flapping_detected",
        "Times a resource started flapping.",
        load(&m.flapping_detected),
    )?;
    counter(
        out,
        "foreign_writes",
        "Model and package keys another writer changed to a value the reports do not derive.",
        load(&m.foreign_writes),
    )
}

/// The store's families: etcd's watch reconnects and the build info.
struct StoreCollector {
    etcd: Option<EtcdStore>,
    store_kind: &'static str,
}

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCollector")
            .field("store_kind", &self.store_kind)
            .finish_non_exhaustive()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        counter(
            &mut out,
            "etcd_watch_reconnects",
            "Times an etcd watch was re-established (0 on the memory store).",
            self.etcd.as_ref().map_or(0, EtcdStore::watch_reconnects),
        )?;
        let mut info = out.encode_descriptor(
            "build_info",
            "The daemon's version and store, as labels.",
            None,
            MetricType::Gauge,
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("store", self.store_kind),
        ];
        ConstGauge::new(1_i64).encode(info.encode_family(&labels)?)
    }
}

/// An HA member's families (docs/operations.md).
struct HaCollector(Arc<crate::ha::Status>);

impl fmt::Debug for HaCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaCollector").finish_non_exhaustive()
    }
}

impl Collector for HaCollector {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let status = &self.0;
        let role = status.role();
        gauge(
            &mut out,
            "ha_leader",
            "1 while this member leads its HA group.",
            u64::from(role.is_leader()),
        )?;
        let mut roles = out.encode_descriptor(
            "ha_role",
            "This member's role in its HA group: 1 for the current one.",
            None,
            MetricType::Gauge,
        )?;
        for name in ["leader", "follower", "candidate"] {
            let labels = [("group", status.group.as_str()), ("role", name)];
            ConstGauge::new(i64::from(role.name() == name))
                .encode(roles.encode_family(&labels)?)?;
        }
        let term = match &role {
            Role::Leader(term) => term.revision,
            _ => 0,
        };
        gauge(
            &mut out,
            "ha_term",
            "The election key's revision of this member's term (0 when it does not lead).",
            u64::try_from(term).unwrap_or(0),
        )?;
        counter(
            &mut out,
            "ha_takeovers",
            "Times this member became leader and served.",
            status.takeovers.load(Ordering::Relaxed),
        )?;
        counter(
            &mut out,
            "ha_fenced_writes",
            "Writes refused in etcd because this member's term had ended.",
            status.fenced_writes.load(Ordering::Relaxed),
        )?;
        let last = status.last_takeover_ms.load(Ordering::Relaxed);
        if last >= 0 {
            let seconds = Unit::Seconds;
            let descriptor = out.encode_descriptor(
                "ha_last_takeover",
                "The last takeover: from being elected to serving.",
                Some(&seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(last as f64 / 1e3).encode(descriptor)?;
        }
        Ok(())
    }
}

/// The RocksDbService bridge's families (docs/pullpiri.md).
#[derive(Debug)]
struct BridgeCollector(Arc<BridgeStats>);

impl Collector for BridgeCollector {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let b = self.0.snapshot();
        gauge(
            &mut out,
            "pullpiri_kv_backlog",
            "State keys waiting to be mirrored to the RocksDbService.",
            b.backlog,
        )?;
        let counted = [
            (
                "pullpiri_kv_mirrored_keys",
                "State keys written to (or deleted from) the RocksDbService.",
                b.mirrored_keys_total,
            ),
            (
                "pullpiri_kv_definitions_applied",
                "Definitions read from the RocksDbService and written to, or deleted from, the store.",
                b.definitions_applied_total,
            ),
            (
                "pullpiri_kv_failures",
                "Failed attempts: calls to the RocksDbService, store operations, watches that ended with an error (each retried with back-off).",
                b.failures_total,
            ),
            (
                "pullpiri_kv_resyncs",
                "Full resyncs of the state keys (at start-up, after an outage, after a compacted watch or an overfull backlog).",
                b.resyncs_total,
            ),
        ];
        for (name, help, value) in counted {
            counter(&mut out, name, help, value)?;
        }
        gauge(
            &mut out,
            "pullpiri_kv_last_sync_seconds",
            "When a full resync, an emptied backlog or a definitions poll last left the RocksDbService and the store agreeing (Unix time; 0: not yet).",
            b.last_sync_unix_seconds,
        )?;
        counter(
            &mut out,
            "pullpiri_kv_keys_skipped",
            "Keys the RocksDbService would refuse (empty, over 1024 bytes, or with < > ? { }), skipped.",
            b.keys_skipped_total,
        )?;
        gauge(
            &mut out,
            "pullpiri_kv_connected",
            "1 while the last call to the RocksDbService got an answer (a refusal counts).",
            u64::from(b.connected),
        )
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One counter; `name` without `_total`, which the encoder appends.
fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One gauge.
fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A counter family with one label: a sample per `(label value, count)`.
fn counters(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        ConstCounter::new(*count).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// A gauge family with one label: a sample per `(label value, number)`.
fn gauges(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, number) in values {
        ConstGauge::new(*number).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// One of the engine's fixed-bucket histograms, its bounds and sum divided
/// by `scale` (1e6: microseconds counted, seconds shown).
fn histogram<const N: usize>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    histogram: &Histogram<N>,
    scale: f64,
) -> fmt::Result {
    let (cumulative, count, sum) = histogram.snapshot();
    // The encoder takes each bucket's own count and accumulates them itself.
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = cumulative
        .into_iter()
        .map(|(bound, up_to)| {
            let own = up_to - below;
            below = up_to;
            (bound as f64 / scale, own)
        })
        .collect();
    let snapshot = Snapshot {
        sum: sum as f64 / scale,
        count,
        buckets,
    };
    snapshot.encode(out.encode_descriptor(name, help, unit, MetricType::Histogram)?)
}

/// A histogram's values at one scrape.
struct Snapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Snapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The endpoint's shared state.
struct Endpoint {
    registry: Registry,
    engine: Engines,
    ha: Option<Arc<crate::ha::Status>>,
    stopping: Arc<AtomicBool>,
}

/// The `/metrics` and `/healthz` routes over `sources`.
pub fn router(sources: &Sources) -> Router {
    let endpoint = Arc::new(Endpoint {
        registry: registry(sources),
        engine: sources.engine.clone(),
        ha: sources.ha.clone(),
        stopping: sources.stopping.clone(),
    });
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(health))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /metrics or /healthz\n",
            )
        })
        .with_state(endpoint)
}

async fn scrape(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(&headers);
    match render(&endpoint.registry, format) {
        Ok(page) => ([(CONTENT_TYPE, format.content_type())], page).into_response(),
        Err(fmt::Error) => {
            warn!("metrics endpoint: encoding the page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response()
        }
    }
}

/// `/healthz`: 200 while the daemon serves. `/healthz?leader`: 200 only
/// on the leader of an HA group (a lone daemon always leads), for a load
/// balancer or a virtual-IP script.
async fn health(
    State(endpoint): State<Arc<Endpoint>>,
    RawQuery(query): RawQuery,
) -> (StatusCode, String) {
    let unavailable = |text: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{text}\n"));
    if endpoint.stopping.load(Ordering::Relaxed) {
        return unavailable("shutting down");
    }
    if !endpoint.engine.current().is_running() {
        return unavailable("the engine has stopped");
    }
    let wants_leader = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "leader" || p.starts_with("leader="))
    });
    match (&endpoint.ha, wants_leader) {
        (Some(ha), true) => match ha.role() {
            Role::Leader(_) if ha.serves_as_leader() => (StatusCode::OK, "ok: leader\n".to_owned()),
            Role::Leader(_) => unavailable("leader: loading the state"),
            Role::Follower(leader) => {
                unavailable(&format!("follower: the leader is {}", leader.url))
            }
            Role::Candidate => unavailable("candidate: no leader is known"),
        },
        (Some(ha), false) => (StatusCode::OK, format!("ok: {}\n", ha.role().name())),
        (None, true) => (StatusCode::OK, "ok: leader\n".to_owned()),
        (None, false) => (StatusCode::OK, "ok\n".to_owned()),
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` turns
/// true; then idle connections close and open ones finish their request.
pub async fn serve(listener: TcpListener, sources: Sources, mut shutdown: watch::Receiver<bool>) {
    let listener = Bounded {
        listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, router(&sources))
        .with_graceful_shutdown(stopped)
        .await
    {
        warn!(%error, "the metrics endpoint failed");
    }
}

/// Binds the metrics address.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))
}

/// The metrics listener: at most [`MAX_CONNECTIONS`] connections at once,
/// each bounded by [`IDLE_TIMEOUT`] and [`CONNECTION_TIMEOUT`].
struct Bounded {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for Bounded {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            // The semaphore is never closed; should it be, accept no more.
            return std::future::pending().await;
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => return (Connection::new(stream, permit), peer),
                Err(error) => {
                    warn!(%error, "metrics endpoint: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection holding its permit; reads and writes fail with
/// `TimedOut` once it has been silent for [`IDLE_TIMEOUT`] or open for
/// [`CONNECTION_TIMEOUT`], and hyper then closes it.
struct Connection {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    closes_at: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Connection {
        let now = Instant::now();
        Connection {
            stream,
            deadline: Box::pin(tokio::time::sleep_until(now + IDLE_TIMEOUT)),
            closes_at: now + CONNECTION_TIMEOUT,
            _permit: permit,
        }
    }

    /// The client made progress: the idle clock starts again.
    fn progressed(&mut self) {
        let next = (Instant::now() + IDLE_TIMEOUT).min(self.closes_at);
        self.deadline.as_mut().reset(next);
    }

    /// While the socket is not ready: pending, or `TimedOut` past the deadline.
    fn expired<T>(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "metrics connection timed out",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => this.expired(cx),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(Ok(()))
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => this.expired(cx),
            written => written,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_flush(cx) {
            Poll::Pending => this.expired(cx),
            flushed => flushed,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use engine::{
        ActionError, ActionPort, Engine, EngineConfig, OffloadAnswer, OffloadRequest,
        ReconcileRequest,
    };
    use state_store::MemoryStore;
    use statemachine_core::{RequestKind, StateChangeRequest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct NoActionController;

    #[async_trait]
    impl ActionPort for NoActionController {
        async fn reconcile(&self, _: ReconcileRequest) -> Result<(), ActionError> {
            Err(ActionError::Unavailable("not in this test".into()))
        }
        async fn trigger_action(&self, _: &str) -> Result<(), ActionError> {
            Err(ActionError::Unavailable("not in this test".into()))
        }
        async fn offload(&self, _: OffloadRequest) -> Result<OffloadAnswer, ActionError> {
            Err(ActionError::Unavailable("not in this test".into()))
        }
    }

    async fn test_engine() -> Engine {
        Engine::start(
            Arc::new(MemoryStore::default()),
            Arc::new(NoActionController),
            EngineConfig::default(),
        )
        .await
        .expect("the engine starts on an empty memory store")
    }

    fn test_sources(engine: &Engine) -> Sources {
        Sources {
            metrics: engine.metrics(),
            engine: engine.handle().into(),
            ha: None,
            etcd: None,
            store_kind: "memory",
            bridge: None,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    fn test_page(sources: &Sources) -> String {
        render(&registry(sources), Format::Prometheus).expect("the page encodes")
    }

    async fn change(engine: &Engine, target: &str) {
        engine
            .handle()
            .change_state(StateChangeRequest {
                kind: RequestKind::Scenario,
                name: "parking".into(),
                current_state: String::new(),
                target_state: target.into(),
                transition_id: String::new(),
                source: "test".into(),
            })
            .await;
    }

    /// Every sample line, by series (`name{labels}`).
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                (series.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[tokio::test]
    async fn nodes_that_reported_have_a_last_seen_time() {
        let engine = test_engine().await;
        let report = statemachine_core::NodeReport {
            node: "hpc-1".into(),
            containers: Vec::new(),
        };
        engine.handle().report_containers(report).await;
        let text = test_page(&test_sources(&engine));
        let samples = samples(&text);
        let seen: f64 = samples
            .get("statemanager_node_last_seen_seconds{node=\"hpc-1\"}")
            .expect("a last-seen sample for the reporting node")
            .parse()
            .expect("a number");
        assert!(seen > 1.6e9, "Unix seconds: {seen}");
    }

    #[tokio::test]
    async fn invalid_model_names_are_counted() {
        let engine = test_engine().await;
        let mut container = statemachine_core::ReportedContainer {
            names: vec!["/model-nav".into()],
            ..Default::default()
        };
        container
            .annotations
            .insert("model".into(), "bad/name".into());
        let report = statemachine_core::NodeReport {
            node: "hpc-1".into(),
            containers: vec![container],
        };
        engine.handle().report_containers(report).await;
        let text = test_page(&test_sources(&engine));
        assert!(
            text.contains("# HELP statemanager_invalid_model_names_total "),
            "{text}"
        );
        let samples = samples(&text);
        assert_eq!(
            samples
                .get("statemanager_invalid_model_names_total")
                .map(String::as_str),
            Some("1")
        );
    }

    #[tokio::test]
    async fn the_text_counts_what_the_engine_did() {
        let engine = test_engine().await;
        change(&engine, "waiting").await;
        change(&engine, "idle").await; // Waiting -> Idle is not in the table.
        let text = test_page(&test_sources(&engine));
        let samples = samples(&text);
        let value = |series: &str| samples.get(series).map(String::as_str);
        assert_eq!(
            value("statemanager_transitions_total{kind=\"scenario\"}"),
            Some("1")
        );
        assert_eq!(
            value("statemanager_transitions_total{kind=\"model\"}"),
            Some("0")
        );
        assert_eq!(value("statemanager_rejected_total"), Some("1"));
        assert_eq!(value("statemanager_commits_total"), Some("1"));
        assert_eq!(value("statemanager_outbox_depth"), Some("0"));
        assert_eq!(value("statemanager_engine_running"), Some("1"));
        assert_eq!(
            value("statemanager_build_info{version=\"0.1.0\",store=\"memory\"}"),
            Some("1")
        );
        assert_eq!(
            value("statemanager_commit_batch_size_bucket{le=\"+Inf\"}"),
            Some("1")
        );
        assert_eq!(
            value("statemanager_commit_batch_size_bucket{le=\"1\"}"),
            Some("1")
        );
        assert_eq!(
            value("statemanager_commit_latency_seconds_count"),
            Some("1")
        );
        // Every series has HELP and TYPE, and every value is a number.
        for (series, number) in &samples {
            let name = series.split(['{']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| text.contains(&format!("# TYPE {family} histogram")))
                .unwrap_or(name);
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            assert!(number.parse::<f64>().is_ok(), "{series} {number}");
        }
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn histograms_keep_their_bucket_bounds() {
        let engine = test_engine().await;
        let metrics = Arc::new(Metrics::default());
        metrics.commit_latency_us.observe(300);
        metrics.commit_latency_us.observe(3_000_000);
        metrics.batch_size.observe(3);
        let sources = Sources {
            metrics,
            ..test_sources(&engine)
        };
        let text = test_page(&sources);
        let bounds = |family: &str| -> Vec<String> {
            let prefix = format!("{family}_bucket{{le=\"");
            text.lines()
                .filter_map(|line| line.strip_prefix(&prefix)?.split_once('"'))
                .map(|(bound, _)| bound.to_owned())
                .collect()
        };
        let latency: Vec<String> = engine::LATENCY_BUCKETS_US
            .iter()
            .map(|us| (*us as f64 / 1e6).to_string())
            .chain(["+Inf".to_owned()])
            .collect();
        assert_eq!(bounds("statemanager_commit_latency_seconds"), latency);
        let sizes: Vec<String> = engine::BATCH_SIZE_BUCKETS
            .iter()
            .map(u64::to_string)
            .chain(["+Inf".to_owned()])
            .collect();
        assert_eq!(bounds("statemanager_commit_batch_size"), sizes);
        let samples = samples(&text);
        let value = |series: &str| samples.get(series).map(String::as_str);
        assert_eq!(
            value("statemanager_commit_latency_seconds_bucket{le=\"0.00025\"}"),
            Some("0")
        );
        assert_eq!(
            value("statemanager_commit_latency_seconds_bucket{le=\"0.0005\"}"),
            Some("1")
        );
        assert_eq!(
            value("statemanager_commit_latency_seconds_bucket{le=\"2.048\"}"),
            Some("1")
        );
        assert_eq!(
            value("statemanager_commit_latency_seconds_bucket{le=\"+Inf\"}"),
            Some("2")
        );
        let sum: f64 = value("statemanager_commit_latency_seconds_sum")
            .expect("a sum")
            .parse()
            .expect("a number");
        assert!((sum - 3.0003).abs() < 1e-9, "{sum}");
        assert_eq!(
            value("statemanager_commit_batch_size_bucket{le=\"2\"}"),
            Some("0")
        );
        assert_eq!(
            value("statemanager_commit_batch_size_bucket{le=\"4\"}"),
            Some("1")
        );
        engine.shutdown().await;
    }

    /// docs/operations.md lists every family with its type: each is on the
    /// page under that name and type, and nothing undocumented is.
    #[tokio::test]
    async fn every_documented_family_is_exposed_with_its_type() {
        let engine = test_engine().await;
        let (_roles, ha) = ha_status(leader_role());
        ha.last_takeover_ms.store(40, Ordering::Relaxed);
        let sources = Sources {
            bridge: Some(Arc::new(BridgeStats::default())),
            ha: Some(ha),
            ..test_sources(&engine)
        };
        let text = test_page(&sources);
        assert!(text.contains("statemanager_ha_term 7\n"), "{text}");
        assert!(
            text.contains("statemanager_ha_role{group=\"g\",role=\"leader\"} 1\n"),
            "{text}"
        );
        let docs = include_str!("../../../docs/operations.md");
        let table = docs
            .split_once("## Metrics and health")
            .and_then(|(_, rest)| rest.split_once("\n## "))
            .map(|(section, _)| section)
            .expect("the Metrics and health section");
        let documented: BTreeMap<&str, &str> = table
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix("| `statemanager_")?.split(" | ");
                let name = cells.next()?.trim_end_matches('`');
                let name = name.split('{').next()?;
                Some((name, cells.next()?))
            })
            .collect();
        assert!(documented.len() > 40, "{documented:?}");
        let exposed: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE statemanager_")?.split_once(' '))
            .collect();
        assert_eq!(exposed, documented);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn openmetrics_has_the_same_samples() {
        let engine = test_engine().await;
        change(&engine, "waiting").await;
        let sources = Sources {
            bridge: Some(Arc::new(BridgeStats::default())),
            ..test_sources(&engine)
        };
        let registry = registry(&sources);
        let prometheus = render(&registry, Format::Prometheus).unwrap();
        let openmetrics = render(&registry, Format::OpenMetrics).unwrap();
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(
            openmetrics.contains("# TYPE statemanager_commits counter\n"),
            "{openmetrics}"
        );
        assert!(
            openmetrics.contains("# UNIT statemanager_commit_latency_seconds seconds\n"),
            "{openmetrics}"
        );
        let names = |text: &str| -> Vec<String> {
            samples(text)
                .into_keys()
                .filter(|series| !series.contains("_bucket{"))
                .collect()
        };
        assert_eq!(names(&openmetrics), names(&prometheus));
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn every_healing_family_is_rendered_with_its_labels() {
        let engine = test_engine().await;
        let metrics = Arc::new(Metrics::default());
        let set = |counter: &AtomicU64, value: u64| counter.store(value, Ordering::Relaxed);
        set(&metrics.incidents_opened, 11);
        set(&metrics.incidents_completed, 5);
        set(&metrics.incidents_failed, 3);
        set(&metrics.incidents_aborted, 2);
        set(&metrics.incidents_open[Phase::Executing as usize], 1);
        set(&metrics.recovery_escalations, 4);
        set(
            &metrics.recovery_actions[RecoveryAction::RollbackVersion as usize],
            6,
        );
        set(
            &metrics.recovery_actions[RecoveryAction::Isolate as usize],
            7,
        );
        set(&metrics.alerts_raised[AlertSeverity::Critical as usize], 8);
        set(&metrics.alerts_open[AlertSeverity::Warning as usize], 9);
        set(&metrics.flapping_resources, 10);
        set(&metrics.flapping_detected, 12);
        let sources = Sources {
            metrics,
            ..test_sources(&engine)
        };
        let text = test_page(&sources);
        let samples = samples(&text);
        let expected = [
            ("statemanager_incidents_opened_total", "11"),
            (
                "statemanager_incidents_ended_total{outcome=\"completed\"}",
                "5",
            ),
            (
                "statemanager_incidents_ended_total{outcome=\"failed\"}",
                "3",
            ),
            (
                "statemanager_incidents_ended_total{outcome=\"aborted\"}",
                "2",
            ),
            ("statemanager_incidents_open{phase=\"initializing\"}", "0"),
            ("statemanager_incidents_open{phase=\"executing\"}", "1"),
            ("statemanager_incidents_open{phase=\"validating\"}", "0"),
            ("statemanager_recovery_escalations_total", "4"),
            (
                "statemanager_recovery_actions_total{action=\"restart\"}",
                "0",
            ),
            (
                "statemanager_recovery_actions_total{action=\"recreate\"}",
                "0",
            ),
            (
                "statemanager_recovery_actions_total{action=\"relocate\"}",
                "0",
            ),
            (
                "statemanager_recovery_actions_total{action=\"rollback_version\"}",
                "6",
            ),
            (
                "statemanager_recovery_actions_total{action=\"reset_config\"}",
                "0",
            ),
            (
                "statemanager_recovery_actions_total{action=\"notify\"}",
                "0",
            ),
            (
                "statemanager_recovery_actions_total{action=\"isolate\"}",
                "7",
            ),
            ("statemanager_alerts_raised_total{severity=\"info\"}", "0"),
            (
                "statemanager_alerts_raised_total{severity=\"warning\"}",
                "0",
            ),
            ("statemanager_alerts_raised_total{severity=\"error\"}", "0"),
            (
                "statemanager_alerts_raised_total{severity=\"critical\"}",
                "8",
            ),
            ("statemanager_alerts_open{severity=\"info\"}", "0"),
            ("statemanager_alerts_open{severity=\"warning\"}", "9"),
            ("statemanager_alerts_open{severity=\"error\"}", "0"),
            ("statemanager_alerts_open{severity=\"critical\"}", "0"),
            ("statemanager_flapping_resources", "10"),
            ("statemanager_flapping_detected_total", "12"),
        ];
        for (series, value) in expected {
            assert_eq!(
                samples.get(series).map(String::as_str),
                Some(value),
                "{series} in:\n{text}"
            );
        }
        for (family, kind) in [
            ("incidents_opened_total", "counter"),
            ("incidents_ended_total", "counter"),
            ("incidents_open", "gauge"),
            ("recovery_actions_total", "counter"),
            ("recovery_escalations_total", "counter"),
            ("alerts_raised_total", "counter"),
            ("alerts_open", "gauge"),
            ("flapping_resources", "gauge"),
            ("flapping_detected_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# HELP statemanager_{family} ")),
                "{family}"
            );
            assert!(
                text.contains(&format!("# TYPE statemanager_{family} {kind}\n")),
                "{family}"
            );
            // Each family once: its samples follow its header.
            assert_eq!(
                text.matches(&format!("# TYPE statemanager_{family} "))
                    .count(),
                1,
                "{family}"
            );
        }
        engine.shutdown().await;
    }

    async fn request(address: SocketAddr, head: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        answer
    }

    fn leader_role() -> Role {
        Role::Leader(election::Term {
            key: "/statemanager/leader/g".into(),
            revision: 7,
            lease: 1,
            leader: election::Leader {
                id: "me".into(),
                url: "http://me:47006".into(),
            },
        })
    }

    /// An HA member's status in `role`, and the sender that changes it.
    fn ha_status(role: Role) -> (watch::Sender<Role>, Arc<crate::ha::Status>) {
        let (roles, receiver) = watch::channel(role);
        let status = Arc::new(crate::ha::Status {
            group: "g".into(),
            roles: receiver,
            takeovers: AtomicU64::new(0),
            fenced_writes: AtomicU64::new(0),
            last_takeover_ms: std::sync::atomic::AtomicI64::new(-1),
            leading: AtomicBool::new(false),
        });
        (roles, status)
    }

    #[tokio::test]
    async fn healthz_leader_answers_200_only_on_a_serving_leader() {
        let engine = test_engine().await;
        let (roles, ha) = ha_status(Role::Candidate);
        let sources = Sources {
            ha: Some(ha.clone()),
            ..test_sources(&engine)
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, sources, stopped));
        let health = async |query: &str| get(address, &format!("/healthz{query}")).await;

        let candidate = health("?leader").await;
        assert!(candidate.starts_with("HTTP/1.1 503"), "{candidate}");
        assert!(
            candidate.contains("candidate: no leader is known"),
            "{candidate}"
        );
        assert!(health("").await.contains("ok: candidate"));

        roles.send_replace(Role::Follower(election::Leader {
            id: "other".into(),
            url: "http://other:47006".into(),
        }));
        let follower = health("?leader").await;
        assert!(follower.starts_with("HTTP/1.1 503"), "{follower}");
        assert!(
            follower.contains("the leader is http://other:47006"),
            "{follower}"
        );
        assert!(health("").await.starts_with("HTTP/1.1 200"));

        roles.send_replace(leader_role());
        let loading = health("?leader").await;
        assert!(loading.starts_with("HTTP/1.1 503"), "{loading}");
        assert!(loading.contains("loading the state"), "{loading}");
        ha.leading.store(true, Ordering::Relaxed);
        let leader = health("?leader").await;
        assert!(leader.starts_with("HTTP/1.1 200"), "{leader}");
        assert!(health("?x=1&leader").await.starts_with("HTTP/1.1 200"));
        engine.shutdown().await;
    }

    async fn get(address: SocketAddr, path: &str) -> String {
        let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        request(address, &head).await
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_health_until_shutdown() {
        let engine = test_engine().await;
        let sources = test_sources(&engine);
        let stopping = sources.stopping.clone();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, sources, stopped));

        let metrics = get(address, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("content-type: text/plain; version=0.0.4"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nstatemanager_commits_total 0\n"),
            "{metrics}"
        );
        let openmetrics = request(
            address,
            "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAccept: \
             application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n",
        )
        .await;
        assert!(
            openmetrics.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{openmetrics}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        let head = request(
            address,
            "HEAD /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        let alone = get(address, "/healthz?leader").await;
        assert!(
            alone.starts_with("HTTP/1.1 200") && alone.contains("ok: leader"),
            "{alone}"
        );
        let other = get(address, "/other").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        assert!(other.contains("try /metrics or /healthz"), "{other}");
        let post = request(
            address,
            "POST /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        stopping.store(true, Ordering::Relaxed);
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 503"));
        stopping.store(false, Ordering::Relaxed);
        engine.shutdown().await;
        let health = get(address, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        assert!(health.contains("the engine has stopped"), "{health}");

        // An idle keep-alive connection does not hold the shutdown up.
        let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0; 12];
        idle.read_exact(&mut first).await.unwrap();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the endpoint stops")
            .unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_frees_its_slot() {
        let engine = test_engine().await;
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, test_sources(&engine), stopped));

        // Half a request line, then nothing.
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        silent.write_all(b"GET /metr").await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(IDLE_TIMEOUT * 2, silent.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "closed after {IDLE_TIMEOUT:?} of silence");
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
