use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

use super::*;
use RecoveryAction::*;

const S: i64 = 1_000_000_000;

fn sick() -> Observation {
    Observation::default()
}

fn well() -> Observation {
    Observation {
        healthy: true,
        ..Observation::default()
    }
}

fn open(issue: IssueType, strategy: &Strategy) -> Incident {
    Incident::open("r1", ResourceKind::Package, "p", issue, strategy, 0)
}

/// Drives an incident that never heals, taking each step as soon as it is
/// due and delivering each action at once; returns the actions in order.
fn walk_unhealthy(issue: IssueType, strategy: &Strategy) -> (Incident, Vec<RecoveryAction>) {
    let mut incident = open(issue, strategy);
    let mut now = 0;
    let mut acted = Vec::new();
    for _ in 0..1000 {
        match next_step(&incident, strategy, sick(), now) {
            Step::Done => break,
            Step::Wait(t) | Step::Validate(t) => now = t,
            Step::Act(action) => {
                acted.push(action);
                incident.acted(strategy, now);
                incident.delivered(strategy, now);
            }
            step => incident.apply(step, strategy, now, 1.0),
        }
    }
    (incident, acted)
}

#[test]
fn an_unhealthy_resource_walks_each_default_ladder_once_and_fails() {
    for issue in IssueType::ALL {
        let strategy = Strategy::default_for(issue);
        let (incident, acted) = walk_unhealthy(issue, &strategy);
        assert_eq!(acted, strategy.actions, "{issue:?}");
        assert_eq!(incident.phase, Phase::Failed, "{issue:?}");
        assert_eq!(
            incident.executed as usize,
            strategy.actions.len(),
            "{issue:?}"
        );
        assert!(
            incident
                .steps
                .iter()
                .all(|s| s.outcome == Outcome::TimedOut || s.outcome == Outcome::Ignored),
            "{issue:?}"
        );
    }
}

#[test]
fn package_error_acts_at_once_others_wait_the_initial_delay() {
    let strategy = Strategy::default_for(IssueType::PackageError);
    let incident = open(IssueType::PackageError, &strategy);
    assert_eq!(
        next_step(&incident, &strategy, sick(), 0),
        Step::Act(Restart)
    );
    let strategy = Strategy::default_for(IssueType::ModelDead);
    let incident = open(IssueType::ModelDead, &strategy);
    assert_eq!(
        next_step(&incident, &strategy, sick(), 0),
        Step::Wait(5 * S)
    );
    assert_eq!(
        next_step(&incident, &strategy, sick(), 5 * S),
        Step::Act(Restart)
    );
    for issue in [IssueType::Manual, IssueType::Diff] {
        let strategy = Strategy::default_for(issue);
        let incident = open(issue, &strategy);
        assert!(
            matches!(next_step(&incident, &strategy, sick(), 0), Step::Act(_)),
            "{issue:?}: asked for by a person or a diff, it acts at once"
        );
    }
    // Healthy again before the first action: Completed, no action.
    assert_eq!(next_step(&incident, &strategy, well(), S), Step::Complete);
    let mut done = incident.clone();
    done.apply(Step::Complete, &strategy, S, 0.5);
    assert_eq!(
        (done.phase, done.executed, done.ended_ns),
        (Phase::Completed, 0, Some(S))
    );
    assert_eq!(next_step(&done, &strategy, sick(), 2 * S), Step::Done);
}

#[test]
fn the_ladder_steps_in_order() {
    let strategy = Strategy {
        escalation_threshold: 2,
        ..Strategy::default_for(IssueType::PackageDegraded)
    };
    let mut i = open(IssueType::PackageDegraded, &strategy);
    // (now s, observation, expected step, then apply it?)
    let script: Vec<(i64, Observation, Step)> = vec![
        (0, sick(), Step::Wait(5 * S)),
        (5, sick(), Step::Act(Restart)),
        (6, sick(), Step::AwaitDelivery),
        // delivered at 10 (below)
        (20, sick(), Step::Validate(40 * S)),
        (40, sick(), Step::Retry),
        // back-off: failures 1, delay 2 s × 1.0
        (41, sick(), Step::Wait(42 * S)),
        (42, sick(), Step::Act(Restart)),
        (50, sick(), Step::Validate(72 * S)),
        (72, sick(), Step::Escalate),
        (72, sick(), Step::Act(Notify)),
        (90, sick(), Step::Validate(102 * S)),
        (102, sick(), Step::Retry),
        (103, sick(), Step::Wait(104 * S)),
        (104, sick(), Step::Act(Notify)),
        (134, sick(), Step::Fail),
        (135, sick(), Step::Done),
    ];
    for (at, observed, expected) in script {
        let now = at * S;
        let step = next_step(&i, &strategy, observed, now);
        assert_eq!(step, expected, "at {at} s");
        match step {
            Step::Act(_) => {
                i.acted(&strategy, now);
                if at != 5 {
                    i.delivered(&strategy, now);
                }
            }
            Step::AwaitDelivery => i.delivered(&strategy, 10 * S),
            step => i.apply(step, &strategy, now, 1.0),
        }
    }
    assert_eq!(i.phase, Phase::Failed);
    assert_eq!(
        i.steps
            .iter()
            .map(|s| (s.rung, s.action))
            .collect::<Vec<_>>(),
        [(0, Restart), (0, Restart), (1, Notify), (1, Notify)]
    );
    assert_eq!(i.steps[0].delivered_ns, Some(10 * S));
}

#[test]
fn healthy_during_validation_completes() {
    let strategy = Strategy::default_for(IssueType::PackageError);
    let mut i = open(IssueType::PackageError, &strategy);
    i.acted(&strategy, 0);
    i.delivered(&strategy, S);
    assert_eq!(i.phase, Phase::Validating);
    assert_eq!(next_step(&i, &strategy, well(), 2 * S), Step::Complete);
    i.apply(Step::Complete, &strategy, 2 * S, 0.5);
    assert_eq!(i.phase, Phase::Completed);
    assert_eq!(i.steps[0].outcome, Outcome::Healthy);
}

#[test]
fn unsupported_rungs_are_recorded_and_passed() {
    let strategy = Strategy::default_for(IssueType::Diff).with_actions(&[
        RollbackVersion,
        ResetConfig,
        Recreate,
    ]);
    let (incident, acted) = walk_unhealthy(IssueType::Diff, &strategy);
    assert_eq!(acted, [RollbackVersion, ResetConfig, Recreate]);
    let outcomes: Vec<_> = incident.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Unsupported,
            Outcome::Unsupported,
            Outcome::TimedOut
        ]
    );
    assert_eq!(incident.executed, 1);
    assert_eq!(incident.phase, Phase::Failed);
}

#[test]
fn retries_are_bounded_by_max_retry_count() {
    let strategy = Strategy {
        max_retry_count: 3,
        escalation_threshold: 2,
        ..Strategy::default_for(IssueType::PackageError)
    };
    let (incident, acted) = walk_unhealthy(IssueType::PackageError, &strategy);
    assert_eq!(acted, [Restart, Restart, Restart]);
    assert_eq!((incident.executed, incident.rung), (3, 1));
    assert_eq!(incident.phase, Phase::Failed);
}

#[test]
fn a_rung_that_fails_at_once_escalates_without_waiting() {
    let strategy = Strategy::default_for(IssueType::NodeSilent);
    let mut i = open(IssueType::NodeSilent, &strategy);
    assert_eq!(next_step(&i, &strategy, sick(), 5 * S), Step::Act(Relocate));
    assert!(!i.on_last_rung(&strategy));
    i.acted(&strategy, 5 * S);
    i.rung_failed(6 * S);
    assert_eq!(next_step(&i, &strategy, sick(), 6 * S), Step::Escalate);
    i.apply(Step::Escalate, &strategy, 6 * S, 1.0);
    assert_eq!(i.steps[0].outcome, Outcome::TimedOut);
    assert_eq!(next_step(&i, &strategy, sick(), 6 * S), Step::Act(Notify));
    // Nothing in flight or validating: no effect.
    let before = i.clone();
    i.rung_failed(7 * S);
    assert_eq!(i, before);
}

#[test]
fn abort_ends_at_once_and_ignores_the_step_in_flight() {
    let strategy = Strategy::default_for(IssueType::PackageError);
    let mut i = open(IssueType::PackageError, &strategy);
    i.acted(&strategy, 0);
    assert!(i.abort(S));
    assert!(!i.abort(2 * S));
    i.delivered(&strategy, 3 * S);
    assert_eq!((i.phase, i.ended_ns), (Phase::Aborted, Some(S)));
    assert_eq!(i.steps[0].outcome, Outcome::Ignored);
    assert_eq!(next_step(&i, &strategy, sick(), 4 * S), Step::Done);
}

#[test]
fn damping_delays_actions_while_flapping() {
    let strategy = Strategy::default_for(IssueType::Flapping);
    let mut i = open(IssueType::Flapping, &strategy);
    let damped = Observation {
        healthy: false,
        quiet_until_ns: Some(70 * S),
    };
    assert_eq!(next_step(&i, &strategy, damped, 6 * S), Step::Wait(70 * S));
    assert_eq!(next_step(&i, &strategy, damped, 70 * S), Step::Act(Notify));
    i.join();
    assert_eq!(i.joined, 1);
}

#[test]
fn an_incident_round_trips_through_json() {
    let strategy = Strategy::default_for(IssueType::PackageError);
    let mut i = open(IssueType::PackageError, &strategy);
    i.acted(&strategy, 7);
    i.delivered(&strategy, 9);
    let json = serde_json::to_string(&i).unwrap();
    assert!(json.contains(r#""kind":"package""#), "{json}");
    assert!(json.contains(r#""phase":"Validating""#), "{json}");
    assert!(!json.contains("ended_ns"), "{json}");
    assert_eq!(serde_json::from_str::<Incident>(&json).unwrap(), i);
}

fn any_strategy() -> impl proptest::strategy::Strategy<Value = super::Strategy> {
    (
        proptest::collection::vec(proptest::sample::select(RecoveryAction::ALL.to_vec()), 1..6),
        1u32..10,
        1u32..4,
    )
        .prop_map(
            |(actions, max_retry_count, escalation_threshold)| super::Strategy {
                max_retry_count,
                escalation_threshold,
                actions,
                ..super::Strategy::default_for(IssueType::Manual)
            },
        )
}

/// One thing the world does between two steps.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// Time passes by this many seconds (possibly less than the due time).
    Advance(u8),
    /// Health as observed.
    Health(bool),
    /// The outbox delivers what is in flight.
    Deliver,
    /// Flapping: damped until this many seconds from now.
    Damp(u8),
    /// The rung fails at once (no target node).
    Refuse,
    /// An operator aborts.
    Abort,
}

fn any_event() -> impl proptest::strategy::Strategy<Value = Event> {
    prop_oneof![
        6 => any::<u8>().prop_map(Event::Advance),
        2 => any::<bool>().prop_map(Event::Health),
        4 => Just(Event::Deliver),
        1 => any::<u8>().prop_map(Event::Damp),
        1 => Just(Event::Refuse),
        1 => Just(Event::Abort),
    ]
}

proptest! {
    #[test]
    fn ladders_are_walked_in_order_within_bounds_and_end(
        strategy in any_strategy(),
        events in proptest::collection::vec(any_event(), 0..200),
        issue in proptest::sample::select(IssueType::ALL.to_vec()),
    ) {
        let mut incident = open(issue, &strategy);
        let mut now = 0i64;
        let mut observed = sick();
        let mut events = events.into_iter();
        // Once the scripted events run out, time jumps to each due time and
        // deliveries happen: the incident must then end within a bound.
        let bound = 4 * (strategy.actions.len() as u32 * strategy.escalation_threshold + strategy.max_retry_count + 2);
        let mut after_script = 0u32;
        loop {
            let step = next_step(&incident, &strategy, observed, now);
            if step == Step::Done {
                break;
            }
            match events.next() {
                Some(Event::Advance(s)) => now += i64::from(s) * S / 4,
                Some(Event::Health(h)) => observed.healthy = h,
                Some(Event::Deliver) => incident.delivered(&strategy, now),
                Some(Event::Damp(s)) => observed.quiet_until_ns = Some(now + i64::from(s) * S),
                Some(Event::Refuse) => incident.rung_failed(now),
                Some(Event::Abort) => { incident.abort(now); }
                None => {
                    after_script += 1;
                    prop_assert!(after_script <= bound, "did not end: {incident:?}");
                    match step {
                        Step::Wait(t) | Step::Validate(t) => now = now.max(t),
                        Step::AwaitDelivery => incident.delivered(&strategy, now),
                        _ => {}
                    }
                }
            }
            let step = next_step(&incident, &strategy, observed, now);
            let before = incident.clone();
            match step {
                Step::Act(action) => {
                    prop_assert_eq!(Some(action), before.current_action(&strategy));
                    incident.acted(&strategy, now);
                }
                step => incident.apply(step, &strategy, now, 0.5),
            }
            // Never skips a rung; never more than max_retry_count actions.
            prop_assert!(incident.rung <= before.rung + 1);
            prop_assert!(incident.executed <= strategy.max_retry_count);
            prop_assert!(incident.rung as usize <= strategy.actions.len());
            let rungs: Vec<u32> = incident.steps.iter().map(|s| s.rung).collect();
            prop_assert!(rungs.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "{rungs:?}");
            prop_assert!(rungs.first().is_none_or(|r| *r == 0));
            for s in &incident.steps {
                prop_assert_eq!(s.action, strategy.actions[s.rung as usize]);
            }
        }
        prop_assert!(incident.phase.is_terminal());
        prop_assert!(incident.ended_ns.is_some() && incident.due_ns.is_none());
        let json = serde_json::to_vec(&incident).unwrap();
        prop_assert_eq!(serde_json::from_slice::<Incident>(&json).unwrap(), incident);
    }
}
