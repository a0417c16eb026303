//! The daemon's Prometheus `/metrics`, read over plain HTTP/1.1: what the
//! embedded-store runs count instead of etcd's revision
//! (`statemanager_commits_total`, one per store transaction) and
//! `statemanager_outbox_depth`, and the commit figures W1 reports on either
//! store (transactions, transitions per transaction, mean commit time);
//! and any other path of the metrics port, such as `/healthz?leader` for
//! the failover drill.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::report::RunResult;

/// Store transactions the daemon committed since it started.
pub const COMMITS: &str = "statemanager_commits_total";
/// Reconcile requests waiting in the daemon's outbox.
pub const OUTBOX_DEPTH: &str = "statemanager_outbox_depth";
/// Seconds the daemon's commits took, summed (one observation per chain of
/// transactions committed together; one transaction at concurrency 1).
const COMMIT_SECONDS_SUM: &str = "statemanager_commit_latency_seconds_sum";
/// Observations of [`COMMIT_SECONDS_SUM`].
const COMMIT_SECONDS_COUNT: &str = "statemanager_commit_latency_seconds_count";

/// The daemon's commit counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CommitCounters {
    commits: f64,
    seconds: f64,
    timed: f64,
}

impl CommitCounters {
    /// Reads them from the daemon's `/metrics` at `addr`; `None` when the
    /// address is unknown (`--daemon`) or the read fails (the figures are
    /// then left out; they explain a run, they do not judge it).
    pub async fn read(addr: Option<SocketAddr>) -> Option<CommitCounters> {
        let metrics = Metrics::fetch(addr?).await.ok()?;
        Some(CommitCounters {
            commits: metrics.value(COMMITS)?,
            seconds: metrics.value(COMMIT_SECONDS_SUM)?,
            timed: metrics.value(COMMIT_SECONDS_COUNT)?,
        })
    }

    /// Adds what the daemon committed between `before` and `self` for
    /// `operations` operations: `store_commits`, `{unit}s_per_commit` and
    /// `commit_mean_ms`.
    pub fn add_since(
        &self,
        before: &CommitCounters,
        result: &mut RunResult,
        unit: &str,
        operations: usize,
    ) {
        let commits = self.commits - before.commits;
        let timed = self.timed - before.timed;
        result.fig("store_commits", "", commits);
        if commits > 0.0 {
            result.fig(
                &format!("{unit}s_per_commit"),
                "",
                operations as f64 / commits,
            );
        }
        if timed > 0.0 {
            result.fig(
                "commit_mean_ms",
                "ms",
                (self.seconds - before.seconds) * 1e3 / timed,
            );
        }
    }
}

/// The figures of one `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// Fetches `/metrics` from `addr` (loopback; a blocking read on a blocking thread).
    pub async fn fetch(addr: SocketAddr) -> Result<Metrics> {
        let text = tokio::task::spawn_blocking(move || get(addr))
            .await
            .context("the /metrics reader")??;
        Ok(Metrics { text })
    }

    /// The value of the sample named exactly `name` (labels included, if any).
    pub fn value(&self, name: &str) -> Option<f64> {
        sample(&self.text, name)
    }

    /// The value of `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<f64> {
        self.value(name)
            .with_context(|| format!("the daemon's /metrics has no {name}"))
    }
}

fn get(addr: SocketAddr) -> Result<String> {
    let (status, body) = request(addr, "/metrics", Duration::from_secs(5))?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok(body)
}

/// `GET path` on the daemon's metrics port (`/healthz?leader`, say): the
/// status code and the body; connecting and reading take at most `within` each.
pub async fn http_get(addr: SocketAddr, path: &str, within: Duration) -> Result<(u16, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || request(addr, &path, within))
        .await
        .context("the HTTP reader")?
}

fn request(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the daemon's metrics at {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading {path}"))?;
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        bail!("{path} answered without a header/body separator");
    };
    let status = head.lines().next().unwrap_or_default();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{path} answered '{status}'"))?;
    Ok((code, body.to_owned()))
}

/// The value of the sample `name` in Prometheus text (comments skipped).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            if sample == name {
                value.trim().parse().ok()
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sample_by_exact_name() {
        let text = "# HELP statemanager_commits_total Store transactions committed.\n\
                    # TYPE statemanager_commits_total counter\n\
                    statemanager_commits_total 42\n\
                    statemanager_commits_total_extra 7\n\
                    statemanager_build_info{version=\"0.1.0\",store=\"embedded\"} 1\n";
        assert_eq!(sample(text, COMMITS), Some(42.0));
        assert_eq!(
            sample(
                text,
                "statemanager_build_info{version=\"0.1.0\",store=\"embedded\"}"
            ),
            Some(1.0)
        );
        assert_eq!(sample(text, OUTBOX_DEPTH), None);
    }
}
