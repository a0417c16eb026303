//! [`RocksDbServiceDouble`]: upstream's RocksDbService in process, for tests
//! of the bridge and of anything else that talks to the service.
//!
//! A real tonic server on a free port of 127.0.0.1, keeping its keys in a
//! `BTreeMap`, answering as upstream's `src/server/rocksdbservice` does,
//! quirks included:
//!
//! - Put and BatchPut refuse (INVALID_ARGUMENT) a key that is empty, longer
//!   than 1024 bytes or contains `< > ? { }`; BatchPut then stores nothing.
//!   Get and Delete refuse only an empty key.
//! - A missing key is `GetResponse { success: false, message: "Key not
//!   found" }`, not an error status; deleting a missing key succeeds.
//! - GetByPrefix ignores `limit` and refuses an empty prefix; ListKeys
//!   honours `limit` (0: all) and lists every key for an empty prefix.
//!
//! For tests it adds: direct access to the keys ([`put`], [`get`],
//! [`keys_under`], [`snapshot`]), outages ([`stop`]/[`restart`] on the same
//! port, or [`set_unavailable`] to answer UNAVAILABLE to everything), a
//! stricter service ([`refuse_key`]), a slow one ([`set_delay`]), and a
//! record of the calls ([`calls`]).
//!
//! Enabled by the `testing` feature.
//!
//! [`put`]: RocksDbServiceDouble::put
//! [`get`]: RocksDbServiceDouble::get
//! [`keys_under`]: RocksDbServiceDouble::keys_under
//! [`snapshot`]: RocksDbServiceDouble::snapshot
//! [`stop`]: RocksDbServiceDouble::stop
//! [`restart`]: RocksDbServiceDouble::restart
//! [`set_unavailable`]: RocksDbServiceDouble::set_unavailable
//! [`refuse_key`]: RocksDbServiceDouble::refuse_key
//! [`set_delay`]: RocksDbServiceDouble::set_delay
//! [`calls`]: RocksDbServiceDouble::calls

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::key::check_service_key;
use crate::proto::rocksdbservice as pb;
use crate::proto::rocksdbservice::rocks_db_service_server::{RocksDbService, RocksDbServiceServer};

/// How the double answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A normal answer (`success: false` for a missing key included).
    Ok,
    /// INVALID_ARGUMENT.
    Refused,
    /// UNAVAILABLE, because of [`RocksDbServiceDouble::set_unavailable`].
    Unavailable,
}

/// One call the double received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The rpc: `Put`, `BatchPut`, `Delete`, `Get`, `GetByPrefix`,
    /// `ListKeys` or `Health`.
    pub rpc: &'static str,
    /// The keys it named (the prefix for GetByPrefix and ListKeys).
    pub keys: Vec<String>,
    /// How it was answered.
    pub answer: Answer,
}

#[derive(Default)]
struct State {
    data: Mutex<BTreeMap<String, String>>,
    refused: Mutex<BTreeSet<String>>,
    calls: Mutex<Vec<Call>>,
    delay: Mutex<Duration>,
    unavailable: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// Waits the configured delay, then records the call and answers
    /// UNAVAILABLE when the double is told to.
    async fn admit(&self, rpc: &'static str, keys: Vec<String>) -> Result<(), Status> {
        let delay = *lock(&self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.unavailable.load(Ordering::SeqCst) {
            self.record(rpc, keys, Answer::Unavailable);
            return Err(Status::unavailable(
                "the RocksDbService double is down (test)",
            ));
        }
        self.record(rpc, keys, Answer::Ok);
        Ok(())
    }

    fn record(&self, rpc: &'static str, keys: Vec<String>, answer: Answer) {
        lock(&self.calls).push(Call { rpc, keys, answer });
    }

    /// Marks the last recorded call as refused and builds the status.
    fn refuse(&self, message: String) -> Status {
        if let Some(last) = lock(&self.calls).last_mut() {
            last.answer = Answer::Refused;
        }
        Status::invalid_argument(message)
    }

    /// Upstream's key check for Put and BatchPut, plus the keys a test told
    /// the double to refuse.
    fn check_storable(&self, key: &str) -> Result<(), String> {
        check_service_key(key).map_err(|refusal| refusal.to_string())?;
        if lock(&self.refused).contains(key) {
            return Err("the key is refused by this service (test)".to_owned());
        }
        Ok(())
    }
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl RocksDbService for Service {
    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.0.admit("Health", Vec::new()).await?;
        Ok(Response::new(pb::HealthResponse {
            status: "healthy".into(),
            version: "1.0.0".into(),
            database_path: "memory (test double)".into(),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        self.0.admit("Put", vec![request.key.clone()]).await?;
        if let Err(reason) = self.0.check_storable(&request.key) {
            return Err(self.0.refuse(reason));
        }
        lock(&self.0.data).insert(request.key, request.value);
        Ok(Response::new(pb::PutResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        self.0.admit("Get", vec![request.key.clone()]).await?;
        if request.key.is_empty() {
            return Err(self.0.refuse("Key cannot be empty".into()));
        }
        let answer = match lock(&self.0.data).get(&request.key) {
            Some(value) => pb::GetResponse {
                success: true,
                value: value.clone(),
                message: "Key found".into(),
            },
            None => pb::GetResponse {
                success: false,
                value: String::new(),
                message: "Key not found".into(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        self.0.admit("Delete", vec![request.key.clone()]).await?;
        if request.key.is_empty() {
            return Err(self.0.refuse("Key cannot be empty".into()));
        }
        lock(&self.0.data).remove(&request.key);
        Ok(Response::new(pb::DeleteResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn batch_put(
        &self,
        request: Request<pb::BatchPutRequest>,
    ) -> Result<Response<pb::BatchPutResponse>, Status> {
        let request = request.into_inner();
        let keys = request.pairs.iter().map(|pair| pair.key.clone()).collect();
        self.0.admit("BatchPut", keys).await?;
        for pair in &request.pairs {
            if let Err(reason) = self.0.check_storable(&pair.key) {
                return Err(self
                    .0
                    .refuse(format!("Invalid key: {} ({reason})", pair.key)));
            }
        }
        let processed_count = i32::try_from(request.pairs.len()).unwrap_or(i32::MAX);
        let mut data = lock(&self.0.data);
        for pair in request.pairs {
            data.insert(pair.key, pair.value);
        }
        Ok(Response::new(pb::BatchPutResponse {
            success: true,
            processed_count,
            error: String::new(),
        }))
    }

    async fn get_by_prefix(
        &self,
        request: Request<pb::GetByPrefixRequest>,
    ) -> Result<Response<pb::GetByPrefixResponse>, Status> {
        let request = request.into_inner();
        self.0
            .admit("GetByPrefix", vec![request.prefix.clone()])
            .await?;
        if request.prefix.is_empty() {
            return Err(self.0.refuse("Prefix cannot be empty".into()));
        }
        // Upstream scans every key and ignores `limit`.
        let pairs: Vec<pb::KeyValue> = lock(&self.0.data)
            .iter()
            .filter(|(key, _)| key.starts_with(&request.prefix))
            .map(|(key, value)| pb::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        Ok(Response::new(pb::GetByPrefixResponse {
            total_count: i32::try_from(pairs.len()).unwrap_or(i32::MAX),
            pairs,
            error: String::new(),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let request = request.into_inner();
        self.0
            .admit("ListKeys", vec![request.prefix.clone()])
            .await?;
        let limit = usize::try_from(request.limit)
            .ok()
            .filter(|limit| *limit > 0)
            .unwrap_or(usize::MAX);
        let keys: Vec<String> = lock(&self.0.data)
            .keys()
            .filter(|key| key.starts_with(&request.prefix))
            .take(limit)
            .cloned()
            .collect();
        Ok(Response::new(pb::ListKeysResponse {
            total_count: i32::try_from(keys.len()).unwrap_or(i32::MAX),
            keys,
            error: String::new(),
        }))
    }
}

/// The RocksDbService test double; stops serving when dropped.
pub struct RocksDbServiceDouble {
    address: SocketAddr,
    state: Arc<State>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RocksDbServiceDouble {
    /// A double serving on a free port of 127.0.0.1.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut double = Self {
            address: listener.local_addr()?,
            state: Arc::default(),
            running: None,
        };
        double.serve(listener);
        Ok(double)
    }

    /// `http://127.0.0.1:{port}`, for [`BridgeConfig::url`](crate::BridgeConfig::url).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address it serves on (kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether it is serving (not stopped).
    pub fn is_serving(&self) -> bool {
        self.running.is_some()
    }

    /// Stops serving: the port is closed and open connections are told to go
    /// away once their calls are answered. The keys are kept.
    pub async fn stop(&mut self) {
        if let Some((stop, mut task)) = self.running.take() {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Serves again on the same address, with the keys it had. A no-op when
    /// it is serving.
    pub async fn restart(&mut self) -> io::Result<()> {
        if self.running.is_none() {
            let listener = TcpListener::bind(self.address).await?;
            self.serve(listener);
        }
        Ok(())
    }

    /// While `true`, every call is answered UNAVAILABLE (and recorded), as a
    /// service that is up but failing would.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// From now on Put and BatchPut refuse `key` with INVALID_ARGUMENT, as a
    /// service with stricter key rules than upstream's would.
    pub fn refuse_key(&self, key: impl Into<String>) {
        lock(&self.state.refused).insert(key.into());
    }

    /// Every call waits `delay` before it is answered (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Stores a key directly, as another upstream component would.
    pub fn put(&self, key: impl Into<String>, value: impl Into<String>) {
        lock(&self.state.data).insert(key.into(), value.into());
    }

    /// Deletes a key directly; `true` when it existed.
    pub fn delete(&self, key: &str) -> bool {
        lock(&self.state.data).remove(key).is_some()
    }

    /// The value of a key, read directly.
    pub fn get(&self, key: &str) -> Option<String> {
        lock(&self.state.data).get(key).cloned()
    }

    /// The keys starting with `prefix`, in order.
    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        lock(&self.state.data)
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Every key and value.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        lock(&self.state.data).clone()
    }

    /// The keys and values starting with `prefix`.
    pub fn snapshot_under(&self, prefix: &str) -> BTreeMap<String, String> {
        lock(&self.state.data)
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Every call received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }

    /// How many calls were refused with INVALID_ARGUMENT so far.
    pub fn refusals(&self) -> usize {
        lock(&self.state.calls)
            .iter()
            .filter(|call| call.answer == Answer::Refused)
            .count()
    }

    fn serve(&mut self, listener: TcpListener) {
        let service = RocksDbServiceServer::new(Service(Arc::clone(&self.state)));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        self.running = Some((stop, task));
    }
}

impl Drop for RocksDbServiceDouble {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}
