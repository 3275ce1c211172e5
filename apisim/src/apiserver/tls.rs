//! The stand-in's credentials, generated at start: a CA, a server certificate for loopback,
//! a client certificate for mutual TLS, a bearer token, and kubeconfigs for the agent.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// What was generated, as PEM, and the paths written.
pub struct Credentials {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: Vec<u8>,
    pub client_cert_pem: String,
    /// The CA's key, written as `ca.key`: tests sign client certificates of their own with it
    /// (RSA ones by openssl, as kubeadm's).
    pub ca_key_pem: String,
    pub client_key_pem: String,
    pub token: String,
}

/// The user the client certificate names; its organization (group) is
/// `server::NODE_GROUP`, which the shipped RBAC manifest binds.
pub const CLIENT_CN: &str = "yurt-ota-node";

pub fn generate(hosts: &[String], token: String) -> Result<Credentials, String> {
    let e = |e: rcgen::Error| format!("certificate generation: {e}");
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "yurt-ota-apisim-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().map_err(e)?;
    let mut server = CertificateParams::new(hosts.to_vec()).map_err(e)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).map_err(e)?;

    let client_key = KeyPair::generate().map_err(e)?;
    let mut client = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    client
        .distinguished_name
        .push(DnType::CommonName, CLIENT_CN);
    client
        .distinguished_name
        .push(DnType::OrganizationName, super::server::NODE_GROUP);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).map_err(e)?;

    Ok(Credentials {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server_chain: vec![server_cert.der().clone()],
        server_key: server_key.serialize_der(),
        client_cert_pem: client_cert.pem(),
        ca_key_pem,
        client_key_pem: client_key.serialize_pem(),
        token,
    })
}

/// A client certificate the CA does not verify still completes the handshake, as the
/// apiserver's does (it asks for a certificate and judges it at authentication): the request is
/// then authenticated by its token, or answered 401. The handshake signature is checked all
/// the same (the client holds the key of what it presented).
#[derive(Debug)]
pub struct Lenient(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether the CA verifies a presented chain (end entity first).
pub fn verified(verifier: &dyn ClientCertVerifier, chain: &[CertificateDer<'_>]) -> bool {
    chain.split_first().is_some_and(|(ee, rest)| {
        verifier
            .verify_client_cert(ee, rest, UnixTime::now())
            .is_ok()
    })
}

/// rustls with ring; client certificates optional (a request without one needs a token), and
/// the CA's verifier, to judge them at authentication.
pub fn server_config(
    c: &Credentials,
) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(c.ca_der.clone())
        .map_err(|e| format!("CA: {e}"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.server_key.clone()));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(Arc::new(Lenient(verifier.clone())))
        .with_single_cert(c.server_chain.clone(), key)
        .map_err(|e| format!("server certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), verifier))
}

/// Files written to the caller's directory.
pub struct Written {
    pub kubeconfig: PathBuf,
    pub kubeconfig_token_file: PathBuf,
    pub kubeconfig_cert: PathBuf,
    pub ca: PathBuf,
    pub token: PathBuf,
}

/// Writes `ca.crt`, `token`, `client.crt`, `client.key`, and three kubeconfigs for `server`:
/// `kubeconfig` (inline token), `kubeconfig-token-file` (tokenFile, for rotation), and
/// `kubeconfig-cert` (client certificate).
pub fn write(
    dir: &Path,
    server: &str,
    c: &Credentials,
    admin_token: &str,
) -> Result<Written, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let put = |name: &str, data: &str| -> Result<PathBuf, String> {
        let p = dir.join(name);
        write_atomic(&p, data.as_bytes())?;
        Ok(p)
    };
    let ca = put("ca.crt", &c.ca_pem)?;
    let token = put("token", &c.token)?;
    put("client.crt", &c.client_cert_pem)?;
    put("client.key", &c.client_key_pem)?;
    put("ca.key", &c.ca_key_pem)?;
    put("server", server)?;
    let ca_data = base64(c.ca_pem.as_bytes());
    let config = |user: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: apisim\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca_data}\nusers:\n- name: yurt-ota\n  user:\n{user}contexts:\n\
             - name: apisim\n  context:\n    cluster: apisim\n    user: yurt-ota\ncurrent-context: apisim\n"
        )
    };
    let kubeconfig = put("kubeconfig", &config(&format!("    token: {}\n", c.token)))?;
    let kubeconfig_token_file = put(
        "kubeconfig-token-file",
        &config(&format!("    tokenFile: {}\n", token.display())),
    )?;
    put(
        "kubeconfig-admin",
        &config(&format!("    token: {admin_token}\n"))
            .replace(
                "name: yurt-ota\n  user:",
                &format!("name: {}\n  user:", super::server::ADMIN_USER),
            )
            .replace(
                "user: yurt-ota\n",
                &format!("user: {}\n", super::server::ADMIN_USER),
            ),
    )?;
    put("admin-token", admin_token)?;
    let kubeconfig_cert = put(
        "kubeconfig-cert",
        &config(&format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            base64(c.client_cert_pem.as_bytes()),
            base64(c.client_key_pem.as_bytes())
        )),
    )?;
    Ok(Written {
        kubeconfig,
        kubeconfig_token_file,
        kubeconfig_cert,
        ca,
        token,
    })
}

/// Temp file then rename: a reader (the agent re-reading a rotated token) never sees half.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
