//! The profile: one directory holding one SQLite database with the vault, the accounts,
//! the settings and the (sealed, opt-in) history.

mod crypto;
mod db;
mod history;
pub mod paths;
mod vault;
mod zrtp_cache;

pub(crate) use crypto::fill_random;
pub use history::{Direction, HistoryEntry, HistoryRecord};
pub use vault::{MIN_MASTER_PASSWORD_LEN, VaultMode};

use crate::error::{CoreError, Result};
use crate::model::{AccountConfig, AccountId, AccountSettings, NewAccount, normalize_address};
use crate::secret::Secret;
use crypto::Key;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// An open profile. Locked until [`Profile::unlock`] when a master password is set.
pub struct Profile {
    dir: PathBuf,
    db_path: PathBuf,
    conn: Connection,
    keys: Option<Keys>,
}

struct Keys {
    data: Key,
    index: Key,
}

fn password_secret_name(id: AccountId) -> String {
    format!("account/{}/password", id.0)
}

impl Profile {
    /// Opens the profile in `dir`, creating an empty one if there is none. A damaged or
    /// foreign database is reported with its path and left as it is.
    pub fn open(dir: &Path) -> Result<Profile> {
        paths::ensure_dir(dir)?;
        let db_path = dir.join(paths::DB_FILE);
        let conn = db::open(&db_path)?;
        let mut profile = Profile {
            dir: dir.to_path_buf(),
            db_path,
            conn,
            keys: None,
        };
        if vault::mode(&profile.conn)? == VaultMode::Unprotected {
            profile.keys = Some(profile.load_keys(None)?);
        }
        Ok(profile)
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file (the one to name in messages and back up).
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// How the vault is protected.
    pub fn vault_mode(&self) -> Result<VaultMode> {
        vault::mode(&self.conn)
    }

    /// True while the master password has not been given.
    pub fn is_locked(&self) -> bool {
        self.keys.is_none()
    }

    /// Opens the vault's keys. A profile whose index key still has its schema-1 name
    /// has its history upgraded first, once (see `history::upgrade`).
    fn load_keys(&self, password: Option<&Secret>) -> Result<Keys> {
        let data = vault::unlock(&self.conn, password)?;
        // The index key, followed by the history's erase epoch once it was erased.
        let index_key = |name: &str| -> Result<Option<Key>> {
            match vault::get_secret(&self.conn, &data, name)? {
                None => Ok(None),
                Some(k) => (k.len() == 32 || k.len() == history::INDEX_WITH_EPOCH_LEN)
                    .then(|| Key::from_slice(&k[..32]))
                    .flatten()
                    .map(Some)
                    .ok_or_else(|| CoreError::TamperedSecret(name.into())),
            }
        };
        let index = match index_key(vault::INDEX_KEY_NAME)? {
            Some(index) => index,
            None => {
                let index = index_key(vault::LEGACY_INDEX_KEY_NAME)?
                    .ok_or_else(|| CoreError::TamperedSecret(vault::INDEX_KEY_NAME.into()))?;
                history::upgrade(&self.conn, &data, &index)?;
                index
            }
        };
        Ok(Keys { data, index })
    }

    fn keys(&self) -> Result<&Keys> {
        self.keys.as_ref().ok_or(CoreError::Locked)
    }

    /// Opens the vault with the master password. A wrong password changes nothing.
    pub fn unlock(&mut self, password: &Secret) -> Result<()> {
        let keys = self.load_keys(Some(password))?;
        self.keys = Some(keys);
        Ok(())
    }

    /// Protects an unprotected vault with a master password.
    pub fn set_master_password(&mut self, new: &Secret) -> Result<()> {
        if self.vault_mode()? == VaultMode::MasterPassword {
            return Err(CoreError::MasterPasswordAlreadySet);
        }
        vault::check_new_password(new)?;
        self.rekey(Some(new))
    }

    /// Replaces the master password; `old` must open the vault. Everything is re-sealed
    /// under a fresh key in one transaction.
    pub fn change_master_password(&mut self, old: &Secret, new: &Secret) -> Result<()> {
        if self.vault_mode()? != VaultMode::MasterPassword {
            return Err(CoreError::NoMasterPassword);
        }
        vault::check_new_password(new)?;
        let keys = self.load_keys(Some(old))?;
        self.keys = Some(keys);
        self.rekey(Some(new))
    }

    /// Removes the master password (the caller has warned the user): secrets stay sealed
    /// but the key is stored beside them.
    pub fn remove_master_password(&mut self, current: &Secret) -> Result<()> {
        if self.vault_mode()? != VaultMode::MasterPassword {
            return Err(CoreError::NoMasterPassword);
        }
        let keys = self.load_keys(Some(current))?;
        self.keys = Some(keys);
        self.rekey(None)
    }

    /// Re-seals everything under a fresh data key, then rewrites the files at once so
    /// the old key and the blobs it sealed are gone from disk — also while this profile
    /// stays open (a running window keeps its connection, so without it the old pages
    /// would sit in the WAL or the main file until some later checkpoint).
    ///
    /// Once the transaction is committed the change is made: anything that fails after
    /// it is reported as [`CoreError::NotWiped`], whose words say the change happened.
    fn rekey(&mut self, new_password: Option<&Secret>) -> Result<()> {
        let old = &self.keys()?.data;
        let tx = self.conn.unchecked_transaction()?;
        let new = vault::rekey(&tx, old, new_password)?;
        tx.commit()?;
        if let Some(keys) = self.keys.as_mut() {
            keys.data = new;
        }
        tracing::info!(protected = new_password.is_some(), "vault re-keyed");
        let done = match new_password {
            Some(_) => "the master password was changed",
            None => "the master password was removed",
        };
        db::wipe_replaced(&self.conn, done)
    }

    /// Seals and stores a named secret (e.g. an OTR private key).
    pub fn put_secret(&mut self, name: &str, value: &[u8]) -> Result<()> {
        vault::put_secret(&self.conn, &self.keys()?.data, name, value)
    }

    /// Reads a named secret.
    pub fn secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        vault::get_secret(&self.conn, &self.keys()?.data, name)
    }

    /// Deletes a named secret if present.
    pub fn delete_secret(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM secrets WHERE name = ?1", params![name])?;
        Ok(())
    }

    /// Adds an account. With `remember_password` the password is sealed in the same
    /// transaction; without it nothing secret is written.
    pub fn add_account(&mut self, new: NewAccount) -> Result<AccountConfig> {
        let protocol = new.settings.protocol();
        let address = normalize_address(protocol, &new.address)?;
        let store_password =
            new.remember_password && new.password.as_ref().is_some_and(|p| !p.is_empty());
        if store_password && self.keys.is_none() {
            return Err(CoreError::Locked);
        }
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM accounts WHERE protocol = ?1 AND address = ?2",
                params![protocol.as_str(), address],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(CoreError::DuplicateAccount(format!(
                "{}:{address}",
                protocol.as_str()
            )));
        }
        let display_name = new.display_name.filter(|n| !n.trim().is_empty());
        if display_name
            .as_ref()
            .is_some_and(|n| n.len() > 256 || n.chars().any(char::is_control))
        {
            return Err(CoreError::InvalidInput(
                "display name: at most 256 characters, no control characters".into(),
            ));
        }
        let settings = serde_json::to_string(&new.settings)
            .map_err(|e| CoreError::InvalidInput(format!("account settings: {e}")))?;
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO accounts (protocol, address, display_name, remember_password, settings) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![protocol.as_str(), address, display_name, new.remember_password, settings],
        )?;
        let id = AccountId(tx.last_insert_rowid());
        if store_password && let (Some(pw), Some(keys)) = (&new.password, &self.keys) {
            vault::put_secret(
                &tx,
                &keys.data,
                &password_secret_name(id),
                pw.expose().as_bytes(),
            )?;
        }
        tx.commit()?;
        Ok(AccountConfig {
            id,
            address,
            display_name,
            remember_password: new.remember_password,
            settings: new.settings,
        })
    }

    /// All accounts, in the order they were added.
    pub fn accounts(&self) -> Result<Vec<AccountConfig>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, protocol, address, display_name, remember_password, settings FROM accounts ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, protocol, address, display_name, remember, settings) = row?;
            out.push(AccountConfig::from_row(
                id,
                &protocol,
                address,
                display_name,
                remember,
                &settings,
            )?);
        }
        Ok(out)
    }

    /// Finds an account by numeric id or by address (with or without `sip:`).
    pub fn find_account(&self, key: &str) -> Result<AccountConfig> {
        let accounts = self.accounts()?;
        let key_trim = key.trim();
        let bare = key_trim
            .strip_prefix("sip:")
            .or_else(|| key_trim.strip_prefix("xmpp:"))
            .unwrap_or(key_trim);
        let matches: Vec<&AccountConfig> = accounts
            .iter()
            .filter(|a| a.id.0.to_string() == key_trim || a.address.eq_ignore_ascii_case(bare))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(CoreError::NoSuchAccount(key.to_owned())),
            _ => Err(CoreError::InvalidInput(format!(
                "{key:?} matches several accounts; use the numeric id"
            ))),
        }
    }

    /// Removes an account and its saved password.
    pub fn remove_account(&mut self, id: AccountId) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute("DELETE FROM accounts WHERE id = ?1", params![id.0])?;
        if n == 0 {
            return Err(CoreError::NoSuchAccount(id.to_string()));
        }
        tx.execute(
            "DELETE FROM secrets WHERE name = ?1",
            params![password_secret_name(id)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces an account's settings (same protocol).
    pub fn update_account_settings(
        &mut self,
        id: AccountId,
        settings: &AccountSettings,
    ) -> Result<()> {
        let current = self
            .accounts()?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| CoreError::NoSuchAccount(id.to_string()))?;
        if current.settings.protocol() != settings.protocol() {
            return Err(CoreError::InvalidInput(
                "an account cannot change protocol".into(),
            ));
        }
        let json = serde_json::to_string(settings)
            .map_err(|e| CoreError::InvalidInput(format!("account settings: {e}")))?;
        self.conn.execute(
            "UPDATE accounts SET settings = ?1 WHERE id = ?2",
            params![json, id.0],
        )?;
        Ok(())
    }

    /// Replaces a remembered account password (after a change on the server).
    pub fn set_account_password(&mut self, id: AccountId, password: &Secret) -> Result<()> {
        let keys = self.keys()?;
        vault::put_secret(
            &self.conn,
            &keys.data,
            &password_secret_name(id),
            password.expose().as_bytes(),
        )
    }

    /// The saved password of an account, if it was remembered.
    pub fn account_password(&self, id: AccountId) -> Result<Option<Secret>> {
        let Some(bytes) = self.secret(&password_secret_name(id))? else {
            return Ok(None);
        };
        let s = std::str::from_utf8(&bytes)
            .map_err(|_| CoreError::TamperedSecret(password_secret_name(id)))?;
        Ok(Some(Secret::new(s.to_owned())))
    }

    /// Whether history is kept by default (off unless the user turned it on).
    pub fn history_default(&self) -> Result<bool> {
        history::default_enabled(&self.conn)
    }

    /// Turns history on or off for every contact without a choice of its own.
    pub fn set_history_default(&mut self, enabled: bool) -> Result<()> {
        history::set_default_enabled(&self.conn, enabled)
    }

    /// Overrides the default for one contact (`None` follows the default again).
    pub fn set_history_for(
        &mut self,
        account: AccountId,
        peer: &str,
        choice: Option<bool>,
    ) -> Result<()> {
        history::set_contact_choice(&self.conn, &self.keys()?.index, account, peer, choice)
    }

    /// Whether something with this contact would be logged now.
    pub fn history_enabled_for(&self, account: AccountId, peer: &str) -> Result<bool> {
        match history::contact_choice(&self.conn, &self.keys()?.index, account, peer)? {
            Some(choice) => Ok(choice),
            None => self.history_default(),
        }
    }

    /// Logs `entry` if history is on for its contact; returns whether it was written.
    pub fn log(&mut self, entry: &HistoryEntry) -> Result<bool> {
        if !self.history_enabled_for(entry.account, &entry.peer)? {
            return Ok(false);
        }
        let keys = self.keys()?;
        history::append(&self.conn, &keys.data, &keys.index, entry)?;
        Ok(true)
    }

    /// Everything logged with one contact, oldest first.
    pub fn history_with(&self, account: AccountId, peer: &str) -> Result<Vec<HistoryEntry>> {
        let keys = self.keys()?;
        history::with_peer(&self.conn, &keys.data, &keys.index, account, peer)
    }

    /// Number of records stored.
    pub fn history_len(&self) -> Result<u64> {
        history::count(&self.conn)
    }

    /// Erases all history so that its bytes are gone from the database files. Needs the
    /// vault open: the erase seals a new epoch into it, so that no erased record can be
    /// put back.
    pub fn erase_history(&mut self) -> Result<()> {
        let keys = self.keys()?;
        history::erase_all(&self.conn, &keys.data, &keys.index)
    }

    /// The raw connection, for engines that keep their own tables in the profile
    /// (bzrtp's ZID cache).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log subscriber standing in for another program: when the vault says it was
    /// re-keyed — the line written right after the commit, before the files are
    /// rewritten — it takes the database's write lock on a connection of its own.
    struct WriterAfterCommit {
        db: PathBuf,
        held: Arc<Mutex<Option<Connection>>>,
    }

    struct Message(String);

    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for WriterAfterCommit {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            if message.0 != "vault re-keyed" {
                return;
            }
            if let Ok(mut slot) = self.held.lock()
                && let Ok(c) = Connection::open(&self.db)
                && c.execute_batch("BEGIN IMMEDIATE").is_ok()
            {
                *slot = Some(c);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_password_change_whose_wipe_is_blocked_after_the_commit_says_it_was_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Profile::open(dir.path()).expect("open");
        p.put_secret("otr/key", b"PRIVATE").expect("put");
        // Fail at once instead of after 5 s when the lock is taken.
        p.conn
            .execute_batch("PRAGMA busy_timeout = 0")
            .expect("busy timeout");
        let held = Arc::new(Mutex::new(None));
        let other = WriterAfterCommit {
            db: p.db_path().to_path_buf(),
            held: held.clone(),
        };
        let result = tracing::subscriber::with_default(other, || {
            p.set_master_password(&Secret::from("a long master pw"))
        });
        assert!(
            held.lock().expect("lock").is_some(),
            "the other writer never got the lock: the test proves nothing"
        );
        let err = result.expect_err("the files could not be rewritten");
        assert!(matches!(err, CoreError::NotWiped { .. }), "{err}");
        let words = err.to_string();
        assert!(
            words.starts_with("the master password was changed, but the old data is still in")
                && words.contains("another connection is writing to it"),
            "{words}"
        );
        assert_eq!(p.vault_mode().expect("mode"), VaultMode::MasterPassword);
        held.lock().expect("lock").take();
        drop(p);
        let mut p = Profile::open(dir.path()).expect("reopen");
        p.unlock(&Secret::from("a long master pw"))
            .expect("the new password opens the vault");
        assert_eq!(
            p.secret("otr/key").expect("read").map(|v| v.to_vec()),
            Some(b"PRIVATE".to_vec())
        );
    }
}
