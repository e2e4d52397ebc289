//! RFC 3711 §4.3 session-key derivation with a key derivation rate of 0: the AES-CM
//! PRF over the master salt with the label at byte 7 (RFC 7714 uses the same with a
//! 12-byte salt).

use crate::MediaError;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use zeroize::Zeroizing;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128Enc>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256Enc>;

/// SRTP encryption key, authentication key and salt labels.
pub(crate) const LABEL_ENCRYPTION: u8 = 0x00;
pub(crate) const LABEL_AUTH: u8 = 0x01;
pub(crate) const LABEL_SALT: u8 = 0x02;

/// An AES key with its (encryption) round keys expanded once, for counter-mode
/// keystream; wiped when dropped.
pub(crate) enum AesKey {
    A128(Box<aes::Aes128Enc>),
    A256(Box<aes::Aes256Enc>),
}

impl AesKey {
    pub(crate) fn new(key: &[u8]) -> Result<AesKey, MediaError> {
        let bad = |_| MediaError::InvalidInput("SRTP key length".into());
        Ok(match key.len() {
            16 => AesKey::A128(Box::new(aes::Aes128Enc::new_from_slice(key).map_err(bad)?)),
            32 => AesKey::A256(Box::new(aes::Aes256Enc::new_from_slice(key).map_err(bad)?)),
            _ => return Err(MediaError::InvalidInput("SRTP key length".into())),
        })
    }

    /// XORs the keystream starting at counter block `iv` into `data`.
    pub(crate) fn keystream_xor(&self, iv: &[u8; 16], data: &mut [u8]) {
        match self {
            AesKey::A128(k) => {
                Aes128Ctr::from_core(ctr::CtrCore::inner_iv_init((**k).clone(), iv.into()))
                    .apply_keystream(data)
            }
            AesKey::A256(k) => {
                Aes256Ctr::from_core(ctr::CtrCore::inner_iv_init((**k).clone(), iv.into()))
                    .apply_keystream(data)
            }
        }
    }
}

/// `len` bytes of session key material for `label`.
pub(crate) fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, MediaError> {
    if !matches!(master_salt.len(), 12 | 14) {
        return Err(MediaError::InvalidInput(
            "SRTP master salt is neither 12 nor 14 bytes".into(),
        ));
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    let mut out = Zeroizing::new(vec![0u8; len]);
    AesKey::new(master_key)?.keystream_xor(&iv, &mut out);
    Ok(out)
}
