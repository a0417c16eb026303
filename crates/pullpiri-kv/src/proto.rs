//! Code generated from `proto/rocksdbservice.proto` by `build.rs`
//! (tonic-prost-build with the system protoc). Not committed: it is rebuilt
//! from the `.proto` file.

/// `package rocksdbservice`: upstream Pullpiri's RocksDbService, its client
/// and server traits and its messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod rocksdbservice {
    include!(concat!(env!("OUT_DIR"), "/rocksdbservice.rs"));
}
