//! The one error type of hush-core.

use std::path::PathBuf;

/// Everything that can go wrong in the phone core, worded for the person reading it.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The profile database exists but is not a readable Hushphone profile. It is left
    /// untouched so that nothing the user had is destroyed by a repair attempt.
    #[error(
        "profile file {path} is damaged or not a Hushphone profile ({reason}); it was left untouched"
    )]
    CorruptProfile {
        /// The file that failed the checks.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The profile was written by a newer Hushphone with a schema we do not know.
    #[error(
        "profile file {path} has schema version {found}, newer than this Hushphone understands ({supported}); it was left untouched"
    )]
    ProfileTooNew {
        /// The profile database.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version we know.
        supported: i64,
    },
    /// The master password did not open the vault. Nothing was changed.
    #[error("wrong master password; nothing was changed")]
    WrongMasterPassword,
    /// The operation needs the vault open, and it is still locked.
    #[error("the profile is locked: enter the master password first")]
    Locked,
    /// A master password is required for this operation but none is set.
    #[error("no master password is set")]
    NoMasterPassword,
    /// A master password is already set; use "change" instead.
    #[error("a master password is already set; change it instead")]
    MasterPasswordAlreadySet,
    /// The master password was rejected before use.
    #[error("master password rejected: {0}")]
    WeakMasterPassword(&'static str),
    /// A sealed secret failed authentication: the stored data was altered or damaged.
    #[error("stored secret {0:?} failed its integrity check (damaged or tampered with)")]
    TamperedSecret(String),
    /// A history record failed authentication (altered, moved, copied, or put there in
    /// an older format behind our back). It is never shown, and it keeps the master
    /// password from being changed until the history is erased.
    #[error(
        "history record {0} failed its integrity check (damaged or tampered with); erasing the history (`hushphone history erase`, or Erase history in the window's settings) removes it"
    )]
    TamperedHistory(i64),
    /// The change was made, but the bytes it replaced are still in the profile's files:
    /// another connection kept SQLite from rewriting them. Doing it again once no
    /// other program has the profile open wipes them.
    #[error(
        "{done}, but the old data is still in {path} ({reason}); close any other program that has the profile open and do it again"
    )]
    NotWiped {
        /// What did happen, e.g. "the master password was changed".
        done: &'static str,
        /// The profile database.
        path: PathBuf,
        /// Why SQLite could not rewrite it.
        reason: String,
    },
    /// A user-supplied value is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// An account with this identity already exists.
    #[error("an account {0} already exists")]
    DuplicateAccount(String),
    /// No account matches the given identifier.
    #[error("no account matches {0:?}")]
    NoSuchAccount(String),
    /// Filesystem trouble, with the path it concerned.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database failed in a way not covered above.
    #[error("profile database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// A call could not be set up or continued; the text is for the user.
    #[error("{0}")]
    Call(String),
    /// Signalling (SIP, XMPP) failed; whether it is worth retrying stays with it.
    #[error("{0}")]
    Signaling(#[from] hush_signaling::SignalingError),
    /// Media (audio devices, RTP, ZRTP, the ZID cache) failed.
    #[error("{0}")]
    Media(#[from] hush_media::MediaError),
    /// OTR refused an operation; the text is for the user.
    #[error("{0}")]
    Otr(#[from] hush_signaling::otr::OtrError),
    /// The core has stopped and no longer takes commands.
    #[error("the phone core has stopped")]
    Stopped,
}

impl CoreError {
    /// Whether trying again unchanged cannot help (a wrong password, a refused login,
    /// a policy): the user must change something first.
    pub fn is_permanent(&self) -> bool {
        match self {
            CoreError::Signaling(e) => e.is_permanent(),
            CoreError::WrongMasterPassword
            | CoreError::Locked
            | CoreError::NoMasterPassword
            | CoreError::MasterPasswordAlreadySet
            | CoreError::TamperedSecret(_)
            | CoreError::TamperedHistory(_)
            | CoreError::NotWiped { .. }
            | CoreError::WeakMasterPassword(_)
            | CoreError::InvalidInput(_)
            | CoreError::DuplicateAccount(_)
            | CoreError::NoSuchAccount(_)
            | CoreError::ProfileTooNew { .. }
            | CoreError::CorruptProfile { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for hush-core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use hush_signaling::SignalingError;

    #[test]
    fn whether_retrying_can_help_survives_from_the_layer_that_knows() {
        assert!(CoreError::from(SignalingError::AuthFailed).is_permanent());
        assert!(!CoreError::from(SignalingError::Timeout).is_permanent());
        assert!(!CoreError::from(SignalingError::Unreachable("x".into())).is_permanent());
        assert!(CoreError::InvalidInput("x".into()).is_permanent());
        assert!(CoreError::Locked.is_permanent() && CoreError::TamperedHistory(3).is_permanent());
        assert!(!CoreError::Stopped.is_permanent());
        // The words stay those of the layer below.
        assert_eq!(
            CoreError::from(SignalingError::Timeout).to_string(),
            SignalingError::Timeout.to_string()
        );
    }
}
