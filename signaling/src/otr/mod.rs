//! OTR v3 (Off-the-Record messaging) through libotr 4.1.1: keys and fingerprints in
//! Pidgin's file formats (staged through memory, never the disk), conversations with
//! the four states, SMP, and the "require encryption" guarantee.

mod callbacks;
mod engine;
mod fragment;
mod keyfile;
mod library;
mod limits;
mod memfile;
mod state;

pub use engine::{
    API_VERSION, Incoming, KnownFingerprint, MAX_HELD, MIN_FRAGMENT, OtrEngine, OtrError, OtrEvent,
    OtrPolicy, PROTOCOL, SmpEvent, Transmit, normalize_fingerprint,
};
pub use limits::OtrLimits;
pub use state::ChatSecurity;
