//! The service double answers as upstream's RocksDbService does, quirks
//! included, and the typed client reads those answers right.

use std::time::Duration;

use pullpiri_kv::proto::rocksdbservice as pb;
use pullpiri_kv::proto::rocksdbservice::rocks_db_service_client::RocksDbServiceClient;
use pullpiri_kv::testing::{Answer, RocksDbServiceDouble};
use pullpiri_kv::{CallError, RocksDbClient};

fn client(double: &RocksDbServiceDouble) -> RocksDbClient {
    RocksDbClient::lazy(&double.url(), Duration::from_secs(2), 4 << 20).unwrap()
}

#[tokio::test]
async fn a_missing_key_is_success_false_and_the_client_reads_it_as_none() {
    let double = RocksDbServiceDouble::start().await.unwrap();
    let mut raw = RocksDbServiceClient::connect(double.url()).await.unwrap();
    let answer = raw
        .get(pb::GetRequest {
            key: "/model/none/state".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer,
        pb::GetResponse {
            success: false,
            value: String::new(),
            message: "Key not found".into()
        }
    );

    let client = client(&double);
    assert_eq!(client.get("/model/none/state").await.unwrap(), None);
    client.put("/model/m/state", "Running").await.unwrap();
    assert_eq!(
        client.get("/model/m/state").await.unwrap().as_deref(),
        Some("Running")
    );
    // Deleting a missing key succeeds.
    client.delete("/model/none/state").await.unwrap();
    client.delete("/model/m/state").await.unwrap();
    assert_eq!(client.get("/model/m/state").await.unwrap(), None);
    assert!(double.calls().iter().all(|call| call.answer == Answer::Ok));
}

#[tokio::test]
async fn bad_keys_are_refused_with_invalid_argument() {
    let double = RocksDbServiceDouble::start().await.unwrap();
    let client = client(&double);
    let long = "k".repeat(1025);
    for key in ["", "a<b", "a>b", "a?b", "a{b", "a}b", long.as_str()] {
        let error = client.put(key, "v").await.unwrap_err();
        assert!(error.is_refused(), "{key:?}: {error}");
    }
    client.put(&"k".repeat(1024), "v").await.unwrap();

    // One bad key refuses the whole batch.
    let pairs = vec![
        ("good".to_owned(), "1".to_owned()),
        ("{bad}".to_owned(), "2".to_owned()),
    ];
    assert!(client.batch_put(&pairs).await.unwrap_err().is_refused());
    assert_eq!(double.get("good"), None);
    assert_eq!(client.batch_put(&pairs[..1]).await.unwrap(), 1);
    assert_eq!(double.get("good").as_deref(), Some("1"));

    // Get and Delete refuse only the empty key.
    assert!(client.get("").await.unwrap_err().is_refused());
    assert!(client.delete("").await.unwrap_err().is_refused());
    assert_eq!(client.get("a{b").await.unwrap(), None);
    double.put("a{b", "written around the service");
    client.delete("a{b").await.unwrap();
    assert_eq!(double.get("a{b"), None);
    assert_eq!(double.refusals(), 10);
}

#[tokio::test]
async fn get_by_prefix_ignores_limit_and_refuses_an_empty_prefix() {
    let double = RocksDbServiceDouble::start().await.unwrap();
    for i in 0..5 {
        double.put(format!("Model/m{i}"), format!("{i}"));
    }
    double.put("Package/p", "p");
    let mut raw = RocksDbServiceClient::connect(double.url()).await.unwrap();
    let answer = raw
        .get_by_prefix(pb::GetByPrefixRequest {
            prefix: "Model/".into(),
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.pairs.len(), 5);
    assert_eq!(answer.total_count, 5);
    let refused = raw
        .get_by_prefix(pb::GetByPrefixRequest {
            prefix: String::new(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let client = client(&double);
    let pairs = client.get_by_prefix("Model/").await.unwrap();
    assert_eq!(pairs.len(), 5);
    assert_eq!(pairs[0], ("Model/m0".to_owned(), "0".to_owned()));
    assert!(client.get_by_prefix("").await.unwrap_err().is_refused());

    // ListKeys honours its limit and lists everything for an empty prefix.
    assert_eq!(
        client.list_keys("Model/", 2).await.unwrap(),
        ["Model/m0", "Model/m1"]
    );
    assert_eq!(client.list_keys("", 0).await.unwrap().len(), 6);
    assert_eq!(client.health().await.unwrap().status, "healthy");
}

#[tokio::test]
async fn outages_are_errors_with_a_deadline_and_the_client_reconnects() {
    let mut double = RocksDbServiceDouble::start().await.unwrap();
    let client = RocksDbClient::lazy(&double.url(), Duration::from_millis(300), 4 << 20).unwrap();
    client.put("k", "1").await.unwrap();

    double.set_unavailable(true);
    let error = client.get("k").await.unwrap_err();
    assert!(
        matches!(&error, CallError::Status { .. }) && !error.service_answered(),
        "{error}"
    );
    assert_eq!(
        double.calls().last().map(|call| call.answer),
        Some(Answer::Unavailable)
    );
    double.set_unavailable(false);

    double.stop().await;
    assert!(!double.is_serving());
    let error = client.get("k").await.unwrap_err();
    assert!(!error.is_refused() && !error.service_answered(), "{error}");

    double.restart().await.unwrap();
    // The keys survived the restart, and the same client reconnects (within
    // 10 s).
    let mut value = None;
    for _ in 0..500 {
        if let Ok(found) = client.get("k").await {
            value = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(value.as_deref(), Some("1"));

    // A slow service runs into the deadline.
    double.set_delay(Duration::from_secs(2));
    let error = client.get("k").await.unwrap_err();
    assert!(matches!(error, CallError::Timeout { .. }), "{error}");
}
