//! `SendChangedContainerList` decoded straight into the engine's report.
//!
//! A NodeAgent report carries, per container, podman's state map: about
//! eleven strings in a hash map, of which the rules read five. Decoding it
//! into the generated `ContainerInfo` cost most of the server's time on a
//! report that changes nothing and most of its memory while reports wait. Here the
//! request is read from the same wire format (`monitoringserver.ContainerList`,
//! field numbers per WIRE-PROTOCOL.md) by [`LeanContainerList`]: the state map
//! is validated and reduced to the derived
//! [`ContainerState`](statemachine_core::ContainerState) without
//! allocating a string, its entries borrowed from the request buffer.
//! Everything else keeps protobuf's rules: unknown fields are skipped, a
//! wrong wire type, a truncated field or a string that is not UTF-8 is a
//! decode error, answered `InvalidArgument` ([`crate::codec`]).
//!
//! [`WithLeanReports`] routes that one method here and every other one to
//! the generated server.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use statemachine_core::{ContainerStateFold, NodeReport, ReportedContainer};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::codec::ServiceCodec;
use crate::convert;
use crate::proto::monitoringserver as ms;
use crate::server::StateManagerService;

/// The method [`WithLeanReports`] serves itself.
pub const REPORT_PATH: &str = "/statemanager.StateManagerConnection/SendChangedContainerList";

/// A `monitoringserver.ContainerList` decoded into the engine's
/// [`NodeReport`], each container's state derived while decoding
/// ([`ReportedContainer::derived`], an empty `state` map).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeanContainerList {
    /// The report.
    pub report: NodeReport,
}

impl LeanContainerList {
    /// The decoded report.
    pub fn into_report(mut self) -> NodeReport {
        // It may wait in the engine's queue: no spare capacity.
        self.report.containers.shrink_to_fit();
        self.report
    }
}

/// One `ContainerInfo`, read from its bytes.
fn container(mut buf: &[u8], ctx: DecodeContext) -> Result<ReportedContainer, DecodeError> {
    let mut container = ReportedContainer::default();
    let mut state = ContainerStateFold::default();
    while !buf.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut buf)?;
        let field = match tag {
            1 => encoding::string::merge(wire_type, &mut container.id, &mut buf, ctx.clone()),
            2 => encoding::string::merge_repeated(
                wire_type,
                &mut container.names,
                &mut buf,
                ctx.clone(),
            ),
            4 => entry(wire_type, &mut buf, ctx.clone()).map(|(k, v)| state.add(k, v)),
            5 => string_map(wire_type, &mut container.config, &mut buf, ctx.clone()),
            6 => string_map(wire_type, &mut container.annotations, &mut buf, ctx.clone()),
            // Unused, but checked as the generated decoder checks them.
            3 => length_delimited(wire_type, &mut buf)
                .and_then(str_of)
                .map(drop),
            7 => entry(wire_type, &mut buf, ctx.clone()).map(drop),
            _ => encoding::skip_field(wire_type, tag, &mut buf, ctx.clone()),
        };
        field.map_err(|mut e| {
            e.push("ContainerInfo", field_name(tag));
            e
        })?;
    }
    container.derived = Some(state.state());
    // A first push reserves room for four names; there is usually one.
    container.names.shrink_to_fit();
    Ok(container)
}

fn field_name(tag: u32) -> &'static str {
    match tag {
        1 => "id",
        2 => "names",
        3 => "image",
        4 => "state",
        5 => "config",
        6 => "annotation",
        7 => "stats",
        _ => "unknown",
    }
}

/// A decode error of our own making. (`DecodeError::new` is deprecated for
/// use outside prost but remains its only constructor for a custom message.)
#[allow(deprecated)]
fn invalid(description: &'static str) -> DecodeError {
    DecodeError::new(description)
}

/// The bytes of a length-delimited field, borrowed.
fn length_delimited<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = encoding::decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= buf.len())
        .ok_or_else(|| invalid("buffer underflow"))?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn str_of(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes)
        .map_err(|_| invalid("invalid string value: data is not UTF-8 encoded"))
}

/// One `map<string, string>` entry, borrowed (a missing key or value is "").
fn entry<'a>(
    wire_type: WireType,
    buf: &mut &'a [u8],
    ctx: DecodeContext,
) -> Result<(&'a str, &'a str), DecodeError> {
    let mut entry = length_delimited(wire_type, buf)?;
    let (mut key, mut value) = ("", "");
    while !entry.is_empty() {
        let (tag, wire_type) = encoding::decode_key(&mut entry)?;
        match tag {
            1 => key = str_of(length_delimited(wire_type, &mut entry)?)?,
            2 => value = str_of(length_delimited(wire_type, &mut entry)?)?,
            _ => encoding::skip_field(wire_type, tag, &mut entry, ctx.clone())?,
        }
    }
    Ok((key, value))
}

fn string_map(
    wire_type: WireType,
    map: &mut std::collections::HashMap<String, String>,
    buf: &mut &[u8],
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let (key, value) = entry(wire_type, buf, ctx)?;
    map.insert(key.to_owned(), value.to_owned());
    Ok(())
}

impl Message for LeanContainerList {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        generated(&self.report).encode_raw(buf)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let field = match tag {
            1 => encoding::string::merge(wire_type, &mut self.report.node, buf, ctx),
            2 => container_field(wire_type, buf, ctx).map(|c| self.report.containers.push(c)),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        };
        field.map_err(|mut e| {
            let field = match tag {
                1 => "node_name",
                2 => "containers",
                _ => "unknown",
            };
            e.push("ContainerList", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        generated(&self.report).encoded_len()
    }

    fn clear(&mut self) {
        self.report = NodeReport::default();
    }
}

/// A `containers` field: read in place when the buffer holds it in one
/// piece (tonic's does), else from a copy.
fn container_field(
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<ReportedContainer, DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = encoding::decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= buf.remaining())
        .ok_or_else(|| invalid("buffer underflow"))?;
    if buf.chunk().len() >= len {
        let parsed = container(&buf.chunk()[..len], ctx);
        buf.advance(len);
        parsed
    } else {
        container(&buf.copy_to_bytes(len), ctx)
    }
}

/// The generated message for the same report (encoding is not on any hot
/// path: the server only decodes this type).
fn generated(report: &NodeReport) -> ms::ContainerList {
    ms::ContainerList {
        node_name: report.node.clone(),
        containers: report
            .containers
            .iter()
            .cloned()
            .map(convert::container_info)
            .collect(),
    }
}

/// The generated `StateManagerConnection` server with
/// `SendChangedContainerList` decoded by [`LeanContainerList`].
#[derive(Clone)]
pub struct WithLeanReports<S> {
    inner: S,
    service: Arc<StateManagerService>,
    max_message_bytes: usize,
}

impl<S> WithLeanReports<S> {
    /// Serves reports with `service`, decoding at most `max_message_bytes`,
    /// and everything else with `inner`.
    pub fn new(inner: S, service: StateManagerService, max_message_bytes: usize) -> Self {
        Self {
            inner,
            service: Arc::new(service),
            max_message_bytes,
        }
    }
}

impl<S: NamedService> NamedService for WithLeanReports<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for WithLeanReports<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != REPORT_PATH {
            return Box::pin(self.inner.call(request));
        }
        let method = ReportMethod(self.service.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let codec = ServiceCodec::<ms::SendContainerListResponse, LeanContainerList>::default();
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct ReportMethod(Arc<StateManagerService>);

impl tonic::server::UnaryService<LeanContainerList> for ReportMethod {
    type Response = ms::SendContainerListResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<LeanContainerList>) -> Self::Future {
        let service = self.0.clone();
        let within = crate::server::caller_deadline(request.metadata());
        Box::pin(async move {
            // SECURITY: with an access policy, the caller may report only
            // the nodes its identity allows (nothing is applied otherwise).
            service.authorize_report(&request, &request.get_ref().report.node)?;
            service
                .report(request.into_inner().into_report(), within)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use statemachine_core::ContainerState;

    use super::*;

    fn podman(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn list(containers: Vec<ms::ContainerInfo>) -> ms::ContainerList {
        ms::ContainerList {
            node_name: "node-1".into(),
            containers,
        }
    }

    fn info(name: &str, state: HashMap<String, String>) -> ms::ContainerInfo {
        ms::ContainerInfo {
            id: format!("id-{name}"),
            names: vec![format!("/{name}"), "alias".into()],
            image: "registry/x:1".into(),
            state,
            config: podman(&[("model", "m1")]),
            annotation: podman(&[("pullpiri.model", "m1"), ("other", "x")]),
            stats: podman(&[("cpu", "3")]),
        }
    }

    /// The lean decoding equals the generated decoding followed by
    /// `convert::node_report`.
    fn same_as_generated(message: &ms::ContainerList) {
        let bytes = message.encode_to_vec();
        let lean = LeanContainerList::decode(bytes.as_slice())
            .unwrap()
            .into_report();
        let full = convert::node_report(ms::ContainerList::decode(bytes.as_slice()).unwrap());
        assert_eq!(lean, full);
    }

    #[test]
    fn decodes_like_the_generated_message() {
        same_as_generated(&list(vec![
            info("a", podman(&[("Status", "exited"), ("ExitCode", "137")])),
            info("b", podman(&[("Status", "running"), ("Pid", "4")])),
            info(
                "c",
                podman(&[
                    ("Status", "stopped"),
                    ("ExitCode", "0"),
                    ("OOMKilled", "true"),
                ]),
            ),
            info("d", HashMap::new()),
        ]));
        same_as_generated(&list(Vec::new()));
        same_as_generated(&ms::ContainerList::default());
    }

    #[test]
    fn a_buffer_in_pieces_decodes_the_same() {
        let message = list(vec![
            info("a", podman(&[("Status", "exited"), ("ExitCode", "1")])),
            info("b", podman(&[("Status", "running")])),
        ]);
        let bytes = message.encode_to_vec();
        let whole = LeanContainerList::decode(bytes.as_slice()).unwrap();
        for cut in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let (a, b) = bytes.split_at(cut);
            let pieces = LeanContainerList::decode(a.chain(b)).unwrap();
            assert_eq!(pieces, whole, "cut at {cut}");
        }
    }

    #[test]
    fn the_state_map_is_reduced_to_the_derived_state() {
        let bytes = list(vec![info("a", podman(&[("status", "PAUSED")]))]).encode_to_vec();
        let report = LeanContainerList::decode(bytes.as_slice())
            .unwrap()
            .into_report();
        let container = &report.containers[0];
        assert!(container.state.is_empty());
        assert_eq!(container.derived, Some(ContainerState::Paused));
        assert_eq!(container.names, ["/a", "alias"]);
        assert_eq!(container.annotations.len(), 2);
    }

    #[test]
    fn bad_input_is_a_decode_error() {
        let good = list(vec![info("a", podman(&[("Status", "running")]))]).encode_to_vec();
        // Truncated anywhere: the same verdict as the generated decoder
        // (a cut at a field boundary is a valid, shorter message).
        let mut errors = 0;
        for cut in 1..good.len() {
            let lean = LeanContainerList::decode(&good[..cut]).map(LeanContainerList::into_report);
            let full = ms::ContainerList::decode(&good[..cut]).map(convert::node_report);
            assert_eq!(lean.is_ok(), full.is_ok(), "truncated at {cut}");
            if let (Ok(lean), Ok(full)) = (&lean, &full) {
                assert_eq!(lean, full, "truncated at {cut}");
            }
            errors += usize::from(lean.is_err());
        }
        assert!(errors > good.len() / 2, "most cuts are errors: {errors}");
        // A state value that is not UTF-8.
        let mut entry = Vec::new();
        encoding::string::encode(1, &"Status".to_owned(), &mut entry);
        encoding::bytes::encode(2, &vec![0xff, 0xfe], &mut entry);
        let mut container = Vec::new();
        encoding::bytes::encode(4, &entry, &mut container);
        let mut message = Vec::new();
        encoding::bytes::encode(2, &container, &mut message);
        let error = LeanContainerList::decode(message.as_slice()).unwrap_err();
        assert!(error.to_string().contains("UTF-8"), "{error}");
        assert!(error.to_string().contains("ContainerInfo.state"), "{error}");
        // A known field with the wrong wire type.
        let mut message = Vec::new();
        encoding::uint64::encode(2, &7, &mut message);
        assert!(LeanContainerList::decode(message.as_slice()).is_err());
    }

    proptest! {
        /// Any bytes: the lean and the generated decoders agree on whether
        /// they are a valid message, and on the report when they are.
        #[test]
        fn agrees_with_the_generated_decoder_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let lean = LeanContainerList::decode(bytes.as_slice()).map(LeanContainerList::into_report);
            let full = ms::ContainerList::decode(bytes.as_slice()).map(convert::node_report);
            match (lean, full) {
                (Ok(lean), Ok(full)) => prop_assert_eq!(lean, full),
                (Err(_), Err(_)) => {}
                (lean, full) => prop_assert!(false, "lean {:?} vs generated {:?}", lean, full),
            }
        }

        /// Valid messages with arbitrary maps decode alike.
        #[test]
        fn valid_messages_decode_alike(
            // Keys differ in more than case: a map holding both `Status` and
            // `status` derives by hash order in the generated type.
            maps in proptest::collection::vec(
                proptest::collection::hash_map(
                    prop::sample::select(vec!["Status", "Running", "Paused", "Dead", "OOMKilled", "ExitCode", "Pid", "x"]),
                    prop::sample::select(vec!["running", "exited", "paused", "dead", "true", "false", "0", "137", ""]),
                    0..8),
                0..5)
        ) {
            let containers = maps
                .into_iter()
                .enumerate()
                .map(|(i, state)| {
                    let state = state.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                    info(&format!("c{i}"), state)
                })
                .collect();
            same_as_generated(&list(containers));
        }
    }
}
