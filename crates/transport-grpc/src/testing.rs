//! A test double of the ActionController, for tests of the StateManager and
//! of other components: a real tonic server on 127.0.0.1 that records the
//! Reconcile, TriggerAction and OffloadModel requests it receives and
//! answers them as the ActionController does. It keeps its address across [`down`]/[`up`], so a
//! StateManager configured with [`url`] finds it when it comes back.
//!
//! It serves plaintext, or TLS / mutual TLS with
//! [`with_tls`](ActionControllerDouble::with_tls), and records the client
//! certificate of every call ([`peers`](ActionControllerDouble::peers)).
//!
//! Enabled by the `testing` feature.
//!
//! [`down`]: ActionControllerDouble::down
//! [`up`]: ActionControllerDouble::up
//! [`url`]: ActionControllerDouble::url

// Test support: a double that cannot bind a loopback port has nothing to
// fall back on, and says so loudly.
#![allow(clippy::expect_used)]

pub mod pki;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::peer::PeerCertificate;
use crate::proto::actioncontroller as ac;
use crate::proto::actioncontroller::action_controller_connection_server::{
    ActionControllerConnection, ActionControllerConnectionServer,
};
use crate::tls::ServerTls;

#[derive(Default)]
struct Received {
    reconciles: Mutex<Vec<ac::ReconcileRequest>>,
    triggers: Mutex<Vec<ac::TriggerActionRequest>>,
    offloads: Mutex<Vec<ac::OffloadModelRequest>>,
    /// The client certificate of every call, in arrival order.
    peers: Mutex<Vec<Option<PeerCertificate>>>,
    /// Every Reconcile and TriggerAction in arrival order, refused ones
    /// marked `refused`.
    log: Mutex<Vec<String>>,
    /// How many of the next Reconcile/TriggerAction calls fail UNAVAILABLE.
    fail_next: std::sync::atomic::AtomicUsize,
}

impl Received {
    /// Logs a call; `Err` when it is one of the calls told to fail.
    fn admit(&self, call: String) -> Result<(), Status> {
        use std::sync::atomic::Ordering;
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            record(&self.log, format!("{call} refused"));
            return Err(Status::unavailable(
                "the ActionController is failing (test)",
            ));
        }
        record(&self.log, call);
        Ok(())
    }
}

fn copy<T: Clone>(list: &Mutex<Vec<T>>) -> Vec<T> {
    list.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn record<T>(list: &Mutex<Vec<T>>, item: T) {
    list.lock().unwrap_or_else(|e| e.into_inner()).push(item);
}

struct Recorder(Arc<Received>);

#[tonic::async_trait]
impl ActionControllerConnection for Recorder {
    async fn trigger_action(
        &self,
        request: Request<ac::TriggerActionRequest>,
    ) -> Result<Response<ac::TriggerActionResponse>, Status> {
        // A recovery's Recreate rung.
        record(&self.0.peers, PeerCertificate::of(&request).cloned());
        let request = request.into_inner();
        self.0
            .admit(format!("TriggerAction({})", request.scenario_name))?;
        record(&self.0.triggers, request);
        Ok(Response::new(ac::TriggerActionResponse {
            status: 0,
            desc: "action triggered".into(),
        }))
    }

    async fn reconcile(
        &self,
        request: Request<ac::ReconcileRequest>,
    ) -> Result<Response<ac::ReconcileResponse>, Status> {
        record(&self.0.peers, PeerCertificate::of(&request).cloned());
        let request = request.into_inner();
        self.0
            .admit(format!("Reconcile({})", request.scenario_name))?;
        record(&self.0.reconciles, request);
        Ok(Response::new(ac::ReconcileResponse {
            status: 0,
            desc: "reconciling".into(),
        }))
    }

    async fn complete_network_setting(
        &self,
        _: Request<ac::CompleteNetworkSettingRequest>,
    ) -> Result<Response<ac::CompleteNetworkSettingResponse>, Status> {
        Err(Status::unimplemented("not used by the StateManager"))
    }

    async fn offload_model(
        &self,
        request: Request<ac::OffloadModelRequest>,
    ) -> Result<Response<ac::OffloadModelResponse>, Status> {
        record(&self.0.peers, PeerCertificate::of(&request).cloned());
        let request = request.into_inner();
        let message = format!(
            "offloading '{}' to '{}'",
            request.model_name, request.target_node
        );
        record(&self.0.offloads, request);
        Ok(Response::new(ac::OffloadModelResponse {
            success: true,
            message,
            transition_id: "ac-1".into(),
        }))
    }
}

/// The ActionController test double; stops serving when dropped.
pub struct ActionControllerDouble {
    address: SocketAddr,
    received: Arc<Received>,
    tls: Option<ServerTls>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl ActionControllerDouble {
    /// A double that is up, on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let mut double = Self::down();
        double.up().await;
        double
    }

    /// A double that is down: its address is reserved (bound, then
    /// released) and nothing listens there until [`up`](Self::up).
    pub fn down() -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = probe.local_addr().expect("a bound address");
        drop(probe);
        Self {
            address,
            received: Arc::default(),
            tls: None,
            running: None,
        }
    }

    /// A double that is up, serving TLS (mutual TLS when `tls` has a
    /// client CA) on a free port of 127.0.0.1.
    pub async fn start_with_tls(tls: ServerTls) -> Self {
        let mut double = Self::down().with_tls(tls);
        double.up().await;
        double
    }

    /// The same double serving TLS from its next [`up`](Self::up); its
    /// [`url`](Self::url) becomes `https://`.
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The client certificate of every Reconcile, TriggerAction and
    /// OffloadModel call in arrival order (`None`: the call's connection
    /// had none).
    pub fn peers(&self) -> Vec<Option<PeerCertificate>> {
        copy(&self.received.peers)
    }

    /// The next `n` Reconcile or TriggerAction calls fail with UNAVAILABLE.
    pub fn fail_next(&self, n: usize) {
        self.received
            .fail_next
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every Reconcile and TriggerAction in arrival order
    /// (`Reconcile(s)`, `TriggerAction(s)`, refused ones with ` refused`).
    pub fn calls(&self) -> Vec<String> {
        copy(&self.received.log)
    }

    /// `http://127.0.0.1:{port}` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// Starts serving on the reserved address.
    pub async fn up(&mut self) {
        assert!(
            self.running.is_none(),
            "the ActionController double is already up"
        );
        let listener = TcpListener::bind(self.address).await.unwrap_or_else(|e| {
            panic!("bind the ActionController double to {}: {e}", self.address)
        });
        let service = ActionControllerConnectionServer::new(Recorder(self.received.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            let router = tonic::transport::Server::builder().add_service(service);
            let stopped = async {
                let _ = stopped.await;
            };
            let _ = match tls {
                None => {
                    router
                        .serve_with_incoming_shutdown(
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                            stopped,
                        )
                        .await
                }
                Some(tls) => {
                    router
                        .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), stopped)
                        .await
                }
            };
        });
        self.running = Some((stop, task));
    }

    /// Stops serving (the address stays reserved for [`up`](Self::up)).
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
            let _ = task.await;
        }
    }

    /// The Reconcile requests received so far.
    pub fn reconciles(&self) -> Vec<ac::ReconcileRequest> {
        copy(&self.received.reconciles)
    }

    /// The TriggerAction requests received so far (a recovery's Recreate rung).
    pub fn triggers(&self) -> Vec<ac::TriggerActionRequest> {
        copy(&self.received.triggers)
    }

    /// The OffloadModel requests received so far.
    pub fn offloads(&self) -> Vec<ac::OffloadModelRequest> {
        copy(&self.received.offloads)
    }

    /// Waits until at least `n` Reconcile requests arrived (`within` at
    /// most) and returns them all.
    pub async fn wait_for_reconciles(
        &self,
        n: usize,
        within: Duration,
    ) -> Vec<ac::ReconcileRequest> {
        let started = Instant::now();
        loop {
            let received = self.reconciles();
            if received.len() >= n || started.elapsed() > within {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a Reconcile request for `scenario` arrived (`within` at
    /// most) and takes it out of the record: [`reconciles`](Self::reconciles)
    /// no longer lists it. `None` when none arrived in time.
    ///
    /// For a test's barrier: a reconcile asked for after the requests under
    /// test is delivered after every reconcile they caused, so once it is
    /// here the record holds theirs, and the barrier's own is out of it.
    pub async fn take_reconcile(
        &self,
        scenario: &str,
        within: Duration,
    ) -> Option<ac::ReconcileRequest> {
        let started = Instant::now();
        loop {
            {
                let mut received = self
                    .received
                    .reconciles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(i) = received.iter().position(|r| r.scenario_name == scenario) {
                    return Some(received.remove(i));
                }
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ActionControllerDouble {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}
