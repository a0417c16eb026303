//! What one measurement runs against: a fresh etcd (or `--etcd`), the
//! ActionController double, the daemon as a child process (or `--daemon`)
//! on that etcd or on the embedded store in a fresh data directory
//! (`--store embedded`), one etcd client and one gRPC channel shared by every
//! task; with `--tls mtls` the daemon serves mutual TLS and every channel
//! presents a client certificate ([`crate::pki`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::Client;
use tonic::transport::Channel;
use transport_grpc::proto::statemanager::state_manager_connection_client::StateManagerConnectionClient;
use transport_grpc::testing::ActionControllerDouble;

use crate::daemon::{Daemon, DaemonSpec, DaemonStore};
use crate::kv;
use crate::pki::{Pki, SMBENCH, Tls};

/// The generated StateManager client over the shared channel.
pub type Sm = StateManagerConnectionClient<Channel>;

/// Where the spawned daemon keeps its states (`--store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// The run's etcd (`--etcd-endpoints`); results verified by reading etcd.
    Etcd,
    /// The embedded store in a fresh data directory per run (`--store
    /// embedded --data-dir`); etcd serves only the raw baseline, results are
    /// verified over the daemon's gRPC API and `/metrics`.
    Embedded,
}

impl Store {
    /// The name `--store` takes.
    pub fn name(self) -> &'static str {
        match self {
            Store::Etcd => "etcd",
            Store::Embedded => "embedded",
        }
    }
}

/// Options common to every workload.
#[derive(Debug, Clone)]
pub struct Common {
    /// The daemon binary to spawn.
    pub daemon_bin: PathBuf,
    /// An already-running etcd instead of a fresh one per run.
    pub etcd: Option<String>,
    /// An already-running daemon instead of spawning one.
    pub daemon: Option<String>,
    /// Where daemon logs go.
    pub workdir: PathBuf,
    /// The workload seed.
    pub seed: u64,
    /// A tag unique to this invocation (keeps names apart on a reused etcd).
    pub session: String,
    /// Where the spawned daemon keeps its states.
    pub store: Store,
    /// Whether workload labels name the store (`W1 c=64 [embedded]`): when
    /// `--store` names any other than etcd alone.
    pub label_store: bool,
    /// Whether the daemon serves plaintext or mutual TLS.
    pub tls: Tls,
    /// Whether workload labels name the transport (`W1 c=64 [mtls]`): when
    /// `--tls` names any other than plain alone.
    pub label_tls: bool,
    /// The certificates, when `--tls` lists mtls.
    pub pki: Option<Pki>,
    /// With mutual TLS, start the daemon with W3's policy
    /// ([`crate::pki::REPORTS_POLICY`]) instead of the default one.
    pub reports_policy: bool,
}

impl Common {
    /// These options with the daemon on `store`.
    pub fn on(&self, store: Store) -> Common {
        Common {
            store,
            ..self.clone()
        }
    }

    /// These options with the daemon serving `tls`.
    pub fn over(&self, tls: Tls) -> Common {
        Common {
            tls,
            ..self.clone()
        }
    }

    /// These options with W3's policy under mutual TLS (smbench's identity
    /// may send every node's reports).
    pub fn reporting(&self) -> Common {
        Common {
            reports_policy: true,
            ..self.clone()
        }
    }

    /// `workload`'s label, with the store when [`label_store`](Self::label_store)
    /// and the transport when [`label_tls`](Self::label_tls):
    /// `W1 c=64 [embedded, mtls]`.
    pub fn label(&self, workload: &str) -> String {
        let mut tags = Vec::new();
        if self.label_store {
            tags.push(self.store.name());
        }
        if self.label_tls {
            tags.push(self.tls.name());
        }
        if tags.is_empty() {
            workload.to_owned()
        } else {
            format!("{workload} [{}]", tags.join(", "))
        }
    }

    /// A daemon's file label (log, data directory) for this store and transport.
    pub fn file_label(&self, base: &str) -> String {
        let store = match self.store {
            Store::Etcd => "",
            Store::Embedded => "-embedded",
        };
        let tls = match self.tls {
            Tls::Plain => "",
            Tls::Mtls => "-mtls",
        };
        format!("{base}{store}{tls}")
    }

    /// The certificates when the daemon serves mutual TLS (`None`: plaintext).
    pub fn mtls(&self) -> Result<Option<&Pki>> {
        match (self.tls, &self.pki) {
            (Tls::Plain, _) => Ok(None),
            (Tls::Mtls, Some(pki)) => Ok(Some(pki)),
            (Tls::Mtls, None) => bail!("--tls mtls without certificates"),
        }
    }
}

/// One measurement's etcd, ActionController double, daemon and clients.
pub struct Env {
    /// The fresh etcd (None with `--etcd`).
    pub etcd: Option<etcd_harness::Etcd>,
    /// Its client URL (comma-separated: every member's).
    pub etcd_url: String,
    /// The shared etcd client.
    pub kv: Client,
    /// The ActionController double the spawned daemon calls.
    pub ac: ActionControllerDouble,
    /// The spawned daemon (None with `--daemon`, or before [`start_daemon`](Self::start_daemon)).
    pub daemon: Option<Daemon>,
    /// The shared gRPC client, once the daemon is up.
    pub sm: Option<Sm>,
    /// Its channel, for requests sent pre-encoded ([`crate::raw`]).
    pub channel: Option<Channel>,
    /// The daemon's URL (`http://` or, with mutual TLS, `https://`).
    url: Option<String>,
    common: Common,
}

/// Connects one plaintext HTTP/2 channel to `url`.
pub async fn connect_channel(url: &str) -> Result<Channel> {
    crate::pki::connect(url, None).await
}

/// A typed client on a new channel to `url`.
pub async fn connect_sm(url: &str) -> Result<Sm> {
    Ok(client_on(connect_channel(url).await?))
}

/// A typed client on `channel`.
pub fn client_on(channel: Channel) -> Sm {
    StateManagerConnectionClient::new(channel).max_decoding_message_size(256 * 1024 * 1024)
}

impl Env {
    /// Starts a fresh etcd (unless `--etcd`) and the ActionController double.
    pub async fn start(common: &Common) -> Result<Env> {
        Env::start_cluster(common, 1).await
    }

    /// Starts a fresh etcd of `members` members (unless `--etcd`) and the
    /// ActionController double; the daemon and the shared etcd client are
    /// given every member's URL.
    pub async fn start_cluster(common: &Common, members: usize) -> Result<Env> {
        let (etcd, etcd_url) = match &common.etcd {
            Some(url) => (None, url.clone()),
            None => {
                // etcd 3.4 slows after big bursts: every measurement gets its own.
                let etcd = etcd_harness::Etcd::builder()
                    .members(members)
                    .auto_compaction_retention("1")
                    .start()
                    .context("starting etcd")?;
                let url = etcd.endpoints().join(",");
                (Some(etcd), url)
            }
        };
        let kv = kv::connect(&etcd_url).await?;
        kv::revision(&kv).await.context("etcd does not answer")?;
        let ac = ActionControllerDouble::start().await;
        Ok(Env {
            etcd,
            etcd_url,
            kv,
            ac,
            daemon: None,
            sm: None,
            channel: None,
            url: None,
            common: common.clone(),
        })
    }

    /// Accounts the CPU of the daemon and etcd this environment started.
    pub fn cpu_clock(&self) -> crate::cpu::CpuClock {
        crate::cpu::CpuClock::new(
            self.daemon.as_ref().map(|d| d.pid),
            self.etcd.as_ref().and_then(|e| e.pid()),
        )
    }

    /// `true` when smbench spawned the daemon (reconcile counts and memory are then known).
    pub fn owns_daemon(&self) -> bool {
        self.common.daemon.is_none()
    }

    /// `true` when the daemon keeps its states in the embedded store.
    pub fn embedded(&self) -> bool {
        self.common.store == Store::Embedded
    }

    /// The embedded store's data directory of the daemon labelled `label`
    /// (fresh: the label names the workload, concurrency and run).
    pub fn data_dir(&self, label: &str) -> PathBuf {
        self.common.workdir.join(format!("{label}.data"))
    }

    /// The spec of a daemon for this environment, listening on `listen`.
    pub fn spec(&self, label: &str, listen: &str) -> DaemonSpec {
        let store = match self.common.store {
            Store::Etcd => DaemonStore::Etcd(self.etcd_url.clone()),
            Store::Embedded => DaemonStore::Embedded(self.data_dir(label)),
        };
        let extra_args = match (self.common.tls, &self.common.pki) {
            (Tls::Mtls, Some(pki)) => pki.daemon_args(self.common.reports_policy),
            _ => Vec::new(),
        };
        DaemonSpec {
            bin: self.common.daemon_bin.clone(),
            store,
            action_controller: self.ac.url(),
            listen: listen.to_owned(),
            log_path: self.common.workdir.join(format!("{label}.log")),
            extra_args,
        }
    }

    /// Spawns the daemon (or connects to `--daemon`) and connects the shared channel.
    pub async fn start_daemon(&mut self, label: &str) -> Result<()> {
        match self.common.daemon.clone() {
            Some(url) => self.connect(&url).await,
            None => self.spawn_daemon(&self.spec(label, "127.0.0.1:0")).await,
        }
    }

    /// Spawns the daemon of `spec`, waits until it listens and connects the
    /// shared channel to it, replacing the daemon and channel there were.
    pub async fn spawn_daemon(&mut self, spec: &DaemonSpec) -> Result<()> {
        let mut daemon = Daemon::spawn(spec)?;
        let addr = daemon.wait_listening(Duration::from_secs(60)).await?;
        self.daemon = Some(daemon);
        let scheme = match self.common.tls {
            Tls::Plain => "http",
            Tls::Mtls => "https",
        };
        self.connect(&format!("{scheme}://{addr}")).await
    }

    async fn connect(&mut self, url: &str) -> Result<()> {
        self.url = Some(url.to_owned());
        let channel = self.connect_as(SMBENCH).await?;
        self.sm = Some(client_on(channel.clone()));
        self.channel = Some(channel);
        Ok(())
    }

    /// The daemon's URL, once started.
    pub fn url(&self) -> Result<&str> {
        self.url.as_deref().context("the daemon is not started")
    }

    /// The client settings of `component` with mutual TLS (`None`: plaintext).
    pub fn client_tls(&self, component: &str) -> Result<Option<transport_grpc::ClientTls>> {
        Ok(self.common.mtls()?.map(|pki| pki.client(component)))
    }

    /// A new channel of its own to the daemon, acting as `component` (e.g.
    /// `FilterGateway`): with mutual TLS it presents that component's
    /// certificate; in plaintext the name is not used.
    pub async fn connect_as(&self, component: &str) -> Result<Channel> {
        let tls = self.client_tls(component)?;
        crate::pki::connect(self.url()?, tls.as_ref()).await
    }

    /// The shared gRPC channel.
    pub fn channel(&self) -> Result<Channel> {
        match &self.channel {
            Some(channel) => Ok(channel.clone()),
            None => bail!("the daemon is not started"),
        }
    }

    /// The shared typed client.
    pub fn sm(&self) -> Result<Sm> {
        match &self.sm {
            Some(sm) => Ok(sm.clone()),
            None => bail!("the daemon is not started"),
        }
    }

    /// The spawned daemon's `/metrics` address (from its `metrics on` line).
    pub fn metrics_addr(&self) -> Result<SocketAddr> {
        match &self.daemon {
            Some(Daemon {
                metrics: Some(addr),
                ..
            }) => Ok(*addr),
            Some(_) => bail!("the daemon did not log its metrics address"),
            None => bail!("the daemon was not spawned by smbench: its /metrics address is unknown"),
        }
    }

    /// Stops the spawned daemon (SIGTERM, graceful) and waits for it to exit.
    pub fn stop_daemon(&mut self) {
        self.sm = None;
        self.channel = None;
        self.url = None;
        if let Some(d) = &mut self.daemon {
            d.stop();
        }
    }

    /// Where to look when something failed.
    pub fn log_hint(&self) -> String {
        match &self.daemon {
            Some(d) => format!("daemon log: {}", d.log_path.display()),
            None => "daemon given with --daemon: see its own log".into(),
        }
    }

    /// Fails when the spawned daemon is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(d) = &mut self.daemon
            && !d.is_running()
        {
            bail!("the daemon exited; log {}", d.log_path.display());
        }
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Daemon first (it would otherwise log etcd errors while etcd goes).
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }
}
