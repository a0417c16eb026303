//! `smctl report FILE`: a node's full container list, as a NodeAgent sends
//! it (`monitoringserver.ContainerList`), read from YAML or JSON.
//!
//! ```yaml
//! node_name: hpc-1
//! containers:
//!   - id: c1                      # optional
//!     names: ["/nav-main"]        # podman's names; the first one counts
//!     image: registry.local/nav:1 # optional, not used
//!     state: {Status: exited, ExitCode: 137}   # podman inspect's State
//!     annotation: {model: nav}    # or `annotations`
//!     config: {}                  # optional
//! ```
//!
//! The field names are the `.proto`'s (`annotation`, `node_name`); grpcurl's
//! camelCase (`nodeName`) and `annotations` are accepted too. Map values may
//! be strings, numbers or booleans (`ExitCode: 137`, `Running: true`): they
//! are sent as the strings podman would give. Unknown fields are refused,
//! so a misspelt one does not silently vanish.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use statemachine_core::ReportedContainer;

/// A node's report, as read from the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerList {
    /// The reporting node.
    #[serde(alias = "nodeName")]
    pub node_name: String,
    /// Every container on the node (a full list: missing ones vanish).
    #[serde(default)]
    pub containers: Vec<ContainerInfo>,
}

/// One container of a report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerInfo {
    /// podman's container id.
    #[serde(default)]
    pub id: String,
    /// podman's names (`/nav-main`).
    #[serde(default)]
    pub names: Vec<String>,
    /// The image (sent, not used for states).
    #[serde(default)]
    pub image: String,
    /// podman inspect's `State` map.
    #[serde(default)]
    pub state: BTreeMap<String, Scalar>,
    /// The container's config map.
    #[serde(default)]
    pub config: BTreeMap<String, Scalar>,
    /// The container's annotations (`model: nav`).
    #[serde(default, alias = "annotations")]
    pub annotation: BTreeMap<String, Scalar>,
    /// Statistics (sent by NodeAgents, not used).
    #[serde(default)]
    pub stats: BTreeMap<String, Scalar>,
}

/// A map value: podman's strings, or what YAML makes of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Text(String),
    /// A boolean (`true` is sent as "true").
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// `~` or `null`: sent as "".
    Null(()),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Null(()) => String::new(),
        }
    }
}

/// Why a report file cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file cannot be read.
    #[error("cannot read report file '{path}': {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is not a container list.
    #[error("report file '{path}' is not a ContainerList in JSON: {source}")]
    Json {
        /// The file.
        path: String,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
    /// The YAML is not a container list.
    #[error("report file '{path}' is not a ContainerList in YAML: {source}")]
    Yaml {
        /// The file.
        path: String,
        /// Where and why.
        #[source]
        source: serde_norway::Error,
    },
}

/// Reads a report from `path` (`-`: stdin). JSON when the text starts with
/// `{`, YAML otherwise (JSON is YAML, but JSON's errors read better).
pub fn read(path: &Path) -> Result<ContainerList, ReportError> {
    let shown = path.display().to_string();
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| ReportError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// Parses a report's text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<ContainerList, ReportError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|source| ReportError::Json {
            path: path.to_owned(),
            source,
        })
    } else {
        serde_norway::from_str(text).map_err(|source| ReportError::Yaml {
            path: path.to_owned(),
            source,
        })
    }
}

fn strings(map: BTreeMap<String, Scalar>) -> HashMap<String, String> {
    map.into_iter().map(|(k, v)| (k, v.into_text())).collect()
}

impl ContainerList {
    /// The containers as the client sends them (states derived by the daemon).
    pub fn into_reported(self) -> (String, Vec<ReportedContainer>) {
        let containers = self
            .containers
            .into_iter()
            .map(|c| ReportedContainer {
                id: c.id,
                names: c.names,
                state: strings(c.state),
                config: strings(c.config),
                annotations: strings(c.annotation),
                derived: None,
            })
            .collect();
        (self.node_name, containers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_with_numbers_and_booleans_becomes_podman_strings() {
        let list = parse(
            "node_name: hpc-1\ncontainers:\n  - names: [/nav-main]\n    state: {Status: exited, ExitCode: 137, Running: false}\n    annotations: {model: nav}\n",
            "r.yaml",
        )
        .unwrap();
        let (node, containers) = list.into_reported();
        assert_eq!(node, "hpc-1");
        assert_eq!(containers[0].state["ExitCode"], "137");
        assert_eq!(containers[0].state["Running"], "false");
        assert_eq!(containers[0].annotations["model"], "nav");
    }

    #[test]
    fn json_as_grpcurl_writes_it_is_accepted() {
        let list = parse(
            r#"{"nodeName": "n", "containers": [{"id": "c1", "names": ["/a"], "state": {"Status": "running"}, "annotation": {"model": "m"}}]}"#,
            "r.json",
        )
        .unwrap();
        assert_eq!(list.node_name, "n");
        assert_eq!(list.containers[0].id, "c1");
    }

    #[test]
    fn a_misspelt_field_is_named() {
        let err = parse("node_name: n\ncontainer: []\n", "r.yaml").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `container`"),
            "{err}"
        );
        let err = parse("{\"containers\": []}", "r.json").unwrap_err();
        assert!(err.to_string().contains("node_name"), "{err}");
    }
}
