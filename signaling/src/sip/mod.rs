//! SIP over rsipstack: one [`SipStack`] per local identity (an account, or the direct-IP
//! phone), giving registration with refresh, outgoing and incoming calls, and
//! re-INVITE handling, as events and small async methods. Media is not touched here:
//! bodies are SDP strings for the call layer.

mod admission;
mod digest;
mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod outgoing;
mod realm;
mod registration;
mod stack;
mod trust;
mod uri;

pub use event::{CallKey, EndReason, ReInvite, Rejection, SipEvent};
pub use registration::{RegistrationHandle, RegistrationState};
pub use stack::{
    KEPT_FOR_SERVERS, MAX_DIRECT_CALLS, MAX_INCOMING_CALLS, MAX_RINGING_PER_SOURCE, RING_TIMEOUT,
    SIP_EVENT_QUEUE, SipStack, StackOptions, Transport,
};
pub use trust::trusted_certificates;
pub use uri::{parse_target, to_uri};
