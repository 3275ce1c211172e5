//! The HTTPS client: rustls with ring's default provider (X25519, P-256 and P-384 key
//! exchange; RSA, ECDSA and Ed25519 keys), trusting only the configured CA; bearer tokens (a
//! token file re-read when it changes) or a client certificate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::kubeconfig::{Auth, Source};
use crate::upstream::http::TlsConnector;

/// TLS material, checked once at start so a bad file is a clear error, not a panic mid-call.
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Trusts only `ca`; presents `client` (certificate, key) when given.
    pub fn new(ca: &Source, client: Option<(&Source, &Source)>) -> Result<Tls, String> {
        let ca_pem = ca.read()?;
        let where_ca = || ca.describe("certificate-authority");
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&ca_pem).map_err(|e| format!("CA ({}): {e}", where_ca()))? {
            roots
                .add(c)
                .map_err(|e| format!("CA ({}): {e}", where_ca()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let where_ = cert.describe("client-certificate");
                let chain = certs(&cert.read()?)
                    .map_err(|e| format!("client certificate ({where_}): {e}"))?;
                let where_key = key.describe("client-key");
                let der = PrivateKeyDer::from_pem_slice(&key.read()?)
                    .map_err(|e| format!("client key ({where_key}): {e}"))?;
                // A key that does not fit its certificate is refused here, not at a handshake.
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => {
                            format!("client certificate ({where_}): does not fit the key: {e}")
                        }
                        // A key the provider does not load (not RSA, ECDSA or Ed25519).
                        e => format!("client key ({where_key}): {e}"),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// How to reach `server` (`https://host[:port]`), verified by its host name or IP address.
    pub fn connector(&self, server: &str) -> Result<TlsConnector, String> {
        let authority = server.strip_prefix("https://").unwrap_or(server);
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map(|(h, _)| h),
            None => authority
                .rsplit_once(':')
                .map_or(Some(authority), |(h, _)| Some(h)),
        }
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{server}: not https://host[:port]"))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{server}: {e}"))?;
        Ok(TlsConnector::new(self.config.clone(), name))
    }
}

/// Every certificate of a PEM file; none is an error.
fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let out = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out)
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

    fn creds() -> yurt_ota_apisim::apiserver::tls::Credentials {
        yurt_ota_apisim::apiserver::tls::generate(&["127.0.0.1".into()], "t".into()).unwrap()
    }

    #[test]
    fn a_key_that_does_not_fit_its_certificate_is_an_error() {
        let (a, b) = (creds(), creds());
        let ca = Source::Data(a.ca_pem.clone().into_bytes());
        let cert = Source::Data(a.client_cert_pem.clone().into_bytes());
        let good = Source::Data(a.client_key_pem.clone().into_bytes());
        assert!(Tls::new(&ca, Some((&cert, &good))).is_ok());
        let other = Source::Data(b.client_key_pem.clone().into_bytes());
        let e = Tls::new(&ca, Some((&cert, &other))).err().unwrap();
        assert!(e.contains("does not fit the key"), "{e}");
        let e = Tls::new(&ca, Some((&cert, &ca))).err().unwrap();
        assert!(e.contains("client key"), "{e}");
    }

    fn fixture(name: &str) -> Source {
        Source::File(format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR")).into())
    }

    #[test]
    fn kubeadm_k3s_and_ed25519_client_keys_load() {
        for name in ["rsa2048", "p256", "p384", "ed25519"] {
            let (cert, key) = (
                fixture(&format!("{name}.crt")),
                fixture(&format!("{name}.key")),
            );
            let r = Tls::new(&fixture("rsa-ca.crt"), Some((&cert, &key)));
            assert!(r.is_ok(), "{name}: {:?}", r.err());
        }
    }

    /// A handshake in memory between our client and `server`; the group the two agreed on.
    fn handshake(
        client: &Tls,
        server: Arc<rustls::ServerConfig>,
        name: &str,
    ) -> Result<(rustls::ProtocolVersion, rustls::NamedGroup), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut c = rustls::ClientConnection::new(client.config.clone(), name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                let group = c.negotiated_key_exchange_group().unwrap().name();
                return Ok((c.protocol_version().unwrap(), group));
            }
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets()?;
            wire.clear();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets()?;
        }
        panic!("no handshake in 10 flights");
    }

    /// kube-apiserver `--tls-curve-preferences=X25519`: the stand-in's TLS server offering only
    /// X25519, over TLS 1.3 and 1.2.
    #[test]
    fn an_apiserver_pinned_to_x25519_is_reached() {
        use rustls::crypto::ring::{default_provider, kx_group};
        use rustls::version::{TLS12, TLS13};
        let a = creds();
        let client = Tls::new(&Source::Data(a.ca_pem.clone().into_bytes()), None).unwrap();
        for version in [&TLS13, &TLS12] {
            let p = default_provider();
            let only_x25519 = rustls::crypto::CryptoProvider {
                kx_groups: vec![kx_group::X25519],
                // The version's suites only: the server speaks that version or none.
                cipher_suites: p
                    .cipher_suites
                    .iter()
                    .filter(|s| s.version() == version)
                    .copied()
                    .collect(),
                ..p
            };
            let config = yurt_ota_apisim::apiserver::tls::server_config_with(&a, only_x25519)
                .unwrap()
                .0;
            let (v, group) = handshake(&client, config, "127.0.0.1").unwrap();
            assert_eq!(v, version.version);
            assert_eq!(group, rustls::NamedGroup::X25519);
        }
    }

    #[test]
    fn an_rsa_apiserver_is_reached_over_tls_1_3_and_1_2() {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::version::{TLS12, TLS13};
        let path = |n: &str| format!("{}/tests/fixtures/tls/{n}", env!("CARGO_MANIFEST_DIR"));
        let client = Tls::new(&fixture("rsa-ca.crt"), None).unwrap();
        for version in [&TLS13, &TLS12] {
            let chain = CertificateDer::pem_file_iter(path("rsa-server.crt"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(path("rsa-server.key")).unwrap();
            let server = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            let (v, _) = handshake(&client, Arc::new(server), "localhost").unwrap();
            assert_eq!(v, version.version);
        }
    }

    #[test]
    fn an_rsa_client_key_in_pkcs1_as_kubeadm_writes_it_is_accepted() {
        let c =
            yurt_ota_apisim::apiserver::tls::generate_with(&["127.0.0.1".into()], "t".into(), true)
                .unwrap();
        let (cert, key) = c.rsa_client.clone().unwrap();
        assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let ca = Source::Data(c.ca_pem.clone().into_bytes());
        let (cert, key) = (
            Source::Data(cert.into_bytes()),
            Source::Data(key.into_bytes()),
        );
        assert!(Tls::new(&ca, Some((&cert, &key))).is_ok());
        let ec = Source::Data(c.client_key_pem.clone().into_bytes());
        let e = Tls::new(&ca, Some((&cert, &ec))).err().unwrap();
        assert!(e.contains("does not fit the key"), "{e}");
    }

    #[test]
    fn servers_are_verified_by_name_or_address_and_calls_share_one_handshake() {
        let a = creds();
        let config = yurt_ota_apisim::apiserver::tls::server_config(&a)
            .unwrap()
            .0;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut handshakes = 0;
            for s in l.incoming().take(2) {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s.unwrap());
                let mut r = std::io::BufReader::new(&mut tls);
                let mut line = String::new();
                use std::io::{BufRead, Write};
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if line == "\r\n" {
                        let t = r.get_mut();
                        t.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .unwrap();
                        t.flush().unwrap();
                    }
                    line.clear();
                }
                handshakes += 1;
            }
            handshakes
        });
        use crate::upstream::http::{agent, send, Timeouts};
        let t = std::time::Duration::from_secs(5);
        let t = Timeouts {
            connect: t,
            call: t,
            per_read: None,
            keep_idle: true,
        };
        let url = format!("https://127.0.0.1:{port}/");
        // Another CA: refused before a request is sent ("not connected").
        let other = Tls::new(&Source::Data(creds().ca_pem.into_bytes()), None).unwrap();
        let c = agent(Some(other.connector(&url).unwrap()), t);
        match send(&c, "GET", &url, &[], None) {
            Err(e) => match crate::upstream::from_http(e, crate::upstream::UpstreamError::Io) {
                crate::upstream::UpstreamError::Connect(m) => {
                    assert!(m.contains("certificate not trusted"), "{m}")
                }
                e => panic!("{e:?}"),
            },
            Ok(r) => panic!("answered {}", r.status),
        }
        let tls = Tls::new(&Source::Data(a.ca_pem.into_bytes()), None).unwrap();
        let c = agent(Some(tls.connector(&url).unwrap()), t);
        for _ in 0..3 {
            let mut r = send(&c, "GET", &url, &[], None).unwrap();
            assert_eq!(r.read_to_vec(10).unwrap(), b"ok");
        }
        drop(c);
        assert_eq!(
            server.join().unwrap(),
            2,
            "one connection for the three calls"
        );
        assert!(tls.connector("https://[::1]:6443").is_ok());
        assert!(tls.connector("https://apiserver.example").is_ok());
        assert!(tls.connector("https://bad_name!").is_err());
    }
}
