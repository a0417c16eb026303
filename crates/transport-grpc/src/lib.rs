//! The StateManager's gRPC edge (WIRE-PROTOCOL.md).
//!
//! - [`server`]: the Pullpiri-compatible `statemanager.StateManagerConnection`
//!   service over an [`engine::EngineHandle`], and [`serve`] to run it with the
//!   `grpc.health.v1` and reflection services;
//! - [`action_controller`]: the ActionController client, implementing the
//!   engine's [`engine::ActionPort`];
//! - [`client`]: a typed [`StateManagerClient`] other components can link;
//! - [`codec`]: the service's codec (a request that cannot be decoded is
//!   `InvalidArgument`);
//! - [`convert`]: every protobuf <-> engine/core conversion and every mapping
//!   of errors to `ErrorCode` and gRPC `Status`, in one place;
//! - [`peer`]: the caller's client certificate, as authorization sees it;
//! - [`tls`]: TLS and mutual TLS for the server (certificates reloadable
//!   at run time) and the clients;
//! - [`proto`]: the code generated from `proto/*.proto` at build time.
//!
//! The engine never sees protobuf types: this crate translates at the edge.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod action_controller;
pub mod client;
pub mod codec;
pub mod convert;
pub mod forward;
pub mod lean;
pub mod peer;
pub mod proto;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use action_controller::{ActionControllerClient, ActionControllerOptions};
pub use client::{ClientError, StateManagerClient};
pub use peer::PeerCertificate;
pub use server::{Engines, ServeError, ServeOptions, StateManagerService, serve, serve_member};
pub use tls::{ClientTls, ServerTls, ServerTlsFiles, TlsError};
