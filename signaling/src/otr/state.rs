//! How private a chat is: OTR's four states, the one type every layer uses, from
//! libotr's context to the padlock on screen.

use serde::{Deserialize, Serialize};

/// How private a chat is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatSecurity {
    /// Plain XMPP: the server can read it.
    NotPrivate,
    /// OTR session up, buddy not authenticated.
    PrivateUnverified,
    /// OTR session up, buddy authenticated by fingerprint or SMP.
    PrivateVerified,
    /// The peer ended the private session; sending is blocked until the user acts.
    Finished,
}

impl ChatSecurity {
    /// A short label for people and scripts.
    pub fn label(&self) -> &'static str {
        match self {
            ChatSecurity::NotPrivate => "not private",
            ChatSecurity::PrivateUnverified => "private, unverified",
            ChatSecurity::PrivateVerified => "private, verified",
            ChatSecurity::Finished => "private conversation ended",
        }
    }

    /// Sending is allowed only when the session is not in the Finished state.
    pub fn may_send(&self) -> bool {
        !matches!(self, ChatSecurity::Finished)
    }
}
