//! Node container reports (`SendChangedContainerList`) and their answers.

use std::collections::HashMap;

use engine::ReportAnswer;
use statemachine_core::{ContainerState, ErrorCode, NodeReport, ReportedContainer};
use tonic::Status;

use super::status_for;
use crate::proto::monitoringserver as ms;

/// A received `ContainerList` as the engine's node report. The image and
/// stats maps are not used by the rules and are dropped.
pub fn node_report(list: ms::ContainerList) -> NodeReport {
    NodeReport {
        node: list.node_name,
        containers: list
            .containers
            .into_iter()
            .map(|info| {
                let mut container = ReportedContainer {
                    id: info.id,
                    names: info.names,
                    state: info.state,
                    config: info.config,
                    annotations: info.annotation,
                    derived: None,
                };
                // Queued reports keep only what planning needs.
                container.derive_state();
                container
            })
            .collect(),
    }
}

/// A container as a `ContainerInfo` message (for clients).
/// A container whose podman map was dropped by
/// [`ReportedContainer::derive_state`] is sent with a minimal map that
/// derives to the same state.
pub fn container_info(container: ReportedContainer) -> ms::ContainerInfo {
    let state = match container.derived {
        Some(derived) if container.state.is_empty() => podman_map(derived),
        _ => container.state,
    };
    ms::ContainerInfo {
        id: container.id,
        names: container.names,
        image: String::new(),
        state,
        config: container.config,
        annotation: container.annotations,
        stats: HashMap::new(),
    }
}

/// A podman state map that derives to `state` (STATE-MACHINES §1).
fn podman_map(state: ContainerState) -> HashMap<String, String> {
    let status = match state {
        ContainerState::Dead => "dead",
        ContainerState::Exited => "exited",
        ContainerState::Paused => "paused",
        ContainerState::Running => "running",
        ContainerState::Initialized => "initialized",
        ContainerState::Created => "created",
        ContainerState::Unknown => return HashMap::new(),
    };
    HashMap::from([("Status".to_owned(), status.to_owned())])
}

/// The engine's answer to a node's report: `resp` says what happened; a
/// rejected report is `InvalidArgument`, an unavailable store `Unavailable`
/// (see [`status_for`]).
pub fn container_list_response(
    node: &str,
    answer: ReportAnswer,
) -> Result<ms::SendContainerListResponse, Status> {
    if answer.code != ErrorCode::Success {
        let message = if answer.message.is_empty() {
            format!("container list of node '{node}' refused: {}", answer.code)
        } else {
            answer.message
        };
        return Err(status_for(answer.code, message));
    }
    let resp = if answer.message.is_empty() {
        format!("container list of node '{node}' applied")
    } else {
        answer.message
    };
    Ok(ms::SendContainerListResponse { resp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, state: &[(&str, &str)]) -> ms::ContainerInfo {
        ms::ContainerInfo {
            id: format!("id-{name}"),
            names: vec![format!("/{name}")],
            state: state
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_decoded_report_keeps_the_derived_state_not_the_podman_map() {
        let report = node_report(ms::ContainerList {
            node_name: "n1".into(),
            containers: vec![
                info("a", &[("Status", "exited"), ("ExitCode", "137")]),
                info("b", &[("Status", "Paused"), ("Pid", "7")]),
                info("c", &[]),
            ],
        });
        let states: Vec<_> = report
            .containers
            .iter()
            .map(|c| (c.state.is_empty(), c.container_state()))
            .collect();
        assert_eq!(
            states,
            [
                (true, ContainerState::Dead),
                (true, ContainerState::Paused),
                (true, ContainerState::Unknown)
            ]
        );
    }

    #[test]
    fn a_derived_container_is_sent_with_a_map_that_derives_the_same() {
        for state in [
            ContainerState::Dead,
            ContainerState::Exited,
            ContainerState::Paused,
            ContainerState::Running,
            ContainerState::Initialized,
            ContainerState::Created,
            ContainerState::Unknown,
        ] {
            let sent = container_info(ReportedContainer {
                names: vec!["/x".into()],
                derived: Some(state),
                ..Default::default()
            });
            let back = node_report(ms::ContainerList {
                node_name: "n1".into(),
                containers: vec![sent],
            });
            assert_eq!(back.containers[0].container_state(), state);
        }
    }
}
