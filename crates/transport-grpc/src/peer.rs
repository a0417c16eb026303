//! What the server knows of the peer of a connection: its client
//! certificate, when the connection is mutual TLS.
//!
//! The TLS acceptor ([`crate::tls`]) puts a [`PeerCertificate`] into every
//! request's extensions; authorization reads it from there. A plaintext
//! connection, or TLS without client authentication, has none.

/// The parts of a verified client certificate that name the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerCertificate {
    /// Every URI subject alternative name, in certificate order (e.g.
    /// `spiffe://piccolo/component/filtergateway`).
    pub san_uris: Vec<String>,
    /// The subject's common name, for logs only.
    pub common_name: Option<String>,
}

impl PeerCertificate {
    /// The peer certificate of `request`, if its connection has one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerCertificate> {
        request.extensions().get::<PeerCertificate>()
    }
}
