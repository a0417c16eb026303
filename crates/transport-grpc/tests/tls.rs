//! TLS and mutual TLS on the real server and clients, with certificates
//! made here by rcgen: a CA, a server certificate for localhost and
//! 127.0.0.1, and client certificates naming PICCOLO components by URI SAN.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{ActionError, ActionPort, Engine, ReconcileRequest};
use rcgen::{CertificateParams, DistinguishedName, SanType};
use state_store::{MemoryStore, StateStore};
use statemachine_core::{ErrorCode, ResourceKind};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use transport_grpc::testing::ActionControllerDouble;
use transport_grpc::testing::pki::{Ca, Files};
use transport_grpc::tls::{self, ClientTls, ServerTls, ServerTlsFiles, TlsError};
use transport_grpc::{
    ActionControllerClient, ActionControllerOptions, PeerCertificate, ServeError, ServeOptions,
    StateManagerClient,
};

const FILTERGATEWAY: &str = "spiffe://piccolo/component/filtergateway";
const NODEAGENT: &str = "spiffe://piccolo/nodeagent/n1";
const STATEMANAGER: &str = "spiffe://piccolo/component/statemanager";

/// The StateManager served over TLS on 127.0.0.1:0 (engine on a
/// `MemoryStore`, scenario `s1` defined).
struct Server {
    url: String,
    tls: ServerTls,
    store: Arc<dyn StateStore>,
    _ac: ActionControllerDouble,
    engine: Option<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    async fn start(tls: ServerTls) -> Self {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        support::put(
            store.as_ref(),
            "Scenario/s1",
            "kind: Scenario\nmetadata:\n  name: s1\nspec:\n  target: p1\n",
        )
        .await;
        let ac = ActionControllerDouble::start().await;
        let action =
            ActionControllerClient::new(&ac.url(), &support::action_options()).expect("valid");
        let engine = Engine::start(store.clone(), Arc::new(action), support::config())
            .await
            .expect("engine starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServeOptions {
            tls: Some(tls.clone()),
            ..ServeOptions::default()
        };
        let task = tokio::spawn(transport_grpc::serve(
            engine.handle(),
            listener,
            options,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            url,
            tls,
            store,
            _ac: ac,
            engine: Some(engine),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Connects with `tls` and asks for `s1` idle -> waiting.
    async fn change_state(&self, tls: &ClientTls) -> Result<ErrorCode, String> {
        let client = StateManagerClient::connect_with_tls(&self.url, tls)
            .await
            .map_err(|e| e.to_string())?
            .with_timeout(Duration::from_secs(5));
        let answer = client
            .send_state_change(ResourceKind::Scenario, "s1", "", "waiting", "FilterGateway")
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer.code)
    }

    async fn scenario_state(&self) -> Option<String> {
        self.store
            .get("/scenario/s1/state")
            .await
            .expect("get")
            .map(|kv| String::from_utf8(kv.value).expect("utf-8"))
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("serve returns within 5 s")
                .expect("no panic")
                .expect("serve ends cleanly");
        }
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits (5 s at most) until the server counted `n` failed handshakes.
async fn wait_for_failures(tls: &ServerTls, n: u64) {
    let started = Instant::now();
    while tls.handshake_failures() < n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} handshake failures, expected {n}",
            tls.handshake_failures()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_names_are_read_from_a_client_certificate() {
    let ca = Ca::new("piccolo-ca");
    let names =
        tls::peer_certificate(&ca.client(FILTERGATEWAY, "filtergateway").der).expect("readable");
    assert_eq!(
        names,
        PeerCertificate {
            san_uris: vec![FILTERGATEWAY.to_owned()],
            common_name: Some("filtergateway".to_owned()),
        }
    );

    // Several SANs: the URIs only, in certificate order.
    let mut params = CertificateParams::new(vec!["n1.local".to_owned()]).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params
        .subject_alt_names
        .push(SanType::URI(NODEAGENT.try_into().expect("IA5")));
    params.subject_alt_names.push(SanType::URI(
        "spiffe://piccolo/node/n1".try_into().expect("IA5"),
    ));
    let names = tls::peer_certificate(&ca.sign(params).der).expect("readable");
    assert_eq!(names.san_uris, [NODEAGENT, "spiffe://piccolo/node/n1"]);
    assert_eq!(names.common_name, None);

    // The server certificate has DNS and IP SANs only.
    let names = tls::peer_certificate(&ca.server().der).expect("readable");
    assert!(names.san_uris.is_empty());
    assert_eq!(names.common_name.as_deref(), Some("statemanager"));

    assert!(tls::peer_certificate(b"not a certificate").is_err());
}

#[tokio::test]
async fn mutual_tls_serves_a_client_whose_certificate_the_ca_signed() {
    let (ca, files) = (Ca::new("piccolo-ca"), Files::new());
    let tls = ServerTls::load(files.server(&ca, Some(&ca))).expect("loads");
    assert!(tls.client_auth());
    let server = Server::start(tls).await;

    let filtergateway = files.client(
        "filtergateway",
        &ca,
        Some(&ca.client(FILTERGATEWAY, "filtergateway")),
    );
    assert_eq!(
        server.change_state(&filtergateway).await,
        Ok(ErrorCode::Success)
    );
    assert_eq!(server.scenario_state().await.as_deref(), Some("Waiting"));

    let client = StateManagerClient::connect_with_tls(&server.url, &filtergateway)
        .await
        .expect("connects");
    let view = client
        .get_state(ResourceKind::Scenario, "s1")
        .await
        .expect("GetResourceState answers")
        .expect("s1 is known");
    assert_eq!(view.state, "Waiting");

    // A node report takes the lean path of the server.
    let nodeagent = files.client(
        "nodeagent",
        &ca,
        Some(&ca.client(NODEAGENT, "nodeagent-n1")),
    );
    let client = StateManagerClient::connect_with_tls(&server.url, &nodeagent)
        .await
        .expect("connects");
    client
        .report_containers("n1", Vec::new())
        .await
        .expect("the report is accepted");
    assert_eq!(server.tls.handshake_failures(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_or_with_another_cas() {
    let (ca, other, files) = (Ca::new("piccolo-ca"), Ca::new("other-ca"), Files::new());
    let tls = ServerTls::load(files.server(&ca, Some(&ca))).expect("loads");
    let server = Server::start(tls).await;
    let before = server.scenario_state().await;

    let anonymous = files.client("anonymous", &ca, None);
    let error = server.change_state(&anonymous).await.expect_err("refused");
    wait_for_failures(&server.tls, 1).await;

    let stranger = files.client(
        "stranger",
        &ca,
        Some(&other.client(FILTERGATEWAY, "filtergateway")),
    );
    let error2 = server.change_state(&stranger).await.expect_err("refused");
    wait_for_failures(&server.tls, 2).await;
    assert_eq!(
        server.scenario_state().await,
        before,
        "nothing reached the engine ({error}; {error2})"
    );

    // The server goes on serving clients it accepts.
    let filtergateway = files.client(
        "filtergateway",
        &ca,
        Some(&ca.client(FILTERGATEWAY, "filtergateway")),
    );
    assert_eq!(
        server.change_state(&filtergateway).await,
        Ok(ErrorCode::Success)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn server_only_tls_serves_a_client_without_a_certificate() {
    let (ca, files) = (Ca::new("piccolo-ca"), Files::new());
    let tls = ServerTls::load(files.server(&ca, None)).expect("loads");
    assert!(!tls.client_auth());
    let server = Server::start(tls).await;
    let anonymous = files.client("anonymous", &ca, None);
    assert_eq!(
        server.change_state(&anonymous).await,
        Ok(ErrorCode::Success)
    );
    // A client that does not trust the server's CA refuses it.
    let other = Ca::new("other-ca");
    let doubting = files.client("doubting", &other, None);
    assert!(server.change_state(&doubting).await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn a_reload_serves_new_connections_with_the_new_certificate() {
    let (ca1, ca2, files) = (Ca::new("ca-1"), Ca::new("ca-2"), Files::new());
    let server_files = files.server(&ca1, None);
    let tls = ServerTls::load(server_files.clone()).expect("loads");
    let server = Server::start(tls.clone()).await;
    let trusts_1 = files.client("trusts-1", &ca1, None);
    let trusts_2 = files.client("trusts-2", &ca2, None);
    assert_eq!(server.change_state(&trusts_1).await, Ok(ErrorCode::Success));
    assert!(server.change_state(&trusts_2).await.is_err());

    // The files now hold certificate B, signed by CA 2.
    let b = ca2.server();
    std::fs::write(&server_files.cert, &b.pem).expect("write");
    std::fs::write(&server_files.key, &b.key).expect("write");
    tls.reload().expect("reloads");
    assert!(server.change_state(&trusts_2).await.is_ok());
    assert!(server.change_state(&trusts_1).await.is_err());

    // A broken key file: the reload fails, naming it, and B stays.
    std::fs::write(&server_files.key, "-----BEGIN PRIVATE KEY-----\nAAAA\n").expect("write");
    let error = tls.reload().expect_err("a broken key is refused");
    assert!(
        error
            .to_string()
            .contains(&server_files.key.display().to_string()),
        "{error}"
    );
    assert!(server.change_state(&trusts_2).await.is_ok());
    assert!(server.change_state(&trusts_1).await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_fails_cleanly_and_others_are_still_served() {
    let (ca, files) = (Ca::new("piccolo-ca"), Files::new());
    let tls = ServerTls::load(files.server(&ca, None)).expect("loads");
    let server = Server::start(tls).await;
    let plaintext = server.url.replacen("https://", "http://", 1);
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let client = StateManagerClient::connect(&plaintext).await?;
        client.get_state(ResourceKind::Scenario, "s1").await
    })
    .await
    .expect("fails within 5 s");
    assert!(outcome.is_err(), "{outcome:?}");
    wait_for_failures(&server.tls, 1).await;
    let anonymous = files.client("anonymous", &ca, None);
    assert_eq!(
        server.change_state(&anonymous).await,
        Ok(ErrorCode::Success)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_never_finishes_its_handshake_is_dropped() {
    let (ca, files) = (Ca::new("piccolo-ca"), Files::new());
    let tls = ServerTls::load(files.server(&ca, Some(&ca)))
        .expect("loads")
        .with_handshake_timeout(Duration::from_millis(200));
    let server = Server::start(tls).await;
    let address = server.url.trim_start_matches("https://").to_owned();
    let mut silent = TcpStream::connect(&address).await.expect("connects");
    // Meanwhile another client is served.
    let filtergateway = files.client(
        "filtergateway",
        &ca,
        Some(&ca.client(FILTERGATEWAY, "filtergateway")),
    );
    assert_eq!(
        server.change_state(&filtergateway).await,
        Ok(ErrorCode::Success)
    );
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer))
        .await
        .expect("the server closes the connection within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_for_failures(&server.tls, 1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_action_controller_client_speaks_mutual_tls_and_the_server_sees_its_names() {
    let (ca, files) = (Ca::new("piccolo-ca"), Files::new());
    let tls = ServerTls::load(files.server(&ca, Some(&ca))).expect("loads");
    let double = ActionControllerDouble::start_with_tls(tls.clone()).await;
    assert!(double.url().starts_with("https://"), "{}", double.url());
    let request = ReconcileRequest {
        scenario: "s1".into(),
        package: "p1".into(),
        package_state: "Error".into(),
    };

    let options = ActionControllerOptions {
        tls: Some(files.client(
            "statemanager",
            &ca,
            Some(&ca.client(STATEMANAGER, "statemanager")),
        )),
        ..support::action_options()
    };
    let client = ActionControllerClient::new(&double.url(), &options).expect("valid");
    client.reconcile(request.clone()).await.expect("delivered");
    assert_eq!(double.reconciles().len(), 1);
    assert_eq!(
        double.peers(),
        [Some(PeerCertificate {
            san_uris: vec![STATEMANAGER.to_owned()],
            common_name: Some("statemanager".to_owned()),
        })]
    );

    // Without a client certificate: refused, as unavailable.
    let options = ActionControllerOptions {
        tls: Some(files.client("anonymous", &ca, None)),
        ..support::action_options()
    };
    let client = ActionControllerClient::new(&double.url(), &options).expect("valid");
    let error = client.reconcile(request).await.expect_err("refused");
    assert!(matches!(error, ActionError::Unavailable(_)), "{error:?}");
    assert_eq!(double.reconciles().len(), 1);
    wait_for_failures(&tls, 1).await;
}

#[test]
fn bad_server_files_are_errors_that_name_the_file() {
    let (ca, other, files) = (Ca::new("piccolo-ca"), Ca::new("other-ca"), Files::new());
    let good = files.server(&ca, Some(&ca));
    let missing = files.path().join("missing.pem");
    let not_pem = files.write("not-pem.txt", "hello\n");
    let broken = files.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let (_, other_key) = files.leaf("other", &other.server());
    let check = |files: ServerTlsFiles, path: &PathBuf, expected: &str| {
        let error = ServerTls::load(files).expect_err("refused");
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains(expected),
            "{message:?} names {} and says {expected:?}",
            path.display()
        );
        error
    };

    let error = check(
        ServerTlsFiles {
            cert: missing.clone(),
            ..good.clone()
        },
        &missing,
        "reading the certificate file",
    );
    assert!(matches!(error, TlsError::Read { .. }));
    let error = check(
        ServerTlsFiles {
            cert: not_pem.clone(),
            ..good.clone()
        },
        &not_pem,
        "holds no PEM certificate",
    );
    assert!(matches!(error, TlsError::Missing { .. }));
    check(
        ServerTlsFiles {
            cert: broken.clone(),
            ..good.clone()
        },
        &broken,
        "not valid PEM",
    );
    // The key file holds a certificate, not a key.
    check(
        ServerTlsFiles {
            key: good.cert.clone(),
            ..good.clone()
        },
        &good.cert,
        "holds no PEM private key",
    );
    let error = check(
        ServerTlsFiles {
            key: other_key.clone(),
            ..good.clone()
        },
        &other_key,
        "does not match the certificate",
    );
    assert!(matches!(error, TlsError::KeyMismatch { .. }));
    check(
        ServerTlsFiles {
            client_ca: Some(missing.clone()),
            ..good.clone()
        },
        &missing,
        "reading the CA certificate file",
    );
    check(
        ServerTlsFiles {
            client_ca: Some(not_pem.clone()),
            ..good.clone()
        },
        &not_pem,
        "holds no PEM CA certificate",
    );
    ServerTls::load(good).expect("the good files load");
}

#[tokio::test]
async fn bad_client_settings_are_errors_that_name_the_file() {
    let (ca, files) = (Ca::new("piccolo-ca"), Files::new());
    let address = "https://127.0.0.1:1";
    let complete = files.client("c", &ca, Some(&ca.client(FILTERGATEWAY, "filtergateway")));

    let half = ClientTls {
        key: None,
        ..complete.clone()
    };
    let error = StateManagerClient::connect_lazy_with_tls(address, &half).expect_err("refused");
    assert!(
        error.to_string().contains("cert is set, key is not"),
        "{error}"
    );

    let error = StateManagerClient::connect_lazy(address).expect_err("https needs a CA");
    assert!(
        error.to_string().contains("needs a CA certificate"),
        "{error}"
    );

    let missing = files.path().join("no-ca.pem");
    let options = ActionControllerOptions {
        tls: Some(ClientTls {
            ca: Some(missing.clone()),
            ..complete.clone()
        }),
        ..ActionControllerOptions::default()
    };
    let error = ActionControllerClient::new(address, &options).expect_err("refused");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    let error = StateManagerClient::connect_lazy_with_tls(
        address,
        &ClientTls {
            domain: Some("not a name".into()),
            ..complete.clone()
        },
    )
    .expect_err("refused");
    assert!(error.to_string().contains("not a name"), "{error}");

    StateManagerClient::connect_lazy_with_tls(address, &complete).expect("valid settings");
    // Settings for an http:// address are ignored.
    StateManagerClient::connect_lazy_with_tls("http://127.0.0.1:1", &half).expect("plaintext");
}
