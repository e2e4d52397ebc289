//! RFC 5929 `tls-server-end-point` binding data: the server certificate hashed with the
//! hash of its own signature algorithm (SHA-256 when that is MD5 or SHA-1). Undefined for
//! algorithms without one hash (Ed25519, RSA-PSS): then there is no such binding.

use ring::digest;

/// The binding data for the server's DER certificate, if defined for its algorithm.
pub(crate) fn end_point_binding(cert: &[u8]) -> Option<Vec<u8>> {
    let algorithm = hash_of(signature_oid(cert)?)?;
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

fn hash_of(oid: &[u8]) -> Option<&'static digest::Algorithm> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    if oid == ECDSA_SHA1 {
        return Some(&digest::SHA256);
    }
    let (family, last) = oid.split_last().map(|(l, rest)| (rest, *l))?;
    match (family, last) {
        // md5, sha1, sha256 with RSA; ecdsa-with-SHA256
        (RSA, 0x04 | 0x05 | 0x0b) | (ECDSA_SHA2, 0x02) => Some(&digest::SHA256),
        (RSA, 0x0c) | (ECDSA_SHA2, 0x03) => Some(&digest::SHA384),
        (RSA, 0x0d) | (ECDSA_SHA2, 0x04) => Some(&digest::SHA512),
        _ => None,
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, .. }`
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = element(cert, 0x30)?;
    let (_, rest) = element(certificate, 0x30)?;
    let (algorithm, _) = element(rest, 0x30)?;
    let (oid, _) = element(algorithm, 0x06)?;
    Some(oid)
}

/// One DER element of `tag` at the start of `input`: its contents and what follows.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let n = usize::from(len & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 certificate signed with ecdsa-with-SHA256 (made by openssl for the tests).
    const ECDSA_CERT: &str = "MIIBfTCCASOgAwIBAgIUZZU7mBrpS8DMs7n7E6vZ35IfdacwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI2MTIwMjExMzQ0NFoXDTM2MTEyOTExMzQ0NFowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEy1DHFjbZREWO2npb7fnzJAtPnG6gRou4Sh07OBWDEmYoDCDZyvq4syaSuHT6UIN/gQ0xVatm5SRGWPv3g0V3f6NTMFEwHQYDVR0OBBYEFBboZQ53Hx7jwLFz54X07/bdNsDnMB8GA1UdIwQYMBaAFBboZQ53Hx7jwLFz54X07/bdNsDnMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgOa77MYVq1OoIJB9ZeAvhJGnjsuECkagGEwdaq/9lL3gCIQCTdyEDVN2AgyWZHtsd5UZnDL8aOZQ8ix5jn7HJEllabQ==";

    fn der(b64: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn an_ecdsa_sha256_certificate_binds_by_its_sha256() {
        let cert = der(ECDSA_CERT);
        assert_eq!(
            signature_oid(&cert),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..])
        );
        assert_eq!(
            end_point_binding(&cert).unwrap(),
            digest::digest(&digest::SHA256, &cert).as_ref()
        );
    }

    #[test]
    fn algorithms_and_garbage_without_a_defined_hash_give_no_binding() {
        // Ed25519 (1.3.101.112)
        assert!(hash_of(&[0x2b, 0x65, 0x70]).is_none());
        // RSA-PSS (1.2.840.113549.1.1.10)
        assert!(hash_of(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]).is_none());
        assert_eq!(
            hash_of(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d])
                .map(|a| a.output_len()),
            Some(64)
        );
        let cert = der(ECDSA_CERT);
        for cut in 0..cert.len() {
            assert!(end_point_binding(&cert[..cut]).is_none(), "cut at {cut}");
        }
        assert!(end_point_binding(&[]).is_none());
        assert!(end_point_binding(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(end_point_binding(&[0x30, 0x80]).is_none());
    }
}
