//! CPU time spent by each process of a measurement (the daemon, etcd and
//! smbench itself), from `/proc/{pid}/stat`. On a shared 2-core machine the
//! processes compete for the same cores, so CPU per operation explains a
//! throughput ratio where wall-clock figures alone are noisy.

use std::future::Future;

use crate::report::RunResult;

/// `/proc` counts CPU time in ticks of `USER_HZ`, 100 per second on Linux.
const TICKS_PER_S: f64 = 100.0;

/// The processes to account.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuClock {
    daemon: Option<u32>,
    etcd: Option<u32>,
}

/// CPU seconds used between two readings, per process (`None`: not known).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// The daemon.
    pub daemon: Option<f64>,
    /// etcd.
    pub etcd: Option<f64>,
    /// smbench (the load generator and its clients).
    pub client: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    daemon: Option<f64>,
    etcd: Option<f64>,
    client: Option<f64>,
}

/// User plus system CPU seconds of a process, all threads.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state(3) ... utime is field 14, stime 15 (1-based).
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

impl CpuClock {
    /// Accounts `daemon` and `etcd` (their pids, when known) and smbench.
    pub fn new(daemon: Option<u32>, etcd: Option<u32>) -> Self {
        Self { daemon, etcd }
    }

    fn read(&self) -> Reading {
        Reading {
            daemon: self.daemon.and_then(|pid| cpu_seconds(&pid.to_string())),
            etcd: self.etcd.and_then(|pid| cpu_seconds(&pid.to_string())),
            client: cpu_seconds("self"),
        }
    }

    /// Runs `work` and returns its output with the CPU it cost.
    pub async fn measure<T>(&self, work: impl Future<Output = T>) -> (T, CpuUse) {
        let before = self.read();
        let output = work.await;
        let after = self.read();
        let delta = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let used = CpuUse {
            daemon: delta(after.daemon, before.daemon),
            etcd: delta(after.etcd, before.etcd),
            client: delta(after.client, before.client),
        };
        (output, used)
    }
}

impl CpuUse {
    /// Adds `{prefix}_{process}_us` per operation and the total of those known.
    pub fn add_to(&self, result: &mut RunResult, prefix: &str, operations: usize) -> Option<f64> {
        if operations == 0 {
            return None;
        }
        let per_op = |secs: f64| secs * 1e6 / operations as f64;
        let mut total = 0.0;
        for (name, secs) in [
            ("daemon", self.daemon),
            ("etcd", self.etcd),
            ("client", self.client),
        ] {
            if let Some(secs) = secs {
                result.fig(&format!("{prefix}_{name}_us"), "us", per_op(secs));
                total += per_op(secs);
            }
        }
        result.fig(&format!("{prefix}_total_us"), "us", total);
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        let first = cpu_seconds("self").expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let second = cpu_seconds("self").unwrap();
        assert!(second >= first);
        assert!(cpu_seconds("0").is_none(), "no such process");
    }
}
