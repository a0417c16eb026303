//! Topology: which models a package has, which packages a model belongs to,
//! which scenario drives a package, and which model a container belongs to.
//! Built from the parsed definitions and updated one definition at a time.

use std::collections::{BTreeMap, BTreeSet};

use crate::fastmap::FastMap;

use crate::definition::{Definition, DefinitionKind, ModelDef, PackageDef, ScenarioDef};
use crate::name::{ResourceName, validate};

/// The keys a container's annotations and config are searched for its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMapping {
    /// Annotation keys naming the model, in order (default `model`, `pullpiri.model`).
    pub annotation_keys: Vec<String>,
    /// Config keys naming the model, in order (default `model`).
    pub config_keys: Vec<String>,
}

impl Default for ModelMapping {
    fn default() -> Self {
        Self {
            annotation_keys: vec!["model".into(), "pullpiri.model".into()],
            config_keys: vec!["model".into()],
        }
    }
}

/// Where [`Topology::model_for_container`] read a model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A container annotation ([`ModelMapping::annotation_keys`]).
    Annotation,
    /// A container config entry ([`ModelMapping::config_keys`]).
    Config,
}

impl ModelSource {
    /// `annotation` or `config`, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSource::Annotation => "annotation",
            ModelSource::Config => "config",
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of container names that name their model (`model-{model}`).
pub const MODEL_NAME_PREFIX: &str = "model-";

/// The definitions and the indexes derived from them.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    scenarios: BTreeMap<String, ScenarioDef>,
    packages: BTreeMap<String, PackageDef>,
    models: BTreeMap<String, ModelDef>,
    /// model -> the packages listing it, sorted (a sorted `Vec`: most
    /// models are in one package, and a `BTreeSet` node holds 11 slots).
    model_packages: FastMap<String, Vec<String>>,
    /// package -> the scenarios targeting it, sorted.
    package_scenarios: FastMap<String, Vec<String>>,
    /// `{model}-{container}` (podman's pod container names) -> model.
    container_models: FastMap<String, String>,
}

/// What a definition change touches, for re-evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    /// Scenarios whose definition appeared or changed.
    pub scenarios: BTreeSet<String>,
    /// Packages whose definition (or whose models) changed.
    pub packages: BTreeSet<String>,
    /// Models whose definitions or memberships changed.
    pub models: BTreeSet<String>,
}

impl Affected {
    /// Adds another set of affected resources.
    pub fn extend(&mut self, other: Affected) {
        self.scenarios.extend(other.scenarios);
        self.packages.extend(other.packages);
        self.models.extend(other.models);
    }

    /// `true` when nothing is affected.
    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty() && self.packages.is_empty() && self.models.is_empty()
    }
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a definition; returns what it touches.
    pub fn upsert(&mut self, definition: Definition) -> Affected {
        let mut affected = Affected::default();
        match definition {
            Definition::Scenario(def) => {
                let name = def.name.as_str().to_owned();
                if let Some(old) = self.scenarios.remove(&name) {
                    self.unlink_scenario(&old);
                }
                if let Some(target) = &def.target {
                    add_link(&mut self.package_scenarios, target.as_str(), &name);
                }
                affected.scenarios.insert(name.clone());
                self.scenarios.insert(name, def);
            }
            Definition::Package(def) => {
                let name = def.name.as_str().to_owned();
                if let Some(old) = self.packages.remove(&name) {
                    affected
                        .models
                        .extend(old.models.iter().map(|m| m.name.as_str().to_owned()));
                    self.unlink_package(&old);
                }
                for model in &def.models {
                    add_link(&mut self.model_packages, model.name.as_str(), &name);
                    affected.models.insert(model.name.as_str().to_owned());
                }
                affected.packages.insert(name.clone());
                self.packages.insert(name, def);
            }
            Definition::Model(def) => {
                let name = def.name.as_str().to_owned();
                if let Some(old) = self.models.remove(&name) {
                    self.unlink_model(&old);
                }
                for container in &def.containers {
                    self.container_models
                        .insert(format!("{name}-{container}"), name.clone());
                }
                affected.models.insert(name.clone());
                affected.packages.extend(self.packages_of(&name).cloned());
                self.models.insert(name, def);
            }
        }
        affected
    }

    /// Removes a definition; returns what it touched.
    pub fn remove(&mut self, kind: DefinitionKind, name: &str) -> Affected {
        let mut affected = Affected::default();
        match kind {
            DefinitionKind::Scenario => {
                if let Some(old) = self.scenarios.remove(name) {
                    self.unlink_scenario(&old);
                    affected.scenarios.insert(name.to_owned());
                }
            }
            DefinitionKind::Package => {
                if let Some(old) = self.packages.remove(name) {
                    affected
                        .models
                        .extend(old.models.iter().map(|m| m.name.as_str().to_owned()));
                    self.unlink_package(&old);
                    affected.packages.insert(name.to_owned());
                }
            }
            DefinitionKind::Model => {
                if let Some(old) = self.models.remove(name) {
                    self.unlink_model(&old);
                    affected.models.insert(name.to_owned());
                    affected.packages.extend(self.packages_of(name).cloned());
                }
            }
        }
        affected
    }

    fn unlink_scenario(&mut self, old: &ScenarioDef) {
        if let Some(target) = &old.target {
            remove_link(
                &mut self.package_scenarios,
                target.as_str(),
                old.name.as_str(),
            );
        }
    }

    fn unlink_package(&mut self, old: &PackageDef) {
        for model in &old.models {
            remove_link(
                &mut self.model_packages,
                model.name.as_str(),
                old.name.as_str(),
            );
        }
    }

    fn unlink_model(&mut self, old: &ModelDef) {
        for container in &old.containers {
            let produced = format!("{}-{container}", old.name);
            if self.container_models.get(&produced) == Some(&old.name.as_str().to_owned()) {
                self.container_models.remove(&produced);
            }
        }
    }

    /// The scenario definition named `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioDef> {
        self.scenarios.get(name)
    }

    /// The package definition named `name`.
    pub fn package(&self, name: &str) -> Option<&PackageDef> {
        self.packages.get(name)
    }

    /// The model definition named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelDef> {
        self.models.get(name)
    }

    /// All scenario definitions, by name.
    pub fn scenarios(&self) -> impl Iterator<Item = &ScenarioDef> {
        self.scenarios.values()
    }

    /// All package definitions, by name.
    pub fn packages(&self) -> impl Iterator<Item = &PackageDef> {
        self.packages.values()
    }

    /// All model definitions, by name.
    pub fn models(&self) -> impl Iterator<Item = &ModelDef> {
        self.models.values()
    }

    /// The packages whose definition lists `model`, by name.
    pub fn packages_of(&self, model: &str) -> impl Iterator<Item = &String> {
        self.model_packages.get(model).into_iter().flatten()
    }

    /// The models a package's definition lists, in document order.
    pub fn models_of(&self, package: &str) -> impl Iterator<Item = &ResourceName> {
        self.packages
            .get(package)
            .into_iter()
            .flat_map(|p| p.models.iter().map(|m| &m.name))
    }

    /// The scenario driving `package` (`spec.target`); the first by name when
    /// several scenarios target it.
    pub fn scenario_of(&self, package: &str) -> Option<&String> {
        self.package_scenarios.get(package)?.iter().next()
    }

    /// `true` while some definition references the model: a `Model/{name}`
    /// definition, or a package listing it (STATE-MACHINES.md §2).
    pub fn is_model_referenced(&self, model: &str) -> bool {
        self.models.contains_key(model) || self.model_packages.contains_key(model)
    }

    /// The model a container belongs to, in the order of ETCD-CONTRACT.md:
    /// annotation keys, config keys, a `Model/{name}` definition whose
    /// container produced the name (`{model}-{container}`), and last the name
    /// prefix `model-{model}` (the longest defined model the rest starts
    /// with, else the whole rest). Invalid names are skipped; each one found
    /// under an annotation or config key consulted (those before the key
    /// that decided) is passed to `invalid` as (source, key, value), so the
    /// caller can report it.
    pub fn model_for_container<'a, A, C, I>(
        &'a self,
        container: &'a str,
        annotations: A,
        config: C,
        mapping: &ModelMapping,
        mut invalid: I,
    ) -> Option<&'a str>
    where
        A: Fn(&str) -> Option<&'a str>,
        C: Fn(&str) -> Option<&'a str>,
        I: FnMut(ModelSource, &str, &'a str),
    {
        let valid = |name: &'a str| validate(name).is_ok().then_some(name);
        let mut checked = |source: ModelSource, key: &str, name: &'a str| {
            let model = valid(name);
            if model.is_none() {
                invalid(source, key, name);
            }
            model
        };
        let named = mapping
            .annotation_keys
            .iter()
            .find_map(|key| {
                annotations(key).and_then(|name| checked(ModelSource::Annotation, key, name))
            })
            .or_else(|| {
                mapping.config_keys.iter().find_map(|key| {
                    config(key).and_then(|name| checked(ModelSource::Config, key, name))
                })
            });
        named
            .or_else(|| self.container_models.get(container).map(String::as_str))
            .or_else(|| {
                let rest = container.strip_prefix(MODEL_NAME_PREFIX)?;
                let defined = (1..=rest.len())
                    .rev()
                    .filter(|&end| end == rest.len() || rest.as_bytes()[end] == b'-')
                    .map(|end| &rest[..end])
                    .find(|candidate| self.is_model_referenced(candidate));
                defined.or(Some(rest)).and_then(valid)
            })
    }
}

fn add_link(index: &mut FastMap<String, Vec<String>>, from: &str, to: &str) {
    let links = match index.get_mut(from) {
        Some(links) => links,
        None => index.entry(from.to_owned()).or_default(),
    };
    if let Err(i) = links.binary_search_by(|l| l.as_str().cmp(to)) {
        links.insert(i, to.to_owned());
    }
}

fn remove_link(index: &mut FastMap<String, Vec<String>>, from: &str, to: &str) {
    if let Some(links) = index.get_mut(from) {
        if let Ok(i) = links.binary_search_by(|l| l.as_str().cmp(to)) {
            links.remove(i);
        }
        if links.is_empty() {
            index.remove(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::parse_definition;

    fn topology(defs: &[(&str, &str)]) -> Topology {
        let mut topology = Topology::new();
        for (key, yaml) in defs {
            topology.upsert(parse_definition(key, yaml).unwrap());
        }
        topology
    }

    fn sample() -> Topology {
        topology(&[
            ("Scenario/s1", "spec:\n  target: p1\n"),
            (
                "Package/p1",
                "spec:\n  models:\n    - name: m1\n    - name: m2\n",
            ),
            ("Package/p2", "spec:\n  models:\n    - name: m2\n"),
            ("Model/m1", "spec:\n  containers:\n    - name: web\n"),
        ])
    }

    #[test]
    fn relations_follow_the_definitions() {
        let t = sample();
        assert_eq!(t.packages_of("m2").collect::<Vec<_>>(), ["p1", "p2"]);
        assert_eq!(
            t.models_of("p1").map(|m| m.as_str()).collect::<Vec<_>>(),
            ["m1", "m2"]
        );
        assert_eq!(t.scenario_of("p1").map(String::as_str), Some("s1"));
        assert_eq!(t.scenario_of("p2"), None);
        assert!(t.is_model_referenced("m2"));
        assert!(!t.is_model_referenced("m3"));
    }

    #[test]
    fn updates_and_removals_keep_indexes_consistent() {
        let mut t = sample();
        let affected =
            t.upsert(parse_definition("Package/p1", "spec:\n  models:\n    - name: m3\n").unwrap());
        assert_eq!(
            affected
                .models
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["m1", "m2", "m3"]
        );
        assert_eq!(t.packages_of("m2").collect::<Vec<_>>(), ["p2"]);
        assert_eq!(t.packages_of("m1").count(), 0);
        t.remove(DefinitionKind::Package, "p2");
        assert!(!t.is_model_referenced("m2"));
        assert!(t.is_model_referenced("m1"), "Model/m1 still exists");
        t.remove(DefinitionKind::Model, "m1");
        assert!(!t.is_model_referenced("m1"));
        t.upsert(parse_definition("Scenario/s1", "spec:\n  target: p9\n").unwrap());
        assert_eq!(t.scenario_of("p1"), None);
        assert_eq!(t.scenario_of("p9").map(String::as_str), Some("s1"));
    }

    #[test]
    fn containers_map_to_models_in_contract_order() {
        let t = sample();
        let m = ModelMapping::default();
        let resolve = |name: &str, ann: Option<(&str, &str)>, cfg: Option<(&str, &str)>| {
            t.model_for_container(
                name,
                |k| ann.filter(|(key, _)| *key == k).map(|(_, v)| v),
                |k| cfg.filter(|(key, _)| *key == k).map(|(_, v)| v),
                &m,
                |_, _, _| {},
            )
            .map(str::to_owned)
        };
        let ann = Some(("pullpiri.model", "from-annotation"));
        let cfg = Some(("model", "from-config"));
        assert_eq!(
            resolve("m1-web", ann, cfg).as_deref(),
            Some("from-annotation")
        );
        assert_eq!(resolve("m1-web", None, cfg).as_deref(), Some("from-config"));
        assert_eq!(resolve("m1-web", None, None).as_deref(), Some("m1"));
        assert_eq!(resolve("model-m2-x", None, None).as_deref(), Some("m2"));
        assert_eq!(
            resolve("model-unknown", None, None).as_deref(),
            Some("unknown")
        );
        assert_eq!(resolve("other", None, None), None);
        assert_eq!(resolve("model-", None, None), None);
        let bad = Some(("model", "bad/name"));
        assert_eq!(resolve("m1-web", bad, None).as_deref(), Some("m1"));
    }

    #[test]
    fn invalid_names_consulted_are_passed_on() {
        let t = sample();
        let m = ModelMapping::default();
        let resolve = |ann: &[(&'static str, &'static str)],
                       cfg: &[(&'static str, &'static str)]| {
            let mut invalid = Vec::new();
            let find = |pairs: &[(&'static str, &'static str)], k: &str| {
                pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
            };
            let model = t
                .model_for_container(
                    "m1-web",
                    |k| find(ann, k),
                    |k| find(cfg, k),
                    &m,
                    |source, key, value| invalid.push(format!("{source}:{key}={value}")),
                )
                .map(str::to_owned);
            (model, invalid)
        };
        let (model, invalid) = resolve(
            &[("model", "a/b"), ("pullpiri.model", "m2")],
            &[("model", "c/d")],
        );
        assert_eq!(model.as_deref(), Some("m2"));
        assert_eq!(invalid, ["annotation:model=a/b"], "config is not consulted");
        let (model, invalid) = resolve(&[("pullpiri.model", "")], &[("model", "..")]);
        assert_eq!(model.as_deref(), Some("m1"), "the definition decides");
        assert_eq!(invalid, ["annotation:pullpiri.model=", "config:model=.."]);
        let (model, invalid) = resolve(&[("model", "m2")], &[]);
        assert_eq!(model.as_deref(), Some("m2"));
        assert!(invalid.is_empty());
    }
}
