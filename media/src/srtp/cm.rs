//! The AES counter-mode profiles with HMAC-SHA1 (RFC 3711), the ones ZRTP negotiates:
//! AES-CM (AES-NI when the CPU has it) and HMAC-SHA1 (SHA-NI when it has it), both
//! keyed once per session; each packet starts from a copy of the keyed state.

use super::kdf::{AesKey, LABEL_AUTH, LABEL_ENCRYPTION, LABEL_SALT, derive};
use super::stream::Transform;
use crate::MediaError;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::Zeroizing;

/// SRTP session keys for one direction.
pub(crate) struct CmKeys {
    /// The session encryption key, expanded once.
    enc: AesKey,
    salt: Zeroizing<[u8; 14]>,
    auth: Hmac<Sha1>,
    tag_len: usize,
}

impl CmKeys {
    /// Derives the session keys; `tag_len` is 10 (HMAC_SHA1_80) or 4 (HMAC_SHA1_32).
    pub(crate) fn new(
        master_key: &[u8],
        master_salt: &[u8],
        tag_len: usize,
    ) -> Result<CmKeys, MediaError> {
        if master_salt.len() != 14 {
            return Err(MediaError::InvalidInput(
                "AES-CM SRTP needs a 14-byte master salt".into(),
            ));
        }
        let enc = AesKey::new(&derive(
            master_key,
            master_salt,
            LABEL_ENCRYPTION,
            master_key.len(),
        )?)?;
        let auth = derive(master_key, master_salt, LABEL_AUTH, 20)?;
        let salt_v = derive(master_key, master_salt, LABEL_SALT, 14)?;
        let mut salt = Zeroizing::new([0u8; 14]);
        salt.copy_from_slice(&salt_v);
        Ok(CmKeys {
            enc,
            salt,
            auth: <Hmac<Sha1> as Mac>::new_from_slice(&auth)
                .map_err(|_| MediaError::InvalidInput("SRTP auth key".into()))?,
            tag_len,
        })
    }

    fn iv(&self, ssrc: u32, roc: u32, seq: u16) -> [u8; 16] {
        let index = (u64::from(roc) << 16) | u64::from(seq);
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt[..]);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }

    fn tag(&self, authenticated: &[u8], roc: u32) -> [u8; 20] {
        let mut mac = self.auth.clone();
        mac.update(authenticated);
        mac.update(&roc.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl Transform for CmKeys {
    fn overhead(&self) -> usize {
        self.tag_len
    }

    fn seal(
        &self,
        packet: &mut Vec<u8>,
        header: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<(), MediaError> {
        self.enc
            .keystream_xor(&self.iv(ssrc, roc, seq), &mut packet[header..]);
        let tag = self.tag(packet, roc);
        packet.extend_from_slice(&tag[..self.tag_len]);
        Ok(())
    }

    fn open(
        &self,
        packet: &[u8],
        header: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<Vec<u8>, MediaError> {
        let (body, tag) = packet.split_at(packet.len() - self.tag_len);
        let expected = self.tag(body, roc);
        let mut diff = 0u8;
        for (a, b) in expected[..self.tag_len].iter().zip(tag) {
            diff |= a ^ b;
        }
        if diff != 0 {
            return Err(MediaError::Malformed {
                kind: "SRTP",
                reason: "authentication failed",
            });
        }
        let mut out = body.to_vec();
        self.enc
            .keystream_xor(&self.iv(ssrc, roc, seq), &mut out[header..]);
        Ok(out)
    }
}
