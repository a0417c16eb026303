//! Applying, undoing and committing plans on the snapshot.

use statemachine_core::{CoreConfig, Input, RequestKind, plan};

use super::{C, P, S};
use crate::support::*;

#[test]
fn undo_restores_the_snapshot_after_a_failed_commit() {
    let mut s = infotainment(CoreConfig::default());
    step(
        &mut s,
        Input::NodeReport(&report("n1", vec![container("m1-main", "running")])),
        0,
    );
    let r = report(
        "n1",
        vec![container("m1-main", "dead"), container("m2-main", "dead")],
    );
    let p = plan(&s, Input::NodeReport(&r), 1);
    s.apply(&p);
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Error"));
    assert_eq!(s.stamp(P, "p1"), statemachine_core::Stamp::Pending(1));
    s.undo(&p);
    assert_eq!(state(&s, P, "p1").as_deref(), Some("Running"));
    assert_eq!(state(&s, C, "m2-main"), None);
    assert_eq!(s.stamp(P, "p1"), statemachine_core::Stamp::Stored(1));
    // Planning again gives the same plan.
    assert_eq!(plan(&s, Input::NodeReport(&r), 1), p);
}

#[test]
fn changes_carry_the_revisions_they_were_planned_from() {
    let mut s = infotainment(CoreConfig::default());
    s.load_state(S, "s1", "Waiting", 42).unwrap();
    let p = plan(
        &s,
        Input::StateChange(&request(
            RequestKind::Scenario,
            "s1",
            "Waiting",
            "Satisfied",
        )),
        0,
    );
    assert_eq!(p.changes[0].old_stamp, statemachine_core::Stamp::Stored(42));
    let p = plan(
        &s,
        Input::StateChange(&request(RequestKind::Scenario, "s2", "Idle", "Waiting")),
        0,
    );
    assert_eq!(
        p.changes[0].old_stamp,
        statemachine_core::Stamp::ABSENT,
        "absent key: guard on absence"
    );
}
