//! The one error type of hush-media.

/// What went wrong in the media layer.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A packet from the network was malformed and has been dropped.
    #[error("dropped malformed {kind} packet: {reason}")]
    Malformed {
        /// Which kind of packet.
        kind: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A well-formed packet that must not be acted on (out of place, or from a source
    /// that has not shown it is the peer) has been dropped.
    #[error("dropped {kind} packet: {reason}")]
    Refused {
        /// Which kind of packet.
        kind: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The ZRTP engine refused an operation.
    #[error("ZRTP engine error {code:#06x} in {what}")]
    Zrtp {
        /// What we were doing.
        what: &'static str,
        /// libbzrtp's code.
        code: u32,
    },
    /// The ZID cache (retained secrets, "verified" flags) could not be read or changed.
    #[error("ZRTP key cache: {0}")]
    Cache(String),
    /// The video codec failed (a frame it could not decode: ask for a key frame).
    #[error("{0}")]
    Codec(String),
    /// The camera cannot be opened or stopped delivering (said as the user should
    /// read it: which device, what it refused).
    #[error("camera: {0}")]
    Camera(String),
    /// A configuration value is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
}
