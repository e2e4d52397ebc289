//! AEAD_AES_128_GCM (RFC 7714) for RTP, on ring's AES-GCM (AES-NI and carry-less
//! multiply when the CPU has them). ZRTP does not negotiate it; SRTP keyed by other
//! means does.

use super::kdf::{LABEL_ENCRYPTION, LABEL_SALT, derive};
use super::stream::Transform;
use crate::MediaError;
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

const TAG: usize = 16;

/// AES-GCM session keys for one direction.
pub(crate) struct GcmKeys {
    key: LessSafeKey,
    salt: Zeroizing<[u8; 12]>,
}

impl GcmKeys {
    pub(crate) fn new(master_key: &[u8], master_salt: &[u8]) -> Result<GcmKeys, MediaError> {
        if master_key.len() != 16 || master_salt.len() != 12 {
            return Err(MediaError::InvalidInput(
                "AES-128-GCM SRTP needs a 16-byte key and a 12-byte salt".into(),
            ));
        }
        let enc = derive(master_key, master_salt, LABEL_ENCRYPTION, 16)?;
        let salt_v = derive(master_key, master_salt, LABEL_SALT, 12)?;
        let mut salt = Zeroizing::new([0u8; 12]);
        salt.copy_from_slice(&salt_v);
        let key = UnboundKey::new(&AES_128_GCM, &enc)
            .map_err(|_| MediaError::InvalidInput("SRTP GCM key".into()))?;
        Ok(GcmKeys {
            key: LessSafeKey::new(key),
            salt,
        })
    }

    /// RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the salt.
    fn nonce(&self, ssrc: u32, roc: u32, seq: u16) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        for (b, s) in iv.iter_mut().zip(self.salt.iter()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

impl Transform for GcmKeys {
    fn overhead(&self) -> usize {
        TAG
    }

    fn seal(
        &self,
        packet: &mut Vec<u8>,
        header: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<(), MediaError> {
        let (head, payload) = packet.split_at_mut(header);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(ssrc, roc, seq), Aad::from(&*head), payload)
            .map_err(|_| MediaError::InvalidInput("SRTP GCM seal".into()))?;
        packet.extend_from_slice(tag.as_ref());
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
        let mut out = packet.to_vec();
        let (head, rest) = out.split_at_mut(header);
        let plain_len = self
            .key
            .open_in_place(self.nonce(ssrc, roc, seq), Aad::from(&*head), rest)
            .map_err(|_| MediaError::Malformed {
                kind: "SRTP",
                reason: "authentication failed",
            })?
            .len();
        out.truncate(header + plain_len);
        Ok(out)
    }
}
