//! TLS settings read from PEM files, and the transport a process uses to reach its cluster.
//!
//! Every setting is rustls with the aws-lc-rs provider and rustls's safe defaults (TLS 1.2 and
//! 1.3). A client of the cluster trusts the CA the operator names and nothing else: the system's
//! roots would let any publicly trusted certificate pass for a replica.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::listener::Connection;

/// Why TLS settings could not be made, or a listener not bound.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot read the {what} in {path}: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("invalid TLS settings: {0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error(
        "refusing to serve without TLS on {address}, which is not a loopback address: give a certificate and key ({flags}), or say --insecure-plaintext"
    )]
    PlainOffLoopback { address: SocketAddr, flags: &'static str },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn config_error(error: rustls::Error) -> NetError {
    NetError::Config(error.to_string())
}

/// The certificates in the PEM file at `path` (at least one).
fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let read = |reason: String| NetError::Read { what, path: path.to_owned(), reason };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certificates.is_empty() {
        return Err(NetError::Empty { what, path: path.to_owned() });
    }
    Ok(certificates)
}

/// What a listener presents: a certificate chain and its private key.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Reads the chain (leaf first) from `certificate` and the private key (PKCS#8, PKCS#1 or
    /// SEC1) from `key`, and checks that they belong together.
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<ServerTls, NetError> {
        let chain = read_certificates(certificate, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| NetError::Read {
            what: "private key",
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(config_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { config: Arc::new(config) })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

/// What a client trusts: the certificates of one CA (or a bundle of them), nothing else.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Trusts the CA certificates in the PEM file at `ca`.
    pub fn from_ca_file(ca: &Path) -> Result<ClientTls, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in read_certificates(ca, "CA certificates")? {
            roots.add(certificate).map_err(config_error)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config) })
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

/// How a process reaches the rest of its cluster: plain, or TLS trusting the cluster's CA.
#[derive(Clone, Debug, Default)]
pub enum Transport {
    #[default]
    Plain,
    Tls(ClientTls),
}

impl Transport {
    /// The transport a process was started with: TLS trusting `ca`, or plain without one.
    pub fn from_ca_file(ca: Option<&Path>) -> Result<Transport, NetError> {
        Ok(match ca {
            Some(ca) => Transport::Tls(ClientTls::from_ca_file(ca)?),
            None => Transport::Plain,
        })
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls(_) => "https",
        }
    }

    /// The base URL of `address` (`host:port`); an address that names its scheme is kept as it
    /// is, less a trailing slash.
    pub fn url(&self, address: &str) -> String {
        if address.contains("://") {
            address.trim_end_matches('/').to_owned()
        } else {
            format!("{}://{address}", self.scheme())
        }
    }

    /// An HTTP client builder for calls within the cluster. Over TLS it trusts the cluster's CA
    /// only and refuses `http://` URLs, so nothing meant for the cluster leaves in plain text.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder();
        match self {
            Transport::Plain => builder,
            Transport::Tls(tls) => builder.tls_backend_preconfigured(tls.config.as_ref().clone()).https_only(true),
        }
    }

    /// Opens a connection to `address` (`host:port`) for a protocol other than HTTP (the
    /// shuffle's): over TLS, the server must prove it is `host`.
    pub async fn connect(&self, address: &str) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        // Frames are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        match self {
            Transport::Plain => Ok(Connection::Plain(stream)),
            Transport::Tls(tls) => {
                let name = server_name(address)?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector.connect(name, stream).await?;
                Ok(Connection::Tls(Box::new(stream.into())))
            }
        }
    }
}

/// The name a server at `address` (`host:port`, `[v6]:port`) must prove.
fn server_name(address: &str) -> std::io::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{address} names no TLS server: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_transports_scheme_unless_they_name_one() {
        assert_eq!(Transport::Plain.url("10.0.0.1:7401"), "http://10.0.0.1:7401");
        assert_eq!(Transport::Plain.url("https://a:1/"), "https://a:1");
    }

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(
            format!("{:?}", server_name("127.0.0.1:9").unwrap()),
            format!("{:?}", ServerName::try_from("127.0.0.1").unwrap())
        );
        assert!(server_name("[::1]:9").is_ok());
        assert!(server_name("replica-1.internal:7401").is_ok());
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn unreadable_files_name_what_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = ServerTls::from_pem_files(&missing, &missing).unwrap_err().to_string();
        assert!(error.contains("certificate chain") && error.contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let error = ClientTls::from_ca_file(&empty).unwrap_err().to_string();
        assert!(error.contains("holds no CA certificates"), "{error}");
    }
}
