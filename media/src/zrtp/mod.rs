//! ZRTP (RFC 6189) through libbzrtp: a safe, sans-IO session per call (one channel per
//! media stream, the further ones keyed in multistream mode), packet framing checks,
//! the algorithm vocabulary, and the in-memory ZID cache.

mod algorithms;
mod inbound;
mod packet;
mod session;
mod store;

pub use algorithms::{AuthTag, Cipher, Hash, KeyAgreement, Negotiated, SasType, SrtpProfile};
pub(crate) use packet::message_type;
pub use packet::{MAX_LEN, check as check_packet, crc32c, is_zrtp};
pub use session::{
    MAX_EXTRA_CHANNELS, Secured, SrtpKeys, ZidCache, ZrtpConfig, ZrtpEvent, ZrtpFailure,
    ZrtpSession, ZrtpState,
};
pub use store::{CachedKey, KeyStatus, MAX_IMAGE_LEN, MAX_KEYS_PER_PEER, Zid, ZidStore};
