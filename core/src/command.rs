//! What the window, the CLI and the tests ask the core to do.

use crate::model::{AccountConfig, AccountId, NewAccount};
use crate::secret::Secret;

/// A request to the core. Plain data: it can be sent from any thread.
#[derive(Debug, Clone)]
pub enum Command {
    /// Open the vault with the master password.
    Unlock {
        /// The master password.
        password: Secret,
    },
    /// Add an account.
    AddAccount(NewAccount),
    /// Remove an account and its saved password.
    RemoveAccount(AccountId),
    /// Protect the vault with a master password (none set yet).
    SetMasterPassword {
        /// The new master password.
        new: Secret,
    },
    /// Replace the master password.
    ChangeMasterPassword {
        /// The current master password.
        old: Secret,
        /// The new one.
        new: Secret,
    },
    /// Remove the master password (after the user was warned).
    RemoveMasterPassword {
        /// The current master password.
        current: Secret,
    },
    /// Turn history on or off by default.
    SetHistoryDefault(bool),
    /// Turn history on or off for one contact (`None`: follow the default).
    SetHistoryFor {
        /// The account.
        account: AccountId,
        /// The contact.
        peer: String,
        /// The choice.
        choice: Option<bool>,
    },
    /// Erase every history record.
    EraseHistory,
}

impl Command {
    /// Short name for messages ("could not add account: ...").
    pub fn name(&self) -> &'static str {
        match self {
            Command::Unlock { .. } => "unlock",
            Command::AddAccount(_) => "add account",
            Command::RemoveAccount(_) => "remove account",
            Command::SetMasterPassword { .. } => "set master password",
            Command::ChangeMasterPassword { .. } => "change master password",
            Command::RemoveMasterPassword { .. } => "remove master password",
            Command::SetHistoryDefault(_) => "set history default",
            Command::SetHistoryFor { .. } => "set history for contact",
            Command::EraseHistory => "erase history",
        }
    }
}

/// The result of a command that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to report beyond success.
    Done,
    /// The account that was added.
    Account(AccountConfig),
}
