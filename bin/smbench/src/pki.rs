//! Mutual TLS for `--tls mtls`: a CA made for this invocation, the daemon's
//! server certificate for 127.0.0.1 and localhost, and client certificates
//! named as PICCOLO identities (`spiffe://piccolo/component/{name}`), all
//! PEM files in smbench's working directory. The daemon is started with
//! `--tls-cert --tls-key --tls-client-ca` and the default policy, except
//! for W3 (see [`REPORTS_POLICY`]); every client connects over `https://`
//! with the certificate of the component it acts as.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::{Channel, Endpoint};
use transport_grpc::testing::pki::{Ca, Leaf};
use transport_grpc::tls::ClientTls;

/// Whether the daemon's gRPC port speaks plaintext or mutual TLS (`--tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tls {
    /// Plaintext gRPC, no identities (the daemon's default).
    Plain,
    /// Mutual TLS: a server certificate, client certificates from the same
    /// CA, and the authorization policy on every call.
    Mtls,
}

impl Tls {
    /// The name `--tls` takes.
    pub fn name(self) -> &'static str {
        match self {
            Tls::Plain => "plain",
            Tls::Mtls => "mtls",
        }
    }
}

/// The identity of smbench's own connection (set-up, reads, verification,
/// W3's reports): a component of its own, which the default policy lets read.
pub const SMBENCH: &str = "smbench";

/// The components W1 acts as (its `source`s, lower-cased as in identities).
const COMPONENTS: [&str; 4] = [
    "filtergateway",
    "policymanager",
    "actioncontroller",
    SMBENCH,
];

/// W3's policy: W3 sends every node's report over smbench's one connection
/// (as it does in plaintext), which the default policy refuses (a NodeAgent
/// reports its own node only), so smbench's identity may report for any
/// node and read; nothing else is needed by W3.
pub const REPORTS_POLICY: &str = r#"trust-domain = "piccolo"

[[rule]]
name = "smbench-reports"
identities = ["component/smbench"]
reports = "any"
read = true
"#;

/// How long a connection (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The PEM files of one invocation.
#[derive(Debug, Clone)]
pub struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    reports_policy: PathBuf,
    dir: PathBuf,
}

fn write(path: &Path, contents: &str) -> Result<PathBuf> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}

fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) -> Result<(PathBuf, PathBuf)> {
    Ok((
        write(&dir.join(format!("{name}.pem")), &leaf.pem)?,
        write(&dir.join(format!("{name}.key")), &leaf.key)?,
    ))
}

impl Pki {
    /// Makes the CA, the server certificate and every client certificate in
    /// `dir` (created).
    pub fn create(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = Ca::new("smbench CA");
        let ca_path = write(&dir.join("ca.pem"), &ca.pem)?;
        let (server_cert, server_key) = write_leaf(dir, "server", &ca.server())?;
        for component in COMPONENTS {
            let leaf = ca.client(
                &format!("spiffe://piccolo/component/{component}"),
                component,
            );
            write_leaf(dir, component, &leaf)?;
        }
        Ok(Pki {
            ca: ca_path,
            server_cert,
            server_key,
            reports_policy: write(&dir.join("w3-policy.toml"), REPORTS_POLICY)?,
            dir: dir.to_owned(),
        })
    }

    /// The daemon's TLS options; with `reports_policy`, W3's policy file
    /// instead of the default policy.
    pub fn daemon_args(&self, reports_policy: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_owned(),
            self.server_cert.display().to_string(),
            "--tls-key".to_owned(),
            self.server_key.display().to_string(),
            "--tls-client-ca".to_owned(),
            self.ca.display().to_string(),
        ];
        if reports_policy {
            args.push("--policy".to_owned());
            args.push(self.reports_policy.display().to_string());
        }
        args
    }

    /// The client settings of `component` (e.g. `FilterGateway`, any case).
    pub fn client(&self, component: &str) -> ClientTls {
        let name = component.to_ascii_lowercase();
        ClientTls {
            ca: Some(self.ca.clone()),
            cert: Some(self.dir.join(format!("{name}.pem"))),
            key: Some(self.dir.join(format!("{name}.key"))),
            domain: None,
        }
    }
}

/// The endpoint of one HTTP/2 connection to `url` (`http://` or, with
/// `tls`, `https://`), with the settings every smbench connection uses.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .context("daemon URL")?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT);
    match tls {
        None => Ok(endpoint),
        Some(tls) => {
            let config = tls
                .tonic_config(url, CONNECT_TIMEOUT)
                .with_context(|| format!("TLS settings for {url}"))?;
            endpoint
                .tls_config(config)
                .with_context(|| format!("TLS settings for {url}"))
        }
    }
}

/// Connects one channel to `url`.
pub async fn connect(url: &str, tls: Option<&ClientTls>) -> Result<Channel> {
    endpoint(url, tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to the daemon at {url}"))
}
