//! What happened, as the core reports it. The snapshot says where things stand; events
//! say what changed, for logs, system lines in a chat and scripts.

use crate::model::{AccountConfig, AccountId};
use crate::security::CallSecurity;
use crate::snapshot::{AccountStatus, CallId};

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
    /// A command failed; the text is meant for the user.
    CommandFailed {
        /// Which command.
        command: &'static str,
        /// Why.
        error: String,
    },
}
