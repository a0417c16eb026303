//! Wiring: store, engine, ActionController client, gRPC server, metrics;
//! then waiting for a signal and shutting down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use engine::Engine;
use pullpiri_kv::Bridge;
use state_store::{MemoryStore, StateStore};
use store_embedded::{EmbeddedConfig, EmbeddedStore};
use store_etcd::{EtcdConfig, EtcdStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use transport_grpc::{ActionControllerClient, ClientTls, ServeError, ServerTls, ServerTlsFiles};

use crate::config::{Settings, StoreSettings};
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

    let engine = Engine::start(store.clone(), Arc::new(action), settings.engine.clone())
        .await
        .context("starting the engine: loading the states from the store failed")?;
    let handle = engine.handle();
    let stopping = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

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
                metrics: engine.metrics(),
                engine: handle.clone(),
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
    let mut grpc: JoinHandle<Result<(), ServeError>> = tokio::spawn(transport_grpc::serve(
        handle.clone(),
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
                if !handle.is_running() {
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
        stopped = tokio::time::timeout(limit, engine.shutdown()) => match stopped {
            Ok(()) => info!("engine stopped"),
            Err(_) => warn!("the engine did not stop within {limit:?}; leaving it"),
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
