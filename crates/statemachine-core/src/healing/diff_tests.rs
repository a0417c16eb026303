use super::*;
use RecoveryAction::*;

fn diff() -> StateDiff {
    StateDiff {
        kind: ResourceKind::Package,
        name: "p".into(),
        existence: None,
        scale: None,
        version: None,
        config: None,
        status: None,
    }
}

fn status() -> Option<StatusDiff> {
    Some(StatusDiff {
        desired: "Running".into(),
        actual: "Error".into(),
    })
}

fn version() -> Option<VersionDiff> {
    Some(VersionDiff {
        desired: "2".into(),
        actual: "1".into(),
    })
}

/// (case, diff, context, priority, actions, parts, disruptive)
type PlanCase = (
    &'static str,
    StateDiff,
    PlanContext,
    Priority,
    Vec<RecoveryAction>,
    Vec<&'static str>,
    bool,
);

#[test]
fn plans_follow_recovery_md_section_5() {
    let running = PlanContext {
        running: true,
        asil: None,
    };
    let stopped = PlanContext::default();
    let asil_b = PlanContext {
        running: false,
        asil: Some(AsilLevel::B),
    };
    let qm = PlanContext {
        running: false,
        asil: Some(AsilLevel::Qm),
    };
    let missing = Some(ExistenceDiff {
        expected: true,
        actual: false,
    });
    let extra = Some(ExistenceDiff {
        expected: false,
        actual: true,
    });
    let scale = Some(ScaleDiff {
        desired: 2,
        actual: 1,
    });
    let config = Some(ConfigDiff {
        keys: vec!["k".into()],
    });
    use Priority::*;
    // (case, diff, context, priority, actions, parts, disruptive)
    let cases: Vec<PlanCase> = vec![
        (
            "missing, running",
            StateDiff {
                existence: missing.clone(),
                ..diff()
            },
            running,
            Critical,
            vec![Recreate, Notify],
            vec!["existence"],
            true,
        ),
        (
            "missing, stopped",
            StateDiff {
                existence: missing,
                ..diff()
            },
            stopped,
            Normal,
            vec![Recreate, Notify],
            vec!["existence"],
            true,
        ),
        (
            "extra",
            StateDiff {
                existence: extra,
                ..diff()
            },
            running,
            Critical,
            vec![Notify],
            vec!["existence"],
            false,
        ),
        (
            "status, running",
            StateDiff {
                status: status(),
                ..diff()
            },
            running,
            Critical,
            vec![Restart, Recreate, Notify],
            vec!["status"],
            true,
        ),
        (
            "version",
            StateDiff {
                version: version(),
                ..diff()
            },
            running,
            Normal,
            vec![Recreate, RollbackVersion, Notify],
            vec!["version"],
            true,
        ),
        (
            "config",
            StateDiff {
                config: config.clone(),
                ..diff()
            },
            stopped,
            Normal,
            vec![ResetConfig, Recreate, Notify],
            vec!["config"],
            true,
        ),
        (
            "scale",
            StateDiff {
                scale: scale.clone(),
                ..diff()
            },
            running,
            Low,
            vec![Notify],
            vec!["scale"],
            false,
        ),
        (
            "scale, ASIL B",
            StateDiff {
                scale: scale.clone(),
                ..diff()
            },
            asil_b,
            Normal,
            vec![Notify],
            vec!["scale"],
            false,
        ),
        (
            "scale, QM",
            StateDiff {
                scale: scale.clone(),
                ..diff()
            },
            qm,
            Low,
            vec![Notify],
            vec!["scale"],
            false,
        ),
        (
            "version, ASIL B",
            StateDiff {
                version: version(),
                ..diff()
            },
            asil_b,
            High,
            vec![Recreate, RollbackVersion, Notify],
            vec!["version"],
            true,
        ),
        (
            "scale, config, status: critical first",
            StateDiff {
                scale,
                config,
                status: status(),
                ..diff()
            },
            running,
            Critical,
            vec![Restart, Recreate, ResetConfig, Notify],
            vec!["status", "config", "scale"],
            true,
        ),
    ];
    for (case, diff, context, priority, actions, parts, disruptive) in cases {
        let plan = plan_diff(&diff, context).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(plan.priority, priority, "{case}");
        assert_eq!(plan.actions, actions, "{case}");
        assert_eq!(plan.impact.parts, parts, "{case}");
        assert_eq!(plan.impact.disruptive, disruptive, "{case}");
        assert_eq!(plan.actions.last(), Some(&Notify), "{case}");
    }
}

#[test]
fn a_diff_without_a_difference_needs_no_action() {
    let same = StateDiff {
        status: Some(StatusDiff {
            desired: "Running".into(),
            actual: "Running".into(),
        }),
        config: Some(ConfigDiff { keys: vec![] }),
        ..diff()
    };
    let cases = [
        (diff(), "the diff holds no difference"),
        (same, "desired and actual agree in every part"),
    ];
    for (d, reason) in cases {
        let error = plan_diff(&d, PlanContext::default()).unwrap_err();
        assert_eq!(error.reason, reason);
        assert!(error.to_string().contains("Package 'p'"), "{error}");
    }
}

#[test]
fn plans_sort_critical_first_and_round_trip() {
    let running = PlanContext {
        running: true,
        asil: None,
    };
    let low = plan_diff(
        &StateDiff {
            scale: Some(ScaleDiff {
                desired: 1,
                actual: 0,
            }),
            ..diff()
        },
        running,
    )
    .unwrap();
    let critical = plan_diff(
        &StateDiff {
            status: status(),
            ..diff()
        },
        running,
    )
    .unwrap();
    let normal = plan_diff(
        &StateDiff {
            version: version(),
            ..diff()
        },
        running,
    )
    .unwrap();
    let mut plans = vec![low, critical, normal];
    sort_plans(&mut plans);
    let order: Vec<_> = plans.iter().map(|p| p.priority).collect();
    assert_eq!(order, [Priority::Critical, Priority::Normal, Priority::Low]);
    let json = serde_json::to_string(&plans[0]).unwrap();
    assert_eq!(serde_json::from_str::<ActionPlan>(&json).unwrap(), plans[0]);
}

#[test]
fn asil_is_read_from_annotations() {
    let cases = [
        ("D", Some(AsilLevel::D)),
        ("asil-b", Some(AsilLevel::B)),
        ("ASIL_QM", Some(AsilLevel::Qm)),
        ("E", None),
    ];
    for (value, expected) in cases {
        let annotations = BTreeMap::from([("asil".to_owned(), value.to_owned())]);
        assert_eq!(
            AsilLevel::from_annotations(&annotations),
            expected,
            "{value}"
        );
    }
    assert_eq!(AsilLevel::from_annotations(&BTreeMap::new()), None);
}
