//! The HTTPS client: rustls with ring, trusting only the configured CA; bearer tokens (a token
//! file re-read when it changes) or a client certificate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
use ureq::Agent;

use super::kubeconfig::{Auth, Source};

/// TLS material, checked once at start so a bad file is a clear error, not a panic mid-call.
pub struct Tls {
    config: TlsConfig,
}

impl Tls {
    pub fn new(ca: &Source, client: Option<(&Source, &Source)>) -> Result<Tls, String> {
        let ca_pem = ca.read()?;
        let roots = certs(&ca_pem)
            .map_err(|e| format!("CA ({}): {e}", ca.describe("certificate-authority")))?;
        let provider = Arc::new(super::crypto::provider());
        let mut builder = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&roots))
            .unversioned_rustls_crypto_provider(provider.clone());
        if let Some((cert, key)) = client {
            let where_ = cert.describe("client-certificate");
            let chain =
                certs(&cert.read()?).map_err(|e| format!("client certificate ({where_}): {e}"))?;
            let key_pem = key.read()?;
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|e| format!("client key ({}): {e}", key.describe("client-key")))?;
            check_pair(provider, &chain, &key_pem)
                .map_err(|e| format!("client certificate ({where_}): {e}"))?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(Tls {
            config: builder.build(),
        })
    }

    /// An agent for calls bounded by `timeout` (None: only the connect is bounded, for watches
    /// whose length the server sets).
    pub fn agent(&self, connect: Duration, timeout: Option<Duration>) -> Agent {
        Agent::config_builder()
            .tls_config(self.config.clone())
            .timeout_connect(Some(connect))
            .timeout_global(timeout)
            .http_status_as_error(false)
            .https_only(true)
            .max_redirects(0)
            // ureq's default is 128 KiB each way per connection; a node keeps one watch per
            // handled DaemonSet open, and requests are small. Headers fit in 16 KiB.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(16 * 1024)
            .user_agent(concat!("yurt-ota/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent()
    }
}

/// Every certificate of a PEM file; none is an error.
fn certs(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| e.to_string())? {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out)
}

/// ureq panics on a key that does not fit its certificate; rustls says so as an error.
fn check_pair(
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: &[Certificate<'static>],
    key_pem: &[u8],
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, der)
        .map(|_| ())
        .map_err(|e| format!("does not fit the key: {e}"))
}

/// The `Authorization` header value, if any. A token file is re-read when its modification time
/// or size changes, so a rotated (projected) token is used from the next call on.
pub struct Credential {
    kind: Kind,
}

enum Kind {
    None,
    Fixed(String),
    File {
        path: PathBuf,
        cached: Mutex<Option<(SystemTime, u64, String)>>,
    },
}

impl Credential {
    pub fn new(auth: &Auth) -> Credential {
        let kind = match auth {
            Auth::Token(t) => Kind::Fixed(format!("Bearer {}", t.trim())),
            Auth::TokenFile(p) => Kind::File {
                path: p.clone(),
                cached: Mutex::new(None),
            },
            Auth::None | Auth::ClientCert { .. } => Kind::None,
        };
        Credential { kind }
    }

    pub fn header(&self) -> Result<Option<String>, String> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Fixed(h) => Ok(Some(h.clone())),
            Kind::File { path, cached } => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("token file {}: {e}", path.display()))?;
                let stamp = (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((m, l, h)) = cached.as_ref() {
                    if (*m, *l) == stamp {
                        return Ok(Some(h.clone()));
                    }
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("token file {}: {e}", path.display()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!("token file {} is empty", path.display()));
                }
                let h = format!("Bearer {token}");
                *cached = Some((stamp.0, stamp.1, h.clone()));
                Ok(Some(h))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let c = Credential::new(&Auth::TokenFile(path.clone()));
        assert_eq!(c.header().unwrap().unwrap(), "Bearer first");
        std::fs::write(&path, "second-longer\n").unwrap();
        assert_eq!(c.header().unwrap().unwrap(), "Bearer second-longer");
        std::fs::write(&path, "  \n").unwrap();
        assert!(c.header().unwrap_err().contains("empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(c.header().unwrap_err().contains("token file"));
    }

    #[test]
    fn garbage_ca_is_a_clear_error() {
        let e = Tls::new(&Source::Data(b"not a pem".to_vec()), None)
            .err()
            .unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = Tls::new(&Source::File("/nonexistent/ca.crt".into()), None)
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/ca.crt"), "{e}");
    }
}
