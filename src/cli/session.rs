//! What every command family shares: unlocking the vault, finding an account,
//! bringing it online, and following events for a while.

use super::error::CliError;
use super::output::Out;
use super::records::{account_status, call_event, chat_event};
use super::secrets::Secrets;
use clap::Args;
use hush_core::snapshot::AccountStatus;
use hush_core::{AccountConfig, AccountId, Command, CoreError, Event, Phone};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// `--account`: which account a command uses.
#[derive(Args, Debug)]
pub(crate) struct AccountArg {
    /// The account (id or address).
    #[arg(long)]
    pub(crate) account: String,
}

pub(crate) fn unlock_if_needed(phone: &Phone, secrets: &mut Secrets) -> Result<(), CliError> {
    if phone.snapshot().locked {
        let password = secrets.ask("Master password")?;
        phone.execute_blocking(Command::Unlock { password })?;
    }
    Ok(())
}

pub(crate) fn find_account(
    accounts: &[AccountConfig],
    key: &str,
) -> Result<hush_core::AccountId, CliError> {
    let bare = key
        .trim()
        .trim_start_matches("sip:")
        .trim_start_matches("xmpp:");
    let hits: Vec<&AccountConfig> = accounts
        .iter()
        .filter(|a| a.id.to_string() == key.trim() || a.address.eq_ignore_ascii_case(bare))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.id),
        [] => Err(CoreError::NoSuchAccount(key.into()).into()),
        _ => Err(CliError::Usage(format!(
            "{key:?} matches several accounts; use the numeric id from `account list`"
        ))),
    }
}

/// Connects an account and waits (bounded) until it is online (registered or logged in).
pub(crate) fn connect(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    key: &str,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<AccountId, CliError> {
    let snap = phone.snapshot();
    let accounts: Vec<_> = snap.accounts.iter().map(|a| a.config.clone()).collect();
    let id = find_account(&accounts, key)?;
    let remembered = accounts
        .iter()
        .find(|a| a.id == id)
        .is_some_and(|a| a.remember_password);
    let chat = accounts
        .iter()
        .any(|a| a.id == id && a.protocol() == hush_core::Protocol::Xmpp);
    // Chat accounts need the vault open for their OTR keys even without a saved password.
    if (remembered || chat) && snap.locked {
        unlock_if_needed(phone, secrets)?;
    }
    let password = if remembered {
        None
    } else {
        Some(secrets.ask("Account password")?)
    };
    phone.execute_blocking(Command::Connect {
        account: id,
        password,
    })?;
    // A chat account's first OTR key is made while it logs in: waited for too, so that
    // what follows can go private and the key is kept.
    let mut keyed = !chat || phone.snapshot().otr_keys.iter().any(|k| k.account == id);
    let mut online = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        match &ev {
            Event::AccountStatus { account, status } => account_status(out, *account, status),
            Event::CommandFailed { .. } => call_event(out, &ev),
            Event::ChatError { account, .. } if *account == id => {
                chat_event(out, &ev);
            }
            _ => {}
        }
        match ev {
            Event::AccountStatus {
                account,
                status: AccountStatus::Online,
            } if account == id => {
                online = true;
                keyed = keyed || phone.snapshot().otr_keys.iter().any(|k| k.account == id);
                if keyed {
                    return Ok(id);
                }
            }
            Event::OtrKey { account, .. } if account == id => {
                keyed = true;
                if online {
                    return Ok(id);
                }
            }
            Event::CommandFailed { command, error, .. }
                if command == hush_core::MAKE_OTR_KEY && !keyed =>
            {
                return Err(CoreError::Call(format!("no OTR key could be made: {error}")).into());
            }

            Event::AccountStatus {
                account,
                status: AccountStatus::Error(e),
            } if account == id => {
                return Err(
                    CoreError::Call(format!("the account could not go online: {e}")).into(),
                );
            }
            _ => {}
        }
    }
    if online && phone.snapshot().otr_keys.iter().any(|k| k.account == id) {
        return Ok(id);
    }
    if online {
        return Err(
            CoreError::Call("no OTR key was made for the account within 30 s".into()).into(),
        );
    }
    Err(CoreError::Call("the account did not go online within 30 s".into()).into())
}

/// Follows events for `dur`, printing them; stops early when `done` says so.
pub(crate) fn follow(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    out: &Out,
    dur: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> bool {
    let deadline = Instant::now() + dur;
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        chat_event(out, &ev);
        if done(&ev) {
            return true;
        }
    }
    false
}
