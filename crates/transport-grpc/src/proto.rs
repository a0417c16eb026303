//! Code generated from `proto/*.proto` by `build.rs` (tonic-prost-build with
//! the system protoc). Not committed: it is rebuilt from the `.proto` files.

/// `package monitoringserver`: the container list a NodeAgent sends.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod monitoringserver {
    include!(concat!(env!("OUT_DIR"), "/monitoringserver.rs"));
}

/// `package statemanager`: the StateManager's service and messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod statemanager {
    include!(concat!(env!("OUT_DIR"), "/statemanager.rs"));
}

/// `package actioncontroller`: the ActionController's service, whose
/// client the StateManager is.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod actioncontroller {
    include!(concat!(env!("OUT_DIR"), "/actioncontroller.rs"));
}

/// The encoded file descriptor set of `statemanager.proto` and
/// `monitoringserver.proto`, served by the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/statemanager_descriptor.bin"));
