//! The ZRTP algorithm choices (RFC 6189 §5.1.2–5.1.6) with their wire names, and what
//! they mean for SRTP.

use bzrtp_sys as ffi;

macro_rules! algo_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:path, $wire:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every variant, in our order of preference.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub(crate) fn code(self) -> u8 {
                match self {
                    $($name::$variant => $code as u8,)+
                }
            }

            pub(crate) fn from_code(code: u8) -> Option<$name> {
                $(if code == $code as u8 { return Some($name::$variant); })+
                None
            }

            /// The four-character name used on the wire and shown to users.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.wire_name())
            }
        }
    };
}

algo_enum!(
    /// Key agreement.
    KeyAgreement {
        /// Curve25519.
        X255 = ffi::ZRTP_KEYAGREEMENT_X255, "X255";
        /// Curve448.
        X448 = ffi::ZRTP_KEYAGREEMENT_X448, "X448";
        /// Finite-field Diffie-Hellman, 3072-bit.
        Dh3k = ffi::ZRTP_KEYAGREEMENT_DH3k, "DH3k";
        /// Finite-field Diffie-Hellman, 2048-bit.
        Dh2k = ffi::ZRTP_KEYAGREEMENT_DH2k, "DH2k";
        /// Multistream (keys derived from the first stream).
        Mult = ffi::ZRTP_KEYAGREEMENT_Mult, "Mult";
    }
);

algo_enum!(
    /// How the short authentication string is rendered.
    SasType {
        /// Four base-32 characters.
        B32 = ffi::ZRTP_SAS_B32, "B32 ";
        /// Two PGP words.
        B256 = ffi::ZRTP_SAS_B256, "B256";
    }
);

algo_enum!(
    /// SRTP cipher.
    Cipher {
        /// AES-256 counter mode.
        Aes3 = ffi::ZRTP_CIPHER_AES3, "AES3";
        /// AES-128 counter mode.
        Aes1 = ffi::ZRTP_CIPHER_AES1, "AES1";
    }
);

algo_enum!(
    /// SRTP authentication tag.
    AuthTag {
        /// HMAC-SHA1, 80-bit tag.
        Hs80 = ffi::ZRTP_AUTHTAG_HS80, "HS80";
        /// HMAC-SHA1, 32-bit tag.
        Hs32 = ffi::ZRTP_AUTHTAG_HS32, "HS32";
    }
);

algo_enum!(
    /// ZRTP hash.
    Hash {
        /// SHA-384.
        S384 = ffi::ZRTP_HASH_S384, "S384";
        /// SHA-256.
        S256 = ffi::ZRTP_HASH_S256, "S256";
    }
);

/// The algorithms a finished handshake agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Key agreement.
    pub key_agreement: KeyAgreement,
    /// SRTP cipher.
    pub cipher: Cipher,
    /// SRTP authentication tag.
    pub auth_tag: AuthTag,
    /// Hash.
    pub hash: Hash,
    /// SAS rendering.
    pub sas: SasType,
}

impl std::fmt::Display for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.key_agreement,
            self.cipher,
            self.hash,
            self.auth_tag,
            self.sas.wire_name().trim_end()
        )
    }
}

/// The SRTP protection profile that carries the negotiated cipher and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfile {
    /// AES-128-CM with an 80-bit HMAC-SHA1 tag.
    Aes128CmHmacSha1_80,
    /// AES-128-CM with a 32-bit HMAC-SHA1 tag.
    Aes128CmHmacSha1_32,
    /// AES-256-CM with an 80-bit HMAC-SHA1 tag.
    Aes256CmHmacSha1_80,
    /// AES-256-CM with a 32-bit HMAC-SHA1 tag.
    Aes256CmHmacSha1_32,
    /// AEAD AES-128-GCM (RFC 7714). ZRTP (libbzrtp) does not negotiate it; it is here
    /// for SRTP keyed by other means and for the benchmark against libsrtp.
    AeadAes128Gcm,
}

impl SrtpProfile {
    pub(crate) fn from_negotiated(cipher: Cipher, tag: AuthTag) -> SrtpProfile {
        match (cipher, tag) {
            (Cipher::Aes1, AuthTag::Hs80) => SrtpProfile::Aes128CmHmacSha1_80,
            (Cipher::Aes1, AuthTag::Hs32) => SrtpProfile::Aes128CmHmacSha1_32,
            (Cipher::Aes3, AuthTag::Hs80) => SrtpProfile::Aes256CmHmacSha1_80,
            (Cipher::Aes3, AuthTag::Hs32) => SrtpProfile::Aes256CmHmacSha1_32,
        }
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        if self == SrtpProfile::AeadAes128Gcm {
            12
        } else {
            14
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80
            | SrtpProfile::Aes128CmHmacSha1_32
            | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::Aes256CmHmacSha1_80 | SrtpProfile::Aes256CmHmacSha1_32 => 32,
        }
    }
}
