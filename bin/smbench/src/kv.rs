//! Direct etcd access with one `etcd_client::Client` (cloned, one
//! connection): paged range reads, bulk writes in transactions of at most
//! 128 puts, the store's revision.

use anyhow::{Context, Result};
use etcd_client::{Client, GetOptions, Txn, TxnOp};
use futures::StreamExt;

/// Keys per page of a range read.
pub const PAGE: i64 = 10_000;
/// Puts per transaction (etcd's default `--max-txn-ops`).
pub const TXN_OPS: usize = 128;

/// Connects to etcd at `url`, or at every member of a comma-separated list
/// (no network until the first call).
pub async fn connect(url: &str) -> Result<Client> {
    let endpoints: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    Client::connect(endpoints, None)
        .await
        .with_context(|| format!("connecting to etcd at {url}"))
}

/// The end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd's current revision (from the header of a small read).
pub async fn revision(kv: &Client) -> Result<i64> {
    let response = kv
        .clone()
        .get("/smbench/revision-probe", None)
        .await
        .context("reading etcd's revision")?;
    Ok(response.header().map(|h| h.revision()).unwrap_or(0))
}

/// Every key (and value, unless `keys_only`) in `[start, end)`, read in
/// pages of [`PAGE`] keys at one revision. Returns the pairs and that revision.
pub async fn read_range(
    kv: &Client,
    start: Vec<u8>,
    end: Vec<u8>,
    keys_only: bool,
) -> Result<(Vec<(String, String)>, i64)> {
    // Pages of definitions can pass tonic's default 4 MiB answer limit.
    let mut kv = kv.kv_client().max_decoding_message_size(256 * 1024 * 1024);
    let mut out = Vec::new();
    let mut from = start;
    let mut at_revision = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if keys_only {
            options = options.with_keys_only();
        }
        if at_revision > 0 {
            options = options.with_revision(at_revision);
        }
        let response = kv
            .get(from.clone(), Some(options))
            .await
            .context("range read")?;
        if at_revision == 0 {
            at_revision = response.header().map(|h| h.revision()).unwrap_or(0);
        }
        for pair in response.kvs() {
            out.push((
                String::from_utf8_lossy(pair.key()).into_owned(),
                String::from_utf8_lossy(pair.value()).into_owned(),
            ));
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((out, at_revision)),
        }
    }
}

/// Every key with `prefix`, paged.
pub async fn read_prefix(
    kv: &Client,
    prefix: &str,
    keys_only: bool,
) -> Result<Vec<(String, String)>> {
    Ok(read_range(
        kv,
        prefix.as_bytes().to_vec(),
        prefix_end(prefix),
        keys_only,
    )
    .await?
    .0)
}

/// Writes `pairs` in transactions of at most [`TXN_OPS`] puts, `concurrency` at a time.
pub async fn put_all(kv: &Client, pairs: Vec<(String, String)>, concurrency: usize) -> Result<()> {
    let chunks: Vec<Vec<(String, String)>> = pairs
        .chunks(TXN_OPS)
        .map(<[(String, String)]>::to_vec)
        .collect();
    let results: Vec<Result<()>> = futures::stream::iter(chunks)
        .map(|chunk| {
            let mut kv = kv.clone();
            async move {
                let ops: Vec<TxnOp> = chunk
                    .into_iter()
                    .map(|(k, v)| TxnOp::put(k, v, None))
                    .collect();
                kv.txn(Txn::new().and_then(ops)).await.context("bulk txn")?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }
}
