//! The codec of the `StateManagerConnection` service (`build.rs` names it
//! for the generated server and client; [`crate::lean`] uses it too).
//!
//! It is prost's wire format with one difference: a request the server
//! cannot decode is answered `InvalidArgument` with the decode error
//! ([`convert::undecodable_request`]), where tonic's `ProstCodec` answers
//! `Internal`. An answer the client cannot decode stays `Internal`: the
//! caller is not at fault. [`Decoded`] tells the two apart by message type.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::convert;
use crate::lean::LeanContainerList;
use crate::proto::monitoringserver as ms;
use crate::proto::statemanager as sm;

/// A message of the service, marked by who decodes it: the server decodes
/// requests, a client decodes answers. Decides whose fault a decode error is.
pub trait Decoded {
    /// `true` for a request, `false` for an answer.
    const REQUEST: bool;
}

macro_rules! decoded {
    ($request:literal: $($message:ty),+ $(,)?) => {
        $(impl Decoded for $message {
            const REQUEST: bool = $request;
        })+
    };
}

decoded!(true:
    sm::StateChange,
    ms::ContainerList,
    LeanContainerList,
    sm::Action,
    sm::OffloadingRequest,
    sm::ResourceStateRequest,
    sm::ListResourcesByStateRequest,
    sm::ResourceStateHistoryRequest,
    sm::StateChangeSubscriptionRequest,
    sm::ForceSynchronizationRequest,
    sm::TriggerRecoveryRequest,
    sm::AbortRecoveryRequest,
    sm::RecoveryStatusRequest,
    sm::AcknowledgeAlertRequest,
    sm::GetPendingAlertsRequest,
    sm::StateDiff,
);
decoded!(false:
    sm::StateChangeResponse,
    ms::SendContainerListResponse,
    sm::Response,
    sm::OffloadingResponse,
    sm::ResourceStateResponse,
    sm::ListResourcesByStateResponse,
    sm::ResourceStateHistoryResponse,
    sm::StateChangeEvent,
    sm::ForceSynchronizationResponse,
    sm::RecoveryResponse,
    sm::RecoveryStatusResponse,
    sm::AlertResponse,
    sm::GetPendingAlertsResponse,
    sm::StateDiffResponse,
);

/// prost's codec, encoding `T` and decoding `U`, with [`Decoded`]'s verdict
/// on a message that cannot be decoded.
#[derive(Debug)]
pub struct ServiceCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for ServiceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Clone for ServiceCodec<T, U> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T, U> Codec for ServiceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Decoded + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ServiceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ServiceDecoder(PhantomData)
    }
}

/// The decoder of [`ServiceCodec`].
#[derive(Debug)]
pub struct ServiceDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default + Decoded> Decoder for ServiceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode(buf).map(Some)
    }
}

/// Decodes one `U`; an error is the status [`Decoded`] gives it.
fn decode<U: Message + Default + Decoded>(buf: impl Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|error| {
        if U::REQUEST {
            convert::undecodable_request(&error)
        } else {
            Status::internal(error.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn an_undecodable_request_is_the_callers_fault() {
        let status = decode::<sm::StateChange>(&[0x80][..]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("invalid varint"), "{status:?}");
        let status = decode::<LeanContainerList>(&[0x0a, 0x05, b'a'][..]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    #[test]
    fn an_undecodable_answer_stays_internal() {
        let status = decode::<sm::StateChangeResponse>(&[0x80][..]).unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
    }

    #[test]
    fn valid_messages_decode_as_with_prost() {
        let message = sm::StateChange {
            resource_name: "s1".into(),
            target_state: "Waiting".into(),
            ..Default::default()
        };
        let decoded = decode::<sm::StateChange>(message.encode_to_vec().as_slice());
        assert_eq!(decoded.expect("valid"), message);
    }
}
