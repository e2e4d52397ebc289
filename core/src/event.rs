//! What happened, as the core reports it. The snapshot says where things stand; events
//! say what changed, for logs, system lines in a chat and scripts.

use crate::model::{AccountConfig, AccountId};
use crate::security::CallSecurity;
use crate::snapshot::{AccountStatus, CallId, CallState, CallStats, ChatLine, ContactView};

/// The command name under which a failure to make an account's first OTR key is
/// reported (it is made while the account logs in, not by a command of the user's).
pub const MAKE_OTR_KEY: &str = "make OTR key";

/// Something that happened inside the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The vault was opened.
    Unlocked,
    /// An account was added.
    AccountAdded(AccountConfig),
    /// An account was removed.
    AccountRemoved(AccountId),
    /// An account's connection state changed.
    AccountStatus {
        /// Which account.
        account: AccountId,
        /// Its new state.
        status: AccountStatus,
    },
    /// The master password was set, changed or removed.
    MasterPasswordChanged {
        /// Whether one is set now.
        protected: bool,
    },
    /// History settings changed.
    HistorySettingsChanged,
    /// All history was erased.
    HistoryErased,
    /// A call's security state changed.
    CallSecurity {
        /// Which call.
        call: CallId,
        /// Its new state.
        security: CallSecurity,
    },
    /// Someone is calling.
    CallIncoming {
        /// The new call.
        call: CallId,
        /// Who.
        from: String,
    },
    /// A call moved on (ringing, connected, on hold, ended).
    CallState {
        /// Which call.
        call: CallId,
        /// Its new state.
        state: CallState,
    },
    /// ZRTP agreed on these algorithms.
    CallAlgorithms {
        /// Which call.
        call: CallId,
        /// E.g. "X255/AES1/S256/HS80/B32".
        algorithms: String,
    },
    /// Periodic media statistics, per stream.
    CallStats {
        /// Which call.
        call: CallId,
        /// Which of its streams.
        kind: crate::snapshot::StreamKind,
        /// The figures.
        stats: CallStats,
    },
    /// One stream of a call ended while the call goes on (video that could not be
    /// keyed, or failed), with the reason.
    CallStreamEnded {
        /// Which call.
        call: CallId,
        /// What the stream carried.
        kind: crate::snapshot::StreamKind,
        /// Why.
        reason: String,
    },
    /// The peer pressed a key.
    CallDtmf {
        /// Which call.
        call: CallId,
        /// The key.
        key: char,
    },
    /// A line was added to a conversation (ours or theirs).
    ChatLine {
        /// The account.
        account: AccountId,
        /// The peer.
        peer: String,
        /// The line.
        line: ChatLine,
    },
    /// The server took one of our chat messages.
    ChatDelivered {
        /// The account.
        account: AccountId,
        /// The peer.
        peer: String,
        /// The message id.
        id: String,
    },
    /// A roster entry or a contact's presence changed.
    Contact {
        /// The account.
        account: AccountId,
        /// The contact now.
        contact: ContactView,
    },
    /// A roster entry was removed.
    ContactRemoved {
        /// The account.
        account: AccountId,
        /// Its address.
        address: String,
    },
    /// Someone asks to see our presence.
    SubscriptionRequest {
        /// The account.
        account: AccountId,
        /// Who.
        from: String,
    },
    /// We are in a room.
    RoomJoined {
        /// The account.
        account: AccountId,
        /// The room.
        room: String,
    },
    /// Who is in a room changed.
    RoomOccupants {
        /// The account.
        account: AccountId,
        /// The room.
        room: String,
        /// Nicknames.
        occupants: Vec<String>,
    },
    /// A line was added to a room.
    RoomLine {
        /// The account.
        account: AccountId,
        /// The room.
        room: String,
        /// The line.
        line: ChatLine,
    },
    /// A conversation's privacy changed.
    ChatSecurity {
        /// The account.
        account: AccountId,
        /// The peer.
        peer: String,
        /// Now.
        security: crate::security::ChatSecurity,
        /// The peer's fingerprint in use, when private.
        fingerprint: Option<String>,
    },
    /// A peer showed an OTR fingerprint we had not seen. `changed`: we knew another one
    /// (warn: a new device, or someone in the middle).
    OtrFingerprint {
        /// The account.
        account: AccountId,
        /// The peer.
        peer: String,
        /// The new fingerprint.
        fingerprint: String,
        /// We knew a different one.
        changed: bool,
    },
    /// Progress of an authentication (SMP) with a peer.
    Smp {
        /// The account.
        account: AccountId,
        /// The peer.
        peer: String,
        /// Where it stands.
        progress: crate::snapshot::SmpView,
    },
    /// An OTR key is ready for an account.
    OtrKey {
        /// The account.
        account: AccountId,
        /// Our fingerprint.
        fingerprint: String,
    },
    /// The chat server refused something.
    ChatError {
        /// The account.
        account: AccountId,
        /// Why, for the user.
        reason: String,
    },
    /// A command failed; the text is meant for the user.
    CommandFailed {
        /// Which command.
        command: &'static str,
        /// Why.
        error: String,
        /// Trying again unchanged cannot help (see [`crate::CoreError::is_permanent`]).
        permanent: bool,
    },
}
