//! Chat and call history, sealed at rest. Off by default; a per-contact choice overrides
//! the default. Records are indexed by a keyed tag of (account, peer) so that who the user
//! talks to is not readable from the file either.
//!
//! Each record is sealed bound to its row: to the conversation's tag (the keyed tag of
//! account and peer) and to its row id. A record moved into another conversation, or
//! copied to another row, no longer opens and is reported as tampered instead of shown.
//! Records written before this binding (format 1, bound only to "history") are re-sealed
//! the first time the vault is opened after the upgrade — but only when their own
//! content names the conversation their row is filed under; any that does not stays
//! format 1 and is refused like any other tampered record.
//!
//! That the upgrade is done is recorded in an authenticated form: the history index key
//! moves to its format-2 name (`vault::INDEX_KEY_NAME`), sealed under the data key, in
//! the same transaction. Someone who can write the file but has no key cannot undo that,
//! so a format-1 record slipped in afterwards (say, copied from an older copy of the
//! profile, to bring back an erased message) is never re-sealed: it is refused as
//! tampered. The upgrade also refuses to re-seal anything once a format-2 record exists.
//! What stays possible with an older copy sealed under the same data key (no master
//! password change since): putting back its whole index-key row and removing every
//! format-2 record — and with them the current history — before planting old ones.
//!
//! Erasing the history also draws a new erase epoch (a random value kept in the vault,
//! in the same sealed secret as the index key) that every later record is sealed to, so
//! a record copied from before the erase — from an older copy of the profile, into a
//! free row — no longer opens. Records written before the first erase are bound to no
//! epoch. Removing the epoch means removing the index key, and the profile no longer
//! opens. What no file format can stop: putting back an older copy of that secret
//! together with old records (a rollback of the history to that copy, which also hides
//! every record written since), and removing records.

use super::crypto::{self, Key};
use crate::error::{CoreError, Result};
use crate::model::AccountId;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// What format-1 records were bound to.
const AAD_V1: &[u8] = b"hushphone/history/v1";
const AAD_V2: &[u8] = b"hushphone/history/v2";
/// Records sealed bound to their row.
pub(crate) const FORMAT_ROW_BOUND: i64 = 2;
const DEFAULT_KEY: &str = "history.enabled";
/// A plaintext "upgrade done" flag an earlier build wrote; it proves nothing and is
/// removed by the upgrade.
const UNSEALED_UPGRADE_FLAG: &str = "history.row-bound";

/// The erase epoch follows the index key in the same vault secret
/// ([`super::vault::INDEX_KEY_NAME`]), so it cannot be removed on its own: without that
/// secret the profile does not open at all.
const EPOCH_LEN: usize = 16;
/// Length of the index-key secret once the history was erased.
pub(crate) const INDEX_WITH_EPOCH_LEN: usize = 32 + EPOCH_LEN;

/// The erase epoch records are sealed to now, if the history was ever erased.
type Epoch = Option<zeroize::Zeroizing<Vec<u8>>>;

fn epoch(conn: &Connection, data_key: &Key) -> Result<Epoch> {
    let stored = super::vault::get_secret(conn, data_key, super::vault::INDEX_KEY_NAME)?;
    Ok(stored
        .filter(|s| s.len() == INDEX_WITH_EPOCH_LEN)
        .map(|s| zeroize::Zeroizing::new(s[32..].to_vec())))
}

/// What a record is sealed bound to: its conversation's tag, its row id and the erase
/// epoch it was written in.
fn row_aad(tag: &[u8], id: i64, epoch: &Epoch) -> Vec<u8> {
    let mut aad = AAD_V2.to_vec();
    aad.extend_from_slice(&(tag.len() as u64).to_le_bytes());
    aad.extend_from_slice(tag);
    aad.extend_from_slice(&id.to_le_bytes());
    if let Some(e) = epoch {
        aad.extend_from_slice(b"/epoch/");
        aad.extend_from_slice(e);
    }
    aad
}

fn tampered(id: i64) -> CoreError {
    CoreError::TamperedHistory(id)
}

/// One remembered chat message or call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The local account it happened on.
    pub account: AccountId,
    /// The other party (bare JID, SIP address or room).
    pub peer: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// What happened.
    pub record: HistoryRecord,
}

/// Which way something went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From us to the peer.
    Outgoing,
    /// From the peer to us.
    Incoming,
}

/// The content of a history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryRecord {
    /// A chat message as the user saw it (decrypted, never OTR ciphertext).
    Message {
        /// Sent or received.
        direction: Direction,
        /// The text.
        body: String,
    },
    /// A call.
    Call {
        /// Placed or received.
        direction: Direction,
        /// Seconds connected; 0 if never answered.
        duration_s: u64,
        /// How it ended, in words.
        outcome: String,
    },
}

fn peer_tag(index_key: &Key, account: AccountId, peer: &str) -> Vec<u8> {
    let mut data = account.0.to_le_bytes().to_vec();
    data.extend_from_slice(peer.as_bytes());
    crypto::tag(index_key, &data)
}

/// The global default (false unless the user turned logging on).
pub(crate) fn default_enabled(conn: &Connection) -> Result<bool> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![DEFAULT_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.as_deref() == Some("true"))
}

pub(crate) fn set_default_enabled(conn: &Connection, enabled: bool) -> Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![DEFAULT_KEY, if enabled { "true" } else { "false" }],
    )?;
    Ok(())
}

/// The per-contact choice, if the user made one.
pub(crate) fn contact_choice(
    conn: &Connection,
    index_key: &Key,
    account: AccountId,
    peer: &str,
) -> Result<Option<bool>> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT enabled FROM history_prefs WHERE peer_tag = ?1",
            params![peer_tag(index_key, account, peer)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.map(|v| v != 0))
}

pub(crate) fn set_contact_choice(
    conn: &Connection,
    index_key: &Key,
    account: AccountId,
    peer: &str,
    choice: Option<bool>,
) -> Result<()> {
    let tag = peer_tag(index_key, account, peer);
    match choice {
        None => conn.execute("DELETE FROM history_prefs WHERE peer_tag = ?1", params![tag])?,
        Some(on) => conn.execute(
            "INSERT INTO history_prefs (peer_tag, enabled) VALUES (?1, ?2) ON CONFLICT(peer_tag) DO UPDATE SET enabled = excluded.enabled",
            params![tag, on as i64],
        )?,
    };
    Ok(())
}

/// Stores `entry` sealed to its row. The caller has already checked that logging is on.
pub(crate) fn append(
    conn: &Connection,
    data_key: &Key,
    index_key: &Key,
    entry: &HistoryEntry,
) -> Result<()> {
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec(entry)
            .map_err(|e| CoreError::InvalidInput(format!("history entry: {e}")))?,
    );
    let tag = peer_tag(index_key, entry.account, &entry.peer);
    // The row id is part of what the record is sealed to, so the row comes first.
    let tx = conn.unchecked_transaction()?;
    let epoch = epoch(&tx, data_key)?;
    tx.execute(
        "INSERT INTO history (peer_tag, sealed, format) VALUES (?1, x'', ?2)",
        params![tag, FORMAT_ROW_BOUND],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE history SET sealed = ?1 WHERE id = ?2",
        params![
            crypto::seal(data_key, &row_aad(&tag, id, &epoch), &json),
            id
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// Re-seals the format-1 records under their row binding, once per profile: called when
/// the index key still has its schema-1 name, and records that it is done by moving the
/// key to its format-2 name in the same transaction (see the module documentation).
/// Needs the keys, so it runs when the vault is opened rather than in the schema
/// migration. A record that does not open, or whose content names another conversation
/// than the one it is filed under, is left as it is (and refused when read). When a
/// format-2 record exists the upgrade ran before and its record was removed behind our
/// back: nothing is re-sealed then.
pub(crate) fn upgrade(conn: &Connection, data_key: &Key, index_key: &Key) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    let epoch = epoch(&tx, data_key)?;
    let row_bound: i64 = tx.query_row(
        "SELECT count(*) FROM history WHERE format = ?1",
        params![FORMAT_ROW_BOUND],
        |r| r.get(0),
    )?;
    let mut left = 0usize;
    if row_bound > 0 {
        tracing::warn!(
            "the history upgrade was already done but its record is gone: nothing is re-sealed"
        );
    } else {
        let old: Vec<(i64, Vec<u8>, Vec<u8>)> = {
            let mut stmt =
                tx.prepare("SELECT id, peer_tag, sealed FROM history WHERE format = 1")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, tag, sealed) in old {
            let entry = crypto::open(data_key, AAD_V1, &sealed)
                .and_then(|plain| serde_json::from_slice::<HistoryEntry>(&plain).ok());
            let Some(entry) = entry.filter(|e| peer_tag(index_key, e.account, &e.peer) == tag)
            else {
                left += 1;
                continue;
            };
            let plain =
                zeroize::Zeroizing::new(serde_json::to_vec(&entry).map_err(|_| tampered(id))?);
            tx.execute(
                "UPDATE history SET sealed = ?1, format = ?2 WHERE id = ?3",
                params![
                    crypto::seal(data_key, &row_aad(&tag, id, &epoch), &plain),
                    FORMAT_ROW_BOUND,
                    id
                ],
            )?;
        }
    }
    super::vault::put_secret(
        &tx,
        data_key,
        super::vault::INDEX_KEY_NAME,
        index_key.bytes(),
    )?;
    tx.execute(
        "DELETE FROM secrets WHERE name = ?1",
        params![super::vault::LEGACY_INDEX_KEY_NAME],
    )?;
    tx.execute(
        "DELETE FROM settings WHERE key = ?1",
        params![UNSEALED_UPGRADE_FLAG],
    )?;
    tx.commit()?;
    if left > 0 {
        tracing::warn!(
            records = left,
            "history records that fail their check were left as they are"
        );
    }
    Ok(())
}

/// Everything remembered with one peer, oldest first. A record that fails to open
/// under its row binding (altered, moved in from another conversation, copied to
/// another row) is reported as tampered rather than shown or skipped silently.
pub(crate) fn with_peer(
    conn: &Connection,
    data_key: &Key,
    index_key: &Key,
    account: AccountId,
    peer: &str,
) -> Result<Vec<HistoryEntry>> {
    let tag = peer_tag(index_key, account, peer);
    let epoch = epoch(conn, data_key)?;
    let mut stmt =
        conn.prepare("SELECT id, sealed, format FROM history WHERE peer_tag = ?1 ORDER BY id")?;
    let rows = stmt.query_map(params![tag], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, sealed, format) = row?;
        if format != FORMAT_ROW_BOUND {
            return Err(tampered(id));
        }
        let plain = crypto::open(data_key, &row_aad(&tag, id, &epoch), &sealed)
            .ok_or_else(|| tampered(id))?;
        let entry: HistoryEntry = serde_json::from_slice(&plain).map_err(|_| tampered(id))?;
        if entry.account != account || entry.peer != peer {
            return Err(tampered(id));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Re-seals every record under `new` (same row binding) inside the caller's transaction,
/// after the vault's secrets (the erase epoch among them) were re-sealed under `new`.
/// A record that fails its check stops the re-key with [`CoreError::TamperedHistory`],
/// whose words say that erasing the history removes it: re-sealing it would vouch for
/// it, and dropping it silently would lose what the user may want to look at first.
pub(crate) fn reseal_all(tx: &rusqlite::Transaction<'_>, old: &Key, new: &Key) -> Result<()> {
    let epoch = epoch(tx, new)?;
    let records: Vec<(i64, Vec<u8>, Vec<u8>, i64)> = {
        let mut stmt = tx.prepare("SELECT id, peer_tag, sealed, format FROM history")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, tag, sealed, format) in records {
        if format != FORMAT_ROW_BOUND {
            return Err(tampered(id));
        }
        let aad = row_aad(&tag, id, &epoch);
        let plain = crypto::open(old, &aad, &sealed).ok_or_else(|| tampered(id))?;
        tx.execute(
            "UPDATE history SET sealed = ?1 WHERE id = ?2",
            params![crypto::seal(new, &aad, &plain), id],
        )?;
    }
    Ok(())
}

/// Number of stored records (for the UI and tests).
pub(crate) fn count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM history", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Deletes every record, draws a new erase epoch (so that no record from before opens
/// again, wherever it is put back) and rewrites the database so no freed page, journal
/// or WAL frame still holds the old bytes; says so when that last part could not be done.
pub(crate) fn erase_all(conn: &Connection, data_key: &Key, index_key: &Key) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("DELETE FROM history;")?;
    let mut with_epoch = zeroize::Zeroizing::new([0u8; INDEX_WITH_EPOCH_LEN]);
    with_epoch[..32].copy_from_slice(index_key.bytes());
    crypto::fill_random(&mut with_epoch[32..]);
    super::vault::put_secret(&tx, data_key, super::vault::INDEX_KEY_NAME, &with_epoch[..])?;
    tx.commit()?;
    super::db::wipe_replaced(conn, "the history was deleted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Profile, vault};

    fn entry(peer: &str, body: &str) -> HistoryEntry {
        HistoryEntry {
            account: AccountId(1),
            peer: peer.into(),
            at_unix_ms: 1,
            record: HistoryRecord::Message {
                direction: Direction::Outgoing,
                body: body.into(),
            },
        }
    }

    /// Files `e` under `filed_as`'s conversation the way schema 1 did.
    fn insert_v1(p: &Profile, e: &HistoryEntry, filed_as: &str) {
        let keys = p.keys().expect("keys");
        let json = serde_json::to_vec(e).expect("json");
        p.conn
            .execute(
                "INSERT INTO history (peer_tag, sealed) VALUES (?1, ?2)",
                params![
                    peer_tag(&keys.index, e.account, filed_as),
                    crypto::seal(&keys.data, AAD_V1, &json)
                ],
            )
            .expect("insert");
    }

    /// Puts the profile back to what an older Hushphone wrote: schema 1, no row binding,
    /// the index key under its schema-1 name.
    fn back_to_schema_1(p: &Profile) {
        let keys = p.keys().expect("keys");
        p.conn
            .execute_batch("ALTER TABLE history DROP COLUMN format; PRAGMA user_version = 1;")
            .expect("downgrade");
        put_index_key_back(p, &keys.data, &keys.index);
    }

    /// What an older copy's index-key row looks like when it is put back (same data key).
    fn put_index_key_back(p: &Profile, data: &Key, index: &Key) {
        vault::put_secret(&p.conn, data, vault::LEGACY_INDEX_KEY_NAME, index.bytes())
            .expect("old name");
        p.conn
            .execute(
                "DELETE FROM secrets WHERE name = ?1",
                params![vault::INDEX_KEY_NAME],
            )
            .expect("new name gone");
    }

    fn formats(p: &Profile) -> Vec<i64> {
        let mut stmt = p
            .conn
            .prepare("SELECT format FROM history ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn last_id(p: &Profile) -> i64 {
        p.conn
            .query_row("SELECT max(id) FROM history", [], |r| r.get(0))
            .expect("id")
    }

    #[test]
    fn records_from_schema_1_are_resealed_to_their_row_unless_they_were_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Profile::open(dir.path()).expect("open");
        back_to_schema_1(&p);
        let carol = entry("carol@localhost", "kept");
        insert_v1(&p, &carol, "carol@localhost");
        // Already moved before the upgrade: dave's conversation holds carol's line.
        insert_v1(&p, &entry("carol@localhost", "moved"), "dave@localhost");
        drop(p);

        let p = Profile::open(dir.path()).expect("migrates and re-seals");
        assert_eq!(formats(&p), vec![FORMAT_ROW_BOUND, 1]);
        assert_eq!(
            p.history_with(AccountId(1), "carol@localhost")
                .expect("read"),
            vec![carol]
        );
        assert!(matches!(
            p.history_with(AccountId(1), "dave@localhost"),
            Err(CoreError::TamperedHistory(_))
        ));
        // After the upgrade, a format-1 record can only have been slipped in: refused.
        insert_v1(&p, &entry("erin@localhost", "late"), "erin@localhost");
        drop(p);
        let p = Profile::open(dir.path()).expect("open");
        assert!(matches!(
            p.history_with(AccountId(1), "erin@localhost"),
            Err(CoreError::TamperedHistory(_))
        ));
    }

    #[test]
    fn removing_the_plaintext_flag_does_not_let_an_erased_record_back_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Profile::open(dir.path()).expect("open");
        p.set_history_default(true).expect("on");
        let kept = entry("carol@localhost", "kept");
        p.log(&kept).expect("log");
        // Someone who can write the file (but has no key) removes what an earlier build
        // used as its "upgrade done" flag and puts back an erased message as a schema-1
        // record, copied from an older copy of the profile.
        p.conn
            .execute(
                "DELETE FROM settings WHERE key = ?1",
                params![UNSEALED_UPGRADE_FLAG],
            )
            .expect("flag gone");
        insert_v1(&p, &entry("carol@localhost", "erased"), "carol@localhost");
        let planted = last_id(&p);
        drop(p);
        let p = Profile::open(dir.path()).expect("open");
        assert_eq!(
            formats(&p),
            vec![FORMAT_ROW_BOUND, 1],
            "re-sealed as genuine"
        );
        match p.history_with(AccountId(1), "carol@localhost") {
            Err(CoreError::TamperedHistory(id)) => assert_eq!(id, planted),
            other => panic!("the planted record must be refused, got {other:?}"),
        }
    }

    #[test]
    fn the_old_index_key_put_back_reseals_nothing_once_records_are_row_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Profile::open(dir.path()).expect("open");
        p.set_history_default(true).expect("on");
        p.log(&entry("carol@localhost", "kept")).expect("log");
        // The index-key row of an older copy (same data key) put back, the current one
        // removed: the upgrade runs again, but records sealed to their row exist.
        let keys = p.keys().expect("keys");
        put_index_key_back(&p, &keys.data, &keys.index);
        insert_v1(&p, &entry("carol@localhost", "erased"), "carol@localhost");
        let planted = last_id(&p);
        drop(p);
        let p = Profile::open(dir.path()).expect("open");
        assert_eq!(
            formats(&p),
            vec![FORMAT_ROW_BOUND, 1],
            "re-sealed as genuine"
        );
        match p.history_with(AccountId(1), "carol@localhost") {
            Err(CoreError::TamperedHistory(id)) => assert_eq!(id, planted),
            other => panic!("the planted record must be refused, got {other:?}"),
        }
        // The key is back under its format-2 name: the upgrade does not run again.
        let names: Vec<String> = {
            let mut stmt = p
                .conn
                .prepare("SELECT name FROM secrets WHERE name LIKE 'vault/index-key%'")
                .expect("prepare");
            stmt.query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(names, vec![vault::INDEX_KEY_NAME.to_owned()]);
    }
}
