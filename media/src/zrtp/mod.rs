//! ZRTP (RFC 6189) through libbzrtp: a safe, sans-IO session per media stream, packet
//! framing checks, and the algorithm vocabulary.

mod algorithms;
mod cache;
mod packet;
mod session;

pub use algorithms::{AuthTag, Cipher, Hash, KeyAgreement, Negotiated, SasType, SrtpProfile};
pub use cache::{peer_verified, set_peer_verified, verified_peers};
pub use packet::{MAX_LEN, check as check_packet, crc32c, is_zrtp};
pub use session::{
    Secured, SrtpKeys, ZidCache, ZrtpConfig, ZrtpEvent, ZrtpFailure, ZrtpSession, ZrtpState,
};
