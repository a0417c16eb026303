//! SECURITY (QUALITY-BAR S1): with an access policy, every method takes the
//! caller's identity from its client certificate; a caller not allowed gets
//! PERMISSION_DENIED, nothing is written, the denial is counted.
//!
//! The handlers are called directly with requests carrying a
//! [`PeerCertificate`] (what the TLS acceptor puts there), and node reports
//! also over gRPC through the lean decoder, the certificate inserted by an
//! interceptor from a test header.

mod support;

use std::sync::Arc;
use std::time::Duration;

use engine::EngineConfig;
use statemachine_core::access::{IdentityPattern, Rule, TransitionPattern};
use statemachine_core::transition::ScenarioPolicy;
use statemachine_core::{AnyState, MethodClass, Policy, ResourceKind, ScenarioState};
use support::{ActionControllerServer, StateManager, container};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Code, Request};
use transport_grpc::proto::monitoringserver as ms;
use transport_grpc::proto::statemanager as sm;
use transport_grpc::proto::statemanager::state_manager_connection_client::StateManagerConnectionClient;
use transport_grpc::proto::statemanager::state_manager_connection_server::StateManagerConnection;
use transport_grpc::{PeerCertificate, StateManagerService};

const FG: &str = "spiffe://piccolo/component/filtergateway";
const PM: &str = "spiffe://piccolo/component/policymanager";
const AC: &str = "spiffe://piccolo/component/actioncontroller";
const OPERATOR: &str = "spiffe://piccolo/component/operator";
const READER: &str = "spiffe://piccolo/component/dashboard";
const N1: &str = "spiffe://piccolo/nodeagent/n1";

const SCENARIO: i32 = sm::ResourceType::Scenario as i32;

fn config_with(policy: Policy) -> EngineConfig {
    let mut config = support::config();
    config.core.access = Some(Arc::new(policy));
    config
}

struct Fixture {
    _ac: ActionControllerServer,
    sm: StateManager,
    service: StateManagerService,
}

impl Fixture {
    async fn start(policy: Option<Policy>) -> Self {
        let ac = ActionControllerServer::start().await;
        let config = policy.map_or_else(support::config, config_with);
        let sm = StateManager::start_with(&ac.url(), config, Default::default()).await;
        let service = StateManagerService::new(sm.handle());
        Self {
            _ac: ac,
            sm,
            service,
        }
    }

    async fn with_default_policy() -> Self {
        Self::start(Some(
            Policy::default_for_sources(&ScenarioPolicy::default()),
        ))
        .await
    }

    async fn revision(&self) -> i64 {
        self.sm.store.revision().await.expect("revision")
    }

    fn denied(&self, class: MethodClass) -> u64 {
        self.sm.handle().metrics().denied(class)
    }

    async fn change(
        &self,
        uri: Option<&str>,
        source: &str,
        target: &str,
    ) -> sm::StateChangeResponse {
        let request = as_caller(
            uri,
            sm::StateChange {
                resource_type: SCENARIO,
                resource_name: "s1".into(),
                current_state: String::new(),
                target_state: target.into(),
                transition_id: format!("t-{target}"),
                timestamp_ns: 1,
                source: source.into(),
            },
        );
        self.service
            .send_state_change(request)
            .await
            .expect("SendStateChange answers in its response")
            .into_inner()
    }

    async fn scenario_state(&self) -> Option<String> {
        self.sm.value("/scenario/s1/state").await
    }
}

/// `message` as sent by the holder of a certificate with `uri` (none: no
/// client certificate).
fn as_caller<T>(uri: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(uri) = uri {
        request.extensions_mut().insert(PeerCertificate {
            san_uris: vec![uri.to_owned()],
            common_name: Some("test".into()),
        });
    }
    request
}

fn code(response: &sm::StateChangeResponse) -> i32 {
    response.error_code
}

const OK: i32 = sm::ErrorCode::Success as i32;
const DENIED: i32 = sm::ErrorCode::PermissionDenied as i32;

#[tokio::test]
async fn a_filtergateway_registers_conditions_but_does_not_complete_scenarios() {
    let f = Fixture::with_default_policy().await;
    let steps = [
        (FG, "Waiting", OK),
        (FG, "Satisfied", OK),
        (PM, "Allowed", OK),
        (FG, "Completed", DENIED),
    ];
    for (uri, target, expected) in steps {
        let before = f.revision().await;
        let answer = f.change(Some(uri), "", target).await;
        assert_eq!(code(&answer), expected, "{uri} -> {target}: {answer:?}");
        if expected == DENIED {
            assert_eq!(
                answer.message,
                "default deny: no rule allows component/filtergateway scenario Allowed -> Completed"
            );
            assert_eq!(answer.error_details, "default deny");
            assert_eq!(answer.transition_id, "t-Completed");
            assert_eq!(f.revision().await, before, "a denial writes nothing");
        }
    }
    assert_eq!(f.scenario_state().await.as_deref(), Some("Allowed"));
    assert_eq!(f.denied(MethodClass::StateChange), 1);
    // The ActionController may, and the empty source became its component.
    let answer = f.change(Some(AC), "", "Completed").await;
    assert_eq!(code(&answer), OK, "{answer:?}");
    let history =
        f.sm.handle()
            .history(ResourceKind::Scenario, "s1", Default::default())
            .await
            .expect("history");
    let last = history.last().expect("entries");
    assert_eq!(last.source, "actioncontroller");
}

#[tokio::test]
async fn a_given_policy_replaces_the_default() {
    let mut rule = Rule::new(
        "filtergateway-conditions",
        vec![IdentityPattern::Component("filtergateway".into())],
    );
    rule.transitions.push(TransitionPattern {
        kind: ResourceKind::Scenario,
        from: Some(AnyState::Scenario(ScenarioState::Idle)),
        to: Some(AnyState::Scenario(ScenarioState::Waiting)),
    });
    let policy = Policy::new("piccolo", vec![rule]).expect("valid policy");
    let f = Fixture::start(Some(policy)).await;
    assert_eq!(
        code(&f.change(Some(FG), "FilterGateway", "Waiting").await),
        OK
    );
    let answer = f.change(Some(FG), "FilterGateway", "Satisfied").await;
    assert_eq!(code(&answer), DENIED);
    assert!(answer.message.starts_with("default deny"), "{answer:?}");
    assert_eq!(f.scenario_state().await.as_deref(), Some("Waiting"));
}

#[tokio::test]
async fn the_source_must_name_the_certificates_component() {
    let f = Fixture::with_default_policy().await;
    let before = f.revision().await;
    let answer = f.change(Some(FG), "PolicyManager", "Waiting").await;
    assert_eq!(code(&answer), DENIED);
    assert_eq!(
        answer.message,
        "source 'PolicyManager' does not name the caller component/filtergateway"
    );
    assert_eq!(f.revision().await, before);
    assert_eq!(f.scenario_state().await.as_deref(), Some("Idle"));
    // Any spelling of its own name is the caller's.
    for source in ["FilterGateway", "filter-gateway", "FILTERGATEWAY"] {
        let answer = f.change(Some(FG), source, "Waiting").await;
        assert_eq!(code(&answer), OK, "{source}: {answer:?}");
    }
    assert_eq!(f.denied(MethodClass::StateChange), 1);
}

#[tokio::test]
async fn without_a_usable_certificate_nothing_is_allowed() {
    let f = Fixture::with_default_policy().await;
    let before = f.revision().await;
    let answer = f.change(None, "FilterGateway", "Waiting").await;
    assert_eq!(code(&answer), DENIED);
    assert_eq!(answer.message, "no client certificate");
    let answer = f
        .change(
            Some("spiffe://elsewhere/component/filtergateway"),
            "",
            "Waiting",
        )
        .await;
    assert_eq!(code(&answer), DENIED);
    assert!(
        answer.message.contains("trust domain 'elsewhere'"),
        "{answer:?}"
    );
    let status = f
        .service
        .get_resource_state(as_caller(
            None,
            sm::ResourceStateRequest {
                resource_type: SCENARIO,
                resource_name: "s1".into(),
            },
        ))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no client certificate");
    assert_eq!(f.revision().await, before);
    assert_eq!(f.denied(MethodClass::StateChange), 2);
    assert_eq!(f.denied(MethodClass::Read), 1);
}

#[tokio::test]
async fn a_reader_reads_but_changes_nothing() {
    let f = Fixture::with_default_policy().await;
    let read = f
        .service
        .get_resource_state(as_caller(
            Some(READER),
            sm::ResourceStateRequest {
                resource_type: SCENARIO,
                resource_name: "s1".into(),
            },
        ))
        .await
        .expect("readers read");
    assert!(read.into_inner().success);
    let before = f.revision().await;
    let answer = f.change(Some(READER), "dashboard", "Waiting").await;
    assert_eq!(code(&answer), DENIED);
    assert_eq!(
        answer.message,
        "default deny: no rule allows component/dashboard scenario Idle -> Waiting"
    );
    assert_eq!(f.revision().await, before);
    // Recovery and offloading are for operators.
    let status = f
        .service
        .trigger_recovery(as_caller(
            Some(READER),
            sm::TriggerRecoveryRequest {
                resource_type: sm::ResourceType::Package as i32,
                resource_name: "p1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "default deny: no rule allows component/dashboard recovery calls"
    );
    let status = f
        .service
        .trigger_offloading(as_caller(Some(READER), sm::OffloadingRequest::default()))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    let sync = f
        .service
        .force_synchronization(as_caller(
            Some(READER),
            sm::ForceSynchronizationRequest {
                resource_type: sm::ResourceType::Package as i32,
                resource_name: "p1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("answered in its error_code")
        .into_inner();
    assert_eq!(sync.error_code, DENIED);
    assert_eq!(sync.error_details, "default deny");
    assert_eq!(f.revision().await, before);
    assert_eq!(f.denied(MethodClass::StateChange), 1);
    assert_eq!(f.denied(MethodClass::Recovery), 2);
    assert_eq!(f.denied(MethodClass::Offload), 1);
    assert_eq!(f.denied(MethodClass::Read), 0);
    // An operator may trigger recovery (the answer is the engine's).
    let allowed = f
        .service
        .trigger_recovery(as_caller(
            Some(OPERATOR),
            sm::TriggerRecoveryRequest {
                resource_type: sm::ResourceType::Package as i32,
                resource_name: "p1".into(),
                ..Default::default()
            },
        ))
        .await;
    assert!(
        allowed
            .as_ref()
            .map_or_else(|s| s.code() != Code::PermissionDenied, |_| true),
        "{allowed:?}"
    );
}

fn report(node: &str) -> ms::ContainerList {
    ms::ContainerList {
        node_name: node.into(),
        containers: vec![container("model-m1", &[("Status", "running")])],
    }
}

#[tokio::test]
async fn a_nodeagent_reports_only_its_own_node() {
    let f = Fixture::with_default_policy().await;
    let before = f.revision().await;
    let status = f
        .service
        .send_changed_container_list(as_caller(Some(N1), report("n2")))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "rule 'nodeagents': nodeagent/n1 may report only node n1, not n2"
    );
    assert_eq!(f.revision().await, before, "the store is unchanged");
    assert_eq!(f.denied(MethodClass::Report), 1);
    // A component is no NodeAgent.
    let status = f
        .service
        .send_changed_container_list(as_caller(Some(FG), report("n1")))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(f.revision().await, before);
    f.service
        .send_changed_container_list(as_caller(Some(N1), report("n1")))
        .await
        .expect("its own node");
    assert!(f.revision().await > before);
    assert_eq!(f.denied(MethodClass::Report), 2);
}

/// The lean report decoder behind `into_server`, over gRPC: the
/// certificate comes from the `x-test-san` header via an interceptor.
#[tokio::test]
async fn lean_reports_over_grpc_are_checked_too() {
    let f = Fixture::with_default_policy().await;
    let server = f.service.clone().into_server(4 * 1024 * 1024);
    let intercepted =
        tonic::service::interceptor::InterceptedService::new(server, |mut request: Request<()>| {
            let san = request
                .metadata()
                .get("x-test-san")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(san) = san {
                request.extensions_mut().insert(PeerCertificate {
                    san_uris: vec![san],
                    common_name: None,
                });
            }
            Ok(request)
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        Server::builder()
            .add_service(intercepted)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = StateManagerConnectionClient::connect(format!("http://{address}"))
        .await
        .expect("connects");
    let send = |node: &str, san: &str| {
        let mut request = Request::new(report(node));
        request
            .metadata_mut()
            .insert("x-test-san", san.parse().expect("ascii"));
        request.set_timeout(Duration::from_secs(5));
        request
    };
    let before = f.revision().await;
    let status = client
        .send_changed_container_list(send("n2", N1))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("may report only node n1, not n2"),
        "{status:?}"
    );
    assert_eq!(f.revision().await, before);
    client
        .send_changed_container_list(send("n1", N1))
        .await
        .expect("its own node");
    assert!(f.revision().await > before);
    assert_eq!(f.denied(MethodClass::Report), 1);
}

#[tokio::test]
async fn without_a_policy_nothing_changes() {
    let f = Fixture::start(None).await;
    // No certificate, any source: as before.
    let answer = f.change(None, "anyone", "Waiting").await;
    assert_eq!(code(&answer), OK, "{answer:?}");
    f.service
        .send_changed_container_list(as_caller(None, report("n2")))
        .await
        .expect("reports are not checked");
    let status = f
        .service
        .get_pending_alerts(as_caller(None, sm::GetPendingAlertsRequest::default()))
        .await;
    assert!(status.is_ok(), "{status:?}");
    for class in MethodClass::ALL {
        assert_eq!(f.denied(class), 0, "{class}");
    }
}
