//! A real etcd for tests.
//!
//! [`Etcd::start`] runs the `etcd` binary (from `ETCD_BIN`, else `PATH`) on free
//! loopback ports with a temporary data directory, waits until it reports
//! healthy and kills it when the handle is dropped. Fault tests can
//! [`pause`](Etcd::pause) it (`SIGSTOP`: connections stay open but nothing is
//! answered), [`resume`](Etcd::resume) it, [`kill`](Etcd::kill) it and
//! [`restart`](Etcd::restart) it on the same data directory and ports, so a
//! client built before the restart can reconnect to the same endpoint.
//!
//! [`EtcdBuilder::members`] starts a small cluster instead (for tests where one
//! member dies under load); the per-member methods act on one member.
//!
//! The calls block the calling thread (at most the start deadline, 10 s by
//! default); that is fine inside `#[tokio::test]`.
//!
//! ```no_run
//! let etcd = etcd_harness::Etcd::start().expect("etcd starts");
//! println!("etcd listens on {}", etcd.endpoint());
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many bytes of a member's log an error quotes.
const LOG_TAIL_BYTES: u64 = 4096;

/// How often to retry a start whose ports were taken in between.
const PORT_ATTEMPTS: usize = 3;

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No etcd binary was found.
    #[error(
        "etcd binary not found ({looked}): run scripts/install-deps.sh \
         (or apt-get install etcd-server etcd-client), or set ETCD_BIN"
    )]
    EtcdNotFound {
        /// Where the harness looked.
        looked: String,
    },
    /// An I/O operation of the harness failed (temp dir, log file, spawn).
    #[error("etcd harness: {what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// etcd exited while the harness waited for it to become healthy.
    #[error("etcd member '{member}' exited during start-up ({status}); log tail:\n{log_tail}")]
    Exited {
        /// The member's name.
        member: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// etcd did not report healthy before the deadline.
    #[error("etcd member '{member}' not healthy within {after:?}; log tail:\n{log_tail}")]
    NotHealthy {
        /// The member's name.
        member: String,
        /// The deadline that passed.
        after: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// Sending a signal to a member failed.
    #[error("sending {signal} to etcd member '{member}' failed: {message}")]
    Signal {
        /// The member's name.
        member: String,
        /// The signal (STOP, CONT).
        signal: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A member index past the end of the cluster, or a member that is not
    /// running when it must be.
    #[error("etcd member {index}: {message}")]
    Member {
        /// The member's index.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Options of an etcd to start; [`Etcd::builder`] creates one.
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    members: usize,
    auto_compaction_retention: Option<String>,
    start_timeout: Duration,
    extra_args: Vec<String>,
    client_tls: Option<ClientTls>,
}

/// TLS for etcd's client port (PEM files): clients then connect with
/// `https://` URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The server certificate (its names must include `127.0.0.1`).
    pub cert_file: PathBuf,
    /// The server certificate's private key.
    pub key_file: PathBuf,
    /// The CA that client certificates must be signed by.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `trusted_ca_file` (mutual TLS).
    pub client_cert_auth: bool,
}

impl Default for EtcdBuilder {
    fn default() -> Self {
        Self {
            members: 1,
            auto_compaction_retention: None,
            start_timeout: Duration::from_secs(10),
            extra_args: Vec::new(),
            client_tls: None,
        }
    }
}

impl EtcdBuilder {
    /// Starts a cluster of `members` members (at least 1; default 1).
    pub fn members(mut self, members: usize) -> Self {
        self.members = members.max(1);
        self
    }

    /// Passes `--auto-compaction-retention` (e.g. `"1"` hours, or a revision
    /// count with `--auto-compaction-mode revision`). Off by default, so tests
    /// decide when history is compacted.
    pub fn auto_compaction_retention(mut self, retention: impl Into<String>) -> Self {
        self.auto_compaction_retention = Some(retention.into());
        self
    }

    /// How long to wait for a (re)started member to report healthy (default 10 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Appends a raw command-line argument for every member (e.g.
    /// `--max-txn-ops=16`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Serves the client port over TLS. Health is checked on a separate
    /// plain-HTTP metrics port, so the harness needs no TLS client.
    pub fn client_tls(mut self, tls: ClientTls) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Starts etcd and waits until every member reports healthy.
    pub fn start(self) -> Result<Etcd, HarnessError> {
        let bin = find_etcd()?;
        let mut last_error = None;
        for attempt in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("etcd-harness-")
                .tempdir()
                .map_err(|source| io_error("creating a temporary directory", source))?;
            let token = format!("harness-{}-{attempt}", std::process::id());
            let ports = free_ports(self.members * 3)?;
            let scheme = if self.client_tls.is_some() {
                "https"
            } else {
                "http"
            };
            let members = (0..self.members)
                .map(|i| {
                    let name = format!("member{i}");
                    Member {
                        data_dir: dir.path().join(format!("{name}.etcd")),
                        log_path: dir.path().join(format!("{name}.log")),
                        name,
                        scheme,
                        client_port: ports[3 * i],
                        peer_port: ports[3 * i + 1],
                        metrics_port: ports[3 * i + 2],
                        child: None,
                    }
                })
                .collect();
            let mut etcd = Etcd {
                bin: bin.clone(),
                members,
                options: self.clone(),
                token,
                dir,
            };
            match etcd.start_all(true) {
                Ok(()) => return Ok(etcd),
                // Another process took a port between our probe and etcd's
                // bind: try again with new ports (and a fresh directory).
                Err(error) if error.to_string().contains("address already in use") => {
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| no_member(0)))
    }
}

/// One etcd member process and the files it keeps across restarts.
#[derive(Debug)]
struct Member {
    name: String,
    /// `http` or `https` for the client port.
    scheme: &'static str,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` and `/metrics`, also when clients use TLS.
    metrics_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped (SIGSTOP) process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &'static str) -> Result<(), HarnessError> {
        let pid = self.pid().ok_or_else(|| HarnessError::Signal {
            member: self.name.clone(),
            signal,
            message: "the member is not running".into(),
        })?;
        let output = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .output()
            .map_err(|e| HarnessError::Signal {
                member: self.name.clone(),
                signal,
                message: format!("running 'kill': {e}"),
            })?;
        if output.status.success() {
            if signal == "STOP" {
                wait_until_stopped(pid);
            }
            Ok(())
        } else {
            Err(HarnessError::Signal {
                member: self.name.clone(),
                signal,
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

/// A signal is delivered after `kill` returns: waits (1 s at most) until
/// the kernel shows `pid` stopped, so that a caller's next request meets a
/// stopped etcd rather than one still answering. Where `/proc` cannot be
/// read, returns at once.
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        // `pid (comm) state ...`: the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('T' | 't')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running etcd (one member or a cluster); killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    bin: PathBuf,
    members: Vec<Member>,
    options: EtcdBuilder,
    token: String,
    // Declared last: dropped after the members are killed.
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a single-member etcd with the default options.
    pub fn start() -> Result<Etcd, HarnessError> {
        EtcdBuilder::default().start()
    }

    /// Options for a customised start.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// The client URL of the first member, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        self.members[0].client_url()
    }

    /// The client URLs of every member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client URL of member `index`.
    pub fn member_endpoint(&self, index: usize) -> Result<String, HarnessError> {
        Ok(self.member(index)?.client_url())
    }

    /// How many members the cluster has.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The process id of the first member, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.members[0].pid()
    }

    /// The temporary directory holding the members' data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of member `index`'s log (stdout and stderr), for diagnostics.
    pub fn log_tail(&self, index: usize) -> Result<String, HarnessError> {
        Ok(self.member(index)?.log_tail())
    }

    /// Stops every member with `SIGSTOP`: connections stay open and requests
    /// hang, as with a frozen host.
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.members.iter().try_for_each(|m| m.signal("STOP"))
    }

    /// Continues every member with `SIGCONT` after [`pause`](Self::pause).
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.members.iter().try_for_each(|m| m.signal("CONT"))
    }

    /// Kills every member with `SIGKILL` (connections are reset) and waits for
    /// the processes to end. The data directories are kept for
    /// [`restart`](Self::restart).
    pub fn kill(&mut self) {
        self.kill_all();
    }

    /// Kills every member that still runs, starts them again on the same data
    /// directories and ports and waits until they are healthy.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill_all();
        self.start_all(false)
    }

    /// Stops member `index` with `SIGSTOP`.
    pub fn pause_member(&self, index: usize) -> Result<(), HarnessError> {
        self.member(index)?.signal("STOP")
    }

    /// Continues member `index` with `SIGCONT`.
    pub fn resume_member(&self, index: usize) -> Result<(), HarnessError> {
        self.member(index)?.signal("CONT")
    }

    /// Kills member `index` with `SIGKILL`, keeping its data directory.
    pub fn kill_member(&mut self, index: usize) -> Result<(), HarnessError> {
        self.member_mut(index)?.kill();
        Ok(())
    }

    /// Restarts member `index` on its data directory and ports and waits until
    /// it is healthy (which needs a quorum of the cluster running).
    pub fn restart_member(&mut self, index: usize) -> Result<(), HarnessError> {
        self.member_mut(index)?.kill();
        self.spawn(index, false)?;
        let deadline = Instant::now() + self.options.start_timeout;
        self.wait_healthy(index, deadline)
    }

    /// Waits until every member reports healthy again (after
    /// [`resume`](Self::resume), say), within the start timeout.
    pub fn wait_until_healthy(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + self.options.start_timeout;
        for index in 0..self.members.len() {
            self.wait_healthy(index, deadline)?;
        }
        Ok(())
    }

    /// `true` while member `index` has a process (running or paused).
    pub fn is_running(&self, index: usize) -> bool {
        self.members
            .get(index)
            .and_then(|m| m.child.as_ref())
            .is_some()
    }

    fn member(&self, index: usize) -> Result<&Member, HarnessError> {
        self.members.get(index).ok_or_else(|| no_member(index))
    }

    fn member_mut(&mut self, index: usize) -> Result<&mut Member, HarnessError> {
        self.members.get_mut(index).ok_or_else(|| no_member(index))
    }

    fn kill_all(&mut self) {
        self.members.iter_mut().for_each(Member::kill);
    }

    /// Spawns every member, then waits for all: a cluster member only becomes
    /// healthy once a quorum runs.
    fn start_all(&mut self, first: bool) -> Result<(), HarnessError> {
        for index in 0..self.members.len() {
            self.spawn(index, first)?;
        }
        let deadline = Instant::now() + self.options.start_timeout;
        for index in 0..self.members.len() {
            self.wait_healthy(index, deadline)?;
        }
        Ok(())
    }

    fn spawn(&mut self, index: usize, first: bool) -> Result<(), HarnessError> {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let member = self.member(index)?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(|e| io_error(format!("opening {}", member.log_path.display()), e))?;
        let _ = writeln!(
            log,
            "--- etcd-harness: {} member '{}' ---",
            if first { "starting" } else { "restarting" },
            member.name
        );
        let log_err = log
            .try_clone()
            .map_err(|e| io_error("duplicating the log file handle", e))?;
        let mut command = Command::new(&self.bin);
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(member.client_url())
            .arg("--advertise-client-urls")
            .arg(member.client_url())
            .arg("--listen-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(member.peer_url())
            .arg("--listen-metrics-urls")
            .arg(member.metrics_url())
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr");
        if let Some(tls) = &self.options.client_tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file);
            if let Some(ca) = &tls.trusted_ca_file {
                command.arg("--trusted-ca-file").arg(ca);
            }
            if tls.client_cert_auth {
                command.arg("--client-cert-auth");
            }
        }
        if let Some(retention) = &self.options.auto_compaction_retention {
            command.arg("--auto-compaction-retention").arg(retention);
        }
        command
            .args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .map_err(|e| io_error(format!("spawning {}", self.bin.display()), e))?;
        self.member_mut(index)?.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, index: usize, deadline: Instant) -> Result<(), HarnessError> {
        let start_timeout = self.options.start_timeout;
        let member = self.member_mut(index)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, member.metrics_port));
        loop {
            let Some(child) = member.child.as_mut() else {
                return Err(no_member(index));
            };
            if let Ok(Some(status)) = child.try_wait() {
                member.child = None;
                return Err(HarnessError::Exited {
                    member: member.name.clone(),
                    status: status.to_string(),
                    log_tail: member.log_tail(),
                });
            }
            if is_healthy(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotHealthy {
                    member: member.name.clone(),
                    after: start_timeout,
                    log_tail: member.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn no_member(index: usize) -> HarnessError {
    HarnessError::Member {
        index,
        message: "no such member, or it is not running".into(),
    }
}

fn io_error(what: impl Into<String>, source: std::io::Error) -> HarnessError {
    HarnessError::Io {
        what: what.into(),
        source,
    }
}

/// `ETCD_BIN` when set, else the first `etcd` on `PATH`.
fn find_etcd() -> Result<PathBuf, HarnessError> {
    find_etcd_in(
        std::env::var_os("ETCD_BIN"),
        std::env::var_os("PATH").unwrap_or_default(),
    )
}

fn find_etcd_in(etcd_bin: Option<OsString>, path: OsString) -> Result<PathBuf, HarnessError> {
    if let Some(bin) = etcd_bin {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(HarnessError::EtcdNotFound {
                looked: format!("ETCD_BIN={} is not an executable file", bin.display()),
            })
        };
    }
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| HarnessError::EtcdNotFound {
            looked: "ETCD_BIN is unset and no 'etcd' on PATH".into(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `count` distinct free loopback ports: all are bound at once (so they
/// differ), then released for etcd. Another process may grab one in between;
/// the builder retries with new ports when etcd reports the address in use.
fn free_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_error("binding 127.0.0.1:0 to find a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_error("reading a bound port", e))
}

/// etcd's `/health` (on the metrics port) answers `{"health":"true"}` once
/// the member has a leader and can serve a linearizable read.
fn is_healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.take(64 * 1024).read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains("\"health\":\"true\"")
}

fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
    }

    #[test]
    fn starts_pauses_resumes_restarts_and_cleans_up() {
        let mut etcd = Etcd::start().unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd.members[0].metrics_port));
        assert!(is_healthy(addr));

        etcd.pause().unwrap();
        let started = Instant::now();
        assert!(!is_healthy(addr), "a stopped etcd must not answer");
        assert!(started.elapsed() < Duration::from_secs(5));
        etcd.resume().unwrap();
        etcd.wait_until_healthy().unwrap();
        assert!(is_healthy(addr));

        let pid = etcd.pid().unwrap();
        etcd.kill();
        assert!(!etcd.is_running(0));
        assert!(!is_healthy(addr));
        etcd.restart().unwrap();
        assert_ne!(etcd.pid().unwrap(), pid);
        assert!(is_healthy(addr));
        let log = std::fs::read_to_string(etcd.dir().join("member0.log")).unwrap();
        assert!(log.contains("restarting member 'member0'"));
        assert!(!etcd.log_tail(0).unwrap().is_empty());

        let dir = etcd.dir().to_owned();
        drop(etcd);
        assert!(!dir.exists(), "the data dir is removed on drop");
        assert!(!is_healthy(addr), "etcd is killed on drop");
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let error = find_etcd_in(None, empty.path().as_os_str().to_owned()).unwrap_err();
        assert!(matches!(error, HarnessError::EtcdNotFound { .. }));
        assert!(
            error.to_string().contains("scripts/install-deps.sh"),
            "{error}"
        );

        let error =
            find_etcd_in(Some(empty.path().join("etcd").into()), OsString::new()).unwrap_err();
        assert!(error.to_string().contains("ETCD_BIN="), "{error}");
    }

    #[test]
    fn the_binary_is_found_on_path() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = find_etcd_in(None, path).unwrap();
        assert!(found.ends_with("etcd"));
    }

    #[test]
    fn a_bad_flag_fails_fast_with_the_log_tail() {
        let started = Instant::now();
        let error = Etcd::builder().arg("--no-such-flag").start().unwrap_err();
        assert!(matches!(error, HarnessError::Exited { .. }), "{error}");
        assert!(error.to_string().contains("no-such-flag"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_three_member_cluster_survives_one_member_down() {
        let mut etcd = Etcd::builder().members(3).start().unwrap();
        assert_eq!(etcd.endpoints().len(), 3);
        etcd.kill_member(1).unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, etcd.members[0].metrics_port));
        // If the killed member led, the others elect a new leader first.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_healthy(addr) {
            assert!(
                Instant::now() < deadline,
                "two of three members keep a quorum"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd.restart_member(1).unwrap();
        assert!(etcd.is_running(1));
    }
}
