//! Prometheus `/metrics` and `/healthz` over plain HTTP/1.1 (hyper, already
//! in the tree through tonic).
//!
//! The text is rendered by hand from the engine's atomics
//! ([`engine::Metrics`]): counters, gauges (some by label) and two
//! histograms, in the Prometheus text exposition format 0.0.4.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use engine::{EngineHandle, Histogram, Metrics};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pullpiri_kv::{BridgeStats, BridgeStatsSnapshot};
use statemachine_core::ResourceKind;
use statemachine_core::access::MethodClass;
use statemachine_core::alert::AlertSeverity;
use statemachine_core::healing::{Phase, RecoveryAction};
use store_etcd::EtcdStore;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one connection is kept, keep-alive included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What `/metrics` and `/healthz` read.
#[derive(Clone)]
pub struct Sources {
    /// The engine's counters.
    pub metrics: Arc<Metrics>,
    /// The engine, for `/healthz`.
    pub engine: EngineHandle,
    /// The etcd store, for its watch counters (none on the other stores).
    pub etcd: Option<EtcdStore>,
    /// The store's kind, as `--store` names it.
    pub store_kind: &'static str,
    /// The RocksDbService bridge's figures, when it runs.
    pub bridge: Option<Arc<BridgeStats>>,
    /// Set when the daemon starts shutting down: `/healthz` then answers 503.
    pub stopping: Arc<AtomicBool>,
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, sources: Sources, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "metrics endpoint: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let sources = sources.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&request, &sources)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {
                    if let Ok(Err(error)) = result {
                        debug!(%peer, %error, "metrics connection ended with an error");
                    }
                }
                () = stopped(&mut stop) => {}
            }
        });
    }
}

/// Completes when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn answer(request: &Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, render(sources));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => {
            if sources.stopping.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
            } else if sources.engine.is_running() {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the engine has stopped\n".into(),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

/// The Prometheus text of everything the daemon counts.
pub fn render(sources: &Sources) -> String {
    let m = &*sources.metrics;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "transitions_total",
        "counter",
        "Committed state transitions, by resource kind.",
    );
    for kind in ResourceKind::ALL {
        let _ = writeln!(
            out,
            "statemanager_transitions_total{{kind=\"{}\"}} {}",
            kind.as_key_segment(),
            load(&m.transitions[kind as usize])
        );
    }
    let counters: [(&str, &str, u64); 17] = [
        (
            "rejected_total",
            "Requests and reports rejected (invalid request, invalid transition, ...).",
            load(&m.rejected),
        ),
        (
            "unavailable_total",
            "Inputs answered RESOURCE_UNAVAILABLE (store down, commit failed).",
            load(&m.unavailable),
        ),
        (
            "expired_total",
            "Inputs whose deadline passed while queued (answered unavailable, never committed).",
            load(&m.expired),
        ),
        (
            "commits_total",
            "Store transactions committed.",
            load(&m.commits),
        ),
        (
            "guard_conflicts_total",
            "Guard failures (another writer changed a key) that caused a re-plan.",
            load(&m.guard_conflicts),
        ),
        (
            "reconcile_attempts_total",
            "Reconcile delivery attempts to the ActionController.",
            load(&m.reconcile_attempts),
        ),
        (
            "reconcile_failures_total",
            "Reconcile deliveries that failed (retried with backoff).",
            load(&m.reconcile_failures),
        ),
        (
            "reconciles_delivered_total",
            "Reconcile requests the ActionController acknowledged.",
            load(&m.reconciles_delivered),
        ),
        (
            "lost_reconciles_total",
            "Outbox records written at start-up for packages found failed without one.",
            load(&m.lost_reconciles),
        ),
        (
            "escalations_total",
            "Recoveries escalated (retries exhausted, recovery failed).",
            load(&m.escalations),
        ),
        (
            "reconcile_without_scenario_total",
            "Packages that entered a reconcile state with no scenario targeting them.",
            load(&m.no_scenario),
        ),
        (
            "undocumented_edges_total",
            "Derived transitions along edges the state diagrams do not document.",
            load(&m.undocumented_edges),
        ),
        (
            "unmapped_containers_total",
            "Reported containers that map to no model.",
            load(&m.unmapped_containers),
        ),
        (
            "invalid_model_names_total",
            "Model names in container annotations or config that are not valid resource names (skipped).",
            load(&m.invalid_model_names),
        ),
        (
            "reports_coalesced_total",
            "Node reports superseded by a newer one of the same node before planning.",
            load(&m.reports_coalesced),
        ),
        (
            "bad_definitions_total",
            "Artifact definitions that failed to parse.",
            load(&m.bad_definitions),
        ),
        (
            "etcd_watch_reconnects_total",
            "Times an etcd watch was re-established (0 on the memory store).",
            sources.etcd.as_ref().map_or(0, EtcdStore::watch_reconnects),
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "statemanager_{name} {value}");
    }

    header(
        &mut out,
        "outbox_depth",
        "gauge",
        "Reconcile requests waiting in the outbox for the ActionController.",
    );
    let _ = writeln!(out, "statemanager_outbox_depth {}", load(&m.outbox_depth));
    header(
        &mut out,
        "engine_running",
        "gauge",
        "1 while the engine processes inputs.",
    );
    let _ = writeln!(
        out,
        "statemanager_engine_running {}",
        u8::from(sources.engine.is_running())
    );
    header(
        &mut out,
        "node_last_seen_seconds",
        "gauge",
        "When each node last sent its container list (Unix time; the start-up time for nodes known before it).",
    );
    for (node, at_ns) in m.node_last_seen() {
        // Node names are validated: [A-Za-z0-9._-], nothing to escape.
        let _ = writeln!(
            out,
            "statemanager_node_last_seen_seconds{{node=\"{node}\"}} {:.3}",
            at_ns as f64 / 1e9
        );
    }
    header(
        &mut out,
        "build_info",
        "gauge",
        "The daemon's version and store, as labels.",
    );
    let _ = writeln!(
        out,
        "statemanager_build_info{{version=\"{}\",store=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        sources.store_kind
    );

    let denied: Vec<(&str, u64)> = MethodClass::ALL
        .iter()
        .map(|class| (class.as_str(), m.denied(*class)))
        .collect();
    labelled(
        &mut out,
        "denied_total",
        "counter",
        "Calls the access policy denied (mutual TLS), by method class; each is also an audit log line.",
        "method",
        &denied,
    );
    healing(&mut out, m);
    if let Some(bridge) = &sources.bridge {
        pullpiri_kv(&mut out, &bridge.snapshot());
    }

    histogram(
        &mut out,
        "commit_batch_size",
        "Inputs committed per store transaction (group commit).",
        &m.batch_size,
        |bound| bound.to_string(),
        |sum| sum.to_string(),
    );
    histogram(
        &mut out,
        "commit_latency_seconds",
        "Time one store commit took.",
        &m.commit_latency_us,
        micros_as_seconds,
        micros_as_seconds,
    );
    out
}

/// The self-healing families (RECOVERY.md): incidents, ladder rungs,
/// alerts and flapping.
fn healing(out: &mut String, m: &Metrics) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    // Each array is indexed by its enum's declaration order, as the engine
    // counts (`metrics.alerts_raised[severity as usize]`).
    let at = |counters: &[AtomicU64], index: usize| counters.get(index).map_or(0, load);

    header(
        out,
        "incidents_opened_total",
        "counter",
        "Recovery incidents opened (one per resource at a time; a second trigger joins the open one).",
    );
    let _ = writeln!(
        out,
        "statemanager_incidents_opened_total {}",
        load(&m.incidents_opened)
    );
    labelled(
        out,
        "incidents_ended_total",
        "counter",
        "Recovery incidents that ended, by outcome.",
        "outcome",
        &[
            ("completed", load(&m.incidents_completed)),
            ("failed", load(&m.incidents_failed)),
            ("aborted", load(&m.incidents_aborted)),
        ],
    );
    let phases = [
        (Phase::Initializing, "initializing"),
        (Phase::Executing, "executing"),
        (Phase::Validating, "validating"),
    ]
    .map(|(phase, label)| (label, at(&m.incidents_open, phase as usize)));
    labelled(
        out,
        "incidents_open",
        "gauge",
        "Recovery incidents open now, by phase.",
        "phase",
        &phases,
    );
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
    labelled(
        out,
        "recovery_actions_total",
        "counter",
        "Recovery ladder rungs taken, by action (unsupported ones are counted when recorded and passed over).",
        "action",
        &actions,
    );
    header(
        out,
        "recovery_escalations_total",
        "counter",
        "Moves to the next rung of a recovery ladder after failed validations.",
    );
    let _ = writeln!(
        out,
        "statemanager_recovery_escalations_total {}",
        load(&m.recovery_escalations)
    );
    let severities = [
        (AlertSeverity::Info, "info"),
        (AlertSeverity::Warning, "warning"),
        (AlertSeverity::Error, "error"),
        (AlertSeverity::Critical, "critical"),
    ];
    labelled(
        out,
        "alerts_raised_total",
        "counter",
        "Alerts raised, or raised again while open, by severity.",
        "severity",
        &severities.map(|(severity, label)| (label, at(&m.alerts_raised, severity as usize))),
    );
    labelled(
        out,
        "alerts_open",
        "gauge",
        "Alerts open now (Active or Acknowledged), by severity.",
        "severity",
        &severities.map(|(severity, label)| (label, at(&m.alerts_open, severity as usize))),
    );
    header(
        out,
        "flapping_resources",
        "gauge",
        "Resources flapping now (too many transitions within the flap window).",
    );
    let _ = writeln!(
        out,
        "statemanager_flapping_resources {}",
        load(&m.flapping_resources)
    );
    header(
        out,
        "flapping_detected_total",
        "counter",
        "Times a resource started flapping.",
    );
    let _ = writeln!(
        out,
        "statemanager_flapping_detected_total {}",
        load(&m.flapping_detected)
    );
    header(
        out,
        "foreign_writes_total",
        "counter",
        "Model and package keys another writer changed to a value the reports do not derive.",
    );
    let _ = writeln!(
        out,
        "statemanager_foreign_writes_total {}",
        load(&m.foreign_writes)
    );
}

/// One family with one label: HELP, TYPE, then a sample per value.
fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    header(out, name, kind, help);
    for (value, number) in values {
        let _ = writeln!(out, "statemanager_{name}{{{label}=\"{value}\"}} {number}");
    }
}

/// The RocksDbService bridge's figures (docs/pullpiri.md).
fn pullpiri_kv(out: &mut String, b: &BridgeStatsSnapshot) {
    let rows: [(&str, &str, &str, u64); 8] = [
        (
            "pullpiri_kv_backlog",
            "gauge",
            "State keys waiting to be mirrored to the RocksDbService.",
            b.backlog,
        ),
        (
            "pullpiri_kv_mirrored_keys_total",
            "counter",
            "State keys written to (or deleted from) the RocksDbService.",
            b.mirrored_keys_total,
        ),
        (
            "pullpiri_kv_definitions_applied_total",
            "counter",
            "Definitions read from the RocksDbService and written to, or deleted from, the store.",
            b.definitions_applied_total,
        ),
        (
            "pullpiri_kv_failures_total",
            "counter",
            "Failed attempts: calls to the RocksDbService, store operations, watches that ended with an error (each retried with back-off).",
            b.failures_total,
        ),
        (
            "pullpiri_kv_resyncs_total",
            "counter",
            "Full resyncs of the state keys (at start-up, after an outage, after a compacted watch or an overfull backlog).",
            b.resyncs_total,
        ),
        (
            "pullpiri_kv_last_sync_seconds",
            "gauge",
            "When a full resync, an emptied backlog or a definitions poll last left the RocksDbService and the store agreeing (Unix time; 0: not yet).",
            b.last_sync_unix_seconds,
        ),
        (
            "pullpiri_kv_keys_skipped_total",
            "counter",
            "Keys the RocksDbService would refuse (empty, over 1024 bytes, or with < > ? { }), skipped.",
            b.keys_skipped_total,
        ),
        (
            "pullpiri_kv_connected",
            "gauge",
            "1 while the last call to the RocksDbService got an answer (a refusal counts).",
            u64::from(b.connected),
        ),
    ];
    for (name, kind, help, value) in rows {
        header(out, name, kind, help);
        let _ = writeln!(out, "statemanager_{name} {value}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP statemanager_{name} {help}");
    let _ = writeln!(out, "# TYPE statemanager_{name} {kind}");
}

fn histogram<const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    histogram: &Histogram<N>,
    bound: impl Fn(u64) -> String,
    sum: impl Fn(u64) -> String,
) {
    header(out, name, "histogram", help);
    let (buckets, count, total) = histogram.snapshot();
    for (upper, cumulative) in buckets {
        let _ = writeln!(
            out,
            "statemanager_{name}_bucket{{le=\"{}\"}} {cumulative}",
            bound(upper)
        );
    }
    let _ = writeln!(out, "statemanager_{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "statemanager_{name}_sum {}", sum(total));
    let _ = writeln!(out, "statemanager_{name}_count {count}");
}

fn micros_as_seconds(micros: u64) -> String {
    // Exact decimal, no float rounding noise: 250 -> 0.00025.
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Binds the metrics address.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))
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
            engine: engine.handle(),
            etcd: None,
            store_kind: "memory",
            bridge: None,
            stopping: Arc::new(AtomicBool::new(false)),
        }
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
        let text = render(&test_sources(&engine));
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
        let text = render(&test_sources(&engine));
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
        let text = render(&test_sources(&engine));
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
            value("statemanager_commit_batch_size_bucket{le=\"+Inf\"}"),
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
        let text = render(&sources);
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

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        answer
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
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(
            metrics.contains("statemanager_commits_total 0"),
            "{metrics}"
        );
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/other").await.starts_with("HTTP/1.1 404"));

        stopping.store(true, Ordering::Relaxed);
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 503"));
        stopping.store(false, Ordering::Relaxed);
        engine.shutdown().await;
        let health = get(address, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        assert!(health.contains("the engine has stopped"), "{health}");

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the endpoint stops")
            .unwrap();
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(micros_as_seconds(250), "0.00025");
        assert_eq!(micros_as_seconds(2_048_000), "2.048");
        assert_eq!(micros_as_seconds(1_000_000), "1");
        assert_eq!(micros_as_seconds(0), "0");
        assert_eq!(micros_as_seconds(1_500_001), "1.500001");
    }
}
