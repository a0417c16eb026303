//! What the server knows of the peer of a connection: its client
//! certificate, when the connection is mutual TLS.
//!
//! The TLS acceptor ([`crate::tls::incoming`]) reads the certificate once
//! per connection; tonic then puts the connection's
//! [`TlsConnectionInfo`](crate::tls::TlsConnectionInfo), which carries it,
//! into every request's extensions, whatever the method (the node reports
//! of [`crate::lean`] too: tonic's `Grpc::unary` keeps the HTTP request's
//! extensions). Authorization reads it with [`PeerCertificate::of`]. A
//! plaintext connection, or TLS without client authentication, has none.

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
    /// The peer certificate of `request`, if its connection has one. A
    /// `PeerCertificate` put into the request's extensions directly (by a
    /// test, or a layer of one's own) takes precedence over the connection's.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerCertificate> {
        Self::in_extensions(request.extensions())
    }

    /// [`PeerCertificate::of`] for a request already taken apart.
    pub fn in_extensions(extensions: &tonic::Extensions) -> Option<&PeerCertificate> {
        extensions.get::<PeerCertificate>().or_else(|| {
            extensions
                .get::<crate::tls::TlsConnectionInfo>()?
                .peer_certificate()
        })
    }
}
