//! Wiring: store, engine, ActionController client, gRPC server, metrics;
//! then waiting for a signal and shutting down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use election::{EtcdElection, LeaderElection};
use engine::{ActionPort, Engine, EngineHandle};
use pullpiri_kv::Bridge;
use state_store::{MemoryStore, StateStore};
use store_embedded::{EmbeddedConfig, EmbeddedStore};
use store_etcd::{EtcdConfig, EtcdStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use transport_grpc::forward::{LeaderRoute, Routes};
use transport_grpc::{
    ActionControllerClient, ClientTls, Engines, ServeError, ServerTls, ServerTlsFiles,
};

use crate::config::{HaSettings, Settings, StoreSettings};
use crate::ha::{self, Member};
use crate::metrics;
use crate::signals::{Event, Signals};

/// How often the daemon checks that the engine still runs.
const ENGINE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the daemon until SIGINT or SIGTERM (then `Ok`), or until something
/// it cannot go on without fails (then `Err`).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("installing the signal handlers")?;

    let grpc_listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", settings.listen))?;
    let metrics_listener = match settings.metrics_listen {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };

    let tls = match &settings.tls {
        Some(files) => Some(
            ServerTls::load(ServerTlsFiles {
                cert: files.cert.clone(),
                key: files.key.clone(),
                client_ca: files.client_ca.clone(),
            })
            .context("loading the gRPC server's TLS files")?,
        ),
        None => None,
    };
    let (store, etcd) = open_store(&settings.store).await?;
    let mut action_options = settings.action.clone();
    let ac_tls = &settings.action_controller_tls;
    if ac_tls.ca.is_some() || ac_tls.cert.is_some() {
        action_options.tls = Some(ClientTls {
            ca: ac_tls.ca.clone(),
            cert: ac_tls.cert.clone(),
            key: ac_tls.key.clone(),
            domain: None,
        });
    }
    let action = ActionControllerClient::new(&settings.action_controller, &action_options)
        .context("building the ActionController client")?;
    info!(
        "ActionController at {} (reconcile requests wait in the outbox while it is down)",
        action.address()
    );

    let action: Arc<dyn ActionPort> = Arc::new(action);
    let counters = Arc::new(engine::Metrics::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (running, ha_status) = match (&settings.ha, &etcd) {
        (Some(ha), Some(etcd)) => {
            let listening = local_address(&grpc_listener)?;
            let member = start_member(
                ha,
                listening,
                &settings,
                etcd,
                store.clone(),
                action,
                &counters,
            )
            .await?;
            let status = member.status.clone();
            let engines = member.engines.subscribe();
            let routes = member.routes.subscribe();
            // Its own signal: the member stops after the gRPC server drained.
            let (stop, stopped) = watch::channel(false);
            (
                Running::Member {
                    task: tokio::spawn(member.member.run(member.first, stopped)),
                    stop,
                    engines,
                    routes,
                },
                Some(status),
            )
        }
        (Some(_), None) => bail!("--ha needs --store etcd"),
        (None, _) => {
            let engine = Engine::start_with_metrics(
                store.clone(),
                action,
                settings.engine.clone(),
                counters.clone(),
            )
            .await
            .context("starting the engine: loading the states from the store failed")?;
            (Running::One(engine), None)
        }
    };
    let engines = running.engines();

    // Started after the engine, so that the definitions it writes into the
    // store reach the engine's watch like any other writer's.
    let bridge = match &settings.pullpiri_kv {
        Some(config) => Some(
            Bridge::spawn(store, config.clone(), stop_rx.clone())
                .context("starting the RocksDbService bridge")?,
        ),
        None => None,
    };

    let metrics_task = match metrics_listener {
        Some(listener) => {
            let address = local_address(&listener)?;
            let sources = metrics::Sources {
                metrics: counters.clone(),
                engine: engines.clone(),
                ha: ha_status.clone(),
                etcd,
                store_kind: settings.store.kind().name(),
                bridge: bridge.as_ref().map(Bridge::stats),
                stopping: stopping.clone(),
            };
            info!("metrics on {address}");
            Some(tokio::spawn(metrics::serve(
                listener,
                sources,
                stop_rx.clone(),
            )))
        }
        None => None,
    };

    let grpc_address = local_address(&grpc_listener)?;
    if let Some(warning) = plaintext_warning(grpc_address, settings.tls.is_some()) {
        warn!("{warning}");
    }
    let mut grpc_stop = stop_rx.clone();
    let mut serve_options = settings.serve.clone();
    serve_options.tls = tls.clone();
    let mut grpc: JoinHandle<Result<(), ServeError>> = tokio::spawn(transport_grpc::serve_member(
        engines.clone(),
        running.routes(),
        grpc_listener,
        serve_options,
        async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        },
    ));
    info!("listening on {grpc_address}");

    let mut check = tokio::time::interval(ENGINE_CHECK_INTERVAL);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            event = signals.next() => match event {
                Event::Stop(signal) => {
                    info!("received {signal}: shutting down (a second signal stops waiting)");
                    break Ok(());
                }
                Event::Hangup => reload(tls.as_ref()),
            },
            served = &mut grpc => {
                break Err(match served {
                    Ok(Ok(())) => anyhow::anyhow!("the gRPC server stopped unexpectedly"),
                    Ok(Err(error)) => anyhow::Error::new(error).context("the gRPC server failed"),
                    Err(error) => anyhow::Error::new(error).context("the gRPC server task failed"),
                });
            }
            _ = check.tick() => {
                if !running.is_running() {
                    break Err(anyhow::anyhow!("the engine stopped unexpectedly"));
                }
            }
        }
    };
    if let Err(error) = &outcome {
        error!("{error:#}; shutting down");
    }

    // Stop accepting; drain in-flight requests (bounded); then the engine.
    stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let limit = settings.shutdown_timeout;
    if !grpc.is_finished() {
        tokio::select! {
            served = tokio::time::timeout(limit, &mut grpc) => match served {
                Ok(Ok(Ok(()))) => info!("gRPC server drained"),
                Ok(Ok(Err(error))) => warn!("gRPC server ended with an error: {error}"),
                Ok(Err(error)) => warn!("gRPC server task failed: {error}"),
                Err(_) => {
                    warn!("in-flight gRPC requests did not finish within {limit:?}; dropping them");
                    grpc.abort();
                }
            },
            signal = signals.recv() => {
                warn!("received {signal} again: not waiting for in-flight gRPC requests");
                grpc.abort();
            }
        }
    }
    tokio::select! {
        stopped = tokio::time::timeout(limit * 2, running.shutdown()) => match stopped {
            Ok(()) => info!("engine stopped"),
            Err(_) => warn!("the engine did not stop within {:?}; leaving it", limit * 2),
        },
        signal = signals.recv() => warn!("received {signal} again: not waiting for the engine"),
    }
    if let Some(bridge) = bridge
        && tokio::time::timeout(limit, bridge.join()).await.is_err()
    {
        warn!("the RocksDbService bridge did not stop within {limit:?}");
    }
    if let Some(task) = metrics_task
        && tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .is_err()
    {
        warn!("the metrics endpoint did not stop within 1s");
    }
    if outcome.is_ok() {
        info!("stopped");
    }
    outcome
}

/// The engine the daemon runs: one, or an HA member's changing one.
enum Running {
    One(Engine),
    Member {
        task: JoinHandle<()>,
        stop: watch::Sender<bool>,
        engines: watch::Receiver<Arc<EngineHandle>>,
        routes: Routes,
    },
}

impl Running {
    fn engines(&self) -> Engines {
        match self {
            Running::One(engine) => engine.handle().into(),
            Running::Member { engines, .. } => Engines::Switching(engines.clone()),
        }
    }

    /// Where a follower forwards to (never, for a lone daemon).
    fn routes(&self) -> Routes {
        match self {
            Running::One(_) => watch::channel(None).1,
            Running::Member { routes, .. } => routes.clone(),
        }
    }

    fn is_running(&self) -> bool {
        match self {
            Running::One(engine) => engine.handle().is_running(),
            Running::Member { task, .. } => !task.is_finished(),
        }
    }

    /// Stops the engine; a member also resigns, so that another member
    /// takes over at once.
    async fn shutdown(self) {
        match self {
            Running::One(engine) => engine.shutdown().await,
            Running::Member { task, stop, .. } => {
                let _ = stop.send(true);
                let _ = task.await;
            }
        }
    }
}

/// A member ready to run: its first (follower) engine, and the channels
/// the server and the metrics read.
struct Started {
    member: Member,
    first: Engine,
    status: Arc<ha::Status>,
    engines: watch::Sender<Arc<EngineHandle>>,
    routes: watch::Sender<Option<LeaderRoute>>,
}

/// Joins the HA group: a follower engine first, then the election.
async fn start_member(
    ha: &HaSettings,
    listening: SocketAddr,
    settings: &Settings,
    etcd: &EtcdStore,
    store: Arc<dyn StateStore>,
    action: Arc<dyn ActionPort>,
    counters: &Arc<engine::Metrics>,
) -> anyhow::Result<Started> {
    // A follower first: the election has not spoken yet.
    let first = Engine::start_follower(
        store.clone(),
        action.clone(),
        settings.engine.clone(),
        counters.clone(),
    )
    .await
    .context("starting the follower engine: loading the states from the store failed")?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let me = election::Leader {
        id: member_id(),
        url: ha
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{listening}")),
    };
    let key = election::ElectionConfig::key_for(&settings.engine.bookkeeping_prefix, &ha.group);
    info!(group = %ha.group, %key, id = %me.id, url = %me.url, ttl = ?ha.lease_ttl, "joining the HA group");
    let election: Arc<dyn LeaderElection> = Arc::new(EtcdElection::spawn(
        etcd.client(),
        election::ElectionConfig {
            key,
            me,
            ttl: ha.lease_ttl,
            request_timeout: etcd.config().request_timeout,
        },
    ));
    let status = Arc::new(ha::Status {
        group: ha.group.clone(),
        roles: election.roles(),
        takeovers: AtomicU64::new(0),
        fenced_writes: AtomicU64::new(0),
        last_takeover_ms: AtomicI64::new(-1),
        leading: AtomicBool::new(false),
    });
    let (engines, _) = watch::channel(Arc::new(first.handle()));
    let (routes, _) = watch::channel(None);
    // Forwarding to the leader over TLS presents this member's own
    // certificate, which names the StateManager component.
    let peer_tls = settings.tls.as_ref().map(|tls| ClientTls {
        ca: tls.client_ca.clone(),
        cert: Some(tls.cert.clone()),
        key: Some(tls.key.clone()),
        domain: None,
    });
    Ok(Started {
        member: Member {
            store,
            action,
            config: settings.engine.clone(),
            metrics: counters.clone(),
            election,
            engines: engines.clone(),
            routes: routes.clone(),
            status: status.clone(),
            peer_tls,
            shutdown_timeout: settings.shutdown_timeout,
        },
        first,
        status,
        engines,
        routes,
    })
}

/// This process's id in its group: host, pid and start time.
fn member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}-{}-{started}", std::process::id())
}

/// The start-up warning for plaintext gRPC on an address other machines
/// can reach.
fn plaintext_warning(address: SocketAddr, tls: bool) -> Option<String> {
    (!tls && !address.ip().is_loopback()).then(|| {
        format!(
            "serving plaintext gRPC on {address}: callers are neither authenticated nor \
             encrypted; give --tls-cert, --tls-key and --tls-client-ca (docs/security.md)"
        )
    })
}

/// SIGHUP: the server's certificate, key and client CA are read again; new
/// connections use them. A failed reload keeps the old ones.
fn reload(tls: Option<&ServerTls>) {
    match tls {
        Some(tls) => match tls.reload() {
            Ok(()) => info!("received SIGHUP: TLS files reloaded; new connections use them"),
            Err(error) => {
                error!("received SIGHUP: TLS files not reloaded, the old ones stay in use: {error}")
            }
        },
        None => info!("received SIGHUP: nothing to reload (TLS is off)"),
    }
}

fn local_address(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    listener
        .local_addr()
        .context("reading the bound listening address")
}

/// Opens the configured store; for etcd, checks that it answers.
async fn open_store(
    settings: &StoreSettings,
) -> anyhow::Result<(Arc<dyn StateStore>, Option<EtcdStore>)> {
    match settings {
        StoreSettings::Memory => {
            warn!(
                "using the in-memory store, meant for tests: state will not survive a restart \
                 (leave out --store memory to keep it in the embedded store)"
            );
            Ok((Arc::new(MemoryStore::default()), None))
        }
        StoreSettings::Embedded(dir) => {
            let config = EmbeddedConfig::new(dir);
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(config))
                .await
                .context("opening the embedded store")??;
            let revision = store.revision().await?;
            let shown = std::path::absolute(store.path()).unwrap_or_else(|_| store.path().into());
            info!(
                "keeping state in the embedded store {} (revision {revision})",
                shown.display()
            );
            Ok((Arc::new(store), None))
        }
        StoreSettings::Etcd(config) => {
            let store = connect_etcd(config).await?;
            info!(
                "using etcd at {} (bookkeeping under '{}')",
                config.endpoints.join(","),
                config.bookkeeping_prefix
            );
            Ok((Arc::new(store.clone()), Some(store)))
        }
    }
}

/// Connects to etcd and reads one key, so an unreachable cluster is a clear
/// start-up error rather than a slow first request.
async fn connect_etcd(config: &EtcdConfig) -> anyhow::Result<EtcdStore> {
    let endpoints = config.endpoints.join(",");
    // The store bounds each call by request_timeout; this also bounds the
    // connect with authentication and leaves room for the last attempt.
    let limit = config.request_timeout * 2 + config.connect_timeout;
    let probe = async {
        let store = EtcdStore::connect(config.clone()).await?;
        store.get(&config.bookkeeping_prefix).await?;
        Ok::<_, state_store::StoreError>(store)
    };
    match tokio::time::timeout(limit, probe).await {
        Ok(result) => {
            result.with_context(|| format!("etcd at {endpoints} is unreachable or refused us"))
        }
        Err(_) => bail!("etcd at {endpoints} did not answer within {limit:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_warns_only_off_loopback() {
        let cases = [
            ("0.0.0.0:47006", false, true),
            ("10.0.0.5:47006", false, true),
            ("[::]:47006", false, true),
            ("127.0.0.1:47006", false, false),
            ("[::1]:47006", false, false),
            ("0.0.0.0:47006", true, false),
        ];
        for (address, tls, warns) in cases {
            let warning = plaintext_warning(address.parse().unwrap(), tls);
            assert_eq!(warning.is_some(), warns, "{address} tls={tls}");
        }
    }
}
