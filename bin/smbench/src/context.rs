//! The machine context printed at the top of every report.

use std::process::Command;

use serde_json::{Value, json};

/// nproc, load average and etcd's version.
pub struct MachineContext {
    /// Available CPUs.
    pub cpus: usize,
    /// `/proc/loadavg`.
    pub loadavg: String,
    /// First line of `etcd --version`.
    pub etcd_version: String,
}

impl MachineContext {
    /// Reads the context now.
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let etcd = std::env::var_os("ETCD_BIN").unwrap_or_else(|| "etcd".into());
        let etcd_version = Command::new(etcd)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown (etcd not found)".into());
        Self {
            cpus,
            loadavg,
            etcd_version,
        }
    }

    /// Prints it.
    pub fn print(&self) {
        println!(
            "machine: nproc={} loadavg=\"{}\" {}",
            self.cpus, self.loadavg, self.etcd_version
        );
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({ "nproc": self.cpus, "loadavg": self.loadavg, "etcd_version": self.etcd_version })
    }
}
