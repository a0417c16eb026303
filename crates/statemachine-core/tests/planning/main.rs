//! Every rule of STATE-MACHINES.md and ETCD-CONTRACT.md, through `plan`.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod commits;
mod definitions;
mod direct;
mod failures;
mod reports;
mod scenarios;

use statemachine_core::ResourceKind;

pub(crate) const M: ResourceKind = ResourceKind::Model;
pub(crate) const P: ResourceKind = ResourceKind::Package;
pub(crate) const C: ResourceKind = ResourceKind::Container;
pub(crate) const S: ResourceKind = ResourceKind::Scenario;

pub(crate) fn reconciles(p: &statemachine_core::Plan) -> Vec<(String, String)> {
    p.reconciles()
        .map(|r| (r.scenario.clone(), r.package.clone()))
        .collect()
}
