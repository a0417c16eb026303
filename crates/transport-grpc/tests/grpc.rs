//! The StateManager over real gRPC: an engine on a `MemoryStore`, served on
//! 127.0.0.1:0, with an in-test ActionController on 127.0.0.1:0.

mod support;

use std::time::{Duration, Instant};

use engine::{Delivery, EventFilter, EventKind, HistoryQuery};
use futures::StreamExt;
use statemachine_core::ResourceKind;
use support::{ActionControllerServer, StateManager, closed_address, container};
use tonic::Code;
use transport_grpc::proto::monitoringserver as ms;
use transport_grpc::proto::statemanager as sm;
use transport_grpc::{ActionControllerClient, ActionControllerOptions, ClientError};

fn change(
    resource_type: i32,
    name: &str,
    current: &str,
    target: &str,
    id: &str,
) -> sm::StateChange {
    sm::StateChange {
        resource_type,
        resource_name: name.into(),
        current_state: current.into(),
        target_state: target.into(),
        transition_id: id.into(),
        timestamp_ns: 1,
        source: "FilterGateway".into(),
    }
}

async fn state_of(sm: &StateManager, resource_type: i32, name: &str) -> sm::ResourceStateResponse {
    sm.raw
        .clone()
        .get_resource_state(sm::ResourceStateRequest {
            resource_type,
            resource_name: name.into(),
        })
        .await
        .expect("GetResourceState answers")
        .into_inner()
}

/// The answer with the health check's time taken out: what was written,
/// which two reads of an unchanged resource agree on.
fn without_check_time(mut answer: sm::ResourceStateResponse) -> sm::ResourceStateResponse {
    if let Some(health) = answer
        .resource_state
        .as_mut()
        .and_then(|s| s.health_status.as_mut())
    {
        health.last_health_check_ns = 0;
        for check in &mut health.checks {
            check.timestamp_ns = 0;
        }
    }
    answer
}

async fn current(sm: &StateManager, resource_type: i32, name: &str) -> String {
    let answer = state_of(sm, resource_type, name).await;
    assert!(answer.success, "{name}: {}", answer.message);
    answer.resource_state.expect("a state").current_state
}

#[tokio::test]
async fn a_scenario_moves_from_idle_to_waiting_with_either_spelling() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();

    let lower = raw
        .send_state_change(change(1, "s1", "idle", "waiting", "t-lower"))
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(lower.error_code, sm::ErrorCode::Success as i32, "{lower:?}");
    assert_eq!(
        lower.transition_id, "t-lower",
        "the transition id is echoed"
    );
    assert!(lower.timestamp_ns > 0);
    assert_eq!(
        sm.value("/scenario/s1/state").await.as_deref(),
        Some("Waiting"),
        "durable on SUCCESS"
    );
    assert_eq!(current(&sm, 1, "s1").await, "Waiting");

    let enum_style = raw
        .send_state_change(change(
            1,
            "parking",
            "SCENARIO_STATE_IDLE",
            "SCENARIO_STATE_WAITING",
            "t-enum",
        ))
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        enum_style.error_code,
        sm::ErrorCode::Success as i32,
        "{enum_style:?}"
    );
    assert_eq!(enum_style.transition_id, "t-enum");
    assert_eq!(
        sm.value("/scenario/parking/state").await.as_deref(),
        Some("Waiting")
    );

    let satisfied = raw
        .send_state_change(change(
            1,
            "s1",
            "SCENARIO_STATE_WAITING",
            "Satisfied",
            "t-3",
        ))
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        satisfied.error_code,
        sm::ErrorCode::Success as i32,
        "{satisfied:?}"
    );

    let history = raw
        .get_resource_state_history(sm::ResourceStateHistoryRequest {
            resource_type: 1,
            resource_name: "s1".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(history.success, "{}", history.message);
    let requested: Vec<_> = history
        .history
        .iter()
        .filter(|h| h.transition_id.starts_with("t-"))
        .map(|h| (h.to_state.as_str(), h.transition_id.as_str()))
        .collect();
    assert_eq!(
        requested,
        [("Waiting", "t-lower"), ("Satisfied", "t-3")],
        "oldest first"
    );

    // The typed client reads the same.
    let history = sm
        .client
        .history(ResourceKind::Scenario, "s1", HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(
        history.last().and_then(|h| h.to.as_deref()),
        Some("Satisfied")
    );
    sm.shutdown().await;
}

#[tokio::test]
async fn an_invalid_transition_is_refused_and_writes_nothing() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let before = state_of(&sm, 1, "s1").await;
    assert_eq!(
        before.resource_state.as_ref().unwrap().current_state,
        "Idle"
    );

    let answer = sm
        .raw
        .clone()
        .send_state_change(change(1, "s1", "Idle", "Completed", "t-bad"))
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        answer.error_code,
        sm::ErrorCode::InvalidStateTransition as i32,
        "{answer:?}"
    );
    assert!(!answer.message.is_empty());
    assert_eq!(answer.transition_id, "t-bad");
    assert_eq!(
        without_check_time(state_of(&sm, 1, "s1").await),
        without_check_time(before),
        "nothing written"
    );

    let typed = sm
        .client
        .send_state_change(
            ResourceKind::Scenario,
            "s1",
            "",
            "completed",
            "ActionController",
        )
        .await
        .expect("answers");
    assert_eq!(
        typed.code,
        statemachine_core::ErrorCode::InvalidStateTransition
    );
    sm.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_invalid_and_write_nothing() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();

    let unknown = raw
        .send_state_change(change(99, "s1", "Idle", "Waiting", "t-99"))
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(
        unknown.error_code,
        sm::ErrorCode::InvalidRequest as i32,
        "{unknown:?}"
    );
    assert!(
        unknown.message.contains("99"),
        "the message names the number: {unknown:?}"
    );
    assert_eq!(unknown.transition_id, "t-99");

    for (resource_type, name, target) in [
        (4, "v1", "Waiting"),
        (1, "a/b", "Waiting"),
        (1, "s1", "Flying"),
        (1, "s1", "Waiting "),
        (1, "s1", "waiting\n"),
        (1, "s1", " Waiting"),
    ] {
        let answer = raw
            .send_state_change(change(resource_type, name, "", target, "t"))
            .await
            .expect("answers")
            .into_inner();
        assert_eq!(
            answer.error_code,
            sm::ErrorCode::InvalidRequest as i32,
            "{answer:?}"
        );
    }
    assert_eq!(current(&sm, 1, "s1").await, "Idle");
    for state in [" Idle", "Idle\n", " "] {
        let status = raw
            .list_resources_by_state(sm::ListResourcesByStateRequest {
                resource_type: 1,
                state: state.into(),
                ..Default::default()
            })
            .await
            .expect_err("whitespace is no state name");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{state:?}: {status:?}"
        );
        assert!(status.message().contains("allowed"), "{status:?}");
    }

    let status = raw
        .get_resource_state(sm::ResourceStateRequest {
            resource_type: 99,
            resource_name: "s1".into(),
        })
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = raw
        .get_resource_state_history(sm::ResourceStateHistoryRequest {
            resource_type: 1,
            resource_name: "s1".into(),
            limit: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative limit");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = raw
        .send_changed_container_list(ms::ContainerList {
            node_name: "bad/node".into(),
            containers: vec![],
        })
        .await
        .expect_err("bad node name");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("node"), "{status:?}");
    sm.shutdown().await;
}

/// Raw bytes on the wire, to send requests no generated client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// Sends `bytes` as the request of `method` and returns the status the
/// server answers (`Ok` when it answered a message).
async fn send_raw(url: &str, method: &'static str, bytes: &[u8]) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    let request = tonic::Request::new(bytes.to_vec());
    if method.ends_with("/SubscribeToStateChanges") {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        return stream.message().await.map(drop);
    }
    grpc.unary(request, path, RawCodec).await.map(drop)
}

#[tokio::test]
async fn undecodable_requests_are_invalid_arguments_on_every_method() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let methods = [
        "/statemanager.StateManagerConnection/SendStateChange",
        "/statemanager.StateManagerConnection/SendChangedContainerList",
        "/statemanager.StateManagerConnection/SendAction",
        "/statemanager.StateManagerConnection/TriggerOffloading",
        "/statemanager.StateManagerConnection/GetResourceState",
        "/statemanager.StateManagerConnection/ListResourcesByState",
        "/statemanager.StateManagerConnection/GetResourceStateHistory",
        "/statemanager.StateManagerConnection/SubscribeToStateChanges",
        "/statemanager.StateManagerConnection/ForceSynchronization",
        "/statemanager.StateManagerConnection/TriggerRecovery",
        "/statemanager.StateManagerConnection/AbortRecovery",
        "/statemanager.StateManagerConnection/GetRecoveryStatus",
        "/statemanager.StateManagerConnection/AcknowledgeAlert",
        "/statemanager.StateManagerConnection/GetPendingAlerts",
        "/statemanager.StateManagerConnection/SendStateDiff",
    ];
    // A key cut off mid-varint; field 1 declared 5 bytes long with 2 left.
    let garbage: [&[u8]; 2] = [&[0x80], &[0x0a, 0x05, b'a', b'b']];
    let mut wrong = Vec::new();
    for method in methods {
        for bytes in garbage {
            let status = send_raw(&sm.url, method, bytes)
                .await
                .expect_err("not a valid message");
            // The message carries the decode error.
            if status.code() != Code::InvalidArgument || !status.message().contains("decode") {
                wrong.push(format!("{method} {bytes:?}: {status:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(current(&sm, 1, "s1").await, "Idle", "still serving");
    sm.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_are_rejected_and_the_server_keeps_serving() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut huge = container("model-m1", &[("Status", "running")]);
    huge.config
        .insert("blob".into(), "x".repeat(5 * 1024 * 1024));
    let status = sm
        .raw
        .clone()
        .max_encoding_message_size(64 * 1024 * 1024)
        .send_changed_container_list(ms::ContainerList {
            node_name: "n1".into(),
            containers: vec![huge],
        })
        .await
        .expect_err("over 4 MiB");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_eq!(current(&sm, 1, "s1").await, "Idle", "still serving");
    sm.shutdown().await;
}

#[tokio::test]
async fn a_package_driven_to_error_sends_exactly_one_reconcile() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    sm.define_barrier().await;
    let mut raw = sm.raw.clone();
    let report = |status: &str| ms::ContainerList {
        node_name: "n1".into(),
        containers: vec![
            container("model-m1", &[("Status", status)]),
            container("model-m2", &[("Status", status)]),
        ],
    };
    let running = raw
        .send_changed_container_list(report("running"))
        .await
        .expect("accepted")
        .into_inner();
    assert!(!running.resp.is_empty());
    assert_eq!(current(&sm, 2, "p1").await, "Running");

    raw.send_changed_container_list(report("dead"))
        .await
        .expect("accepted");
    assert_eq!(current(&sm, 2, "p1").await, "Error");
    assert_eq!(current(&sm, 3, "m1").await, "Dead");
    let reconciles = ac
        .wait_for_reconciles(1, std::time::Duration::from_secs(5))
        .await;
    assert_eq!(
        reconciles,
        [transport_grpc::proto::actioncontroller::ReconcileRequest {
            scenario_name: "s1".into(),
            current: 5,
            desired: 3,
        }],
        "Reconcile{{s1, FAILED, RUNNING}}"
    );

    // The same report again changes nothing and asks nothing.
    raw.send_changed_container_list(report("dead"))
        .await
        .expect("accepted");
    sm.reconcile_barrier(&ac).await;
    assert_eq!(ac.reconciles().len(), 1, "exactly one Reconcile");
    sm.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_receives_changes_committed_after_subscribing() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let mut raw = sm.raw.clone();
    let mut wire = raw
        .subscribe_to_state_changes(sm::StateChangeSubscriptionRequest {
            resource_type: sm::ResourceType::Scenario as i32,
            ..Default::default()
        })
        .await
        .expect("subscribed")
        .into_inner();
    let mut typed = sm
        .client
        .subscribe(&EventFilter {
            resource_kind: Some(ResourceKind::Scenario),
            resource_name: Some("s1".into()),
            ..EventFilter::default()
        })
        .await
        .expect("subscribed");

    let answer = raw
        .send_state_change(change(1, "s1", "Idle", "Waiting", "t-sub"))
        .await
        .expect("answers")
        .into_inner();
    assert_eq!(answer.error_code, 0, "{answer:?}");

    let event = tokio::time::timeout(Duration::from_secs(5), wire.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("not an error");
    assert_eq!(event.event_type, sm::EventType::StateChange as i32);
    assert_eq!(event.severity, sm::Severity::Info as i32);
    assert!(!event.event_id.is_empty());
    let change = event.state_change.expect("the change");
    assert_eq!(change.resource_type, 1);
    assert_eq!(change.resource_name, "s1");
    assert_eq!(change.target_state, "Waiting");
    assert_eq!(change.transition_id, "t-sub");
    assert_eq!(change.source, "FilterGateway");

    let delivery = tokio::time::timeout(Duration::from_secs(5), typed.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("readable");
    match delivery {
        Delivery::Event(event) => {
            assert_eq!(event.kind, EventKind::StateChange);
            assert_eq!(event.resource_kind, ResourceKind::Scenario);
            assert_eq!(event.to.as_deref(), Some("Waiting"));
        }
        Delivery::Lagged(n) => panic!("lagged by {n}"),
    }
    sm.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions_and_serve_returns() {
    let ac = ActionControllerServer::start().await;
    let mut sm = StateManager::start(&ac.url()).await;
    let mut events = sm
        .client
        .subscribe(&EventFilter::default())
        .await
        .expect("subscribed");
    sm.stop_server().await.expect("serve returns Ok");
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream ends within 5 s");
    match end {
        None => {}
        Some(Err(ClientError::Status(status))) => assert_eq!(status.code(), Code::Unavailable),
        Some(other) => panic!("unexpected {other:?}"),
    }
    sm.shutdown().await;
}

#[tokio::test]
async fn queries_answer_defaults_not_found_and_lists() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    assert_eq!(current(&sm, 2, "p1").await, "Idle", "a defined package");
    assert_eq!(current(&sm, 3, "m1").await, "Created", "a defined model");
    let nowhere = state_of(&sm, 2, "nowhere").await;
    assert!(!nowhere.success);
    assert!(nowhere.message.contains("not found"), "{}", nowhere.message);
    assert_eq!(
        sm.client
            .get_state(ResourceKind::Package, "nowhere")
            .await
            .expect("answers"),
        None
    );

    let mut raw = sm.raw.clone();
    let no_history = raw
        .get_resource_state_history(sm::ResourceStateHistoryRequest {
            resource_type: 2,
            resource_name: "nowhere".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(!no_history.success);
    assert!(
        no_history.message.contains("not found"),
        "{}",
        no_history.message
    );
    let empty = raw
        .get_resource_state_history(sm::ResourceStateHistoryRequest {
            resource_type: 1,
            resource_name: "never-seen".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(
        empty.success,
        "a never-seen scenario is Idle, with no history"
    );
    assert!(empty.history.is_empty());

    raw.send_state_change(change(1, "s2", "Idle", "Waiting", "t"))
        .await
        .expect("answers");
    let waiting = raw
        .list_resources_by_state(sm::ListResourcesByStateRequest {
            resource_type: 1,
            state: "SCENARIO_STATE_WAITING".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(waiting.success);
    let names: Vec<_> = waiting
        .resources
        .iter()
        .map(|r| r.resource_name.as_str())
        .collect();
    assert_eq!(names, ["s2"]);
    assert_eq!(waiting.total_count, 1);

    let (all, total) = sm
        .client
        .list(ResourceKind::Scenario, None, 1)
        .await
        .expect("answers");
    assert_eq!(all.len(), 1, "limit 1");
    assert_eq!(total, 2, "s1 (defined) and s2");

    let labelled = raw
        .list_resources_by_state(sm::ListResourcesByStateRequest {
            resource_type: 1,
            label_selector: [("target".to_owned(), "p1".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    let names: Vec<_> = labelled
        .resources
        .iter()
        .map(|r| r.resource_name.as_str())
        .collect();
    assert_eq!(names, ["s1"], "only s1 targets p1");
    sm.shutdown().await;
}

#[tokio::test]
async fn health_answers_serving_and_reflection_lists_the_service() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let channel = tonic::transport::Endpoint::from_shared(sm.url.clone())
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel.clone());
    for service in ["statemanager.StateManagerConnection", ""] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("an answer")
        .expect("not an error");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"statemanager.StateManagerConnection"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("actioncontroller")),
        "{names:?}"
    );
    sm.shutdown().await;
}

#[tokio::test]
async fn offloading_is_forwarded_to_the_action_controller() {
    let ac = ActionControllerServer::start().await;
    let sm = StateManager::start(&ac.url()).await;
    let answer = sm
        .raw
        .clone()
        .trigger_offloading(sm::OffloadingRequest {
            scenario_name: "s1".into(),
            package_name: "p1".into(),
            model_name: "m1".into(),
            source_node: "n1".into(),
            target_node: "n2".into(),
            policy_name: "thermal".into(),
            reason: "too hot".into(),
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(answer.transition_id, "ac-1");
    let offloads = ac.offloads();
    assert_eq!(offloads.len(), 1);
    assert_eq!(offloads[0].model_name, "m1");
    assert_eq!(offloads[0].target_node, "n2");

    let legacy = sm
        .raw
        .clone()
        .send_action(sm::Action {
            action: "launch".into(),
        })
        .await
        .expect("acknowledged")
        .into_inner();
    assert!(legacy.resp.contains("launch"), "{legacy:?}");
    sm.shutdown().await;
}

#[tokio::test]
async fn an_action_controller_that_is_down_fails_fast() {
    let down = closed_address().await;
    let client = ActionControllerClient::new(&down, &support::action_options()).expect("valid");
    let started = Instant::now();
    let error = engine::ActionPort::offload(&client, engine::OffloadRequest::default())
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(error, engine::ActionError::Unavailable(_)),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // Over the StateManager too: TriggerOffloading answers Unavailable quickly.
    let sm = StateManager::start(&down).await;
    let started = Instant::now();
    let status = sm
        .raw
        .clone()
        .trigger_offloading(sm::OffloadingRequest::default())
        .await
        .expect_err("the ActionController is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // And state changes still work meanwhile.
    assert_eq!(current(&sm, 1, "s1").await, "Idle");
    sm.shutdown().await;
}

#[tokio::test]
async fn an_action_controller_that_never_answers_times_out() {
    // Accepts TCP connections and never speaks HTTP/2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let options = ActionControllerOptions {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        ..ActionControllerOptions::default()
    };
    let client = ActionControllerClient::new(&address, &options).expect("valid");
    for _ in 0..2 {
        let started = Instant::now();
        let error = engine::ActionPort::reconcile(
            &client,
            engine::ReconcileRequest {
                scenario: "s1".into(),
                package: "p1".into(),
                package_state: "Error".into(),
            },
        )
        .await
        .expect_err("no answer");
        assert!(
            matches!(error, engine::ActionError::Unavailable(_)),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    hold.abort();
}

#[tokio::test]
async fn an_invalid_action_controller_address_is_an_error_not_a_panic() {
    let error =
        ActionControllerClient::new("not a uri at all", &ActionControllerOptions::default())
            .expect_err("invalid");
    assert!(error.to_string().contains("not a uri at all"), "{error}");
}

#[tokio::test]
async fn a_subscription_outlives_the_request_timeout() {
    let ac = ActionControllerServer::start().await;
    let options = transport_grpc::ServeOptions {
        request_timeout: Duration::from_millis(200),
        ..transport_grpc::ServeOptions::default()
    };
    let sm = StateManager::start_with(&ac.url(), support::config(), options).await;
    let mut events = sm
        .client
        .subscribe(&EventFilter::default())
        .await
        .expect("subscribed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = sm
        .client
        .send_state_change(ResourceKind::Scenario, "s1", "", "waiting", "FilterGateway")
        .await
        .expect("answers");
    assert_eq!(
        answer.code,
        statemachine_core::ErrorCode::Success,
        "{answer:?}"
    );
    let delivery = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is still open")
        .expect("readable");
    assert!(
        matches!(delivery, Delivery::Event(ref e) if e.resource_name == "s1"),
        "{delivery:?}"
    );
    sm.shutdown().await;
}

#[tokio::test]
async fn a_slow_subscriber_is_told_how_many_events_it_missed() {
    use transport_grpc::StateManagerService;
    use transport_grpc::proto::statemanager::state_manager_connection_server::StateManagerConnection;

    let ac = ActionControllerServer::start().await;
    let mut config = support::config();
    config.event_buffer = 2;
    let sm =
        StateManager::start_with(&ac.url(), config, transport_grpc::ServeOptions::default()).await;
    let service = StateManagerService::new(sm.handle());
    let mut stream = service
        .subscribe_to_state_changes(tonic::Request::new(
            sm::StateChangeSubscriptionRequest::default(),
        ))
        .await
        .expect("subscribed")
        .into_inner();
    // Six changes commit while nobody reads the stream.
    for i in 0..6 {
        let answer = sm
            .client
            .send_state_change(
                ResourceKind::Scenario,
                &format!("x{i}"),
                "",
                "waiting",
                "FilterGateway",
            )
            .await
            .expect("answers");
        assert_eq!(
            answer.code,
            statemachine_core::ErrorCode::Success,
            "{answer:?}"
        );
    }
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an item")
        .expect("open")
        .expect("not an error");
    assert_eq!(first.event_type, sm::EventType::Warning as i32, "{first:?}");
    let missed: u64 = first.metadata["lagged_events"].parse().expect("a count");
    assert!(missed >= 4, "missed {missed}");
    assert!(
        first.description.contains(&missed.to_string()),
        "{}",
        first.description
    );
    // Then the newest events follow.
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an item")
        .expect("open")
        .expect("not an error");
    assert_eq!(
        next.event_type,
        sm::EventType::StateChange as i32,
        "{next:?}"
    );
    sm.shutdown().await;
}
