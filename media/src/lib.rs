//! hush-media: RTP/SRTP sessions, the ZRTP wrapper around libbzrtp, codecs, the jitter
//! buffer and audio devices. Protocol cores here are sans-IO: they take packets and a
//! time, and hand back packets, events and the next timeout.
#![warn(missing_docs, unreachable_pub)]

mod error;
pub mod zrtp;

pub use error::MediaError;
pub mod analysis;
pub mod audio;
pub mod camera;
pub mod codec;
pub mod driver;
pub mod dtmf;
pub mod jitter;
pub mod rtp;
pub mod screen;
pub mod srtp;
pub mod stream;
pub mod video;
