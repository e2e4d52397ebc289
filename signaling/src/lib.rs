//! hush-signaling: the protocol drivers. `xmpp` connects, registers and logs in over
//! TLS-only streams with certificate pinning for self-hosted servers; SIP and OTR join
//! as their issues land.
#![warn(missing_docs, unreachable_pub)]

mod error;
pub mod otr;
pub mod sdp;
pub mod sip;
pub mod xmpp;

pub use error::SignalingError;
