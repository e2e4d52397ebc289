//! RFC 3711 §4.3 session-key derivation with a key derivation rate of 0: the AES-CM
//! PRF over the master salt with the label at byte 7 (RFC 7714 uses the same with a
//! 12-byte salt).

use crate::MediaError;
use aes::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroizing;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// SRTP encryption key, authentication key and salt labels.
pub(crate) const LABEL_ENCRYPTION: u8 = 0x00;
pub(crate) const LABEL_AUTH: u8 = 0x01;
pub(crate) const LABEL_SALT: u8 = 0x02;

/// XORs AES counter-mode keystream (key, initial counter block `iv`) into `data`.
pub(crate) fn keystream_xor(key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<(), MediaError> {
    let bad = |_| MediaError::InvalidInput("SRTP key length".into());
    match key.len() {
        16 => Aes128Ctr::new_from_slices(key, iv)
            .map_err(bad)?
            .apply_keystream(data),
        32 => Aes256Ctr::new_from_slices(key, iv)
            .map_err(bad)?
            .apply_keystream(data),
        _ => return Err(MediaError::InvalidInput("SRTP key length".into())),
    }
    Ok(())
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
    keystream_xor(master_key, &iv, &mut out)?;
    Ok(out)
}
