//! `hushphone profile` and `hushphone history`: the master password and the history.

use super::error::CliError;
use super::output::Out;
use super::secrets::Secrets;
use super::session::{find_account, unlock_if_needed};
use clap::{Args, Subcommand};
use hush_core::profile::MIN_MASTER_PASSWORD_LEN;
use hush_core::{AccountConfig, Command, CoreError, Phone, Protocol};

#[derive(Subcommand, Debug)]
pub(crate) enum ProfileCmd {
    /// Where the profile is and how it is protected.
    Info,
    /// Protect saved passwords and keys with a master password.
    SetMasterPassword,
    /// Change the master password (everything is re-sealed).
    ChangeMasterPassword,
    /// Remove the master password: secrets then rely on file permissions only.
    RemoveMasterPassword {
        /// Confirm without being asked.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum HistoryCmd {
    /// Keep history (by default, or for one contact with --account/--contact).
    On(HistoryTarget),
    /// Stop keeping history (by default, or for one contact).
    Off(HistoryTarget),
    /// Erase all history.
    Erase {
        /// Confirm without being asked.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct HistoryTarget {
    /// Account id or address (with --contact).
    #[arg(long, requires = "contact")]
    account: Option<String>,
    /// Contact address (with --account).
    #[arg(long, requires = "account")]
    contact: Option<String>,
}

pub(crate) fn profile_cmd(
    phone: &Phone,
    cmd: ProfileCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    match cmd {
        ProfileCmd::Info => {
            let snap = phone.snapshot();
            out.record(
                "profile",
                &[
                    ("dir", snap.profile_dir.display().to_string().into()),
                    ("master_password", snap.master_password_set.into()),
                    ("history_default", snap.history_default.into()),
                    ("accounts", snap.accounts.len().into()),
                ],
            );
        }
        ProfileCmd::SetMasterPassword => {
            if phone.snapshot().master_password_set {
                return Err(CoreError::MasterPasswordAlreadySet.into());
            }
            if !secrets.from_stdin {
                eprintln!(
                    "The master password seals saved passwords and keys; it cannot be recovered if forgotten (at least {MIN_MASTER_PASSWORD_LEN} characters)."
                );
            }
            let new = secrets.ask_new("New master password")?;
            phone.execute_blocking(Command::SetMasterPassword { new })?;
            out.record("master_password", &[("state", "set".into())]);
        }
        ProfileCmd::ChangeMasterPassword => {
            let old = secrets.ask("Current master password")?;
            let new = secrets.ask_new("New master password")?;
            phone.execute_blocking(Command::ChangeMasterPassword { old, new })?;
            out.record("master_password", &[("state", "changed".into())]);
        }
        ProfileCmd::RemoveMasterPassword { yes } => {
            if !phone.snapshot().master_password_set {
                return Err(CoreError::NoMasterPassword.into());
            }
            let warning = "Without a master password, anyone who can read your profile files can recover your saved passwords and keys.";
            if !secrets.confirm(warning, yes)? {
                return Err(CliError::Usage("not confirmed; nothing was changed".into()));
            }
            let current = secrets.ask("Current master password")?;
            phone.execute_blocking(Command::RemoveMasterPassword { current })?;
            out.record("master_password", &[("state", "removed".into())]);
        }
    }
    Ok(())
}

pub(crate) fn history(
    phone: &Phone,
    cmd: HistoryCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    let (on, target) = match cmd {
        HistoryCmd::On(t) => (true, t),
        HistoryCmd::Off(t) => (false, t),
        HistoryCmd::Erase { yes } => {
            if !secrets.confirm("This erases all chat and call history for good.", yes)? {
                return Err(CliError::Usage("not confirmed; nothing was erased".into()));
            }
            unlock_if_needed(phone, secrets)?;
            phone.execute_blocking(Command::EraseHistory)?;
            out.record("history", &[("state", "erased".into())]);
            return Ok(());
        }
    };
    match (target.account, target.contact) {
        (Some(account), Some(contact)) => {
            unlock_if_needed(phone, secrets)?;
            let accounts: Vec<AccountConfig> = phone
                .snapshot()
                .accounts
                .iter()
                .map(|a| a.config.clone())
                .collect();
            let id = find_account(&accounts, &account)?;
            let protocol = accounts
                .iter()
                .find(|a| a.id == id)
                .map(|a| a.protocol())
                .unwrap_or(Protocol::Xmpp);
            let peer = hush_core::model::normalize_address(protocol, &contact)?;
            phone.execute_blocking(Command::SetHistoryFor {
                account: id,
                peer: peer.clone(),
                choice: Some(on),
            })?;
            out.record(
                "history",
                &[
                    ("account", id.0.into()),
                    ("contact", peer.into()),
                    ("enabled", on.into()),
                ],
            );
        }
        _ => {
            phone.execute_blocking(Command::SetHistoryDefault(on))?;
            out.record("history", &[("default", on.into())]);
        }
    }
    Ok(())
}
