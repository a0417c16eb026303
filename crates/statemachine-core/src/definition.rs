//! Parsing of the artifact definitions the ApiServer stores
//! (`Scenario/{name}`, `Package/{name}`, `Model/{name}`, ETCD-CONTRACT.md).
//!
//! Unknown fields are ignored. A broken document is an error value naming the
//! key and the problem, never a panic.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::name::{NameError, ResourceName};

/// The kinds of definition the StateManager reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DefinitionKind {
    /// `Scenario/{name}`.
    Scenario,
    /// `Package/{name}`.
    Package,
    /// `Model/{name}`.
    Model,
}

impl DefinitionKind {
    /// All kinds.
    pub const ALL: [DefinitionKind; 3] = [
        DefinitionKind::Scenario,
        DefinitionKind::Package,
        DefinitionKind::Model,
    ];

    /// The key prefix (`Scenario/`).
    pub fn key_prefix(self) -> &'static str {
        match self {
            DefinitionKind::Scenario => "Scenario/",
            DefinitionKind::Package => "Package/",
            DefinitionKind::Model => "Model/",
        }
    }

    /// The YAML `kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::Scenario => "Scenario",
            DefinitionKind::Package => "Package",
            DefinitionKind::Model => "Model",
        }
    }

    /// Splits a definition key into its kind and name (`Package/infotainment`).
    pub fn parse_key(key: &str) -> Option<(DefinitionKind, &str)> {
        Self::ALL
            .into_iter()
            .find_map(|kind| key.strip_prefix(kind.key_prefix()).map(|name| (kind, name)))
    }
}

/// A scenario definition: the package it drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioDef {
    /// The scenario's name.
    pub name: ResourceName,
    /// `spec.target`: the package the scenario drives (`None` when absent).
    pub target: Option<ResourceName>,
}

/// One model entry of a package definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageModel {
    /// The model's name.
    pub name: ResourceName,
    /// The node it is deployed on, when given.
    pub node: Option<String>,
}

/// A package definition: its models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageDef {
    /// The package's name.
    pub name: ResourceName,
    /// `spec.models`, in document order, without duplicates.
    pub models: Vec<PackageModel>,
}

/// A model definition (a Pod spec): its containers and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDef {
    /// The model's name.
    pub name: ResourceName,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.containers[].name`.
    pub containers: Vec<String>,
}

/// A parsed definition of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Definition {
    /// A scenario.
    Scenario(ScenarioDef),
    /// A package.
    Package(PackageDef),
    /// A model.
    Model(ModelDef),
}

impl Definition {
    /// The definition's kind.
    pub fn kind(&self) -> DefinitionKind {
        match self {
            Definition::Scenario(_) => DefinitionKind::Scenario,
            Definition::Package(_) => DefinitionKind::Package,
            Definition::Model(_) => DefinitionKind::Model,
        }
    }

    /// The definition's name.
    pub fn name(&self) -> &ResourceName {
        match self {
            Definition::Scenario(d) => &d.name,
            Definition::Package(d) => &d.name,
            Definition::Model(d) => &d.name,
        }
    }
}

/// Why a definition could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The key is not `Scenario/`, `Package/` or `Model/` followed by a name.
    #[error("'{0}' is not a definition key (Scenario/, Package/ or Model/ and a name)")]
    NotADefinitionKey(String),
    /// A name in the key or the document is invalid.
    #[error("definition '{key}': {what}: {source}")]
    BadName {
        /// The definition's key.
        key: String,
        /// Which name (`key name`, `spec.target`, ...).
        what: String,
        /// Why it is invalid.
        #[source]
        source: NameError,
    },
    /// The YAML could not be parsed into the expected shape.
    #[error("definition '{key}': invalid YAML: {message}")]
    Yaml {
        /// The definition's key.
        key: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The document contradicts its key.
    #[error("definition '{key}': {message}")]
    Mismatch {
        /// The definition's key.
        key: String,
        /// What disagrees.
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    name: Option<String>,
    annotations: Option<BTreeMap<String, serde_norway::Value>>,
}

#[derive(Deserialize)]
struct Document<S> {
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    spec: Option<S>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ScenarioSpec {
    target: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PackageSpec {
    models: Option<Vec<PackageModelSpec>>,
}

#[derive(Deserialize)]
struct PackageModelSpec {
    name: String,
    #[serde(default)]
    node: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ModelSpec {
    containers: Option<Vec<ContainerSpec>>,
}

#[derive(Deserialize)]
struct ContainerSpec {
    name: String,
}

/// Parses the definition stored at `key` (`Package/infotainment`) from its YAML.
pub fn parse_definition(key: &str, yaml: &str) -> Result<Definition, DefinitionError> {
    let (kind, raw_name) = DefinitionKind::parse_key(key)
        .ok_or_else(|| DefinitionError::NotADefinitionKey(key.escape_debug().to_string()))?;
    let bad_name = |what: &str, source| DefinitionError::BadName {
        key: key.escape_debug().to_string(),
        what: what.to_owned(),
        source,
    };
    let name = ResourceName::new(raw_name).map_err(|e| bad_name("key name", e))?;
    match kind {
        DefinitionKind::Scenario => {
            let doc: Document<ScenarioSpec> = from_yaml(key, yaml)?;
            check_header(key, kind, &name, doc.kind.as_deref(), doc.metadata.as_ref())?;
            let target = doc
                .spec
                .and_then(|s| s.target)
                .map(ResourceName::new)
                .transpose()
                .map_err(|e| bad_name("spec.target", e))?;
            Ok(Definition::Scenario(ScenarioDef { name, target }))
        }
        DefinitionKind::Package => {
            let doc: Document<PackageSpec> = from_yaml(key, yaml)?;
            check_header(key, kind, &name, doc.kind.as_deref(), doc.metadata.as_ref())?;
            let mut models: Vec<PackageModel> = Vec::new();
            for (i, model) in doc
                .spec
                .and_then(|s| s.models)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let model_name = ResourceName::new(model.name)
                    .map_err(|e| bad_name(&format!("spec.models[{i}].name"), e))?;
                if !models.iter().any(|m| m.name == model_name) {
                    models.push(PackageModel {
                        name: model_name,
                        node: model.node,
                    });
                }
            }
            Ok(Definition::Package(PackageDef { name, models }))
        }
        DefinitionKind::Model => {
            let doc: Document<ModelSpec> = from_yaml(key, yaml)?;
            check_header(key, kind, &name, doc.kind.as_deref(), doc.metadata.as_ref())?;
            let annotations = doc
                .metadata
                .and_then(|m| m.annotations)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| scalar_string(v).map(|v| (k, v)))
                .collect();
            let containers = doc
                .spec
                .and_then(|s| s.containers)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .collect();
            Ok(Definition::Model(ModelDef {
                name,
                annotations,
                containers,
            }))
        }
    }
}

fn from_yaml<T: for<'de> Deserialize<'de>>(key: &str, yaml: &str) -> Result<T, DefinitionError> {
    serde_norway::from_str(yaml).map_err(|e| DefinitionError::Yaml {
        key: key.escape_debug().to_string(),
        message: e.to_string(),
    })
}

/// Annotation values are strings in Kubernetes; numbers and booleans written
/// without quotes are kept as their text, anything nested is dropped.
fn scalar_string(value: serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::String(s) => Some(s),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn check_header(
    key: &str,
    kind: DefinitionKind,
    name: &ResourceName,
    doc_kind: Option<&str>,
    metadata: Option<&Metadata>,
) -> Result<(), DefinitionError> {
    let mismatch = |message: String| DefinitionError::Mismatch {
        key: key.escape_debug().to_string(),
        message,
    };
    if let Some(doc_kind) = doc_kind
        && !doc_kind.eq_ignore_ascii_case(kind.as_str())
    {
        return Err(mismatch(format!(
            "kind '{}' does not match the key's kind '{}'",
            doc_kind.escape_debug(),
            kind.as_str()
        )));
    }
    if let Some(doc_name) = metadata.and_then(|m| m.name.as_deref())
        && doc_name != name.as_str()
    {
        return Err(mismatch(format!(
            "metadata.name '{}' does not match the key's name '{name}'",
            doc_name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGE: &str = r#"
apiVersion: v1
kind: Package
metadata:
  name: infotainment
  labels: {team: a}
spec:
  pattern:
    - type: plain
  models:
    - name: media-player
      node: hpc-1
      resources:
        volume:
        network:
    - name: voice-assistant
      node: hpc-2
      resources: {}
"#;

    #[test]
    fn parses_the_contract_example_ignoring_unknown_fields() {
        let Definition::Package(def) = parse_definition("Package/infotainment", PACKAGE).unwrap()
        else {
            panic!("not a package")
        };
        assert_eq!(def.name.as_str(), "infotainment");
        let models: Vec<_> = def.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(models, ["media-player", "voice-assistant"]);
        assert_eq!(def.models[0].node.as_deref(), Some("hpc-1"));
    }

    #[test]
    fn parses_scenarios_and_models() {
        let scenario = "apiVersion: v1\nkind: Scenario\nmetadata:\n  name: s\nspec:\n  condition:\n  action: update\n  target: infotainment\n";
        assert_eq!(
            parse_definition("Scenario/s", scenario).unwrap(),
            Definition::Scenario(ScenarioDef {
                name: ResourceName::new("s").unwrap(),
                target: Some(ResourceName::new("infotainment").unwrap()),
            })
        );
        let model = "kind: Model\nmetadata:\n  name: media-player\n  annotations:\n    model: media-player\n    replicas: 2\nspec:\n  hostNetwork: true\n  containers:\n    - name: player\n      image: x\n    - name: sidecar\n";
        let Definition::Model(def) = parse_definition("Model/media-player", model).unwrap() else {
            panic!("not a model")
        };
        assert_eq!(def.containers, ["player", "sidecar"]);
        assert_eq!(
            def.annotations.get("replicas").map(String::as_str),
            Some("2")
        );
    }

    #[test]
    fn broken_documents_are_errors_naming_the_key() {
        let cases = [
            ("Package/p", "spec: [unclosed", "invalid YAML"),
            (
                "Package/p",
                "spec:\n  models:\n    - node: x\n",
                "invalid YAML",
            ),
            (
                "Package/p",
                "spec:\n  models:\n    - name: a/b\n",
                "spec.models[0].name",
            ),
            ("Scenario/s", "spec:\n  target: 'bad name'\n", "spec.target"),
            (
                "Scenario/s",
                "kind: Package\n",
                "does not match the key's kind",
            ),
            (
                "Model/m",
                "metadata:\n  name: other\n",
                "does not match the key's name",
            ),
            ("Model/a b", "{}", "key name"),
            ("Volume/v", "{}", "not a definition key"),
            ("Model/m", "- just\n- a list\n", "invalid YAML"),
        ];
        for (key, yaml, expected) in cases {
            let message = parse_definition(key, yaml).unwrap_err().to_string();
            assert!(message.contains(expected), "{key}: {message}");
        }
    }

    #[test]
    fn an_empty_document_is_a_definition_without_content() {
        let Definition::Package(def) = parse_definition("Package/p", "kind: Package\n").unwrap()
        else {
            panic!("not a package")
        };
        assert!(def.models.is_empty());
    }
}
