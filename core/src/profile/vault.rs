//! The vault: one random data key seals every secret and history record; the data key
//! itself is stored wrapped by a key derived from the master password (argon2id), or,
//! when the user chose not to set one, stored as is and protected only by file permissions.
//!
//! Changing the master password draws a fresh data key and re-seals everything in one
//! SQLite transaction, so an old copy of the profile plus the old password does not open
//! anything written afterwards, and a crash leaves either the old or the new state.

use super::crypto::{self, KdfParams, Key};
use crate::error::{CoreError, Result};
use crate::secret::Secret;
use rusqlite::{Connection, OptionalExtension, params};

const WRAP_AAD: &[u8] = b"hushphone/vault-key/v1";
const SALT_LEN: usize = 16;
/// The history lookup key is itself a sealed secret under this name. The name also
/// records that the history is sealed to its rows (format 2): it is sealed under the
/// data key (bound to the name), so nobody without the key can write it, and removing it
/// leaves the profile unable to open. A profile from before that has the key under
/// [`LEGACY_INDEX_KEY_NAME`] and has its history upgraded once (see `history::upgrade`).
pub(crate) const INDEX_KEY_NAME: &str = "vault/index-key/row-bound";
/// Where schema-1 profiles keep the history lookup key.
pub(crate) const LEGACY_INDEX_KEY_NAME: &str = "vault/index-key";
/// Shortest master password we accept; longer passphrases are encouraged in the UI.
pub const MIN_MASTER_PASSWORD_LEN: usize = 8;

/// How the data key is protected at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultMode {
    /// No master password: secrets are sealed, but the key sits beside them.
    Unprotected,
    /// The data key is wrapped with a key derived from the master password.
    MasterPassword,
}

struct Row {
    mode: VaultMode,
    salt: Option<Vec<u8>>,
    params: Option<KdfParams>,
    wrapped: Vec<u8>,
}

/// Writes the vault row of a fresh profile: unprotected, with a new data key and index key.
pub(crate) fn init(conn: &Connection) -> Result<()> {
    let data_key = Key::random();
    conn.execute(
        "INSERT INTO vault (id, mode, wrapped_key) VALUES (1, 'none', ?1)",
        params![&data_key.bytes()[..]],
    )?;
    let index_key = Key::random();
    put_secret(conn, &data_key, INDEX_KEY_NAME, index_key.bytes())?;
    Ok(())
}

fn load(conn: &Connection) -> Result<Row> {
    let row = conn
        .query_row(
            "SELECT mode, kdf_salt, kdf_m, kdf_t, kdf_p, wrapped_key FROM vault WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((mode, salt, m, t, p, wrapped)) = row else {
        return Err(CoreError::CorruptProfile {
            path: db_path(conn),
            reason: "the vault record is missing".into(),
        });
    };
    let bad = |reason: &str| CoreError::CorruptProfile {
        path: db_path(conn),
        reason: reason.into(),
    };
    match mode.as_str() {
        "none" => Ok(Row {
            mode: VaultMode::Unprotected,
            salt: None,
            params: None,
            wrapped,
        }),
        "password" => {
            let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
            let params = match (to_u32(m), to_u32(t), to_u32(p)) {
                (Some(m_kib), Some(t), Some(p)) => KdfParams { m_kib, t, p },
                _ => return Err(bad("vault key-derivation parameters are missing")),
            };
            if !params.is_sane() {
                return Err(bad("vault key-derivation parameters are out of range"));
            }
            match salt {
                Some(s) if s.len() == SALT_LEN => Ok(Row {
                    mode: VaultMode::MasterPassword,
                    salt: Some(s),
                    params: Some(params),
                    wrapped,
                }),
                _ => Err(bad("vault salt is missing or malformed")),
            }
        }
        _ => Err(bad("unknown vault mode")),
    }
}

fn db_path(conn: &Connection) -> std::path::PathBuf {
    conn.path()
        .map(std::path::PathBuf::from)
        .unwrap_or_default()
}

fn wrap_aad(params: KdfParams) -> Vec<u8> {
    let mut aad = WRAP_AAD.to_vec();
    for v in [params.m_kib, params.t, params.p] {
        aad.extend_from_slice(&v.to_le_bytes());
    }
    aad
}

/// Which protection the stored vault uses.
pub(crate) fn mode(conn: &Connection) -> Result<VaultMode> {
    Ok(load(conn)?.mode)
}

/// Recovers the data key. `password` is required when a master password is set.
pub(crate) fn unlock(conn: &Connection, password: Option<&Secret>) -> Result<Key> {
    let row = load(conn)?;
    match row.mode {
        VaultMode::Unprotected => {
            Key::from_slice(&row.wrapped).ok_or_else(|| CoreError::CorruptProfile {
                path: db_path(conn),
                reason: "the stored vault key has the wrong length".into(),
            })
        }
        VaultMode::MasterPassword => {
            let password = password.ok_or(CoreError::Locked)?;
            let (Some(salt), Some(params)) = (row.salt, row.params) else {
                return Err(CoreError::Locked);
            };
            let kek = crypto::derive(password.expose().as_bytes(), &salt, params)
                .ok_or(CoreError::WrongMasterPassword)?;
            let key = crypto::open(&kek, &wrap_aad(params), &row.wrapped)
                .ok_or(CoreError::WrongMasterPassword)?;
            Key::from_slice(&key).ok_or(CoreError::WrongMasterPassword)
        }
    }
}

/// Checks a proposed master password before anything is derived from it.
pub(crate) fn check_new_password(password: &Secret) -> Result<()> {
    if password.expose().chars().count() < MIN_MASTER_PASSWORD_LEN {
        return Err(CoreError::WeakMasterPassword("use at least 8 characters"));
    }
    if password.expose().trim().is_empty() {
        return Err(CoreError::WeakMasterPassword("it is only whitespace"));
    }
    Ok(())
}

/// Re-keys the whole vault inside the caller's transaction: a new data key seals every
/// secret and history record, and is stored under `new_password` (or unprotected).
/// Returns the new data key; the caller swaps it in after the commit.
pub(crate) fn rekey(
    tx: &rusqlite::Transaction<'_>,
    old: &Key,
    new_password: Option<&Secret>,
) -> Result<Key> {
    let new = Key::random();
    // Secrets: re-seal each under the new key, bound to its name.
    let secrets: Vec<(String, Vec<u8>)> = {
        let mut stmt = tx.prepare("SELECT name, sealed FROM secrets")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (name, sealed) in secrets {
        let plain = crypto::open(old, secret_aad(&name).as_bytes(), &sealed)
            .ok_or_else(|| CoreError::TamperedSecret(name.clone()))?;
        put_secret(tx, &new, &name, &plain)?;
    }
    // History records: same, each bound to its row.
    super::history::reseal_all(tx, old, &new)?;
    match new_password {
        None => {
            tx.execute(
                "UPDATE vault SET mode = 'none', kdf_salt = NULL, kdf_m = NULL, kdf_t = NULL, kdf_p = NULL, wrapped_key = ?1 WHERE id = 1",
                params![&new.bytes()[..]],
            )?;
        }
        Some(pw) => {
            let params = KdfParams::DEFAULT;
            let mut salt = [0u8; SALT_LEN];
            crypto::fill_random(&mut salt);
            let kek = crypto::derive(pw.expose().as_bytes(), &salt, params)
                .ok_or(CoreError::WeakMasterPassword("key derivation refused it"))?;
            let wrapped = crypto::seal(&kek, &wrap_aad(params), new.bytes());
            tx.execute(
                "UPDATE vault SET mode = 'password', kdf_salt = ?1, kdf_m = ?2, kdf_t = ?3, kdf_p = ?4, wrapped_key = ?5 WHERE id = 1",
                params![&salt[..], params.m_kib, params.t, params.p, wrapped],
            )?;
        }
    }
    Ok(new)
}

fn secret_aad(name: &str) -> String {
    format!("hushphone/secret/{name}")
}

/// Seals and stores (or replaces) a named secret.
pub(crate) fn put_secret(conn: &Connection, key: &Key, name: &str, value: &[u8]) -> Result<()> {
    let sealed = crypto::seal(key, secret_aad(name).as_bytes(), value);
    conn.execute(
        "INSERT INTO secrets (name, sealed) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed",
        params![name, sealed],
    )?;
    Ok(())
}

/// Reads and opens a named secret; `None` if it is not stored.
pub(crate) fn get_secret(
    conn: &Connection,
    key: &Key,
    name: &str,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    let sealed: Option<Vec<u8>> = conn
        .query_row(
            "SELECT sealed FROM secrets WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    match sealed {
        None => Ok(None),
        Some(s) => crypto::open(key, secret_aad(name).as_bytes(), &s)
            .map(Some)
            .ok_or_else(|| CoreError::TamperedSecret(name.to_owned())),
    }
}
