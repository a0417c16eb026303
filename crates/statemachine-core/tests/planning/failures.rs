//! STATE-MACHINES §2: information failures and their grace period.

use std::time::Duration;

use statemachine_core::{CoreConfig, Input};

use super::{C, M, reconciles};
use crate::support::*;

#[test]
fn an_unknown_container_keeps_the_model_until_the_grace_runs_out() {
    let mut s = infotainment(config_grace(Duration::from_secs(10)));
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
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "removing"),
                container("m2-main", "running"),
            ],
        )),
        SEC,
    );
    assert_eq!(changes(&p), ["container/m1-main: Running -> Unknown"]);
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Running"));
    assert_eq!(s.next_deadline(SEC), Some(11 * SEC));
    let p = step(&mut s, Input::Tick, 5 * SEC);
    assert!(p.writes_nothing());
    let p = step(&mut s, Input::Tick, 11 * SEC);
    assert_eq!(
        changes(&p),
        [
            "model/m1: Running -> Dead",
            "package/p1: Running -> Degraded"
        ]
    );
    assert_eq!(
        p.changes[0].reason,
        statemachine_core::Reason::InformationFailure
    );
}

#[test]
fn a_transient_unknown_that_recovers_within_grace_changes_no_model() {
    let mut s = infotainment(config_grace(Duration::from_secs(10)));
    let ok = report(
        "n1",
        vec![
            container("m1-main", "running"),
            container("m2-main", "running"),
        ],
    );
    step(&mut s, Input::NodeReport(&ok), 0);
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "weird"),
                container("m2-main", "running"),
            ],
        )),
        SEC,
    );
    let p = step(&mut s, Input::NodeReport(&ok), 2 * SEC);
    assert_eq!(changes(&p), ["container/m1-main: Unknown -> Running"]);
    assert!(step(&mut s, Input::Tick, 20 * SEC).writes_nothing());
    assert_eq!(state(&s, M, "m1").as_deref(), Some("Running"));
    assert_eq!(s.next_deadline(2 * SEC), None);
}

#[test]
fn with_zero_grace_an_information_failure_is_dead_at_once() {
    let mut s = infotainment(config_grace(Duration::ZERO));
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container_with("m1-main", &[])])),
        SEC,
    );
    assert!(
        changes(&p).contains(&"model/m1: Running -> Dead".to_string()),
        "{:?}",
        changes(&p)
    );
}

#[test]
fn a_real_dead_does_not_wait_for_the_grace() {
    let mut s = snapshot_with(
        config_grace(Duration::from_secs(10)),
        &[("Package/p", "spec:\n  models:\n    - name: m\n")],
    );
    step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("model-m-a", "running"),
                container("model-m-b", "running"),
            ],
        )),
        0,
    );
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("model-m-a", "dead"),
                container("model-m-b", "???"),
            ],
        )),
        SEC,
    );
    assert!(
        changes(&p).contains(&"model/m: Running -> Dead".to_string()),
        "{:?}",
        changes(&p)
    );
}

#[test]
fn a_vanished_container_of_a_referenced_model_is_a_failure() {
    let mut s = infotainment(config_grace(Duration::from_secs(10)));
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
    let p = step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m2-main", "running")])),
        SEC,
    );
    assert_eq!(
        changes(&p),
        ["container/m1-main: Running -> -"],
        "the key is removed, the model waits"
    );
    assert_eq!(state(&s, C, "m1-main"), None);
    let p = step(&mut s, Input::Tick, 11 * SEC);
    assert_eq!(
        changes(&p),
        [
            "model/m1: Running -> Dead",
            "package/p1: Running -> Degraded"
        ]
    );
    // It comes back: the failure ends.
    let p = step(
        &mut s,
        Input::NodeReport(&report(
            "n1",
            vec![
                container("m1-main", "running"),
                container("m2-main", "running"),
            ],
        )),
        12 * SEC,
    );
    assert!(
        changes(&p).contains(&"model/m1: Dead -> Running".to_string()),
        "{:?}",
        changes(&p)
    );
}

#[test]
fn a_vanished_container_of_an_unreferenced_model_is_expected() {
    let mut s = snapshot_with(config_grace(Duration::ZERO), &[]);
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("model-x", "running")])),
        0,
    );
    assert_eq!(state(&s, M, "x").as_deref(), Some("Running"));
    let p = step(&mut s, Input::NodeReport(&report("n1", vec![])), SEC);
    assert_eq!(
        changes(&p),
        ["container/model-x: Running -> -", "model/x: Running -> -"]
    );
}

#[test]
fn a_silent_node_fails_its_models_after_timeout_and_grace() {
    let config = CoreConfig {
        info_failure_grace: Duration::from_secs(2),
        node_timeout: Some(Duration::from_secs(30)),
        ..CoreConfig::default()
    };
    let mut s = infotainment(config);
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
    assert_eq!(s.next_deadline(0), Some(30 * SEC));
    assert!(
        step(&mut s, Input::Tick, 30 * SEC).writes_nothing(),
        "within the grace"
    );
    let p = step(&mut s, Input::Tick, 32 * SEC);
    assert_eq!(
        changes(&p),
        [
            "model/m1: Running -> Dead",
            "model/m2: Running -> Dead",
            "package/p1: Running -> Error"
        ]
    );
    assert_eq!(reconciles(&p), [("s1".into(), "p1".into())]);
}

#[test]
fn without_node_timeout_silence_is_normal() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    assert_eq!(s.next_deadline(0), None);
    assert!(step(&mut s, Input::Tick, 3600 * SEC).writes_nothing());
}
