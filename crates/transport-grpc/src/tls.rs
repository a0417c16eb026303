//! TLS and mutual TLS for the gRPC server and its clients.
//!
//! The server side is ours rather than tonic's (`ServerTlsConfig` is fixed
//! when the server starts): [`ServerTls`] holds the rustls configuration
//! behind a lock, so [`ServerTls::reload`] can swap certificates for new
//! connections while the server runs (open connections keep theirs), and
//! [`incoming`] runs each handshake on its own task under a timeout, so a
//! slow or hostile peer holds up nobody else.
//!
//! With a client CA the server requires a client certificate signed by it
//! (mutual TLS) and hands the caller's names to every request as a
//! [`PeerCertificate`] (see [`PeerCertificate::of`]).
//!
//! The client side ([`ClientTls`]) checks its files and builds tonic's
//! `ClientTlsConfig`. Crypto is rustls with the `ring` provider on both
//! sides: no OpenSSL, no aws-lc.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing::{debug, warn};

use crate::peer::PeerCertificate;

/// How long a TLS handshake may take before the connection is dropped
/// (server side), unless [`ServerTls::with_handshake_timeout`] says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol gRPC speaks: HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Handshakes in progress at most; beyond it connections wait in the
/// listen backlog until one ends (each ends within the handshake timeout).
const MAX_HANDSHAKES: usize = 1024;

/// The TCP keepalive time of accepted connections, as on the plaintext path.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long accepting pauses after an error that is not one connection's
/// (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why TLS settings could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, unreadable).
    #[error("reading the {what} file '{}': {source}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not PEM, or its PEM is broken.
    #[error("the {what} file '{}' is not valid PEM: {source}", path.display())]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pem::Error,
    },
    /// A file holds no PEM section of the expected kind.
    #[error("the {what} file '{}' holds no PEM {what}", path.display())]
    Missing {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A certificate is not a readable X.509 certificate.
    #[error("the certificate file '{}' holds a certificate that cannot be read: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key is not the certificate's.
    #[error("the private key in '{}' does not match the certificate in '{}'", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The private key cannot be used (unsupported algorithm, corrupt).
    #[error("the private key in '{}' cannot be used: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("the CA file '{}' cannot be used: {reason}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A client certificate was given without its key, or a key without
    /// its certificate.
    #[error("a client certificate and its key go together: {given} is set, {missing} is not")]
    HalfIdentity {
        /// The one given (`cert` or `key`).
        given: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// An `https://` address without a CA to verify the server with.
    #[error("TLS to '{address}' needs a CA certificate file to verify the server with")]
    NoCa {
        /// The address.
        address: String,
    },
    /// The domain to verify is not a valid DNS name or IP address.
    #[error("'{domain}' is not a valid TLS server name")]
    Domain {
        /// The domain given.
        domain: String,
    },
    /// rustls refused the configuration as a whole.
    #[error("building the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The server's PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The server's certificate, optionally followed by its intermediates.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs client certificates. With it, clients must present
    /// one (mutual TLS); without it, any client may connect.
    pub client_ca: Option<PathBuf>,
}

struct Shared {
    files: ServerTlsFiles,
    /// The configuration for new connections; replaced whole by `reload`.
    config: RwLock<Arc<ServerConfig>>,
    handshake_failures: AtomicU64,
}

/// The server's TLS: its certificate, and the client CA if clients must
/// authenticate. Cheap to clone; clones share the certificates, so a
/// [`reload`](Self::reload) on one is seen by every server using another.
#[derive(Clone)]
pub struct ServerTls {
    shared: Arc<Shared>,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Reads and checks `files`: the certificate chain, a private key that
    /// matches it and, if given, the client CA.
    ///
    /// Reads the files synchronously (they are small; this runs at start
    /// and on reload).
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                config: RwLock::new(Arc::new(config)),
                handshake_failures: AtomicU64::new(0),
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// The same TLS with another handshake timeout (default 10 s).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Reads the same files again and uses them for new connections (open
    /// connections keep what they negotiated). On error nothing changes:
    /// the certificates in use stay, and the error says what is wrong.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.shared.files)?);
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// Whether clients must present a certificate the client CA signed.
    pub fn client_auth(&self) -> bool {
        self.shared.files.client_ca.is_some()
    }

    /// The files this TLS reads.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.shared.files
    }

    /// How many handshakes failed or timed out since [`load`](Self::load)
    /// (a client without an acceptable certificate, a plaintext client, a
    /// peer that never finished).
    pub fn handshake_failures(&self) -> u64 {
        self.shared.handshake_failures.load(Ordering::Relaxed)
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .shared
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// Runs one handshake; `None` (logged and counted) when it fails.
    async fn handshake(self, stream: TcpStream, remote: SocketAddr) -> Option<TlsConnection> {
        let local = stream.local_addr().ok();
        let failure = match tokio::time::timeout(
            self.handshake_timeout,
            self.acceptor().accept(stream),
        )
        .await
        {
            Ok(Ok(stream)) => match connection(stream, remote, local) {
                Ok(connection) => return Some(connection),
                Err(reason) => reason,
            },
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no handshake within {:?}", self.handshake_timeout),
        };
        self.shared
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        debug!(%remote, reason = %failure, "TLS handshake failed; connection dropped");
        None
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.shared.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Two `ServerTls` are equal when they share their certificates (clones of
/// one [`ServerTls::load`]) and time out alike.
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
            && self.handshake_timeout == other.handshake_timeout
    }
}

impl Eq for ServerTls {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file, in file order; at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Missing {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The first private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key";
    let bytes = read(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::Missing {
            what: WHAT,
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            what: WHAT,
            path: path.to_owned(),
            source,
        },
    })
}

/// A certificate chain and its key, checked to belong together.
fn identity(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = certificates("certificate", cert)?;
    for der in &chain {
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Certificate {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let key_der = private_key(key)?;
    rustls::sign::CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        source => TlsError::Key {
            path: key.to_owned(),
            source,
        },
    })
}

/// The CA certificates of a file as trust anchors.
fn trust_anchors(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in certificates("CA certificate", path)? {
        roots.add(der).map_err(|e| TlsError::Ca {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn server_config(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let certified = identity(&files.cert, &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(trust_anchors(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Ca {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client certificate whose names cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client certificate cannot be read: {0}")]
pub struct CertificateError(String);

/// The names in a client certificate (DER): its URI SANs in certificate
/// order and its subject CN.
pub fn peer_certificate(der: &[u8]) -> Result<PeerCertificate, CertificateError> {
    let unreadable = |e: &dyn fmt::Display| CertificateError(e.to_string());
    let (_, certificate) = x509_parser::parse_x509_certificate(der).map_err(|e| unreadable(&e))?;
    let san_uris = match certificate
        .subject_alternative_name()
        .map_err(|e| unreadable(&e))?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Ok(PeerCertificate {
        san_uris,
        common_name,
    })
}

fn connection(
    stream: TlsStream<TcpStream>,
    remote: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<TlsConnection, String> {
    let peer = match stream.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => Some(Arc::new(peer_certificate(leaf).map_err(|e| e.to_string())?)),
        _ => None,
    };
    Ok(TlsConnection {
        stream,
        info: TlsConnectionInfo {
            remote_addr: Some(remote),
            local_addr: local,
            peer,
        },
    })
}

/// What a TLS connection tells each of its requests: the addresses and,
/// with mutual TLS, the client's certificate. tonic puts it into every
/// request's extensions (it is the connection's
/// [`Connected::ConnectInfo`]); read the certificate with
/// [`PeerCertificate::of`].
///
/// (tonic's own `Request::remote_addr` does not know this type: use
/// [`remote_addr`](Self::remote_addr).)
#[derive(Debug, Clone)]
pub struct TlsConnectionInfo {
    remote_addr: Option<SocketAddr>,
    local_addr: Option<SocketAddr>,
    peer: Option<Arc<PeerCertificate>>,
}

impl TlsConnectionInfo {
    /// The client's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The server's address of the connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The client's verified certificate; `None` without mutual TLS.
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.peer.as_deref()
    }
}

/// An established TLS connection, as [`incoming`] yields it to tonic.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: TlsConnectionInfo,
}

impl TlsConnection {
    /// What the connection's requests are told about it.
    pub fn info(&self) -> &TlsConnectionInfo {
        &self.info
    }
}

impl fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming_shutdown`. Each handshake runs on its own task
/// under the handshake timeout; one that fails or times out is dropped,
/// logged at debug with the peer's address and counted
/// ([`ServerTls::handshake_failures`]). Accepted sockets get TCP_NODELAY
/// and a 60 s TCP keepalive, as plaintext ones do.
/// Dropping the stream closes the listener and abandons handshakes in
/// progress.
pub fn incoming(listener: TcpListener, tls: ServerTls) -> TlsIncoming {
    TlsIncoming {
        listener,
        tls,
        handshakes: JoinSet::new(),
        paused: None,
    }
}

/// The stream [`incoming`] returns. It never yields an error: failed
/// accepts and handshakes are logged and skipped.
pub struct TlsIncoming {
    listener: TcpListener,
    tls: ServerTls,
    handshakes: JoinSet<Option<TlsConnection>>,
    /// Set after an accept error that is not one connection's.
    paused: Option<Pin<Box<Sleep>>>,
}

impl fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("listener", &self.listener)
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

/// Whether an accept error concerns only the connection being accepted
/// (the next accept may well succeed at once).
fn connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

impl TlsIncoming {
    /// Accepts every connection that is waiting and starts its handshake.
    fn accept_ready(&mut self, cx: &mut Context<'_>) {
        while self.handshakes.len() < MAX_HANDSHAKES {
            if let Some(pause) = self.paused.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.paused = None;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, remote))) => {
                    // As on the plaintext path: without NODELAY a small answer
                    // waits for the peer's delayed ACK.
                    if let Err(error) = stream.set_nodelay(true) {
                        debug!(%remote, %error, "cannot set TCP_NODELAY");
                    }
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    if let Err(error) =
                        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)
                    {
                        debug!(%remote, %error, "cannot set TCP keepalive");
                    }
                    self.handshakes
                        .spawn(self.tls.clone().handshake(stream, remote));
                }
                Poll::Ready(Err(error)) if connection_error(&error) => {
                    debug!(%error, "accepting a connection failed");
                }
                Poll::Ready(Err(error)) => {
                    warn!(%error, "accepting connections failed; pausing for {ACCEPT_ERROR_PAUSE:?}");
                    self.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
                Poll::Pending => return,
            }
        }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Again after each handshake ends: there may be room for more.
            this.accept_ready(cx);
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => {
                    return Poll::Ready(Some(Ok(connection)));
                }
                // Failed (logged and counted by the task), or the task panicked.
                Poll::Ready(Some(Ok(None) | Err(_))) => continue,
                // Nothing in progress: the listener will wake us.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A client's TLS settings. Used for `https://` addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA to verify the server's certificate with (PEM). Required for
    /// `https://`: there are no built-in roots.
    pub ca: Option<PathBuf>,
    /// The client's certificate (PEM, may be a chain), for mutual TLS;
    /// together with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); together with `cert`.
    pub key: Option<PathBuf>,
    /// The name to verify the server's certificate against, when it differs
    /// from the address's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// Reads and checks the files and builds tonic's configuration for a
    /// connection to `address`, with `handshake_timeout` on the handshake.
    pub fn tonic_config(
        &self,
        address: &str,
        handshake_timeout: Duration,
    ) -> Result<ClientTlsConfig, TlsError> {
        let ca = self.ca.as_deref().ok_or_else(|| TlsError::NoCa {
            address: address.to_owned(),
        })?;
        // tonic skips CA certificates it cannot parse: check them here.
        trust_anchors(ca)?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("CA certificate", ca)?))
            .timeout(handshake_timeout);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                identity(cert, key)?;
                config = config.identity(Identity::from_pem(
                    read("certificate", cert)?,
                    read("private key", key)?,
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(TlsError::HalfIdentity {
                    given: "cert",
                    missing: "key",
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::HalfIdentity {
                    given: "key",
                    missing: "cert",
                });
            }
        }
        if let Some(domain) = &self.domain {
            ServerName::try_from(domain.as_str()).map_err(|_| TlsError::Domain {
                domain: domain.clone(),
            })?;
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

/// Whether `address` is an `https://` URL (compared as URI schemes are,
/// without regard to case).
pub(crate) fn is_https(address: &str) -> bool {
    address
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_told_by_the_scheme() {
        assert!(is_https("https://sm:47006"));
        assert!(is_https("HTTPS://sm:47006"));
        assert!(!is_https("http://sm:47006"));
        assert!(!is_https("https:/"));
        assert!(!is_https(""));
    }
}
