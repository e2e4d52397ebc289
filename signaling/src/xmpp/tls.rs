//! TLS client configuration: system roots by default, or exactly one certificate the
//! user chose to trust (a pinned SHA-256 fingerprint) for a self-hosted server. There is
//! no "accept anything" mode.

use crate::SignalingError;
use std::sync::Arc;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Which server certificates to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's trusted roots, with hostname checking.
    SystemRoots,
    /// Only a certificate whose SHA-256 equals this fingerprint.
    Pinned([u8; 32]),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `trust`.
/// Where the fingerprint of the certificate a server presented is kept, so a refusal
/// can show the user what to compare and pin.
pub(crate) type Presented = Arc<std::sync::Mutex<Option<[u8; 32]>>>;

pub(crate) fn client_config(
    trust: &Trust,
    presented: Presented,
) -> Result<Arc<ClientConfig>, SignalingError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SignalingError::Protocol(format!("TLS setup: {e}")))?;
    let inner: Arc<dyn ServerCertVerifier> = match trust {
        Trust::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| SignalingError::Protocol(format!("TLS setup: {e}")))?
        }
        Trust::Pinned(fp) => Arc::new(PinnedVerifier {
            fingerprint: *fp,
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let verifier = Arc::new(Recording { inner, presented });
    Ok(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// Notes the presented certificate's fingerprint, then lets the real verifier decide.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    presented: Presented,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let d = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        let mut fp = [0u8; 32];
        fp.copy_from_slice(d.as_ref());
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(fp);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `AB:CD:...` form of a fingerprint, as users compare and paste it.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts exactly the pinned certificate, and still checks the handshake signatures
/// so the peer must hold its private key.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        // Fingerprints are public, so a plain comparison leaks nothing worth protecting.
        if actual.as_ref() == self.fingerprint.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Parses a fingerprint typed or pasted by a user: hex with optional `:` or spaces.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], SignalingError> {
    let hex: String = text.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    let bad = || {
        SignalingError::InvalidInput("a certificate fingerprint is 64 hex digits (SHA-256)".into())
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// The SHA-256 fingerprint of the first certificate in a PEM file's contents.
pub fn cert_fingerprint_from_pem(pem: &[u8]) -> Result<[u8; 32], SignalingError> {
    let mut reader = std::io::BufReader::new(pem);
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| SignalingError::InvalidInput("no certificate in the PEM data".into()))?
        .map_err(|e| SignalingError::InvalidInput(format!("unreadable PEM certificate: {e}")))?;
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_separators() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).ok(), Some([0xab; 32]));
        let colon: Vec<String> = (0..32).map(|_| "ab".to_string()).collect();
        assert_eq!(parse_fingerprint(&colon.join(":")).ok(), Some([0xab; 32]));
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&"é".repeat(32)).is_err());
    }
}
