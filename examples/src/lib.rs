//! What the example programs share: the scenario format of the NodeAgent
//! simulator (`examples/nodeagent_sim.rs`), parsed and checked here so that
//! it is tested like any other code.
//!
//! A scenario is a YAML list of steps; each step is one full container
//! report of one node, sent after waiting `after` (a humane duration such as
//! `500ms` or `2s`; default `0s`):
//!
//! ```yaml
//! - node: hpc-1
//!   containers:
//!     - name: media-player-app
//!       status: running
//!     - name: voice-assistant-app
//!       status: running
//! - node: hpc-1
//!   after: 2s
//!   containers:
//!     - name: media-player-app
//!       status: exited
//!       exit-code: 137
//!       oom-killed: true
//!     - name: voice-assistant-app
//!       status: running
//! ```
//!
//! `status` is podman's (`created`, `running`, `paused`, `exited`, `dead`,
//! ...); `annotations` (a map) may name the container's model, as the
//! ApiServer's pods do.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use statemachine_core::ReportedContainer;
use transport_grpc::StateManagerClient;
use transport_grpc::tls::ClientTls;

/// Where the StateManager is and how to reach it: the options every client
/// example takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Server {
    /// The StateManager (`https://` with the TLS options).
    #[arg(long, default_value = "http://127.0.0.1:47006")]
    pub server: String,
    /// CA to verify an https server with.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (its URI SAN names the caller).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

impl Server {
    /// Connects, with TLS when the URL is `https://`.
    pub async fn connect(&self) -> Result<StateManagerClient, String> {
        let connected = if self.server.starts_with("https://") {
            let tls = ClientTls {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                domain: None,
            };
            StateManagerClient::connect_with_tls(&self.server, &tls).await
        } else {
            StateManagerClient::connect(&self.server).await
        };
        connected.map_err(|e| format!("connecting to {}: {e}", self.server))
    }
}

/// One report of the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How long to wait before sending it.
    pub after: Duration,
    /// The reporting node.
    pub node: String,
    /// Every container of the node (a report is always complete).
    pub containers: Vec<ReportedContainer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StepFile {
    node: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ContainerFile {
    name: String,
    status: String,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    oom_killed: bool,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Parses a scenario; the error names the step and what is wrong.
pub fn parse_scenario(yaml: &str) -> Result<Vec<Step>, String> {
    let steps: Vec<StepFile> =
        serde_norway::from_str(yaml).map_err(|e| format!("not a scenario: {e}"))?;
    if steps.is_empty() {
        return Err("the scenario has no steps".to_owned());
    }
    steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let number = i + 1;
            if step.node.trim().is_empty() {
                return Err(format!("step {number}: `node` is empty"));
            }
            let after = match step.after.as_deref() {
                None => Duration::ZERO,
                Some(text) => parse_duration(text).ok_or_else(|| {
                    format!("step {number}: `after: {text}` is not a duration like 500ms or 2s")
                })?,
            };
            let containers = step
                .containers
                .into_iter()
                .map(|c| {
                    if c.name.trim().is_empty() {
                        return Err(format!("step {number}: a container has no name"));
                    }
                    let state = HashMap::from([
                        ("Status".to_owned(), c.status),
                        ("ExitCode".to_owned(), c.exit_code.to_string()),
                        ("OOMKilled".to_owned(), c.oom_killed.to_string()),
                    ]);
                    Ok(ReportedContainer {
                        id: format!("{}-id", c.name),
                        names: vec![c.name],
                        state,
                        config: HashMap::new(),
                        annotations: c.annotations,
                        derived: None,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Step {
                after,
                node: step.node,
                containers,
            })
        })
        .collect()
}

/// `500ms`, `2s` or `1.5s`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 1e-3),
        None => (text.strip_suffix('s')?, 1.0),
    };
    let value: f64 = number.trim().parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_becomes_full_reports_with_podman_state_maps() {
        let steps = parse_scenario(
            "- node: n1\n  containers:\n    - name: a\n      status: running\n\
             - node: n1\n  after: 1.5s\n  containers:\n    - name: a\n      status: exited\n      exit-code: 137\n      oom-killed: true\n      annotations: {model: m1}\n",
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].after, Duration::ZERO);
        assert_eq!(steps[1].after, Duration::from_millis(1500));
        let a = &steps[1].containers[0];
        assert_eq!(a.names, ["a"]);
        assert_eq!(a.state["Status"], "exited");
        assert_eq!(a.state["ExitCode"], "137");
        assert_eq!(a.state["OOMKilled"], "true");
        assert_eq!(a.annotations["model"], "m1");
    }

    #[test]
    fn bad_scenarios_are_refused_by_step() {
        let cases = [
            ("", "no steps"),
            ("[]", "no steps"),
            ("- node: ''\n", "step 1: `node` is empty"),
            ("- node: n1\n  after: soon\n", "step 1: `after: soon`"),
            (
                "- node: n1\n  containers:\n    - name: ''\n      status: running\n",
                "step 1: a container has no name",
            ),
            ("- node: n1\n  colour: red\n", "unknown field"),
            (
                "- node: n1\n  containers:\n    - name: a\n",
                "missing field `status`",
            ),
        ];
        for (yaml, expected) in cases {
            let error = parse_scenario(yaml).unwrap_err();
            assert!(error.contains(expected), "{yaml:?}: {error}");
        }
    }
}
