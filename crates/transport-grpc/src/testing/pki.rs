//! Certificates for tests, made with rcgen: a [`Ca`] that signs server and
//! client certificates (clients named by URI SAN, as PICCOLO identities
//! are), and [`Files`], a temporary directory of the PEM files the server
//! and the clients read.
#![allow(clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::tls::{ClientTls, ServerTlsFiles};

/// A certificate authority.
pub struct Ca {
    /// The CA certificate (PEM), for trust stores.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("self-signed").pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate (PEM, with its DER) and key (PEM) this CA signed.
    pub fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "statemanager");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A certificate of an HA group's member, which serves and, when it
    /// forwards to the leader, is a client: `localhost` and 127.0.0.1, and
    /// the URI SAN `uri` (`spiffe://piccolo/component/statemanager`).
    pub fn member(&self, uri: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().expect("an IA5 URI")));
        params
            .distinguished_name
            .push(DnType::CommonName, "statemanager");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params)
    }

    /// A client certificate naming its holder by the URI SAN `uri`.
    pub fn client(&self, uri: &str, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().expect("an IA5 URI")));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }
}

/// A certificate a [`Ca`] signed, with its key.
pub struct Leaf {
    /// The certificate (PEM).
    pub pem: String,
    /// The certificate (DER).
    pub der: Vec<u8>,
    /// Its private key (PEM).
    pub key: String,
}

/// A temporary directory of PEM files, removed when dropped.
pub struct Files(tempfile::TempDir);

impl Files {
    /// A new empty directory.
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    /// Writes `contents` to `name` in the directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// `{name}.pem` and `{name}.key`.
    pub fn leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.pem"), &leaf.pem),
            self.write(&format!("{name}.key"), &leaf.key),
        )
    }

    /// A client trusting `ca`, presenting `leaf` if any.
    pub fn client(&self, name: &str, ca: &Ca, leaf: Option<&Leaf>) -> ClientTls {
        let (cert, key) = match leaf {
            Some(leaf) => {
                let (cert, key) = self.leaf(name, leaf);
                (Some(cert), Some(key))
            }
            None => (None, None),
        };
        ClientTls {
            ca: Some(self.write(&format!("{name}-ca.pem"), &ca.pem)),
            cert,
            key,
            domain: None,
        }
    }

    /// The server's files: its certificate from `ca`, and `client_ca` if
    /// clients must authenticate.
    pub fn server(&self, ca: &Ca, client_ca: Option<&Ca>) -> ServerTlsFiles {
        let (cert, key) = self.leaf("server", &ca.server());
        ServerTlsFiles {
            cert,
            key,
            client_ca: client_ca.map(|ca| self.write("client-ca.pem", &ca.pem)),
        }
    }
}

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

impl Files {
    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}
