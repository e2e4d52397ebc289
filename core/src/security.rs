//! The security-state model shared by the UI, the CLI and the tests. One vocabulary, so
//! that every surface tells the user the same thing about the same call or chat.

use serde::{Deserialize, Serialize};

/// How private a call is right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallSecurity {
    /// Media flows unencrypted. Only reachable when the policy allows it, and the user
    /// has been told.
    Cleartext,
    /// ZRTP is negotiating. Under a mandatory policy no media is sent in this state.
    Negotiating,
    /// SRTP keyed by ZRTP. `verified` is the user's own SAS comparison, remembered per peer.
    Secure {
        /// The short authentication string both sides read aloud.
        sas: String,
        /// The user confirmed the SAS with this peer (now or on an earlier call).
        verified: bool,
    },
    /// The peer's retained secret did not match our cache: a man in the middle, or the
    /// peer reinstalled. Media is encrypted, but the user must compare the SAS again.
    CacheMismatch {
        /// The SAS to compare.
        sas: String,
    },
    /// The user verified this address before, and now it presents a key (ZID) we never
    /// verified: someone in the middle with a fresh key, or the peer on a new device.
    /// Media is encrypted; comparing the SAS again and confirming clears it.
    NewKey {
        /// The SAS to compare.
        sas: String,
    },
    /// Security could not be established; the reason is shown to the user.
    Failed(String),
}

impl CallSecurity {
    /// Rank used to refuse silent downgrades: a re-INVITE may never move a call to a
    /// lower rank without the user being told.
    pub fn rank(&self) -> u8 {
        match self {
            CallSecurity::Failed(_) => 0,
            CallSecurity::Cleartext => 1,
            CallSecurity::Negotiating => 2,
            CallSecurity::CacheMismatch { .. } => 3,
            CallSecurity::NewKey { .. } => 4,
            CallSecurity::Secure {
                verified: false, ..
            } => 5,
            CallSecurity::Secure { verified: true, .. } => 6,
        }
    }

    /// True when media is encrypted end to end.
    pub fn is_encrypted(&self) -> bool {
        matches!(
            self,
            CallSecurity::Secure { .. }
                | CallSecurity::CacheMismatch { .. }
                | CallSecurity::NewKey { .. }
        )
    }

    /// The code to compare aloud, when there is one.
    pub fn sas(&self) -> Option<&str> {
        match self {
            CallSecurity::Secure { sas, .. }
            | CallSecurity::CacheMismatch { sas }
            | CallSecurity::NewKey { sas } => Some(sas),
            _ => None,
        }
    }

    /// A short label for people and scripts.
    pub fn label(&self) -> &'static str {
        match self {
            CallSecurity::Cleartext => "not encrypted",
            CallSecurity::Negotiating => "negotiating",
            CallSecurity::Secure {
                verified: false, ..
            } => "secure, SAS not verified",
            CallSecurity::Secure { verified: true, .. } => "secure, verified",
            CallSecurity::CacheMismatch { .. } => "key mismatch: compare the SAS",
            CallSecurity::NewKey { .. } => "new key for a verified contact: compare the code aloud",
            CallSecurity::Failed(_) => "failed",
        }
    }
}

/// One key (ZRTP identity, ZID) a call peer's address has presented, as the user reviews
/// it before verifying outside a call or withdrawing a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerKey {
    /// The address (`user@host`).
    pub peer: String,
    /// The key id: 24 hex digits.
    pub key: String,
    /// The user compared the SAS on a call with this key and confirmed it.
    pub verified: bool,
    /// The key of the last secure call with this address.
    pub last_seen: bool,
}

/// How private a chat is right now (OTR's four states): the signalling layer's own
/// type, used unchanged up to the window.
pub use hush_signaling::otr::ChatSecurity;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_the_states() {
        let states = [
            CallSecurity::Failed("x".into()),
            CallSecurity::Cleartext,
            CallSecurity::Negotiating,
            CallSecurity::CacheMismatch { sas: "abcd".into() },
            CallSecurity::NewKey { sas: "abcd".into() },
            CallSecurity::Secure {
                sas: "abcd".into(),
                verified: false,
            },
            CallSecurity::Secure {
                sas: "abcd".into(),
                verified: true,
            },
        ];
        for w in states.windows(2) {
            assert!(w[0].rank() < w[1].rank(), "{:?} < {:?}", w[0], w[1]);
        }
        assert!(!CallSecurity::Cleartext.is_encrypted());
        assert!(CallSecurity::CacheMismatch { sas: "x".into() }.is_encrypted());
        let new_key = CallSecurity::NewKey { sas: "x".into() };
        assert!(new_key.is_encrypted() && new_key.sas() == Some("x"));
        assert!(
            new_key
                .label()
                .starts_with("new key for a verified contact")
        );
        assert!(!ChatSecurity::Finished.may_send());
        assert!(ChatSecurity::NotPrivate.may_send());
    }
}
