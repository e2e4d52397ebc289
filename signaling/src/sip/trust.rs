//! Which certificates a SIP-over-TLS connection trusts: the system's roots, plus an
//! optional PEM file the user chose (a private CA, or a self-hosted server's own
//! certificate). Handed to rsipstack as PEM; nothing is trusted implicitly.

use crate::SignalingError;
use base64::Engine;
use std::path::Path;

/// Largest trust file we read: a CA bundle is a few hundred KiB.
const MAX_FILE: u64 = 4 << 20;

/// The system's roots and the certificates in `extra`, as one PEM bundle.
pub fn trusted_certificates(extra: Option<&Path>) -> Result<Vec<u8>, SignalingError> {
    let mut pem = Vec::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        push_pem(&mut pem, cert.as_ref());
    }
    if let Some(path) = extra {
        let shown = path.display();
        let len = std::fs::metadata(path)
            .map_err(|e| SignalingError::InvalidInput(format!("cannot read {shown}: {e}")))?
            .len();
        if len > MAX_FILE {
            return Err(SignalingError::InvalidInput(format!(
                "{shown} is too large for a certificate file"
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| SignalingError::InvalidInput(format!("cannot read {shown}: {e}")))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
            let cert = cert.map_err(|e| {
                SignalingError::InvalidInput(format!("{shown} is not a PEM certificate file: {e}"))
            })?;
            push_pem(&mut pem, cert.as_ref());
            found += 1;
        }
        if found == 0 {
            return Err(SignalingError::InvalidInput(format!(
                "{shown} holds no PEM certificate"
            )));
        }
    }
    Ok(pem)
}

fn push_pem(out: &mut Vec<u8>, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("hush-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("empty.pem");
        std::fs::write(&f, b"not a certificate\n").expect("write");
        let err = trusted_certificates(Some(&f)).expect_err("refused");
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        assert!(trusted_certificates(Some(&dir.join("missing.pem"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
