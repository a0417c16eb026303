//! Reports sent pre-encoded: a NodeAgent encodes each report once, so the
//! load generator encodes W3's unchanged reports once too and sends the
//! same bytes, keeping its own CPU out of the daemon's measurement.

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use transport_grpc::proto::monitoringserver as ms;

const REPORT_PATH: &str = "/statemanager.StateManagerConnection/SendChangedContainerList";

/// Sends encoded `ContainerList`s and decodes the answers.
#[derive(Debug, Clone, Default)]
struct PreEncoded;

/// Writes the bytes as they are.
#[derive(Debug, Clone, Default)]
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = prost::bytes::Bytes;
    type Error = Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut EncodeBuf<'_>,
    ) -> std::result::Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

/// Decodes a `SendContainerListResponse`.
#[derive(Debug, Clone, Default)]
struct AnswerDecoder;

impl Decoder for AnswerDecoder {
    type Item = ms::SendContainerListResponse;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> std::result::Result<Option<Self::Item>, Status> {
        use prost::Message;
        ms::SendContainerListResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable answer: {e}")))
    }
}

impl Codec for PreEncoded {
    type Encode = prost::bytes::Bytes;
    type Decode = ms::SendContainerListResponse;
    type Encoder = BytesEncoder;
    type Decoder = AnswerDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AnswerDecoder
    }
}

/// Encodes a report once for [`send_report`].
pub fn encode(report: &ms::ContainerList) -> prost::bytes::Bytes {
    use prost::Message;
    report.encode_to_vec().into()
}

/// Sends one pre-encoded report.
pub async fn send_report(
    grpc: &mut tonic::client::Grpc<Channel>,
    report: prost::bytes::Bytes,
    timeout: std::time::Duration,
) -> std::result::Result<ms::SendContainerListResponse, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new(report);
    request.set_timeout(timeout);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(REPORT_PATH);
    grpc.unary(request, path, PreEncoded)
        .await
        .map(tonic::Response::into_inner)
}

/// A raw client on `channel`.
pub fn client(channel: Channel) -> tonic::client::Grpc<Channel> {
    tonic::client::Grpc::new(channel)
}
