//! The vault's primitives: argon2id key derivation, XChaCha20-Poly1305 sealing and
//! keyed tags. Pure functions over bytes; the vault decides what gets sealed with what.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Format byte in front of every sealed blob, so the layout can evolve.
const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A 256-bit symmetric key, wiped on drop.
pub(crate) struct Key(Zeroizing<[u8; 32]>);

impl Key {
    pub(crate) fn random() -> Key {
        let mut k = Zeroizing::new([0u8; 32]);
        fill_random(&mut k[..]);
        Key(k)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Key> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Key(Zeroizing::new(arr)))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// argon2id cost parameters, stored next to the salt so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KdfParams {
    pub(crate) m_kib: u32,
    pub(crate) t: u32,
    pub(crate) p: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes: a few hundred milliseconds on a laptop, costly for a GPU farm.
    pub(crate) const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Bounds applied to values read from disk, so a crafted profile cannot make us
    /// allocate gigabytes or spin for hours.
    pub(crate) fn is_sane(&self) -> bool {
        (8 * 1024..=1024 * 1024).contains(&self.m_kib)
            && (1..=16).contains(&self.t)
            && (1..=8).contains(&self.p)
    }
}

pub(crate) fn fill_random(buf: &mut [u8]) {
    // The system RNG failing is not recoverable: continuing would mean weak keys.
    SystemRandom::new()
        .fill(buf)
        .expect("system random number generator failed");
}

/// Derives the key-encryption key from the master password.
pub(crate) fn derive(password: &[u8], salt: &[u8], params: KdfParams) -> Option<Key> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32)).ok()?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password, salt, &mut out[..]).ok()?;
    Some(Key(out))
}

/// Seals `plaintext` bound to `aad`: `version || nonce || ciphertext+tag`.
pub(crate) fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let ct = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens a blob made by [`seal`]; `None` if it is malformed, altered or for another key.
pub(crate) fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEAL_VERSION {
        return None;
    }
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let nonce = XNonce::try_from(&sealed[1..1 + NONCE_LEN]).ok()?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed[1 + NONCE_LEN..],
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// A keyed tag used as a lookup index for data whose plaintext must not be stored.
pub(crate) fn tag(key: &Key, data: &[u8]) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.bytes());
    hmac::sign(&k, data).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let k = Key::random();
        let s = seal(&k, b"aad", b"hello");
        assert_eq!(
            open(&k, b"aad", &s).as_deref().map(|v| &v[..]),
            Some(&b"hello"[..])
        );
        assert!(open(&k, b"other", &s).is_none(), "aad is bound");
        assert!(open(&Key::random(), b"aad", &s).is_none(), "key is bound");
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(open(&k, b"aad", &t).is_none(), "tag is checked");
        assert!(
            open(&k, b"aad", &s[..10]).is_none(),
            "truncated is rejected"
        );
        assert!(open(&k, b"aad", &[]).is_none());
    }

    #[test]
    fn derive_depends_on_password_and_salt() {
        let p = KdfParams {
            m_kib: 8 * 1024,
            t: 1,
            p: 1,
        };
        let a = derive(b"pw", b"saltsaltsaltsalt", p).expect("derive");
        let b = derive(b"pw", b"saltsaltsaltsalt", p).expect("derive");
        let c = derive(b"pw2", b"saltsaltsaltsalt", p).expect("derive");
        let d = derive(b"pw", b"saltsaltsaltsal2", p).expect("derive");
        assert_eq!(a.bytes(), b.bytes());
        assert_ne!(a.bytes(), c.bytes());
        assert_ne!(a.bytes(), d.bytes());
    }

    #[test]
    fn insane_params_are_refused() {
        assert!(KdfParams::DEFAULT.is_sane());
        assert!(
            !KdfParams {
                m_kib: u32::MAX,
                t: 3,
                p: 1
            }
            .is_sane()
        );
        assert!(
            !KdfParams {
                m_kib: 65536,
                t: 0,
                p: 1
            }
            .is_sane()
        );
        assert!(
            !KdfParams {
                m_kib: 65536,
                t: 3,
                p: 200
            }
            .is_sane()
        );
    }
}
