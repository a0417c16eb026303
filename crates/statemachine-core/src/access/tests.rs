use super::*;
use crate::name::ResourceKind;
use crate::state::{AnyState, ModelState, PackageState, ScenarioState};
use crate::transition::ScenarioPolicy;

const EXAMPLE: &str = r#"
trust-domain = "piccolo"

[[rule]]
name = "filtergateway-conditions"
identities = ["component/filtergateway"]
transitions = ["scenario: Idle -> Waiting", "scenario: waiting -> SCENARIO_STATE_SATISFIED"]

[[rule]]
name = "actioncontroller"
identities = ["component/ActionController"]
transitions = ["scenario: Allowed -> Completed", "model: * -> *", "package: * -> Running"]

[[rule]]
name = "nodeagents"
identities = ["nodeagent/*"]
reports = "own-node"

[[rule]]
name = "relay"
identities = ["component/relay"]
reports = "any"

[[rule]]
name = "readers"
identities = ["*"]
read = true

[[rule]]
name = "operators"
identities = ["component/operator"]
recovery = true
offload = true
"#;

fn parse(text: &str) -> Result<Policy, String> {
    toml::from_str::<Policy>(text).map_err(|e| e.to_string())
}

fn example() -> Policy {
    parse(EXAMPLE).expect("the example parses")
}

fn sc(s: ScenarioState) -> AnyState {
    AnyState::Scenario(s)
}

fn fg() -> Identity {
    Identity::component("filtergateway")
}

#[test]
fn the_example_parses_into_its_rules() {
    let policy = example();
    assert_eq!(policy.trust_domain(), "piccolo");
    let names: Vec<_> = policy.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "filtergateway-conditions",
            "actioncontroller",
            "nodeagents",
            "relay",
            "readers",
            "operators"
        ]
    );
    let fg_rule = &policy.rules()[0];
    assert_eq!(
        fg_rule.identities,
        [IdentityPattern::Component("filtergateway".into())]
    );
    let shown: Vec<_> = fg_rule.transitions.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        shown,
        [
            "scenario: Idle -> Waiting",
            "scenario: Waiting -> Satisfied"
        ]
    );
    // Component names in patterns are lowercased, like identities.
    assert_eq!(
        policy.rules()[1].identities,
        [IdentityPattern::Component("actioncontroller".into())]
    );
    assert_eq!(
        policy.rules()[1].transitions[1].to_string(),
        "model: * -> *"
    );
    assert_eq!(policy.rules()[2].reports, Some(Reports::OwnNode));
    assert_eq!(policy.rules()[3].reports, Some(Reports::Any));
    assert!(policy.rules()[4].read && !policy.rules()[4].recovery);
    assert!(policy.rules()[5].recovery && policy.rules()[5].offload);
}

#[test]
fn a_file_without_trust_domain_or_rules_denies_everything_in_piccolo() {
    let policy = parse("").expect("empty is valid");
    assert_eq!(policy, Policy::default());
    assert_eq!(policy.trust_domain(), DEFAULT_TRUST_DOMAIN);
    assert!(!policy.call(&fg(), MethodClass::Read).is_allowed());
    let other = parse("trust-domain = \"plant-7.example\"").expect("valid");
    assert_eq!(other.trust_domain(), "plant-7.example");
}

#[test]
fn bad_files_are_errors_naming_the_rule_and_the_value() {
    let cases: &[(&str, &[&str])] = &[
        ("colour = \"red\"", &["colour"]),
        ("trust-domain = \"Piccolo\"", &["'Piccolo'", "trust-domain"]),
        ("trust-domain = \"\"", &["trust-domain"]),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\nraed = true",
            &["'r'", "unknown key 'raed'"],
        ),
        (
            "[[rule]]\nidentities = [\"*\"]\nread = true",
            &["'#1'", "'name' is missing"],
        ),
        (
            "[[rule]]\nname = 3\nidentities = [\"*\"]\nread = true",
            &["'#1'", "'name' must be a string, not 3"],
        ),
        (
            "[[rule]]\nname = \"r\"\nread = true",
            &["'r'", "'identities' is missing or empty"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]",
            &["'r'", "allows nothing"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"admin\"]\nread = true",
            &["'r'", "unknown identity pattern 'admin'"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"component/a/b\"]\nread = true",
            &["'r'", "component/a/b"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"component/nodeagent\"]\nread = true",
            &["'r'", "NodeAgents are nodeagent/{node}"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\ntransitions = [\"volume: A -> B\"]",
            &["'r'", "unknown kind 'volume'"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\ntransitions = [\"scenario: Idle -> Done\"]",
            &["'r'", "scenario: Idle -> Done", "Done"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\ntransitions = [\"scenario Idle -> Waiting\"]",
            &["'r'", "is not 'kind: From -> To'"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\ntransitions = [\"scenario: Idle => Waiting\"]",
            &["'r'", "is not 'kind: From -> To'"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\ntransitions = \"scenario: * -> *\"",
            &["'r'", "'transitions' must be a list of strings"],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\nreports = \"own\"",
            &[
                "'r'",
                "'reports' must be \"own-node\" or \"any\", not \"own\"",
            ],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\nread = \"yes\"",
            &["'r'", "'read' must be true or false, not \"yes\""],
        ),
        (
            "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\nread = true\n[[rule]]\nname = \"r\"\nidentities = [\"*\"]\nread = true",
            &["'r'", "same name"],
        ),
        ("rule = 5", &["rule"]),
    ];
    for (text, expected) in cases {
        let error = parse(text).expect_err(text);
        for part in *expected {
            assert!(error.contains(part), "{text:?}: {error:?} lacks {part:?}");
        }
    }
}

#[test]
fn identities_come_from_the_first_uri_naming_one() {
    let td = DEFAULT_TRUST_DOMAIN;
    let uris = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let cases: &[(&[&str], Option<&str>)] = &[
        (
            &["spiffe://piccolo/component/filtergateway"],
            Some("component/filtergateway"),
        ),
        (
            &["SPIFFE://Piccolo/component/FilterGateway"],
            Some("component/filtergateway"),
        ),
        (&["spiffe://piccolo/nodeagent/n1"], Some("nodeagent/n1")),
        (
            &["spiffe://piccolo/nodeagent/Node-1.a"],
            Some("nodeagent/Node-1.a"),
        ),
        (
            &[
                "https://example.com",
                "spiffe://other/component/x",
                "spiffe://piccolo/component/operator",
            ],
            Some("component/operator"),
        ),
        (
            &[
                "spiffe://piccolo/component/a",
                "spiffe://piccolo/nodeagent/n1",
            ],
            Some("component/a"),
        ),
        (&[], None),
        (&["spiffe://other/component/x"], None),
        (&["spiffe://piccolo/component/"], None),
        (&["spiffe://piccolo/component/a/b"], None),
        (&["spiffe://piccolo/component/nodeagent"], None),
        (&["spiffe://piccolo/nodeagent/.."], None),
        (&["spiffe://piccolo/nodeagent/n1?x=1"], None),
        (&["spiffe://piccolo/admin/x"], None),
        (&["spiffe://piccolo"], None),
        (&["spiffe://piccolo/"], None),
        (&["spiffe:"], None),
        (&["é"], None),
    ];
    for (list, expected) in cases {
        let got = Identity::from_san_uris(&uris(list), td);
        match expected {
            Some(shown) => assert_eq!(
                got.map(|i| i.to_string()).as_deref(),
                Ok(*shown),
                "{list:?}"
            ),
            None => assert!(got.is_err(), "{list:?}: {got:?}"),
        }
    }
    let node = Identity::from_san_uris(&uris(&["spiffe://piccolo/nodeagent/n1"]), td).unwrap();
    assert_eq!(node, Identity::node_agent("n1"));
    assert!(node.is_node_agent());
}

#[test]
fn no_identity_says_what_was_found() {
    let error = Identity::from_san_uris(&[], "piccolo").unwrap_err();
    assert!(error.to_string().contains("no URI SAN"), "{error}");
    let uris = vec![
        "spiffe://other/component/x".to_owned(),
        "spiffe://piccolo/admin/y".to_owned(),
    ];
    let error = Identity::from_san_uris(&uris, "piccolo")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("'spiffe://other/component/x' (trust domain 'other', not 'piccolo')"),
        "{error}"
    );
    assert!(
        error.contains("'spiffe://piccolo/admin/y' (path '/admin/y'"),
        "{error}"
    );
}

#[test]
fn a_source_names_the_identitys_component() {
    let ac = Identity::component("actioncontroller");
    for (source, named) in [
        ("ActionController", true),
        ("action-controller", true),
        ("ACTIONCONTROLLER", true),
        ("", true),
        ("FilterGateway", false),
        ("actioncontrollers", false),
    ] {
        assert_eq!(ac.is_named_by(source), named, "{source:?}");
    }
}

#[test]
fn transitions_are_decided_by_rule_or_denied_by_default() {
    use ScenarioState as S;
    let policy = example();
    let ac = Identity::component("actioncontroller");
    // (caller, kind, from, to, Ok(allowing rule) or Err(denial))
    type Case<'a> = (
        &'a Identity,
        ResourceKind,
        AnyState,
        AnyState,
        Result<&'a str, &'a str>,
    );
    let cases: &[Case] = &[
        (
            &fg(),
            ResourceKind::Scenario,
            sc(S::Idle),
            sc(S::Waiting),
            Ok("filtergateway-conditions"),
        ),
        (
            &fg(),
            ResourceKind::Scenario,
            sc(S::Waiting),
            sc(S::Satisfied),
            Ok("filtergateway-conditions"),
        ),
        (
            &fg(),
            ResourceKind::Scenario,
            sc(S::Allowed),
            sc(S::Completed),
            Err(
                "default deny: no rule allows component/filtergateway scenario Allowed -> Completed",
            ),
        ),
        (
            &ac,
            ResourceKind::Scenario,
            sc(S::Allowed),
            sc(S::Completed),
            Ok("actioncontroller"),
        ),
        (
            &ac,
            ResourceKind::Model,
            AnyState::Model(ModelState::Running),
            AnyState::Model(ModelState::Dead),
            Ok("actioncontroller"),
        ),
        (
            &ac,
            ResourceKind::Package,
            AnyState::Package(PackageState::Error),
            AnyState::Package(PackageState::Running),
            Ok("actioncontroller"),
        ),
        (
            &ac,
            ResourceKind::Package,
            AnyState::Package(PackageState::Running),
            AnyState::Package(PackageState::Error),
            Err("default deny: no rule allows component/actioncontroller package Running -> Error"),
        ),
        (
            &Identity::node_agent("n1"),
            ResourceKind::Scenario,
            sc(S::Idle),
            sc(S::Waiting),
            Err("default deny: no rule allows nodeagent/n1 scenario Idle -> Waiting"),
        ),
    ];
    for (id, kind, from, to, expected) in cases {
        let decision = policy.transition(id, *kind, *from, *to);
        match expected {
            Ok(rule) => {
                assert_eq!(
                    decision,
                    Decision::Allowed {
                        rule: (*rule).into()
                    },
                    "{id} {from} -> {to}"
                );
            }
            Err(message) => {
                assert!(!decision.is_allowed());
                assert_eq!(decision.rule(), None);
                assert_eq!(decision.to_string(), *message);
                assert_eq!(decision.rule_label(), "default deny");
            }
        }
    }
}

#[test]
fn reports_are_decided_per_node() {
    let policy = example();
    let n1 = Identity::node_agent("n1");
    // (caller, node, Ok(allowing rule) or Err((denying rule, denial)))
    type Case<'a> = (
        &'a Identity,
        &'a str,
        Result<&'a str, (Option<&'a str>, &'a str)>,
    );
    let cases: &[Case] = &[
        (&n1, "n1", Ok("nodeagents")),
        (
            &n1,
            "n2",
            Err((
                Some("nodeagents"),
                "rule 'nodeagents': nodeagent/n1 may report only node n1, not n2",
            )),
        ),
        (&Identity::component("relay"), "n2", Ok("relay")),
        (
            &fg(),
            "n1",
            Err((
                None,
                "default deny: no rule allows component/filtergateway to report node n1",
            )),
        ),
    ];
    for (id, node, expected) in cases {
        let decision = policy.report(id, node);
        match expected {
            Ok(rule) => assert_eq!(decision.rule(), Some(*rule), "{id} {node}: {decision}"),
            Err((rule, message)) => {
                assert!(!decision.is_allowed());
                assert_eq!(decision.rule(), *rule);
                assert_eq!(decision.to_string(), *message);
            }
        }
    }
    // An own-node rule for a component that is no NodeAgent says so.
    let odd =
        parse("[[rule]]\nname = \"odd\"\nidentities = [\"component/x\"]\nreports = \"own-node\"")
            .unwrap();
    let decision = odd.report(&Identity::component("x"), "n1");
    assert_eq!(decision.rule(), Some("odd"));
    assert!(
        decision.to_string().contains("not a NodeAgent"),
        "{decision}"
    );
}

#[test]
fn calls_are_decided_by_class() {
    use MethodClass as M;
    let policy = example();
    let operator = Identity::component("operator");
    let n1 = Identity::node_agent("n1");
    let cases: &[(&Identity, MethodClass, Option<&str>)] = &[
        (&fg(), M::Read, Some("readers")),
        (&n1, M::Read, Some("readers")),
        (&fg(), M::Recovery, None),
        (&operator, M::Recovery, Some("operators")),
        (&operator, M::Offload, Some("operators")),
        (&fg(), M::Offload, None),
        (&fg(), M::StateChange, Some("filtergateway-conditions")),
        (&operator, M::StateChange, None),
        (&n1, M::Report, Some("nodeagents")),
        (&operator, M::Report, None),
    ];
    for (id, class, allowed_by) in cases {
        let decision = policy.call(id, *class);
        match allowed_by {
            Some(rule) => assert_eq!(decision.rule(), Some(*rule), "{id} {class}"),
            None => assert!(!decision.is_allowed(), "{id} {class}"),
        }
    }
    assert_eq!(
        policy.call(&fg(), M::Recovery).to_string(),
        "default deny: no rule allows component/filtergateway recovery calls"
    );
    let labels: Vec<_> = M::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(
        labels,
        ["state_change", "report", "read", "recovery", "offload"]
    );
    assert!(M::ALL.iter().enumerate().all(|(i, m)| m.index() == i));
}

#[test]
fn patterns_match_what_they_say() {
    let n1 = Identity::node_agent("n1");
    let fgw = fg();
    let cases = [
        ("*", true, true),
        ("component/*", false, true),
        ("nodeagent/*", true, false),
        ("nodeagent/n1", true, false),
        ("nodeagent/n2", false, false),
        ("component/filtergateway", false, true),
        ("component/FILTERGATEWAY", false, true),
        ("component/policymanager", false, false),
    ];
    for (pattern, node_matches, fg_matches) in cases {
        let p = file::identity_pattern(pattern).expect(pattern);
        assert_eq!(p.matches(&n1), node_matches, "{pattern} vs n1");
        assert_eq!(p.matches(&fgw), fg_matches, "{pattern} vs fg");
    }
}

#[test]
fn the_default_follows_the_scenario_table() {
    use ScenarioState as S;
    let strict = Policy::default_for_sources(&ScenarioPolicy::default());
    strict.validate().expect("the default is a valid policy");
    let who = |policy: &Policy, from: S, to: S| -> Vec<String> {
        [
            "filtergateway",
            "actioncontroller",
            "policymanager",
            "apiserver",
            "operator",
        ]
        .into_iter()
        .filter(|c| {
            policy
                .transition(
                    &Identity::component(c),
                    ResourceKind::Scenario,
                    sc(from),
                    sc(to),
                )
                .is_allowed()
        })
        .map(str::to_owned)
        .collect()
    };
    // Every cell of the table: exactly the allowed sources, nothing else.
    for &from in S::ALL {
        for &to in S::ALL {
            let expected: Vec<String> = ScenarioPolicy::default()
                .edge(from, to)
                .map(|e| {
                    e.allowed_sources
                        .iter()
                        .map(|s| s.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default();
            let mut got = who(&strict, from, to);
            let mut want = expected;
            got.sort();
            want.sort();
            assert_eq!(got, want, "{from} -> {to}");
        }
    }
    assert!(who(&strict, S::Completed, S::Waiting).is_empty());
    let rearm = Policy::default_for_sources(&ScenarioPolicy {
        allow_rearm: true,
        ..Default::default()
    });
    assert_eq!(who(&rearm, S::Completed, S::Waiting), ["filtergateway"]);
    assert_eq!(who(&rearm, S::Denied, S::Waiting), ["filtergateway"]);

    let ac = Identity::component("actioncontroller");
    let model = |s| AnyState::Model(s);
    assert!(
        strict
            .transition(
                &ac,
                ResourceKind::Model,
                model(ModelState::Running),
                model(ModelState::Dead)
            )
            .is_allowed()
    );
    assert!(
        !strict
            .transition(
                &fg(),
                ResourceKind::Model,
                model(ModelState::Running),
                model(ModelState::Dead)
            )
            .is_allowed()
    );
    let n1 = Identity::node_agent("n1");
    assert!(strict.report(&n1, "n1").is_allowed());
    assert_eq!(strict.report(&n1, "n2").rule(), Some("nodeagents"));
    assert!(!strict.report(&fg(), "n1").is_allowed());
    for c in ["filtergateway", "apiserver", "operator", "anything"] {
        assert!(
            strict
                .call(&Identity::component(c), MethodClass::Read)
                .is_allowed(),
            "{c}"
        );
    }
    assert!(strict.call(&n1, MethodClass::Read).is_allowed());
    let operator = Identity::component("operator");
    let pm = Identity::component("policymanager");
    assert!(strict.call(&operator, MethodClass::Recovery).is_allowed());
    assert!(strict.call(&operator, MethodClass::Offload).is_allowed());
    assert!(strict.call(&pm, MethodClass::Recovery).is_allowed());
    assert!(
        strict.call(&pm, MethodClass::Offload).is_allowed(),
        "upstream's caller of TriggerOffloading"
    );
    assert!(!strict.call(&fg(), MethodClass::Recovery).is_allowed());
    assert!(!strict.call(&n1, MethodClass::Recovery).is_allowed());
}

mod never_panic {
    use proptest::prelude::*;

    use super::super::file::{identity_pattern, transition_pattern};
    use super::*;

    proptest! {
        /// R4: any URI list, pattern or transition text gives an answer.
        #[test]
        fn parsers_answer_any_text(
            uris in proptest::collection::vec(".{0,60}", 0..4),
            text in ".{0,60}",
            domain in "[a-z.]{0,12}",
        ) {
            let _ = Identity::from_san_uris(&uris, &domain);
            let _ = identity_pattern(&text);
            let _ = transition_pattern(&text);
            let prefixed = format!("spiffe://piccolo/{text}");
            if let Ok(id) = Identity::from_san_uris(&[prefixed], "piccolo") {
                prop_assert!(!id.component.is_empty());
            }
        }

        /// Any transition of the example's vocabulary parses or names its rule.
        #[test]
        fn rule_files_answer_any_values(
            kind in "(scenario|Package|model|volume|)",
            from in "(Idle|waiting|\\*|RUNNING|x|)",
            to in "(Completed|\\*|Dead|error| )",
        ) {
            let file = format!(
                "[[rule]]\nname = \"r\"\nidentities = [\"*\"]\ntransitions = [\"{kind}: {from} -> {to}\"]"
            );
            if let Err(error) = toml::from_str::<Policy>(&file) {
                prop_assert!(error.to_string().contains("'r'"), "{}", error);
            }
        }
    }
}
