//! What happened, as the core reports it. The snapshot says where things stand; events
//! say what changed, for logs, system lines in a chat and scripts.

use crate::model::{AccountConfig, AccountId};
use crate::security::CallSecurity;
use crate::snapshot::{AccountStatus, CallId, CallState, CallStats};

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
    /// Periodic media statistics.
    CallStats {
        /// Which call.
        call: CallId,
        /// The figures.
        stats: CallStats,
    },
    /// The peer pressed a key.
    CallDtmf {
        /// Which call.
        call: CallId,
        /// The key.
        key: char,
    },
    /// A command failed; the text is meant for the user.
    CommandFailed {
        /// Which command.
        command: &'static str,
        /// Why.
        error: String,
    },
}
