//! EtcdStore against a real etcd: the state-store conformance suite, and the
//! etcd-specific behaviour around it (paging limits, key encoding, error
//! mapping, authentication).

mod support;

use std::time::Duration;

use etcd_harness::Etcd;
use futures::StreamExt;
use state_store::{Batch, ListOptions, StateStore, StoreError, conformance};
use store_etcd::{Credentials, EtcdConfig, EtcdStore};
use support::{connect, start_etcd, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    conformance::run_all(&store, "/conformance").await;
    conformance::too_large(&store, "/conformance-too-large/", 128).await;
}

#[tokio::test]
async fn guard_zero_means_absent_in_etcd_too() {
    let etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    let first = store
        .apply(Batch::new().guard("/g/k", 0).put("/g/k", "1"))
        .await
        .expect("a guard 0 on an absent key holds");
    assert_eq!(
        store
            .apply(Batch::new().guard("/g/k", 0).put("/g/k", "2"))
            .await,
        Err(StoreError::GuardFailed {
            key: "/g/k".into(),
            expected: 0,
            actual: first.revision
        })
    );
    store.delete("/g/k").await.unwrap();
    store
        .apply(Batch::new().guard("/g/k", 0).put("/g/k", "3"))
        .await
        .expect("after a delete the key is absent again");
}

#[tokio::test]
async fn large_listings_are_paged_within_the_grpc_message_limit() {
    let etcd = start_etcd();
    let mut config = test_config(&etcd);
    config.page_size = 100;
    let store = connect(config).await;
    // 40 keys of 200 KiB: 8 MiB, twice gRPC's default 4 MiB message limit.
    let value = vec![b'x'; 200 * 1024];
    for chunk in 0..8 {
        // 1 MiB per transaction: under etcd's 1.5 MiB request limit.
        let batch = (0..5).fold(Batch::new(), |batch, i| {
            batch.put(format!("/big/{:03}", chunk * 5 + i), value.clone())
        });
        store.apply(batch).await.unwrap();
    }
    let too_big = (0..10).fold(Batch::new(), |batch, i| {
        batch.put(format!("/big/x{i}"), value.clone())
    });
    match store.apply(too_big).await {
        Err(StoreError::InvalidRequest { message, .. }) => {
            assert!(message.contains("request is too large"), "{message}")
        }
        other => panic!("a 2 MiB transaction exceeds etcd's request limit: {other:?}"),
    }
    let (all, _) = state_store::get_all(&store, "/big/", 7).await.unwrap();
    assert_eq!(all.len(), 40);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    let page = store
        .get_prefix("/big/", ListOptions::default())
        .await
        .expect("one page of 8 MiB fits max_response_bytes");
    assert_eq!((page.kvs.len(), page.more), (40, false));
    let page = store
        .get_prefix(
            "/big/",
            ListOptions {
                start_after: Some("/zzz".into()),
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert!(
        page.kvs.is_empty() && !page.more,
        "start_after past the prefix"
    );
}

#[tokio::test]
async fn non_utf8_keys_are_bad_data_not_panics() {
    let etcd = start_etcd();
    let store = connect(test_config(&etcd)).await;
    let mut raw = store.client();
    let mut watch = store.watch("/bin/", 0).await.unwrap();
    raw.put(b"/bin/\xff\xfe".to_vec(), "v", None).await.unwrap();
    assert!(matches!(
        store.get_prefix("/bin/", ListOptions::default()).await,
        Err(StoreError::BadData { .. })
    ));
    let item = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch reports the bad key");
    assert!(
        matches!(item, Some(Err(StoreError::BadData { .. }))),
        "{item:?}"
    );
    assert!(
        watch.next().await.is_none(),
        "the stream ends after an error"
    );
}

#[tokio::test]
async fn a_lower_server_txn_limit_is_reported_as_too_large() {
    let etcd = Etcd::builder().arg("--max-txn-ops=4").start().unwrap();
    let store = connect(test_config(&etcd)).await;
    let batch = (0..5).fold(Batch::new(), |b, i| b.put(format!("/t/{i}"), "v"));
    assert!(matches!(
        store.apply(batch).await,
        Err(StoreError::TooLarge { .. })
    ));
}

/// PEM files of a test CA, a server certificate for 127.0.0.1 and a client
/// certificate, all signed by the CA.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        write("ca.pem", ca.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            params.distinguished_name.push(DnType::CommonName, file);
            write(
                &format!("{file}.pem"),
                params.signed_by(&key, &issuer).unwrap().pem(),
            );
            write(&format!("{file}-key.pem"), key.serialize_pem());
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "client");
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let etcd = Etcd::builder()
        .client_tls(etcd_harness::ClientTls {
            cert_file: pki.path("server.pem"),
            key_file: pki.path("server-key.pem"),
            trusted_ca_file: Some(pki.path("ca.pem")),
            client_cert_auth: true,
        })
        .start()
        .unwrap();
    assert!(etcd.endpoint().starts_with("https://"));
    let tls = |with_client_cert: bool| store_etcd::TlsConfig {
        ca_cert: Some(pki.path("ca.pem")),
        client_cert: with_client_cert.then(|| pki.path("client.pem")),
        client_key: with_client_cert.then(|| pki.path("client-key.pem")),
        domain_name: None,
    };

    let store = connect(EtcdConfig {
        tls: Some(tls(true)),
        ..test_config(&etcd)
    })
    .await;
    let mut watch = store.watch("/tls/", 0).await.unwrap();
    let applied = store
        .apply(Batch::new().guard("/tls/k", 0).put("/tls/k", "v"))
        .await
        .expect("a write over mutual TLS");
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kv.mod_revision, applied.revision);

    // Without a client certificate etcd refuses the connection.
    let anonymous = connect(EtcdConfig {
        tls: Some(tls(false)),
        ..test_config(&etcd)
    })
    .await;
    let error = anonymous.get("/tls/k").await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");

    // A missing certificate file is a clear configuration error.
    let mut broken = tls(true);
    broken.ca_cert = Some(pki.path("missing.pem"));
    match EtcdStore::connect(EtcdConfig {
        tls: Some(broken),
        ..test_config(&etcd)
    })
    .await
    {
        Err(StoreError::InvalidRequest { message, .. }) => {
            assert!(message.contains("missing.pem"), "{message}")
        }
        other => panic!("expected InvalidRequest naming the file, got {other:?}"),
    }
}

#[tokio::test]
async fn user_and_password_authentication() {
    let etcd = start_etcd();
    let mut admin = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let with = |user: &str, password: &str| EtcdConfig {
        credentials: Some(Credentials {
            user: user.into(),
            password: password.into(),
        }),
        ..test_config(&etcd)
    };
    let store = connect(with("root", "root-pw")).await;
    store
        .apply(Batch::new().put("/auth/k", "v"))
        .await
        .expect("an authenticated write");
    assert_eq!(
        store.get("/auth/k").await.unwrap().unwrap().value,
        b"v".to_vec()
    );

    match EtcdStore::connect(with("root", "wrong")).await {
        Err(StoreError::InvalidRequest { message, .. }) => {
            assert!(message.contains("authentication failed"), "{message}")
        }
        other => panic!("a wrong password must be a clear, permanent error: {other:?}"),
    }
    let anonymous = connect(test_config(&etcd)).await;
    let error = anonymous.get("/auth/k").await.unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRequest { .. }),
        "no credentials on an etcd with auth: {error:?}"
    );
}
