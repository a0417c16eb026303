//! ETCD-CONTRACT: definitions appearing, changing and being withdrawn.

use statemachine_core::{Affected, CoreConfig, Input, plan};

use super::M;
use crate::support::*;

#[test]
fn new_scenario_and_package_definitions_start_idle() {
    let mut s = snapshot_with(CoreConfig::default(), &[]);
    let mut affected = s
        .update_definition("Scenario/s9", Some("spec:\n  target: p9\n"))
        .unwrap();
    affected.extend(
        s.update_definition("Package/p9", Some("spec:\n  models:\n    - name: m9\n"))
            .unwrap(),
    );
    let p = step(&mut s, Input::Reevaluate(&affected), 0);
    assert_eq!(
        changes(&p),
        ["package/p9: - -> Idle", "scenario/s9: - -> Idle"],
    );
    // Seen again: nothing more.
    assert!(plan(&s, Input::Reevaluate(&affected), 0).writes_nothing());
}

#[test]
fn a_model_withdrawn_from_every_definition_loses_its_keys() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "running"),
            ],
        )),
        0,
    );
    let mut affected = Affected::default();
    affected.extend(s.update_definition("Model/m1", None).unwrap());
    affected.extend(
        s.update_definition("Package/p1", Some("spec:\n  models:\n    - name: m2\n"))
            .unwrap(),
    );
    let p = step(&mut s, Input::Reevaluate(&affected), SEC);
    assert_eq!(
        changes(&p),
        ["container/m1-main: Running -> -", "model/m1: Running -> -"]
    );
    assert_eq!(p.nodes.len(), 1);
    assert_eq!(state(&s, M, "m1"), None);
}

#[test]
fn broken_definitions_change_nothing() {
    let mut s = infotainment(CoreConfig::default());
    let before = s.topology().packages().count();
    assert!(s.update_definition("Package/p2", Some("spec: [")).is_err());
    assert_eq!(s.topology().packages().count(), before);
}
