//! The policy in force with mTLS and no policy file: the §4 table's sources.

use super::identity::DEFAULT_TRUST_DOMAIN;
use super::policy::{IdentityPattern, Policy, Reports, Rule, TransitionPattern};
use crate::name::ResourceKind;
use crate::state::AnyState;
use crate::transition::{SCENARIO_REARM_TRANSITIONS, SCENARIO_TRANSITIONS, ScenarioPolicy};

impl Policy {
    /// The default policy (see the [module docs](super#the-default-policy)):
    /// each scenario edge of STATE-MACHINES §4 (with the re-arming edges
    /// when `scenario.allow_rearm`) for the components its row names, one
    /// rule per component; direct model and package sets for the
    /// ActionController; own-node reports for every NodeAgent; recovery
    /// and offloading for `operator` and `policymanager`; reads
    /// for every authenticated identity. Trust domain `piccolo`.
    pub fn default_for_sources(scenario: &ScenarioPolicy) -> Policy {
        let rearm: &[_] = if scenario.allow_rearm {
            SCENARIO_REARM_TRANSITIONS
        } else {
            &[]
        };
        // STATE-MACHINES §4: one rule per requesting component, in table order.
        let mut rules: Vec<Rule> = Vec::new();
        for edge in SCENARIO_TRANSITIONS.iter().chain(rearm) {
            for source in edge.allowed_sources {
                let component = source.to_ascii_lowercase();
                let pattern = TransitionPattern {
                    kind: ResourceKind::Scenario,
                    from: Some(AnyState::Scenario(edge.from)),
                    to: Some(AnyState::Scenario(edge.to)),
                };
                match rules.iter_mut().find(|r| r.name == component) {
                    Some(rule) => rule.transitions.push(pattern),
                    None => {
                        let mut rule = Rule::new(
                            &component,
                            vec![IdentityPattern::Component(component.clone())],
                        );
                        rule.transitions.push(pattern);
                        rules.push(rule);
                    }
                }
            }
        }
        // STATE-MACHINES §5: direct sets, along the documented edges the
        // planner checks, by the ActionController that runs the actions.
        let mut direct = Rule::new(
            "actioncontroller-direct",
            vec![IdentityPattern::Component("actioncontroller".to_owned())],
        );
        direct.transitions = [ResourceKind::Model, ResourceKind::Package]
            .into_iter()
            .map(|kind| TransitionPattern {
                kind,
                from: None,
                to: None,
            })
            .collect();
        rules.push(direct);

        let mut nodeagents = Rule::new("nodeagents", vec![IdentityPattern::AnyNodeAgent]);
        nodeagents.reports = Some(Reports::OwnNode);
        rules.push(nodeagents);

        let mut operators = Rule::new(
            "operators",
            vec![IdentityPattern::Component("operator".to_owned())],
        );
        operators.recovery = true;
        operators.offload = true;
        rules.push(operators);

        let mut policymanager = Rule::new(
            "policymanager-recovery",
            vec![IdentityPattern::Component("policymanager".to_owned())],
        );
        policymanager.recovery = true;
        // Upstream's PolicyManager is the caller of TriggerOffloading.
        policymanager.offload = true;
        rules.push(policymanager);

        let mut readers = Rule::new("readers", vec![IdentityPattern::Any]);
        readers.read = true;
        rules.push(readers);

        Policy::from_parts(DEFAULT_TRUST_DOMAIN, rules)
    }
}
