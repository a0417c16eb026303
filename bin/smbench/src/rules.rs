//! The expected states, written here from the tables of STATE-MACHINES.md
//! §1-§3 independently of `statemachine-core`, so that verification checks
//! the daemon's rules instead of repeating them.

use std::collections::HashMap;

/// §1: a container's state from podman's `state` map (first match wins, case-insensitive).
pub fn container_state(map: &HashMap<String, String>) -> &'static str {
    let get = |key: &str| map.get(key).map(|v| v.trim().to_ascii_lowercase());
    let status = get("Status").unwrap_or_default();
    let is_true = |key: &str| get(key).as_deref() == Some("true");
    let exit_code: Option<i64> = get("ExitCode").and_then(|v| v.parse().ok());
    let stopped = status == "exited" || status == "stopped";
    if status == "dead" || is_true("Dead") || (is_true("OOMKilled") && stopped) {
        return "Dead";
    }
    if stopped {
        return match exit_code {
            Some(code) if code != 0 => "Dead",
            _ => "Exited",
        };
    }
    match status.as_str() {
        "paused" => "Paused",
        "running" | "stopping" | "restarting" => "Running",
        "initialized" => "Initialized",
        "created" | "configured" => "Created",
        _ if is_true("Running") => "Running",
        _ => "Unknown",
    }
}

/// §2: a model's state from its containers' states (Dead, Created, Paused,
/// Exited, Running). Information failures (Unknown, vanished) count only
/// after a grace period and never occur in these workloads.
pub fn model_state(containers: &[&str]) -> &'static str {
    let all = |f: &dyn Fn(&str) -> bool| !containers.is_empty() && containers.iter().all(|c| f(c));
    if containers.contains(&"Dead") {
        "Dead"
    } else if all(&|c| c == "Created" || c == "Initialized") {
        "Created"
    } else if all(&|c| c == "Paused") {
        "Paused"
    } else if all(&|c| c == "Exited") {
        "Exited"
    } else {
        "Running"
    }
}

/// §3: a package's state from its models' states (Idle, Error, Degraded, Paused, Exited, Running).
pub fn package_state(models: &[&str]) -> &'static str {
    let all = |state: &str| models.iter().all(|m| *m == state);
    if models.is_empty() || all("Created") {
        "Idle"
    } else if all("Dead") {
        "Error"
    } else if models.contains(&"Dead") {
        "Degraded"
    } else if all("Paused") {
        "Paused"
    } else if all("Exited") {
        "Exited"
    } else {
        "Running"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn container_rows() {
        assert_eq!(
            container_state(&map(&[("Status", "exited"), ("ExitCode", "137")])),
            "Dead"
        );
        assert_eq!(
            container_state(&map(&[("Status", "Exited"), ("ExitCode", "0")])),
            "Exited"
        );
        assert_eq!(container_state(&map(&[("Status", "paused")])), "Paused");
        assert_eq!(container_state(&map(&[("Status", "running")])), "Running");
        assert_eq!(container_state(&map(&[("Running", "true")])), "Running");
        assert_eq!(container_state(&map(&[])), "Unknown");
    }

    #[test]
    fn model_and_package_rows() {
        assert_eq!(model_state(&["Running", "Dead"]), "Dead");
        assert_eq!(model_state(&["Paused", "Paused"]), "Paused");
        assert_eq!(model_state(&["Paused", "Exited"]), "Running");
        assert_eq!(package_state(&["Dead", "Dead"]), "Error");
        assert_eq!(package_state(&["Dead", "Running"]), "Degraded");
        assert_eq!(package_state(&["Exited", "Exited"]), "Exited");
        assert_eq!(package_state(&["Exited", "Paused"]), "Running");
        assert_eq!(package_state(&[]), "Idle");
    }
}
