//! Invariants of the rules, checked on generated inputs.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use statemachine_core::definition::parse_definition;
use statemachine_core::{
    AnyState, ContainerState, CoreConfig, Input, ModelState, PackageState, ResourceKind,
    ResourceName, ScenarioState, container_state, model_state, package_state, plan,
};
use support::*;

/// Every state of `kind`.
fn all_states(kind: ResourceKind) -> Vec<AnyState> {
    match kind {
        ResourceKind::Container => ContainerState::ALL
            .iter()
            .map(|s| AnyState::Container(*s))
            .collect(),
        ResourceKind::Model => ModelState::ALL
            .iter()
            .map(|s| AnyState::Model(*s))
            .collect(),
        ResourceKind::Package => PackageState::ALL
            .iter()
            .map(|s| AnyState::Package(*s))
            .collect(),
        ResourceKind::Scenario => ScenarioState::ALL
            .iter()
            .map(|s| AnyState::Scenario(*s))
            .collect(),
    }
}

fn container_states() -> impl Strategy<Value = ContainerState> {
    prop::sample::select(ContainerState::ALL.to_vec())
}

fn model_states() -> impl Strategy<Value = ModelState> {
    prop::sample::select(ModelState::ALL.to_vec())
}

const STATUSES: &[&str] = &[
    "running",
    "paused",
    "exited",
    "stopped",
    "dead",
    "created",
    "initialized",
    "removing",
    "",
];

/// 4 packages × 2 models × 2 containers, all on node n1.
fn fleet() -> statemachine_core::Snapshot {
    let mut defs = Vec::new();
    for p in 0..4 {
        defs.push((format!("Scenario/s{p}"), format!("spec:\n  target: p{p}\n")));
        defs.push((
            format!("Package/p{p}"),
            format!("spec:\n  models:\n    - name: m{p}a\n    - name: m{p}b\n"),
        ));
    }
    let defs: Vec<(&str, &str)> = defs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    snapshot_with(config_grace(Duration::ZERO), &defs)
}

fn fleet_report() -> impl Strategy<Value = Vec<(String, &'static str, Option<&'static str>)>> {
    let names: Vec<String> = (0..4)
        .flat_map(|p| ["a", "b"].map(move |m| format!("model-m{p}{m}")))
        .flat_map(|m| [format!("{m}-x"), format!("{m}-y")])
        .collect();
    let exit_codes = prop::option::of(prop::sample::select(vec!["0", "1", "137"]));
    let entry = (prop::sample::select(STATUSES.to_vec()), exit_codes);
    prop::collection::vec(prop::option::of(entry), names.len()).prop_map(move |slots| {
        names
            .iter()
            .zip(slots)
            .filter_map(|(name, slot)| slot.map(|(status, code)| (name.clone(), status, code)))
            .collect()
    })
}

fn to_report(
    entries: &[(String, &'static str, Option<&'static str>)],
) -> statemachine_core::NodeReport {
    report(
        "n1",
        entries
            .iter()
            .map(|(name, status, code)| {
                let mut pairs = vec![("Status", *status)];
                if let Some(code) = code {
                    pairs.push(("ExitCode", code));
                }
                container_with(name, &pairs)
            })
            .collect(),
    )
}

proptest! {
    #[test]
    fn package_is_error_iff_it_has_models_and_all_are_dead(models in prop::collection::vec(model_states(), 0..16)) {
        let all_dead = !models.is_empty() && models.iter().all(|m| *m == ModelState::Dead);
        prop_assert_eq!(package_state(&models) == PackageState::Error, all_dead);
    }

    #[test]
    fn degraded_iff_some_but_not_all_dead(models in prop::collection::vec(model_states(), 0..16)) {
        let dead = models.iter().filter(|m| **m == ModelState::Dead).count();
        prop_assert_eq!(package_state(&models) == PackageState::Degraded, dead > 0 && dead < models.len());
    }

    #[test]
    fn model_is_dead_iff_a_container_is_dead_or_unknown(containers in prop::collection::vec(container_states(), 0..8)) {
        let failing = containers.iter().any(|c| matches!(c, ContainerState::Dead | ContainerState::Unknown));
        prop_assert_eq!(model_state(&containers) == ModelState::Dead, failing);
    }

    #[test]
    fn order_never_changes_a_derivation(
        containers in prop::collection::vec(container_states(), 0..8),
        models in prop::collection::vec(model_states(), 0..16),
        seed in any::<u64>(),
    ) {
        let mut shuffled = containers.clone();
        let mut models_shuffled = models.clone();
        let n = shuffled.len().max(1) as u64;
        shuffled.rotate_left((seed % n) as usize);
        shuffled.reverse();
        let m = models_shuffled.len().max(1) as u64;
        models_shuffled.rotate_left((seed % m) as usize);
        models_shuffled.reverse();
        prop_assert_eq!(model_state(&containers), model_state(&shuffled));
        prop_assert_eq!(package_state(&models), package_state(&models_shuffled));
    }

    #[test]
    fn report_order_never_changes_the_plan(entries in fleet_report()) {
        let s = fleet();
        let forward = plan(&s, Input::NodeReport(&to_report(&entries)), 0);
        let mut reversed_entries = entries.clone();
        reversed_entries.reverse();
        let reversed = plan(&s, Input::NodeReport(&to_report(&reversed_entries)), 0);
        let mut a = changes(&forward);
        let mut b = changes(&reversed);
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
        prop_assert_eq!(forward.reconciles().count(), reversed.reconciles().count());
    }

    #[test]
    fn planning_the_same_report_twice_writes_nothing_the_second_time(
        first in fleet_report(),
        second in fleet_report(),
    ) {
        let mut s = fleet();
        step(&mut s, Input::NodeReport(&to_report(&first)), 0);
        step(&mut s, Input::NodeReport(&to_report(&second)), SEC);
        let again = plan(&s, Input::NodeReport(&to_report(&second)), 2 * SEC);
        prop_assert!(again.writes_nothing(), "{:?}", changes(&again));
        prop_assert_eq!(again.reconciles().count(), 0);
    }

    #[test]
    fn a_reconcile_appears_only_on_an_edge_into_error(reports in prop::collection::vec(fleet_report(), 1..6)) {
        let mut s = fleet();
        for (i, entries) in reports.iter().enumerate() {
            let p = step(&mut s, Input::NodeReport(&to_report(entries)), i as i64 * SEC);
            let into_error: Vec<&str> = p
                .changes
                .iter()
                .filter(|c| c.kind == ResourceKind::Package
                    && c.new == Some(AnyState::Package(PackageState::Error))
                    && c.old != c.new)
                .map(|c| c.name.as_str())
                .collect();
            let reconciled: Vec<&str> = p.reconciles().map(|r| r.package.as_str()).collect();
            prop_assert_eq!(into_error, reconciled);
        }
    }

    #[test]
    fn derived_states_match_the_rules_after_any_sequence(reports in prop::collection::vec(fleet_report(), 1..5)) {
        let mut s = fleet();
        for (i, entries) in reports.iter().enumerate() {
            step(&mut s, Input::NodeReport(&to_report(entries)), i as i64 * SEC);
        }
        // Every package key equals package_state of its models as stored.
        for p in 0..4 {
            let package = format!("p{p}");
            let models: Vec<ModelState> = ["a", "b"]
                .iter()
                .map(|m| match s.state(ResourceKind::Model, &format!("m{p}{m}")) {
                    Some(AnyState::Model(state)) => state,
                    _ => ModelState::Created,
                })
                .collect();
            let expected = package_state(&models);
            let actual = s.state(ResourceKind::Package, &package);
            if actual.is_some() {
                prop_assert_eq!(actual, Some(AnyState::Package(expected)));
            }
        }
    }

    #[test]
    fn state_parsers_never_panic(text in ".*") {
        for kind in ResourceKind::ALL {
            let _ = AnyState::parse(kind, &text);
        }
    }

    /// STATE-MACHINES §6: any case and any `-`/`_` inserted still name the
    /// state; whitespace anywhere (before, inside, after) is refused.
    #[test]
    fn spellings_parse_and_whitespace_is_refused(
        kind in prop::sample::select(ResourceKind::ALL.to_vec()),
        index in any::<prop::sample::Index>(),
        case in prop::collection::vec(any::<bool>(), 32),
        at in any::<prop::sample::Index>(),
        separator in prop::sample::select(vec!["-", "_", "__"]),
        space in prop::sample::select(vec![" ", "\t", "\n", "\r", "\x0b", "\x0c"]),
    ) {
        let states = all_states(kind);
        let state = states[index.index(states.len())];
        let name: String = state
            .as_str()
            .chars()
            .zip(&case)
            .map(|(c, upper)| if *upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect();
        let at = at.index(name.len() + 1);
        let spelled = format!("{}{separator}{}", &name[..at], &name[at..]);
        prop_assert_eq!(AnyState::parse(kind, &spelled), Ok(state));
        let spaced = format!("{}{space}{}", &name[..at], &name[at..]);
        prop_assert!(AnyState::parse(kind, &spaced).is_err(), "{:?} accepted", spaced);
    }

    #[test]
    fn name_validation_never_panics_and_accepts_only_the_alphabet(text in ".{0,300}") {
        let ok = ResourceName::new(text.clone()).is_ok();
        let expected = !text.is_empty() && text.len() <= 253 && text != "." && text != ".."
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        prop_assert_eq!(ok, expected);
    }

    #[test]
    fn container_derivation_never_panics(map in prop::collection::hash_map(".{0,12}", ".{0,12}", 0..8)) {
        let _ = container_state(&map);
    }

    #[test]
    fn definition_parsing_never_panics(key in "(Scenario|Package|Model|X)/.{0,10}", yaml in ".{0,200}") {
        let _ = parse_definition(&key, &yaml);
    }

    #[test]
    fn structured_yaml_never_panics(
        name in "[a-z]{1,5}",
        fields in prop::collection::vec(("[a-z]{1,6}", "[ -~]{0,10}"), 0..6),
    ) {
        let mut yaml = format!("metadata:\n  name: {name}\nspec:\n  models:\n");
        for (k, v) in &fields {
            yaml.push_str(&format!("    - {k}: {v}\n"));
        }
        let _ = parse_definition(&format!("Package/{name}"), &yaml);
    }

    #[test]
    fn reports_with_arbitrary_names_never_panic(
        names in prop::collection::vec(".{0,20}", 0..6),
        node in ".{0,10}",
    ) {
        let s = fleet();
        let containers = names
            .iter()
            .map(|n| statemachine_core::ReportedContainer {
                names: vec![n.clone()],
                state: HashMap::from([("Status".to_owned(), "running".to_owned())]),
                ..Default::default()
            })
            .collect();
        let r = statemachine_core::NodeReport { node, containers };
        let p = plan(&s, Input::NodeReport(&r), 0);
        if p.outcome.is_err() {
            prop_assert!(p.writes_nothing());
        }
    }
}

#[test]
fn default_config_matches_the_design() {
    let config = CoreConfig::default();
    assert_eq!(config.info_failure_grace, Duration::from_secs(10));
    assert_eq!(config.node_timeout, None);
    assert_eq!(config.reconcile_on, vec![PackageState::Error]);
}
