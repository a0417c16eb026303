//! Runs the StateManager's rules on node reports and prints what they derive.
//!
//! ```text
//! cargo run -p statemachine-core --example node_report
//! cargo run -p statemachine-core --example node_report -- REPORT.yaml [REPORT.json ...]
//! ```
//!
//! It loads a scenario, a package and two models (YAML as Pullpiri's ApiServer
//! stores them), then plans node reports against them exactly as the daemon
//! will: for each step it prints every state key write (old -> new), the
//! reconcile requests for the ActionController and any warnings, and at the end
//! the state of every key. Nothing is written anywhere: the plans are applied
//! to an in-memory snapshot only.
//!
//! Without arguments it plays a built-in story: both containers running, then
//! one exits with code 137 and the other is OOM-killed, then the same report
//! again. With arguments, each file is one node report
//! (`monitoringserver.ContainerList` as JSON or YAML, see
//! `examples/node_report.yaml`), planned in order against the same definitions.
//! Bad input ends with a message and exit code 2.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Deserialize;
use statemachine_core::keys::{Bookkeeping, state_key};
use statemachine_core::{
    CoreConfig, Effect, Input, NodeReport, Plan, ReportedContainer, ResourceKind, Snapshot,
    container_state, plan,
};

/// The definitions the ApiServer would have stored: scenario `infotainment`
/// drives package `infotainment`, whose models `media-player` and
/// `voice-assistant` run one container each on node `hpc-1`.
const DEFINITIONS: &[(&str, &str)] = &[
    (
        "Scenario/infotainment",
        "apiVersion: v1
kind: Scenario
metadata:
  name: infotainment
spec:
  condition:
  action: update
  target: infotainment
",
    ),
    (
        "Package/infotainment",
        "apiVersion: v1
kind: Package
metadata:
  name: infotainment
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
      node: hpc-1
      resources: {}
",
    ),
    (
        "Model/media-player",
        "apiVersion: v1
kind: Model
metadata:
  name: media-player
  annotations:
    io.piccolo.annotations.package-type: infotainment
spec:
  hostNetwork: true
  containers:
    - name: player
      image: localhost/media-player:1.0
",
    ),
    (
        "Model/voice-assistant",
        "apiVersion: v1
kind: Model
metadata:
  name: voice-assistant
spec:
  containers:
    - name: assistant
      image: localhost/voice-assistant:1.0
",
    ),
];

/// The first report's time (ns since the epoch); each step is one second later.
const START_NS: i64 = 1_700_000_000_000_000_000;
const SECOND_NS: i64 = 1_000_000_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: node_report [REPORT.json|REPORT.yaml ...]");
        println!("Plans node reports against sample definitions and prints the derived states.");
        println!("Without arguments, plays a built-in sample story.");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("node_report: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    // Read every file first, so a bad one stops the run before any output.
    let reports: Vec<(String, NodeReport)> = if args.is_empty() {
        sample_story()
    } else {
        args.iter()
            .map(|path| Ok((format!("report from {path}"), read_report(path)?)))
            .collect::<Result<_, String>>()?
    };

    let mut snapshot = Snapshot::new(CoreConfig::default());
    let mut now = START_NS;
    let mut step = 0;

    println!("Definitions (as the ApiServer stores them):");
    let mut affected = statemachine_core::Affected::default();
    for (key, yaml) in DEFINITIONS {
        let touched = snapshot
            .update_definition(key, Some(yaml))
            .map_err(|e| format!("sample definition: {e}"))?;
        affected.extend(touched);
        println!("  {key}");
    }
    let topology = snapshot.topology();
    for package in topology.packages() {
        let models: Vec<&str> = topology
            .models_of(package.name.as_str())
            .map(|m| m.as_str())
            .collect();
        let scenario = topology
            .scenario_of(package.name.as_str())
            .map_or("no scenario", String::as_str);
        println!(
            "  => package '{}' = models [{}], driven by scenario '{scenario}'",
            package.name,
            models.join(", ")
        );
    }
    step += 1;
    let p = plan(&snapshot, Input::Reevaluate(&affected), now);
    print_step(step, "the definitions appear", &p)?;
    commit(&mut snapshot, &p);

    for (title, report) in &reports {
        now += SECOND_NS;
        step += 1;
        println!();
        println!("{step}. {title}: node '{}'", report.node);
        print_containers(&snapshot, report);
        let p = plan(&snapshot, Input::NodeReport(report), now);
        print_plan(&p)?;
        commit(&mut snapshot, &p);
    }

    // An information failure (a container in Unknown, or one that vanished)
    // changes its model only after the grace period: show that moment.
    if let Some(deadline) = snapshot.next_deadline(now) {
        let later = std::time::Duration::from_nanos((deadline - now).unsigned_abs());
        step += 1;
        let p = plan(&snapshot, Input::Tick, deadline);
        print_step(
            step,
            &format!("{later:?} later: the information-failure grace runs out"),
            &p,
        )?;
        commit(&mut snapshot, &p);
    }

    println!();
    println!("Final states:");
    for kind in ResourceKind::ALL.into_iter().rev() {
        let mut states = snapshot.states(kind);
        states.sort_unstable_by_key(|(name, _)| *name);
        for (name, state) in states {
            println!("  {:<44} {state}", state_key(kind, name));
        }
    }
    Ok(())
}

/// Applies a plan to the snapshot as the engine does after its commit.
fn commit(snapshot: &mut Snapshot, p: &Plan) {
    snapshot.apply(p);
    snapshot.committed(p, 1);
}

fn print_step(step: usize, title: &str, p: &Plan) -> Result<(), String> {
    println!();
    println!("{step}. {title}");
    print_plan(p)
}

/// Prints each reported container with the state and model the rules give it.
fn print_containers(snapshot: &Snapshot, report: &NodeReport) {
    let mapping = &snapshot.config().model_mapping;
    for c in &report.containers {
        let name = c
            .names
            .first()
            .map_or("?", |n| n.strip_prefix('/').unwrap_or(n));
        let model = snapshot.topology().model_for_container(
            name,
            |k| c.annotations.get(k).map(String::as_str),
            |k| c.config.get(k).map(String::as_str),
            mapping,
            |_, _, _| {},
        );
        // The entries that decide the state; flags only when set.
        let facts: Vec<String> = ["Status", "ExitCode", "OOMKilled", "Dead", "Running"]
            .iter()
            .filter_map(|wanted| c.state.iter().find(|(k, _)| k.eq_ignore_ascii_case(wanted)))
            .filter(|(k, v)| {
                k.eq_ignore_ascii_case("Status")
                    || k.eq_ignore_ascii_case("ExitCode")
                    || v.trim().eq_ignore_ascii_case("true")
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "   {name:<26} {:<40} -> {:<8} (model {})",
            facts.join(" "),
            container_state(&c.state).as_str(),
            model.map_or_else(|| "none".to_owned(), |m| format!("'{m}'"))
        );
    }
}

fn print_plan(p: &Plan) -> Result<(), String> {
    let message = match &p.outcome {
        Ok(message) => message,
        Err(rejection) => {
            return Err(format!(
                "the report was rejected, nothing is written: {} {}{}",
                rejection.code,
                rejection.message,
                if rejection.details.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", rejection.details)
                }
            ));
        }
    };
    println!("   planned: {message}");
    if p.changes.is_empty() {
        println!("   state key writes: none");
    } else {
        println!("   state key writes (one transaction):");
        for c in &p.changes {
            println!(
                "     {}: {} -> {}   ({})",
                state_key(c.kind, &c.name),
                c.old.map_or("-", |s| s.as_str()),
                c.new.map_or("- (deleted)", |s| s.as_str()),
                c.reason.as_str()
            );
        }
    }
    let bookkeeping = Bookkeeping::default();
    for node in &p.nodes {
        let what = match &node.new {
            Some(record) => match record.containers.len() {
                1 => "1 container".to_owned(),
                n => format!("{n} containers"),
            },
            None => "deleted".to_owned(),
        };
        println!(
            "   node record: {} ({what})",
            bookkeeping.node_key(&node.node)
        );
    }
    let reconciles: Vec<String> = p
        .reconciles()
        .map(|r| {
            format!(
                "Reconcile{{scenario_name: '{}', current: FAILED, desired: RUNNING}} \
                 (package '{}' entered {}; outbox {})",
                r.scenario,
                r.package,
                r.package_state,
                bookkeeping.outbox_key(&r.id())
            )
        })
        .collect();
    if reconciles.is_empty() {
        println!("   reconcile requests: none");
    } else {
        println!("   reconcile requests:");
        for r in reconciles {
            println!("     {r}");
        }
    }
    for effect in &p.effects {
        let mut line = String::new();
        match effect {
            Effect::Reconcile(_) => continue,
            Effect::NoScenarioForPackage { package, state } => {
                let _ = write!(
                    line,
                    "package '{package}' entered {state} but no scenario targets it"
                );
            }
            Effect::UndocumentedEdge {
                kind,
                name,
                from,
                to,
            } => {
                let _ = write!(
                    line,
                    "{kind} '{name}' took an undocumented edge {from} -> {to}"
                );
            }
            Effect::UnmappedContainer { node, container } => {
                let _ = write!(
                    line,
                    "container '{container}' on node '{node}' maps to no model; ignored"
                );
            }
            Effect::InvalidModelName {
                node,
                container,
                source,
                key,
                value,
            } => {
                let _ = write!(
                    line,
                    "container '{container}' on node '{node}': {source} '{key}' holds \
                     an invalid model name '{}'; skipped",
                    value.escape_debug()
                );
            }
        }
        println!("   warning: {line}");
    }
    Ok(())
}

/// The built-in story: running, then one exit 137 and one OOM kill, then the
/// same report again (nothing to write, no second reconcile).
fn sample_story() -> Vec<(String, NodeReport)> {
    let running = |name: &str| {
        podman_container(
            name,
            &[
                ("Status", "running"),
                ("Running", "true"),
                ("ExitCode", "0"),
            ],
        )
    };
    let first = NodeReport {
        node: "hpc-1".into(),
        containers: vec![
            running("media-player-player"),
            running("voice-assistant-assistant"),
        ],
    };
    let failed = NodeReport {
        node: "hpc-1".into(),
        containers: vec![
            podman_container(
                "media-player-player",
                &[
                    ("Status", "exited"),
                    ("Running", "false"),
                    ("ExitCode", "137"),
                ],
            ),
            podman_container(
                "voice-assistant-assistant",
                &[
                    ("Status", "dead"),
                    ("Running", "false"),
                    ("Dead", "true"),
                    ("OOMKilled", "true"),
                ],
            ),
        ],
    };
    vec![
        ("both containers run".to_owned(), first),
        (
            "media-player exits with code 137, voice-assistant is OOM-killed".to_owned(),
            failed.clone(),
        ),
        ("the same report again".to_owned(), failed),
    ]
}

/// A container as NodeAgent reports it: podman's name with its leading `/`,
/// and the string map copied from `podman inspect`.
fn podman_container(name: &str, state: &[(&str, &str)]) -> ReportedContainer {
    let defaults = [
        ("Paused", "false"),
        ("Restarting", "false"),
        ("OOMKilled", "false"),
        ("Dead", "false"),
        ("Pid", "0"),
        ("Error", ""),
    ];
    let mut map: HashMap<String, String> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.extend(state.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ReportedContainer {
        id: format!("id-{name}"),
        names: vec![format!("/{name}")],
        state: map,
        ..Default::default()
    }
}

/// `monitoringserver.ContainerList` in a file. Unknown fields (`image`,
/// `stats`, ...) are ignored.
#[derive(Deserialize)]
struct ReportFile {
    #[serde(alias = "node")]
    node_name: String,
    #[serde(default)]
    containers: Vec<ContainerFile>,
}

#[derive(Deserialize)]
struct ContainerFile {
    #[serde(default)]
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    state: BTreeMap<String, Scalar>,
    #[serde(default)]
    config: BTreeMap<String, Scalar>,
    #[serde(default, alias = "annotations")]
    annotation: BTreeMap<String, Scalar>,
}

/// A map value: podman's maps hold strings, but a hand-written file may say
/// `ExitCode: 137` or `Running: true` (kept as their text) or `Error: null`
/// (an empty string).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn strings(map: BTreeMap<String, Scalar>) -> HashMap<String, String> {
    map.into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// Reads a report: JSON when the file name ends in `.json`, YAML otherwise.
fn read_report(path: &str) -> Result<NodeReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read '{path}': {e}"))?;
    let file: ReportFile = if path.to_ascii_lowercase().ends_with(".json") {
        serde_json::from_str(&text).map_err(|e| format!("'{path}' is not a valid report: {e}"))?
    } else {
        serde_norway::from_str(&text).map_err(|e| format!("'{path}' is not a valid report: {e}"))?
    };
    Ok(NodeReport {
        node: file.node_name,
        containers: file
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
            .collect(),
    })
}
