//! End-to-end security (QUALITY-BAR S1): the real daemon on a real etcd with
//! mutual TLS and a policy, real clients with certificates made in the test.
//! Identities come from the certificates; a caller not allowed an edge, a
//! node or a method gets PERMISSION_DENIED and etcd is unchanged; the server
//! certificate is reloaded on SIGHUP.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{ActionController, Daemon, Keys, container, etcd, podman_state, report};
use tonic::Code;
use transport_grpc::StateManagerClient;
use transport_grpc::proto::statemanager as sm;
use transport_grpc::proto::statemanager::{ErrorCode, ResourceType};
use transport_grpc::testing::ActionControllerDouble;
use transport_grpc::testing::pki::{Ca, Files};
use transport_grpc::tls::{ClientTls, ServerTls};

/// The policy of docs/security.md, plus a dashboard that only reads (it is
/// covered by `readers`).
const POLICY: &str = r#"
trust-domain = "piccolo"

[[rule]]
name = "filtergateway-conditions"
identities = ["component/filtergateway"]
transitions = ["scenario: Idle -> Waiting", "scenario: Waiting -> Satisfied"]

[[rule]]
name = "policymanager-verdicts"
identities = ["component/policymanager"]
transitions = ["scenario: Satisfied -> Allowed", "scenario: Satisfied -> Denied"]

[[rule]]
name = "actioncontroller-completion"
identities = ["component/actioncontroller"]
transitions = ["scenario: Waiting -> Satisfied", "scenario: Allowed -> Completed"]

[[rule]]
name = "nodeagents"
identities = ["nodeagent/*"]
reports = "own-node"

[[rule]]
name = "readers"
identities = ["*"]
read = true

[[rule]]
name = "operators"
identities = ["component/operator"]
recovery = true
"#;

struct Pki {
    ca: Ca,
    files: Files,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: Ca::new("PICCOLO test CA"),
            files: Files::new(),
        }
    }

    /// TLS settings of a client named by `uri` (None: no certificate).
    fn client(&self, name: &str, uri: Option<&str>) -> ClientTls {
        let leaf = uri.map(|uri| self.ca.client(uri, name));
        self.files.client(name, &self.ca, leaf.as_ref())
    }
}

async fn connect(daemon: &Daemon, tls: &ClientTls) -> StateManagerClient {
    StateManagerClient::connect_with_tls(&format!("https://{}", daemon.address), tls)
        .await
        .unwrap_or_else(|e| panic!("connects over mutual TLS: {e}"))
}

fn change(name: &str, current: &str, target: &str, source: &str) -> sm::StateChange {
    sm::StateChange {
        resource_type: ResourceType::Scenario as i32,
        resource_name: name.into(),
        current_state: current.into(),
        target_state: target.into(),
        transition_id: String::new(),
        timestamp_ns: 0,
        source: source.into(),
    }
}

/// Sends `change`; `Ok(message)` on SUCCESS, `Err(message)` on
/// PERMISSION_DENIED (as an answer or a status); panics on anything else.
async fn send(client: &StateManagerClient, change: sm::StateChange) -> Result<String, String> {
    match client.raw().send_state_change(change).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            if answer.error_code == ErrorCode::Success as i32 {
                Ok(answer.message)
            } else if answer.error_code == ErrorCode::PermissionDenied as i32 {
                Err(answer.message)
            } else {
                panic!("neither SUCCESS nor PERMISSION_DENIED: {answer:?}")
            }
        }
        Err(status) if status.code() == Code::PermissionDenied => Err(status.message().to_owned()),
        Err(status) => panic!("unexpected status {status:?}"),
    }
}

fn running_on(node: &str, name: &str) -> transport_grpc::proto::monitoringserver::ContainerList {
    report(
        node,
        vec![container(name, podman_state("running", 0, false))],
    )
}

#[tokio::test]
async fn with_mutual_tls_and_a_policy_callers_are_held_to_their_identity_and_denials_write_nothing()
{
    let etcd = etcd();
    let keys = Keys::connect(&etcd).await;
    let pki = Pki::new();
    let server = pki.files.server(&pki.ca, Some(&pki.ca));
    let policy = pki.files.write("policy.toml", POLICY);
    let ac = ActionController::start().await;
    let mut args = Daemon::args(&etcd, &ac.url());
    args.extend(
        [
            "--tls-cert",
            &server.cert.display().to_string(),
            "--tls-key",
            &server.key.display().to_string(),
            "--tls-client-ca",
            &pki.files.path().join("client-ca.pem").display().to_string(),
            "--policy",
            &policy.display().to_string(),
        ]
        .map(str::to_owned),
    );
    let daemon = Daemon::start(&args).await;

    let filtergateway = connect(
        &daemon,
        &pki.client("fg", Some("spiffe://piccolo/component/filtergateway")),
    )
    .await;
    let policymanager = connect(
        &daemon,
        &pki.client("pm", Some("spiffe://piccolo/component/policymanager")),
    )
    .await;
    let nodeagent = connect(
        &daemon,
        &pki.client("na", Some("spiffe://piccolo/nodeagent/n1")),
    )
    .await;
    let dashboard = connect(
        &daemon,
        &pki.client("dash", Some("spiffe://piccolo/component/dashboard")),
    )
    .await;

    // The FilterGateway's own edges; an empty source is filled in.
    send(
        &filtergateway,
        change("s", "idle", "waiting", "FilterGateway"),
    )
    .await
    .expect("FilterGateway may Idle -> Waiting");
    send(&filtergateway, change("s", "waiting", "satisfied", ""))
        .await
        .expect("FilterGateway may Waiting -> Satisfied");
    send(
        &policymanager,
        change("s", "satisfied", "allowed", "PolicyManager"),
    )
    .await
    .expect("PolicyManager may Satisfied -> Allowed");
    keys.eventually("/scenario/s/state", Some("Allowed")).await;

    // Not its edge: denied with the rule, nothing written.
    let revision = keys.revision().await;
    let denied = send(
        &filtergateway,
        change("s", "allowed", "completed", "FilterGateway"),
    )
    .await
    .expect_err("FilterGateway may not Allowed -> Completed");
    assert!(denied.contains("default deny"), "{denied}");
    // Claiming another component's name in `source` does not help.
    let denied = send(
        &filtergateway,
        change("s", "allowed", "completed", "ActionController"),
    )
    .await
    .expect_err("a source that is not the caller's own");
    assert!(
        denied.to_lowercase().contains("actioncontroller"),
        "{denied}"
    );
    // A reader may read but not write.
    let state = dashboard
        .raw()
        .get_resource_state(sm::ResourceStateRequest {
            resource_type: ResourceType::Scenario as i32,
            resource_name: "s".into(),
        })
        .await
        .expect("a reader may read")
        .into_inner();
    assert_eq!(
        state.resource_state.map(|s| s.current_state).as_deref(),
        Some("Allowed")
    );
    send(&dashboard, change("s", "allowed", "completed", ""))
        .await
        .expect_err("a reader may not write");
    // A NodeAgent reports its own node only.
    let other = nodeagent
        .raw()
        .send_changed_container_list(running_on("n2", "model-m9"))
        .await;
    let refused = match other {
        Err(status) => status.code() == Code::PermissionDenied,
        Ok(answer) => answer.into_inner().resp.contains("denied"),
    };
    assert!(refused, "nodeagent/n1 may not report node n2");
    assert_eq!(
        keys.revision().await,
        revision,
        "denied calls write nothing"
    );
    assert_eq!(
        keys.get("/scenario/s/state").await.as_deref(),
        Some("Allowed")
    );

    nodeagent
        .raw()
        .send_changed_container_list(running_on("n1", "model-m1"))
        .await
        .expect("nodeagent/n1 may report node n1");
    keys.eventually("/model/m1/state", Some("Running")).await;

    assert!(
        daemon
            .metric("statemanager_denied_total{method=\"state_change\"}")
            .await
            >= 3.0
    );
    assert!(
        daemon
            .metric("statemanager_denied_total{method=\"report\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_or_from_another_ca_is_refused_the_action_controller_is_reached_over_mtls_and_sighup_reloads_the_server_certificate()
 {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = pki.files.server(&pki.ca, Some(&pki.ca));
    // The ActionController serves mutual TLS too; the daemon presents its
    // own certificate to it.
    let ac_files = Files::new();
    let ac = ActionControllerDouble::start_with_tls(
        ServerTls::load(ac_files.server(&pki.ca, Some(&pki.ca))).expect("the AC's TLS files"),
    )
    .await;
    let (sm_cert, sm_key) = pki.files.leaf(
        "statemanager",
        &pki.ca
            .client("spiffe://piccolo/component/statemanager", "statemanager"),
    );
    let daemon = Daemon::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path().display().to_string(),
            "--action-controller",
            &ac.url(),
            "--tls-cert",
            &server.cert.display().to_string(),
            "--tls-key",
            &server.key.display().to_string(),
            "--tls-client-ca",
            &pki.files.path().join("client-ca.pem").display().to_string(),
            "--action-controller-ca",
            &pki.files
                .write("ac-ca.pem", &pki.ca.pem)
                .display()
                .to_string(),
            "--action-controller-cert",
            &sm_cert.display().to_string(),
            "--action-controller-key",
            &sm_key.display().to_string(),
        ]
        .map(str::to_owned),
    )
    .await;
    let url = format!("https://{}", daemon.address);
    let read = |client: StateManagerClient| async move {
        client
            .raw()
            .get_resource_state(sm::ResourceStateRequest {
                resource_type: ResourceType::Scenario as i32,
                resource_name: "s".into(),
            })
            .await
    };

    // No client certificate: refused at the handshake.
    let anonymous = pki.client("anonymous", None);
    let refused = match StateManagerClient::connect_with_tls(&url, &anonymous).await {
        Err(_) => true,
        Ok(client) => read(client).await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    // A certificate from another CA: refused too.
    let other = Pki::new();
    let stranger_leaf = other
        .ca
        .client("spiffe://piccolo/component/filtergateway", "stranger");
    let (cert, key) = pki.files.leaf("stranger", &stranger_leaf);
    let stranger = ClientTls {
        cert: Some(cert),
        key: Some(key),
        ..pki.client("stranger-trust", None)
    };
    let refused = match StateManagerClient::connect_with_tls(&url, &stranger).await {
        Err(_) => true,
        Ok(client) => read(client).await.is_err(),
    };
    assert!(refused, "a certificate from another CA is refused");
    // The default policy (no --policy) lets an identified caller read.
    let operator = pki.client("op", Some("spiffe://piccolo/component/operator"));
    let operator_client = connect(&daemon, &operator).await;
    read(operator_client.clone())
        .await
        .expect("the operator reads");
    // The operator may offload (default policy): the request reaches the
    // ActionController over mutual TLS, with the daemon's identity.
    let answer = operator_client
        .raw()
        .trigger_offloading(sm::OffloadingRequest {
            scenario_name: "s".into(),
            package_name: "p".into(),
            model_name: "m1".into(),
            source_node: "n1".into(),
            target_node: "n2".into(),
            policy_name: "thermal".into(),
            reason: "too hot".into(),
        })
        .await
        .expect("TriggerOffloading answers")
        .into_inner();
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(ac.offloads().len(), 1);
    let peers = ac.peers();
    assert!(
        peers.iter().all(|peer| peer
            .as_ref()
            .is_some_and(|p| p.san_uris == ["spiffe://piccolo/component/statemanager"])),
        "{peers:?}"
    );

    // SIGHUP: a new server certificate from a new CA serves new connections.
    let next = Ca::new("PICCOLO CA 2");
    let leaf = next.server();
    std::fs::write(&server.cert, &leaf.pem).unwrap();
    std::fs::write(&server.key, &leaf.key).unwrap();
    let pid = daemon.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let trusting_next = ClientTls {
        ca: Some(pki.files.write("ca2.pem", &next.pem)),
        ..operator.clone()
    };
    let started = Instant::now();
    loop {
        if let Ok(client) = StateManagerClient::connect_with_tls(&url, &trusting_next).await
            && read(client).await.is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reloaded certificate is not served:\n{}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.output().contains("TLS files reloaded"));
    let old_trust = match StateManagerClient::connect_with_tls(&url, &operator).await {
        Err(_) => true,
        Ok(client) => read(client).await.is_err(),
    };
    assert!(
        old_trust,
        "a client trusting only the old CA no longer connects"
    );
}
