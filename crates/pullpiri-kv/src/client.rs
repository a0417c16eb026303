//! [`RocksDbClient`]: the service's rpcs as typed calls, each with a deadline,
//! and its answers sorted into values and [`CallError`]s in one place.

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

use crate::proto::rocksdbservice as pb;
use crate::proto::rocksdbservice::rocks_db_service_client::RocksDbServiceClient;
use crate::{BridgeError, CallError};

/// A client of upstream's RocksDbService.
///
/// Every call, connecting included, is bounded by the request timeout, and
/// its answer is checked: an error status, a timeout,
/// `success: false` or a non-empty `error` field all become a [`CallError`],
/// except where the service uses them for "not found" ([`get`](Self::get)).
/// Cheap to clone; clones share one connection.
#[derive(Debug, Clone)]
pub struct RocksDbClient {
    inner: RocksDbServiceClient<Channel>,
    timeout: Duration,
}

/// What [`RocksDbClient::health`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `healthy`, `busy` or `error`.
    pub status: String,
    /// The service's version.
    pub version: String,
    /// Where the service keeps its database.
    pub database_path: String,
}

impl RocksDbClient {
    /// A client of the service at `url` (`http://host:port`) that connects
    /// on its first call, and again after the service went away, so it can be
    /// created while the service is down. Must be called inside a Tokio
    /// runtime.
    ///
    /// Refuses a URL that is not `http://` with a host: upstream's service
    /// speaks plain gRPC.
    pub fn lazy(
        url: &str,
        request_timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<Self, BridgeError> {
        // The deadline is enforced in `call` alone, so that running into it
        // is always a `CallError::Timeout` (tonic's own timeout would answer
        // CANCELLED).
        let endpoint = endpoint(url)?
            .connect_timeout(request_timeout)
            .tcp_nodelay(true);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BridgeError::NoRuntime);
        }
        let inner = RocksDbServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self {
            inner,
            timeout: request_timeout,
        })
    }

    /// Health: whether the service is up and what it says about itself.
    pub async fn health(&self) -> Result<Health, CallError> {
        let mut client = self.inner.clone();
        let answer = self
            .call("Health", client.health(Request::new(pb::HealthRequest {})))
            .await?;
        Ok(Health {
            status: answer.status,
            version: answer.version,
            database_path: answer.database_path,
        })
    }

    /// Get: the value of `key`, `None` when it does not exist (the service
    /// answers a missing key with `success: false`, not an error status).
    pub async fn get(&self, key: &str) -> Result<Option<String>, CallError> {
        let mut client = self.inner.clone();
        let request = Request::new(pb::GetRequest {
            key: key.to_owned(),
        });
        let answer = self.call("Get", client.get(request)).await?;
        Ok(answer.success.then_some(answer.value))
    }

    /// Put: stores one key.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), CallError> {
        let mut client = self.inner.clone();
        let request = Request::new(pb::PutRequest {
            key: key.to_owned(),
            value: value.to_owned(),
        });
        let answer = self.call("Put", client.put(request)).await?;
        succeeded("Put", answer.success, answer.error)
    }

    /// Delete: removes one key (succeeds when it was absent too).
    pub async fn delete(&self, key: &str) -> Result<(), CallError> {
        let mut client = self.inner.clone();
        let request = Request::new(pb::DeleteRequest {
            key: key.to_owned(),
        });
        let answer = self.call("Delete", client.delete(request)).await?;
        succeeded("Delete", answer.success, answer.error)
    }

    /// BatchPut: stores every pair, all or nothing; the service refuses the
    /// whole batch when one key is bad. Returns how many pairs it stored.
    /// An empty batch is not sent.
    pub async fn batch_put(&self, pairs: &[(String, String)]) -> Result<usize, CallError> {
        if pairs.is_empty() {
            return Ok(0);
        }
        let mut client = self.inner.clone();
        let request = Request::new(pb::BatchPutRequest {
            pairs: pairs
                .iter()
                .map(|(key, value)| pb::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        });
        let answer = self.call("BatchPut", client.batch_put(request)).await?;
        succeeded("BatchPut", answer.success, answer.error)?;
        Ok(usize::try_from(answer.processed_count).unwrap_or(0))
    }

    /// GetByPrefix: every key starting with `prefix` and its value. The
    /// service reads everything and ignores a limit, so none is sent; it
    /// refuses an empty prefix. Pairs outside `prefix` are dropped.
    pub async fn get_by_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, CallError> {
        let mut client = self.inner.clone();
        let request = Request::new(pb::GetByPrefixRequest {
            prefix: prefix.to_owned(),
            limit: 0,
        });
        let answer = self
            .call("GetByPrefix", client.get_by_prefix(request))
            .await?;
        succeeded("GetByPrefix", true, answer.error)?;
        Ok(answer
            .pairs
            .into_iter()
            .filter(|pair| pair.key.starts_with(prefix))
            .map(|pair| (pair.key, pair.value))
            .collect())
    }

    /// ListKeys: the keys starting with `prefix` (every key for an empty
    /// one), at most `limit` of them (0: all).
    pub async fn list_keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, CallError> {
        let mut client = self.inner.clone();
        let request = Request::new(pb::ListKeysRequest {
            prefix: prefix.to_owned(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
        });
        let answer = self.call("ListKeys", client.list_keys(request)).await?;
        succeeded("ListKeys", true, answer.error)?;
        Ok(answer
            .keys
            .into_iter()
            .filter(|key| key.starts_with(prefix))
            .collect())
    }

    /// Awaits one rpc at most the request timeout and sorts its outcome.
    async fn call<T>(
        &self,
        call: &'static str,
        rpc: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, rpc).await {
            Err(_) => Err(CallError::Timeout {
                call,
                after: self.timeout,
            }),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(CallError::Timeout {
                    call,
                    after: self.timeout,
                })
            }
            Ok(Err(status)) => Err(CallError::from_status(call, status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

/// `Ok` when the answer says so: `success` set and no `error` text.
fn succeeded(call: &'static str, success: bool, error: String) -> Result<(), CallError> {
    if success && error.is_empty() {
        Ok(())
    } else {
        let message = if error.is_empty() {
            "no reason given".to_owned()
        } else {
            error
        };
        Err(CallError::Unsuccessful { call, message })
    }
}

/// The endpoint of `url`, when it is `http://host[:port][/]`.
fn endpoint(url: &str) -> Result<Endpoint, BridgeError> {
    let bad = |reason: &str| BridgeError::BadUrl {
        url: url.escape_debug().to_string(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|error| bad(&format!("not a URL ({error})")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported: upstream's RocksDbService speaks plain gRPC; use http://",
            ));
        }
        Some(other) => return Err(bad(&format!("the scheme '{other}' is not http"))),
        None => return Err(bad("no scheme; write http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host; write http://host:port"));
    }
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    if let Some((_, port)) = authority.rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(bad(&format!("the port '{port}' is not a number")));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("a path is not allowed; write http://host:port"));
    }
    Endpoint::from_shared(url.to_owned()).map_err(|error| bad(&error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://localhost:47007", None),
            ("http://127.0.0.1:47007/", None),
            ("http://[::1]:47007", None),
            ("http://rocksdb", None),
            ("https://localhost:47007", Some("https is not supported")),
            ("localhost:47007", Some("scheme")),
            (
                "grpc://localhost:47007",
                Some("the scheme 'grpc' is not http"),
            ),
            ("", Some("not a URL")),
            ("http://", Some("not a URL")),
            ("http://host:port", Some("the port 'port' is not a number")),
            ("http://host:99999", Some("not a number")),
            ("http://[::1]", None),
            ("http://localhost:47007/kv", Some("a path is not allowed")),
            ("http://local host", Some("not a URL")),
        ];
        for (url, error) in cases {
            match (endpoint(url), error) {
                (Ok(_), None) => {}
                (Err(BridgeError::BadUrl { reason, .. }), Some(expected)) => {
                    assert!(reason.contains(expected), "{url:?}: {reason}");
                }
                (other, _) => panic!("{url:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn answers_without_success_are_errors() {
        assert!(succeeded("Put", true, String::new()).is_ok());
        let failed = succeeded("Put", false, String::new()).unwrap_err();
        assert_eq!(
            failed.to_string(),
            "RocksDbService Put did not succeed: no reason given"
        );
        let failed = succeeded("GetByPrefix", true, "disk full".into()).unwrap_err();
        assert!(failed.to_string().ends_with("disk full"));
    }

    #[test]
    fn a_client_needs_a_runtime() {
        assert_eq!(
            RocksDbClient::lazy("http://localhost:47007", Duration::from_secs(1), 1 << 22)
                .map(|_| ()),
            Err(BridgeError::NoRuntime)
        );
    }
}
