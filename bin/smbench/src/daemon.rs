//! The daemon under test as a child process: spawned with loopback ports on
//! etcd or on the embedded store in a data directory of its own,
//! its stderr copied to a log file by a thread that also notes when the
//! `metrics on ADDR` and `listening on ADDR` lines appear, stopped with
//! SIGTERM (then SIGKILL) at the end, or killed outright by the crash drill.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where the daemon keeps its states.
#[derive(Debug, Clone)]
pub enum DaemonStore {
    /// etcd at this client URL (`--etcd-endpoints URL`).
    Etcd(String),
    /// The embedded store in this data directory (`--store embedded --data-dir DIR`).
    Embedded(PathBuf),
}

/// How to start the daemon.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// The `statemanager` binary.
    pub bin: PathBuf,
    /// Where it keeps its states.
    pub store: DaemonStore,
    /// ActionController URL (the in-process double).
    pub action_controller: String,
    /// gRPC listen address (`127.0.0.1:0` unless a fixed port is needed).
    pub listen: String,
    /// Where its log goes.
    pub log_path: PathBuf,
    /// More command-line options, after the ones above (e.g. `--commit-timeout 5s`).
    pub extra_args: Vec<String>,
}

enum LogEvent {
    Listening(SocketAddr, Instant),
    Metrics(SocketAddr),
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    events: mpsc::Receiver<LogEvent>,
    /// Its process id.
    pub pid: u32,
    /// When it was spawned.
    pub spawned: Instant,
    /// When its `listening on` line was read (once [`wait_listening`](Self::wait_listening) returned).
    pub listening_at: Option<Instant>,
    /// Its gRPC address.
    pub grpc: Option<SocketAddr>,
    /// Its metrics address.
    pub metrics: Option<SocketAddr>,
    /// Its log file.
    pub log_path: PathBuf,
}

fn address_after<'l>(line: &'l str, marker: &str) -> Option<&'l str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()
}

impl Daemon {
    /// Spawns the daemon; returns at once (see [`wait_listening`](Self::wait_listening)).
    pub fn spawn(spec: &DaemonSpec) -> Result<Daemon> {
        let log = std::fs::File::create(&spec.log_path)
            .with_context(|| format!("creating {}", spec.log_path.display()))?;
        let mut command = Command::new(&spec.bin);
        command
            .arg("--listen")
            .arg(&spec.listen)
            .arg("--metrics-listen")
            .arg("127.0.0.1:0");
        match &spec.store {
            DaemonStore::Etcd(url) => command.arg("--etcd-endpoints").arg(url),
            DaemonStore::Embedded(dir) => command
                .arg("--store")
                .arg("embedded")
                .arg("--data-dir")
                .arg(dir),
        };
        let spawned = Instant::now();
        let mut child = command
            .arg("--action-controller")
            .arg(&spec.action_controller)
            .args(&spec.extra_args)
            .env("RUST_LOG", "info")
            .env_remove("STATEMANAGER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "spawning the daemon {} (build it: cargo build --release -p statemanager, or pass --daemon-bin)",
                    spec.bin.display()
                )
            })?;
        let stderr = child.stderr.take().context("daemon stderr")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::io::BufWriter::new(log);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                if let Some(addr) = address_after(&line, "listening on ")
                    && let Ok(addr) = addr.parse()
                {
                    let _ = tx.send(LogEvent::Listening(addr, now));
                } else if let Some(addr) = address_after(&line, "metrics on ")
                    && let Ok(addr) = addr.parse()
                {
                    let _ = tx.send(LogEvent::Metrics(addr));
                }
                let _ = writeln!(log, "{line}");
                let _ = log.flush();
            }
        });
        Ok(Daemon {
            pid: child.id(),
            child,
            events,
            spawned,
            listening_at: None,
            grpc: None,
            metrics: None,
            log_path: spec.log_path.clone(),
        })
    }

    /// Waits (polling, async-friendly) until the `listening on` line, or
    /// fails when the daemon exits or `within` passes.
    pub async fn wait_listening(&mut self, within: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(event) = self.events.try_recv() {
                match event {
                    LogEvent::Metrics(addr) => self.metrics = Some(addr),
                    LogEvent::Listening(addr, at) => {
                        self.grpc = Some(addr);
                        self.listening_at = Some(at);
                        return Ok(addr);
                    }
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the daemon exited during start-up ({status}); log {}:\n{}",
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not log 'listening on' within {within:?}; log {}",
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `true` while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// (VmRSS, VmHWM) in bytes, from `/proc/{pid}/status`.
    pub fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the daemon's /proc status")?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} missing from /proc status"))?;
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .context("no value")?
                .parse()
                .context("not a number")?;
            Ok(kib * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGKILL (kill -9: no graceful exit, no flush) and waits for the
    /// process to end; the crash drill's fault.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("sending SIGKILL to the daemon")?;
        self.child.wait().context("waiting for the killed daemon")?;
        Ok(())
    }

    /// SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_of_a_log_line() {
        let line = "2026-01-01T00:00:00Z  INFO statemanager::daemon: listening on 127.0.0.1:4242";
        assert_eq!(address_after(line, "listening on "), Some("127.0.0.1:4242"));
        assert_eq!(address_after(line, "metrics on "), None);
    }
}
