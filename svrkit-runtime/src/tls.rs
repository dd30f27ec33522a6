//! TLS for both sides of a connection (feature `tls`, off by default), with rustls and its
//! `ring` crypto provider.
//!
//! A server given a [`rustls::ServerConfig`] ([`ServerBuilder::tls`](crate::server::ServerBuilder::tls))
//! speaks TLS on every connection it accepts; a channel given [`ClientTls`]
//! ([`ChannelOptions::tls`](crate::ChannelOptions::tls)) speaks TLS to every endpoint. The
//! frames inside are the same as over plain TCP, and so are the limits: the handshake must
//! finish within the server's read timeout, and the connection cap closes a connection over
//! it before its handshake (a plain-text refusal would mean nothing to a TLS client).
//!
//! **Client certificates** (mutual TLS) are identities for the trust boundary: a server built
//! with [`server_config_for_clients`] asks every client for a certificate, checks one that is
//! given against the client authorities, and trusts the connection when the certificate is
//! valid for one of the names in [`Trust::identities`](crate::server::Trust::identities),
//! wherever it connects from. A client without a certificate still connects, as a stranger
//! (unless its address is trusted). A channel presents one with
//! [`client_config_with_identity`]; [`identity_from_pem`] and [`certificates_from_pem`]
//! read what both take from PEM files.
//!
//! ```no_run
//! # fn f(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<(), svrkit_runtime::tls::Error> {
//! use svrkit_runtime::tls;
//!
//! let server_config = tls::server_config_from_pem(cert_pem, key_pem)?;
//! let client_tls = tls::ClientTls::new(tls::client_config_from_pem(ca_pem)?);
//! # Ok(()) }
//! ```

use std::sync::Arc;

pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a TLS configuration could not be built: what was being read or built, and the
/// error rustls or the PEM reader gave (its [`source`](std::error::Error::source)). The
/// message says both.
#[derive(Debug)]
pub struct Error {
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn wrap(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    fn msg(context: impl Into<String>) -> Error {
        Error {
            context: context.into(),
            source: None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Named explicitly rather than taken from the process default, which is ambiguous (and
    // panics) when another crate in the build enables a second provider.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration presenting `cert_chain` (leaf first) with `key`; no client
/// certificates asked for.
///
/// # Errors
/// If the key does not suit the certificate or is of a kind rustls does not support.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::wrap("TLS protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|e| Error::wrap("TLS certificate or key", e))?;
    Ok(Arc::new(config))
}

/// `config`, offering HTTP/2 by ALPN: gRPC clients, which ask for `h2` over TLS, are then
/// served on the same TLS port as svrkit's (`docs/grpc.md`). svrkit's own clients ask for no
/// protocol and are served as before; but a client that offers ALPN protocols without `h2`
/// is refused in the handshake (rustls's `no_application_protocol`), and one whose
/// configuration offers `h2` is taken for a gRPC client.
pub fn with_grpc(config: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A server configuration presenting `cert_chain` with `key` that asks clients for a
/// certificate issued by one of `client_roots`: a client that gives none still connects
/// (as a stranger, unless its address is trusted); one whose certificate does not verify is
/// refused in the handshake.
///
/// # Errors
/// As [`server_config`], or if a root cannot be parsed as a trust anchor.
pub fn server_config_for_clients(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(client_roots)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::wrap("client certificate authorities", e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::wrap("TLS protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)
        .map_err(|e| Error::wrap("TLS certificate or key", e))?;
    Ok(Arc::new(config))
}

/// A certificate chain (leaf first) and its key (PKCS#8, PKCS#1 or SEC1) from PEM text.
///
/// # Errors
/// If either holds no usable PEM block.
pub fn identity_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let chain = certificates_from_pem(cert_chain_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::wrap("key PEM", e))?;
    Ok((chain, key))
}

/// The certificates in PEM text; `what` names them in errors.
///
/// # Errors
/// If it holds no usable PEM certificate.
pub fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::wrap(format!("{what} PEM"), e))?;
    if certs.is_empty() {
        return Err(Error::msg(format!("{what} PEM holds no certificate")));
    }
    Ok(certs)
}

fn roots(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, Error> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| Error::wrap("trusted certificate", e))?;
    }
    Ok(store)
}

/// [`server_config`] from PEM text: the certificate chain, and a PKCS#8, PKCS#1 or SEC1 key.
///
/// # Errors
/// If either holds no usable PEM block, or as [`server_config`].
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let (chain, key) = identity_from_pem(cert_chain_pem, key_pem)?;
    server_config(chain, key)
}

/// A client configuration that trusts the certificate authorities `roots` (or a server's
/// self-signed certificate) and nothing else.
///
/// # Errors
/// If a root cannot be parsed as a trust anchor.
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::wrap("TLS protocol versions", e))?
        .with_root_certificates(self::roots(roots)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] from PEM text holding the trusted certificates.
///
/// # Errors
/// If it holds no usable PEM certificate, or as [`client_config`].
pub fn client_config_from_pem(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    client_config(certificates_from_pem(roots_pem, "trusted certificate")?)
}

/// A client configuration that trusts `roots` and presents `cert_chain` (leaf first) with
/// `key` to servers that ask for a client certificate: the identity a server's trust
/// boundary can know this client by.
///
/// # Errors
/// As [`client_config`], or if the key does not suit the certificate.
pub fn client_config_with_identity(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::wrap("TLS protocol versions", e))?
        .with_root_certificates(self::roots(roots)?)
        .with_client_auth_cert(cert_chain, key)
        .map_err(|e| Error::wrap("TLS client certificate or key", e))?;
    Ok(Arc::new(config))
}

/// Whether the leaf of a verified client chain `certs` is valid for one of `names` (its
/// subject alternative names, as a server's certificate is checked against its host name).
pub(crate) fn valid_for_any(certs: &[CertificateDer<'_>], names: &[ServerName<'static>]) -> bool {
    let Some(leaf) = certs.first() else {
        return false;
    };
    let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    names
        .iter()
        .any(|name| leaf.verify_is_valid_for_subject_name(name).is_ok())
}

/// A name a client certificate can be trusted by: a DNS name or an IP address.
///
/// # Errors
/// If `name` is neither.
pub fn identity(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| format!("`{name}` is not a certificate name (a DNS name or an address): {e}"))
}

/// How a channel speaks TLS to its endpoints.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// TLS with `config`, checking each endpoint's certificate against the host part of its
    /// address (`localhost` for `localhost:7000`, an IP address for `10.0.0.1:7000`).
    pub fn new(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
        }
    }

    /// Checks every endpoint's certificate against `name` instead (for endpoints given by
    /// address whose certificate names a host).
    ///
    /// # Errors
    /// If `name` is neither a DNS name nor an IP address.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, Error> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::wrap(format!("server name {name:?}"), e))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Runs the handshake over `stream` to the endpoint at `addr`.
    pub(crate) async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host_of(addr).to_owned()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("no TLS server name in {addr:?}: {e}"),
                )
            })?,
        };
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("localhost:7000"), "localhost");
        assert_eq!(host_of("10.0.0.1:7000"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
    }
}
