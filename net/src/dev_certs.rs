//! A CA and one certificate signed by it, for a development or test cluster (`weir dev-certs`).
//!
//! Every process of such a cluster presents the same certificate (valid for every host named)
//! and trusts the CA. The CA's own key is not kept: nothing more can be signed by it, so a
//! leaked directory lets nobody mint certificates. A production cluster takes its certificates
//! from the operator's PKI instead (`docs/ARCHITECTURE.md`, "TLS").

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::tls::NetError;

/// The files [`write`] made.
#[derive(Debug)]
pub struct DevCerts {
    /// The CA certificate: what clients trust (`--internal-ca`, `--ca`).
    pub ca: PathBuf,
    /// The certificate processes present (`--tls-cert`).
    pub certificate: PathBuf,
    /// Its private key (`--tls-key`), readable by its owner only.
    pub key: PathBuf,
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir` (made if missing): a fresh CA, and a
/// certificate it signed for `hosts` (names or IP addresses).
pub fn write(dir: &Path, hosts: &[String]) -> Result<DevCerts, NetError> {
    let failed = |e: rcgen::Error| NetError::Config(format!("cannot make the certificates: {e}"));
    if hosts.is_empty() {
        return Err(NetError::Config("a certificate needs at least one host name or address".into()));
    }
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.distinguished_name.push(DnType::CommonName, "Weir development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(failed)?;
    let ca_certificate = ca.self_signed(&ca_key).map_err(failed)?;

    let mut leaf = CertificateParams::new(hosts.to_vec()).map_err(failed)?;
    leaf.distinguished_name.push(DnType::CommonName, "Weir development node");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(failed)?;
    let leaf_certificate = leaf.signed_by(&leaf_key, &Issuer::new(ca, &ca_key)).map_err(failed)?;

    let io = |path: &Path, e: std::io::Error| NetError::Read {
        what: "certificate directory",
        path: path.to_owned(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = DevCerts { ca: dir.join("ca.pem"), certificate: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.ca, ca_certificate.pem()).map_err(|e| io(&files.ca, e))?;
    std::fs::write(&files.certificate, leaf_certificate.pem()).map_err(|e| io(&files.certificate, e))?;
    write_private(&files.key, &leaf_key.serialize_pem()).map_err(|e| io(&files.key, e))?;
    Ok(files)
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::{Listener, Plaintext};
    use crate::tls::{ClientTls, ServerTls, Transport};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client trusting the dev CA talks to a listener presenting the dev certificate; a
    /// client trusting another CA, or speaking plain TCP, gets nothing through.
    #[tokio::test]
    async fn a_client_trusting_the_ca_reaches_a_tls_listener_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let certs = write(&dir.path().join("a"), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        let other = write(&dir.path().join("b"), &["127.0.0.1".into()]).unwrap();
        let tls = ServerTls::from_pem_files(&certs.certificate, &certs.key).unwrap();
        let mut listener =
            Listener::bind("127.0.0.1:0", Some(&tls), Plaintext::LoopbackOnly, "--tls-cert").await.unwrap();
        assert!(listener.is_tls());
        let address = listener.address().to_string();
        tokio::spawn(async move {
            loop {
                let (mut connection, _) = listener.next().await;
                tokio::spawn(async move {
                    let mut word = [0; 5];
                    if connection.read_exact(&mut word).await.is_ok() {
                        let _ = connection.write_all(&word).await;
                    }
                });
            }
        });

        let trusting = Transport::Tls(ClientTls::from_ca_file(&certs.ca).unwrap());
        let mut connection = trusting.connect(&address).await.unwrap();
        connection.write_all(b"hello").await.unwrap();
        let mut echo = [0; 5];
        connection.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");

        let stranger = Transport::Tls(ClientTls::from_ca_file(&other.ca).unwrap());
        let error = stranger.connect(&address).await.err().expect("a certificate from another CA was trusted");
        assert!(error.to_string().contains("certificate"), "{error}");

        // Plain bytes get no echo: the listener only passes on finished handshakes.
        let mut plain = Transport::Plain.connect(&address).await.unwrap();
        plain.write_all(b"hello").await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
        assert!(!answer.starts_with(b"hello"), "a plain client got through: {read:?}");
    }

    #[tokio::test]
    async fn plain_http_off_loopback_needs_the_operators_word() {
        // The machine's own non-loopback address, if it has one; 0.0.0.0 binds every address.
        let error = Listener::bind("0.0.0.0:0", None, Plaintext::LoopbackOnly, "--tls-cert, --tls-key")
            .await
            .err()
            .expect("plain HTTP on every address was allowed");
        assert!(error.to_string().contains("--insecure-plaintext"), "{error}");
        assert!(error.to_string().contains("--tls-cert, --tls-key"), "{error}");
        Listener::bind("0.0.0.0:0", None, Plaintext::Anywhere, "--tls-cert").await.unwrap();
        Listener::bind("127.0.0.1:0", None, Plaintext::LoopbackOnly, "--tls-cert").await.unwrap();
    }

    #[test]
    fn the_key_file_is_private_and_a_host_is_required() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let certs = write(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(std::fs::metadata(&certs.key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write(dir.path(), &[]).is_err());
    }
}
