//! The rustls crypto provider for the apiserver upstream: ring, with only what a Kubernetes
//! apiserver needs.
//!
//! ring's `default_provider()` reaches every algorithm rustls has for it, so none of them can
//! leave the binary. This one is built from the same parts, without:
//! - X25519 key exchange: P-256 is the one group every TLS 1.3 implementation must support
//!   (RFC 8446 section 9.1), and Go's crypto/tls (the apiserver, k3s) always offers it;
//! - Ed25519 keys and signatures: kubeadm writes RSA keys, k3s ECDSA P-256 ones; an Ed25519 key
//!   is refused at start with a clear error;
//! - ChaCha20-Poly1305 and the P-384 key exchange: AES-GCM over P-256 is what Go negotiates with
//!   a client that offers it.
//!
//! P-384 and RSA (PKCS#1 and PSS) signatures are still checked: a CA may sign with them.
//! Together about 70 KB of the aarch64 binary (docs/performance.md "Size").

use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite as suite, kx_group, sign};
use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::SignatureScheme as S;
use webpki::ring as alg;

pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        kx_groups: vec![kx_group::SECP256R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Ring,
        key_provider: &Ring,
    }
}

/// ring's list without Ed25519 (and without the RSA variants whose parameters are absent,
/// which only broken encoders write).
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
    ],
    mapping: &[
        (
            S::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            S::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (
            S::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            S::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            S::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
        (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
        (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

/// Randomness and private keys from ring, as rustls' own ring provider has them.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    /// An ECDSA (P-256, P-384) or RSA key, in any of its PEM forms (SEC1, PKCS#1, PKCS#8).
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        if let Ok(k) = sign::any_ecdsa_type(&key) {
            return Ok(k);
        }
        match sign::RsaSigningKey::new(&key) {
            Ok(k) => Ok(Arc::new(k)),
            Err(_) => Err(rustls::Error::General(
                "not an ECDSA P-256/P-384 or RSA private key (Ed25519 and other key types are \
                 not supported)"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    fn path(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn load(name: &str) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Ring.load_private_key(PrivateKeyDer::from_pem_file(path(name)).unwrap())
    }

    /// A handshake in memory between a client on `provider()` and a server on ring's default
    /// provider with a kubeadm-style RSA certificate, limited to `versions`.
    fn handshake(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<rustls::ProtocolVersion, rustls::Error> {
        use rustls::pki_types::CertificateDer;
        let chain = CertificateDer::pem_file_iter(path("rsa-server.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(path("rsa-server.key")).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(path("rsa-ca.crt")).unwrap())?;
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut s = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(c.protocol_version().unwrap());
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

    #[test]
    fn an_rsa_apiserver_is_reached_over_tls_1_3_and_1_2() {
        use rustls::version::{TLS12, TLS13};
        assert_eq!(
            handshake(&[&TLS13]).unwrap(),
            rustls::ProtocolVersion::TLSv1_3
        );
        assert_eq!(
            handshake(&[&TLS12]).unwrap(),
            rustls::ProtocolVersion::TLSv1_2
        );
    }

    #[test]
    fn kubeadm_and_k3s_keys_load_and_ed25519_is_refused_by_name() {
        for name in ["rsa2048.key", "p256.key", "p384.key"] {
            assert!(load(name).is_ok(), "{name}");
        }
        let Err(e) = load("ed25519.key") else {
            panic!("an Ed25519 key was loaded")
        };
        assert!(e.to_string().contains("Ed25519"), "{e}");
    }

    #[test]
    fn randomness_fills_the_buffer() {
        let mut a = [0u8; 32];
        Ring.fill(&mut a).unwrap();
        assert_ne!(a, [0u8; 32]);
    }
}
