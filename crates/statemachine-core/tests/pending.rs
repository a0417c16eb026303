//! Plans against uncommitted (pending) values: `Plan::depends_on` names the
//! tags of the plans whose writes a plan read or overwrites, so the engine
//! can commit independent plans concurrently; committing or undoing a
//! tagged plan leaves nothing pending behind.

mod support;

use statemachine_core::{
    CoreConfig, Input, Plan, RequestKind, ResourceKind, Snapshot, Stamp, plan,
};
use support::*;

const S: ResourceKind = ResourceKind::Scenario;
const P: ResourceKind = ResourceKind::Package;
const M: ResourceKind = ResourceKind::Model;
const C: ResourceKind = ResourceKind::Container;

/// Two packages on two nodes: pa = {a1, a2} on na, pb = {b1, b2} on nb,
/// each model with one container `{model}-main`; and a model `shared`
/// (package ps) with a container on each node (`shared-x` on na,
/// `shared-y` on nb).
fn two_nodes() -> Snapshot {
    snapshot_with(
        CoreConfig::default(),
        &[
            ("Scenario/sa", "kind: Scenario\nspec:\n  target: pa\n"),
            ("Scenario/sb", "kind: Scenario\nspec:\n  target: pb\n"),
            (
                "Package/pa",
                "kind: Package\nspec:\n  models:\n    - name: a1\n    - name: a2\n",
            ),
            (
                "Package/pb",
                "kind: Package\nspec:\n  models:\n    - name: b1\n    - name: b2\n",
            ),
            (
                "Package/ps",
                "kind: Package\nspec:\n  models:\n    - name: shared\n",
            ),
            ("Model/a1", "spec:\n  containers:\n    - name: main\n"),
            ("Model/a2", "spec:\n  containers:\n    - name: main\n"),
            ("Model/b1", "spec:\n  containers:\n    - name: main\n"),
            ("Model/b2", "spec:\n  containers:\n    - name: main\n"),
            (
                "Model/shared",
                "spec:\n  containers:\n    - name: x\n    - name: y\n",
            ),
        ],
    )
}

fn all_running(s: &mut Snapshot) {
    step(
        s,
        Input::NodeReport(&report(
            "na",
            vec![
                container("a1-main", "running"),
                container("a2-main", "running"),
                container("shared-x", "running"),
            ],
        )),
        0,
    );
    step(
        s,
        Input::NodeReport(&report(
            "nb",
            vec![
                container("b1-main", "running"),
                container("b2-main", "running"),
                container("shared-y", "running"),
            ],
        )),
        0,
    );
}

/// No state of the snapshot is pending any more.
fn nothing_pending(s: &Snapshot) -> bool {
    ResourceKind::ALL.iter().all(|kind| {
        s.states(*kind)
            .iter()
            .all(|(name, _)| !s.stamp(*kind, name).is_pending())
    }) && s.nodes().all(|(_, e)| !e.stamp.is_pending())
}

fn apply_as(s: &mut Snapshot, input: Input<'_>, tag: u64) -> Plan {
    let p = plan(s, input, 1);
    s.apply_as(&p, tag);
    p
}

fn commit(s: &mut Snapshot, p: &Plan, tag: u64, revision: i64) {
    for change in &p.changes {
        s.committed_change(change, tag, revision);
    }
    for node in &p.nodes {
        s.committed_node(node, tag, revision);
    }
}

#[test]
fn plans_on_committed_values_depend_on_nothing() {
    let mut s = two_nodes();
    all_running(&mut s);
    let p = plan(
        &s,
        Input::NodeReport(&report("na", vec![container("a1-main", "exited")])),
        1,
    );
    assert!(!p.changes.is_empty());
    assert_eq!(p.depends_on, Vec::<u64>::new());
    let r = request(RequestKind::Scenario, "sa", "Idle", "Waiting");
    assert_eq!(
        plan(&s, Input::StateChange(&r), 1).depends_on,
        Vec::<u64>::new()
    );
}

#[test]
fn a_scenario_change_depends_on_its_pending_state_whatever_the_outcome() {
    let mut s = two_nodes();
    let first = request(RequestKind::Scenario, "sa", "Idle", "Waiting");
    apply_as(&mut s, Input::StateChange(&first), 7);
    assert_eq!(s.stamp(S, "sa"), Stamp::Pending(7));

    // Accepted on top of the pending state.
    let next = request(RequestKind::Scenario, "sa", "Waiting", "Satisfied");
    let p = plan(&s, Input::StateChange(&next), 1);
    assert!(p.outcome.is_ok());
    assert_eq!(p.depends_on, vec![7]);
    // A retry of the pending change ("already Waiting") rests on it too.
    let p = plan(&s, Input::StateChange(&first), 1);
    assert!(p.outcome.as_ref().unwrap().contains("already"), "{p:?}");
    assert_eq!(p.depends_on, vec![7]);
    // So does a rejection.
    let bad = request(RequestKind::Scenario, "sa", "Waiting", "Completed");
    let p = plan(&s, Input::StateChange(&bad), 1);
    assert!(p.outcome.is_err());
    assert_eq!(p.depends_on, vec![7]);
    // Another scenario does not.
    let other = request(RequestKind::Scenario, "sb", "Idle", "Waiting");
    assert!(
        plan(&s, Input::StateChange(&other), 1)
            .depends_on
            .is_empty()
    );
}

#[test]
fn reports_of_disjoint_packages_are_independent() {
    let mut s = two_nodes();
    all_running(&mut s);
    let ra = report(
        "na",
        vec![
            container("a1-main", "exited"),
            container("a2-main", "running"),
            container("shared-x", "running"),
        ],
    );
    let pa = apply_as(&mut s, Input::NodeReport(&ra), 3);
    assert!(!pa.changes.is_empty());
    let rb = report(
        "nb",
        vec![
            container("b1-main", "exited"),
            container("b2-main", "exited"),
            container("shared-y", "running"),
        ],
    );
    let pb = plan(&s, Input::NodeReport(&rb), 1);
    assert!(!pb.changes.is_empty());
    assert!(pb.depends_on.is_empty(), "{:?}", pb.depends_on);
}

#[test]
fn a_report_depends_on_the_pending_state_of_a_model_it_derives_from() {
    let mut s = two_nodes();
    all_running(&mut s);
    // na's container of `shared` exits: shared is derived from both nodes.
    let ra = report(
        "na",
        vec![
            container("a1-main", "running"),
            container("a2-main", "running"),
            container("shared-x", "exited"),
        ],
    );
    let pa = apply_as(&mut s, Input::NodeReport(&ra), 3);
    assert!(
        changes(&pa)
            .iter()
            .any(|c| c.starts_with("container/shared-x")),
        "{:?}",
        changes(&pa)
    );
    // nb's container of `shared` exits too: the plan reads na's pending
    // container state and record to derive `shared`.
    let rb = report(
        "nb",
        vec![
            container("b1-main", "running"),
            container("b2-main", "running"),
            container("shared-y", "exited"),
        ],
    );
    let pb = plan(&s, Input::NodeReport(&rb), 1);
    assert_eq!(pb.depends_on, vec![3]);
    // The same report after na's commit depends on nothing.
    commit(&mut s, &pa, 3, 10);
    assert!(nothing_pending(&s));
    assert!(plan(&s, Input::NodeReport(&rb), 1).depends_on.is_empty());
}

#[test]
fn a_model_request_depends_on_the_pending_states_of_its_package() {
    let mut s = two_nodes();
    all_running(&mut s);
    let ra = report(
        "na",
        vec![
            container("a1-main", "exited"),
            container("a2-main", "running"),
            container("shared-x", "running"),
        ],
    );
    apply_as(&mut s, Input::NodeReport(&ra), 5);
    // a2 changes by request; pa is derived from a1 (pending) and a2.
    let r = request(RequestKind::Model, "a2", "Running", "Dead");
    let p = plan(&s, Input::StateChange(&r), 1);
    assert!(p.outcome.is_ok(), "{:?}", p.outcome);
    assert_eq!(p.depends_on, vec![5]);
}

#[test]
fn a_pending_delete_is_a_dependency() {
    let mut s = two_nodes();
    step(
        &mut s,
        Input::NodeReport(&report(
            "na",
            vec![
                container("a1-main", "running"),
                container("a2-main", "running"),
            ],
        )),
        0,
    );
    step(
        &mut s,
        Input::NodeReport(&report(
            "nb",
            vec![
                container("b1-main", "running"),
                container("b2-main", "running"),
                container("shared-y", "running"),
            ],
        )),
        0,
    );
    // nb stops reporting shared-y: its key is deleted, the record keeps it
    // as missing.
    let rb = report(
        "nb",
        vec![
            container("b1-main", "running"),
            container("b2-main", "running"),
        ],
    );
    let pb = apply_as(&mut s, Input::NodeReport(&rb), 4);
    assert!(
        changes(&pb).contains(&"container/shared-y: Running -> -".to_owned()),
        "{:?}",
        changes(&pb)
    );
    assert_eq!(s.state(C, "shared-y"), None);
    assert_eq!(s.stamp(C, "shared-y"), Stamp::Pending(4));
    // na now reports a container of that name for model a1 (nothing of
    // nb's is read): the plan writes a key whose delete is pending.
    let mut again = container("shared-y", "running");
    again.annotations.insert("model".into(), "a1".into());
    let ra = report(
        "na",
        vec![
            container("a1-main", "running"),
            container("a2-main", "running"),
            again,
        ],
    );
    let pa = plan(&s, Input::NodeReport(&ra), 1);
    assert_eq!(pa.depends_on, vec![4]);
    let write = pa
        .changes
        .iter()
        .find(|c| c.kind == C && c.name == "shared-y")
        .expect("shared-y written again");
    assert_eq!(
        write.old_stamp,
        Stamp::Pending(4),
        "not guarded again: the delete carries the guard"
    );
    // Committing the delete leaves no tombstone.
    commit(&mut s, &pb, 4, 11);
    assert_eq!(s.stamp(C, "shared-y"), Stamp::ABSENT);
    assert!(plan(&s, Input::NodeReport(&ra), 1).depends_on.is_empty());
}

#[test]
fn a_pending_record_that_drops_a_container_of_a_shared_model_is_a_dependency() {
    let mut s = two_nodes();
    all_running(&mut s);
    // nb's container of `shared` now maps to another model by annotation:
    // nb's record no longer lists it under `shared`, and nothing else of
    // `shared` changes (na's container still runs).
    let mut moved = container("shared-y", "running");
    moved.annotations.insert("model".into(), "b1".into());
    let rb = report(
        "nb",
        vec![
            container("b1-main", "running"),
            container("b2-main", "running"),
            moved,
        ],
    );
    let pb = apply_as(&mut s, Input::NodeReport(&rb), 6);
    assert!(
        !changes(&pb).iter().any(|c| c.starts_with("model/shared")),
        "{:?}",
        changes(&pb)
    );
    // na's report derives `shared` from the containers of both nodes: it
    // reaches nb's pending record.
    let ra = report(
        "na",
        vec![
            container("a1-main", "running"),
            container("a2-main", "running"),
            container("shared-x", "exited"),
        ],
    );
    let pa = plan(&s, Input::NodeReport(&ra), 1);
    assert_eq!(pa.depends_on, vec![6]);
    // Undone, the index is what it was: the same report depends on nothing
    // and derives `shared` from both containers.
    s.undo(&pb);
    assert!(nothing_pending(&s));
    let before_commit = plan(&s, Input::NodeReport(&ra), 1);
    assert!(before_commit.depends_on.is_empty());
    // Committed, the dropped entry is pruned: `shared` is na's alone.
    let pb = apply_as(&mut s, Input::NodeReport(&rb), 6);
    commit(&mut s, &pb, 6, 12);
    assert!(nothing_pending(&s));
    let after_commit = plan(&s, Input::NodeReport(&ra), 1);
    assert!(after_commit.depends_on.is_empty());
    assert!(
        changes(&after_commit).contains(&"model/shared: Running -> Exited".to_owned())
            || changes(&after_commit)
                .iter()
                .any(|c| c.starts_with("model/shared")),
        "{:?}",
        changes(&after_commit)
    );
    assert_ne!(changes(&before_commit), changes(&after_commit));
}

#[test]
fn a_key_written_again_by_a_later_tag_stays_pending_for_it() {
    let mut s = two_nodes();
    let first = request(RequestKind::Scenario, "sa", "Idle", "Waiting");
    let p1 = apply_as(&mut s, Input::StateChange(&first), 1);
    let second = request(RequestKind::Scenario, "sa", "Waiting", "Satisfied");
    let p2 = apply_as(&mut s, Input::StateChange(&second), 2);
    assert_eq!(p2.depends_on, vec![1]);
    // The first commit (an earlier transaction) does not mark the second
    // write committed.
    commit(&mut s, &p1, 1, 20);
    assert_eq!(s.stamp(S, "sa"), Stamp::Pending(2));
    commit(&mut s, &p2, 2, 21);
    assert_eq!(s.stamp(S, "sa"), Stamp::Stored(21));
    assert_eq!(state(&s, S, "sa").as_deref(), Some("Satisfied"));
}

#[test]
fn undoing_stacked_plans_in_reverse_restores_committed_revisions() {
    let mut s = two_nodes();
    all_running(&mut s);
    let r1 = report(
        "na",
        vec![
            container("a1-main", "exited"),
            container("a2-main", "running"),
        ],
    );
    let p1 = apply_as(&mut s, Input::NodeReport(&r1), 1);
    let r2 = report("na", vec![container("a1-main", "running")]);
    let p2 = apply_as(&mut s, Input::NodeReport(&r2), 2);
    assert_eq!(p2.depends_on, vec![1]);
    s.undo(&p2);
    s.undo(&p1);
    assert!(nothing_pending(&s));
    assert_eq!(state(&s, M, "a1").as_deref(), Some("Running"));
    assert_eq!(state(&s, C, "shared-x").as_deref(), Some("Running"));
    assert_eq!(state(&s, P, "pa").as_deref(), Some("Running"));
    // Both committed in one transaction: nothing stays pending.
    let p1 = apply_as(&mut s, Input::NodeReport(&r1), 1);
    let p2 = apply_as(&mut s, Input::NodeReport(&r2), 2);
    commit(&mut s, &p1, 1, 30);
    commit(&mut s, &p2, 2, 30);
    assert!(nothing_pending(&s));
}

#[test]
fn a_committed_record_delete_leaves_nothing_pending() {
    let mut s = two_nodes();
    all_running(&mut s);
    // Every model of nb withdrawn: nb's record is deleted.
    for key in ["Package/pb", "Model/b1", "Model/b2"] {
        s.update_definition(key, None).unwrap();
    }
    let affected = statemachine_core::Affected {
        models: ["b1", "b2"].iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    let p = plan(&s, Input::Reevaluate(&affected), 1);
    assert!(p.nodes.iter().any(|n| n.node == "nb"), "{p:?}");
    s.apply_as(&p, 9);
    commit(&mut s, &p, 9, 40);
    assert!(nothing_pending(&s));
}
