//! Fixtures for the end-to-end tests: the real `statemanager` binary as a
//! child process, a real etcd (the harness), an in-test ActionController
//! (a tonic server on 127.0.0.1 that records what it receives and can be
//! down, come up later, or stop), and the etcd keys read and written the way
//! the other PICCOLO components do (ApiServer definitions, state keys).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use tonic::transport::{Channel, Endpoint};
use transport_grpc::proto::actioncontroller as ac;
use transport_grpc::proto::monitoringserver as ms;
use transport_grpc::proto::statemanager::state_manager_connection_client::StateManagerConnectionClient;

/// How long the daemon may take to say `listening on <addr>`.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long `eventually` waits for a key, and `sigterm` for the exit.
pub const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The generated gRPC client of `statemanager.StateManagerConnection`.
pub type StateManagerConnection = StateManagerConnectionClient<Channel>;

/// A real etcd for one test; fails with the harness's message (how to
/// install etcd) when there is none.
pub fn etcd() -> etcd_harness::Etcd {
    etcd_harness::Etcd::start().unwrap_or_else(|error| panic!("etcd starts: {error}"))
}

/// The `statemanager` binary running as a child process. Killed with SIGKILL
/// when dropped; its captured output is printed if the test is failing.
pub struct Daemon {
    child: Child,
    /// The address the daemon's gRPC server is bound to.
    pub address: SocketAddr,
    /// The metrics address, when it logged `metrics on <addr>`.
    pub metrics: Option<SocketAddr>,
    output: Arc<Mutex<String>>,
}

impl Daemon {
    /// The usual flags: gRPC and metrics on free loopback ports, the given
    /// etcd as the store, the ActionController at `action_controller`, and
    /// information failures acted on at once (`--info-failure-grace 0s`).
    pub fn args(etcd: &etcd_harness::Etcd, action_controller: &str) -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--store",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoints().join(","),
            "--action-controller",
            action_controller,
            "--info-failure-grace",
            "0s",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts the daemon on `etcd` with [`Daemon::args`].
    pub async fn start_on(etcd: &etcd_harness::Etcd, action_controller: &str) -> Self {
        Self::start(&Self::args(etcd, action_controller)).await
    }

    /// Starts the daemon with `args` and waits (15 s at most) until its
    /// stderr says `listening on <addr>`.
    pub async fn start(args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_statemanager"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the statemanager binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        // Drained on threads for the daemon's whole life, so a full pipe
        // never blocks it, whatever the test's runtime is doing.
        drain(child.stderr.take().expect("piped stderr"), output.clone());
        drain(child.stdout.take().expect("piped stdout"), output.clone());

        let started = Instant::now();
        loop {
            let text = output.lock().expect("output lock").clone();
            if let Some(address) = logged_address(&text, "listening on ") {
                let metrics = logged_address(&text, "metrics on ");
                return Self {
                    child,
                    address,
                    metrics,
                    output,
                };
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "the daemon exited ({status}) before listening; args {args:?}; output:\n{}",
                    output.lock().expect("output lock")
                );
            }
            if started.elapsed() > START_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not log 'listening on <addr>' within {START_DEADLINE:?}; \
                     args {args:?}; output:\n{}",
                    output.lock().expect("output lock")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `http://{address}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A gRPC client connected to the daemon (10 s per call at most).
    pub async fn client(&self) -> StateManagerConnection {
        let channel = Endpoint::from_shared(self.url())
            .expect("a valid URL")
            .connect_timeout(Duration::from_secs(5))
            .timeout(DEADLINE)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connects to the daemon at {}: {e}", self.url()));
        StateManagerConnectionClient::new(channel)
    }

    /// The value of the Prometheus sample `name` on the daemon's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.metrics.expect("the daemon logged 'metrics on <addr>'");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("connect to the metrics endpoint {address}: {e}"));
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send GET /metrics");
        let mut answer = String::new();
        tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
            .await
            .expect("/metrics answers in time")
            .expect("read /metrics");
        answer
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no sample '{name}' on /metrics:\n{answer}"))
    }

    /// `GET /healthz{query}` on the metrics endpoint (`query` is `""` or
    /// starts with `?`): the HTTP status code and the body.
    pub async fn healthz(&self, query: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.metrics.expect("the daemon logged 'metrics on <addr>'");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .unwrap_or_else(|e| panic!("connect to the health endpoint {address}: {e}"));
        let request =
            format!("GET /healthz{query} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send GET /healthz");
        let mut answer = String::new();
        tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
            .await
            .expect("/healthz answers in time")
            .expect("read /healthz");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status line from /healthz{query}:\n{answer}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .trim()
            .to_owned();
        (status, body)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon printed so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits (10 s at most) for the daemon to exit.
    pub async fn sigterm(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the daemon did not exit within {DEADLINE:?} of SIGTERM; output:\n{}",
                self.output()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- statemanager output ({}) ---\n{}",
                self.address,
                self.output()
            );
        }
    }
}

fn drain(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut output = output.lock().expect("output lock");
            output.push_str(&strip_ansi(&line));
            output.push('\n');
        }
    });
}

/// The socket address following `marker` in the log (quoted or not, plain
/// text or JSON).
fn logged_address(text: &str, marker: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let rest = &line[line.find(marker)? + marker.len()..];
        let rest = rest.trim_start_matches(['\'', '"', '`', '\\']);
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The etcd the daemon uses, read and written directly: definitions as
/// Pullpiri's ApiServer stores them, state keys as other components read them.
#[derive(Clone)]
pub struct Keys {
    client: etcd_client::Client,
}

impl Keys {
    /// Connects to `etcd`.
    pub async fn connect(etcd: &etcd_harness::Etcd) -> Self {
        let client = etcd_client::Client::connect(etcd.endpoints(), None)
            .await
            .expect("etcd client");
        Self { client }
    }

    /// Puts `value` at `key`.
    pub async fn put(&self, key: &str, value: &str) {
        self.client
            .clone()
            .put(key, value, None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Option<String> {
        let answer = self
            .client
            .clone()
            .get(key, None)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        answer
            .kvs()
            .first()
            .map(|kv| kv.value_str().expect("utf-8").to_owned())
    }

    /// The keys under `prefix`.
    pub async fn keys_under(&self, prefix: &str) -> Vec<String> {
        let answer = self
            .client
            .clone()
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap_or_else(|e| panic!("get {prefix}*: {e}"));
        answer
            .kvs()
            .iter()
            .map(|kv| kv.key_str().expect("utf-8").to_owned())
            .collect()
    }

    /// The store's current revision: unchanged means nothing was written.
    pub async fn revision(&self) -> i64 {
        let answer = self
            .client
            .clone()
            .get("/", None)
            .await
            .expect("get for the revision");
        answer.header().expect("a header").revision()
    }

    /// Waits (10 s at most) until `key` holds `expected` (`None`: absent).
    pub async fn eventually(&self, key: &str, expected: Option<&str>) {
        let started = Instant::now();
        loop {
            let found = self.get(key).await;
            if found.as_deref() == expected {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{key}: expected {expected:?} within {DEADLINE:?}, found {found:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (10 s at most) until the number of keys under `prefix` is `n`.
    pub async fn eventually_count(&self, prefix: &str, n: usize) {
        let started = Instant::now();
        loop {
            let keys = self.keys_under(prefix).await;
            if keys.len() == n {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{prefix}: expected {n} keys within {DEADLINE:?}, found {keys:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (10 s at most) until some key under `prefix` holds a value
    /// containing `needle`.
    pub async fn eventually_some_value_under(&self, prefix: &str, needle: &str) {
        let started = Instant::now();
        loop {
            let answer = self
                .client
                .clone()
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .unwrap_or_else(|e| panic!("get {prefix}*: {e}"));
            let values: Vec<String> = answer
                .kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .collect();
            if values.iter().any(|v| v.contains(needle)) {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{prefix}: expected a value containing {needle:?} within {DEADLINE:?}, found {values:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `Scenario/{name}` driving package `target`.
    pub async fn define_scenario(&self, name: &str, target: &str) {
        let yaml = format!(
            "apiVersion: v1\nkind: Scenario\nmetadata:\n  name: {name}\n\
             spec:\n  condition:\n  action: update\n  target: {target}\n"
        );
        self.put(&format!("Scenario/{name}"), &yaml).await;
    }

    /// `Package/{name}` with `(model, node)` entries.
    pub async fn define_package(&self, name: &str, models: &[(&str, &str)]) {
        let mut yaml = format!(
            "apiVersion: v1\nkind: Package\nmetadata:\n  label: null\n  name: {name}\n\
             spec:\n  pattern:\n    - type: plain\n  models:\n"
        );
        for (model, node) in models {
            yaml.push_str(&format!(
                "    - name: {model}\n      node: {node}\n      resources:\n        volume:\n        network:\n"
            ));
        }
        self.put(&format!("Package/{name}"), &yaml).await;
    }

    /// `Model/{name}`: a Pod spec with the given container names.
    pub async fn define_model(&self, name: &str, containers: &[&str]) {
        let mut yaml = format!(
            "apiVersion: v1\nkind: Model\nmetadata:\n  name: {name}\n  annotations:\n    \
             io.piccolo.annotations.package-type: {name}\n  labels:\n    app: {name}\n\
             spec:\n  hostNetwork: true\n  containers:\n"
        );
        for container in containers {
            yaml.push_str(&format!(
                "    - name: {container}\n      image: registry.local/{container}:1\n"
            ));
        }
        yaml.push_str("  terminationGracePeriodSeconds: 0\n");
        self.put(&format!("Model/{name}"), &yaml).await;
    }
}

/// A podman-like state map (`podman inspect`'s `State`, as strings).
pub fn podman_state(status: &str, exit_code: i32, oom_killed: bool) -> HashMap<String, String> {
    let running = status == "running";
    [
        ("Status", status.to_owned()),
        ("Running", running.to_string()),
        ("Paused", (status == "paused").to_string()),
        ("Restarting", "false".to_owned()),
        ("OOMKilled", oom_killed.to_string()),
        ("Dead", (status == "dead").to_string()),
        ("Pid", if running { "4242" } else { "0" }.to_owned()),
        ("ExitCode", exit_code.to_string()),
        ("Error", String::new()),
        (
            "StartedAt",
            "2025-09-01T10:00:00.000000000+00:00".to_owned(),
        ),
        (
            "FinishedAt",
            if running {
                "0001-01-01T00:00:00Z"
            } else {
                "2025-09-01T10:05:00.000000000+00:00"
            }
            .to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A container as a NodeAgent reports it (podman's leading `/` in the name).
pub fn container(name: &str, state: HashMap<String, String>) -> ms::ContainerInfo {
    ms::ContainerInfo {
        id: format!("id-{name}"),
        names: vec![format!("/{name}")],
        image: format!("registry.local/{name}:1"),
        state,
        config: HashMap::new(),
        annotation: HashMap::new(),
        stats: HashMap::new(),
    }
}

/// A full report of `node`'s containers.
pub fn report(node: &str, containers: Vec<ms::ContainerInfo>) -> ms::ContainerList {
    ms::ContainerList {
        node_name: node.to_owned(),
        containers,
    }
}

/// An in-test ActionController on 127.0.0.1 recording Reconcile calls, with
/// `down()`/`up()` keeping its address (shared with transport-grpc's tests).
pub use transport_grpc::testing::ActionControllerDouble as ActionController;

/// `Reconcile{scenario, current: FAILED, desired: RUNNING}`, the request a
/// package entering Error causes.
pub fn reconcile_failed_to_running(scenario: &str) -> ac::ReconcileRequest {
    ac::ReconcileRequest {
        scenario_name: scenario.to_owned(),
        current: ac::PodStatus::Failed as i32,
        desired: ac::PodStatus::Running as i32,
    }
}
