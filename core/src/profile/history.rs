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
/// Set once every format-1 record that could be was re-sealed; afterwards a format-1
/// record can only have been put there behind our back.
const UPGRADED_KEY: &str = "history.row-bound";

/// What a record is sealed bound to: its conversation's tag and its row id.
pub(crate) fn row_aad(tag: &[u8], id: i64) -> Vec<u8> {
    let mut aad = AAD_V2.to_vec();
    aad.extend_from_slice(&(tag.len() as u64).to_le_bytes());
    aad.extend_from_slice(tag);
    aad.extend_from_slice(&id.to_le_bytes());
    aad
}

fn tampered(id: i64) -> CoreError {
    CoreError::TamperedSecret(format!("history record {id}"))
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
    tx.execute(
        "INSERT INTO history (peer_tag, sealed, format) VALUES (?1, x'', ?2)",
        params![tag, FORMAT_ROW_BOUND],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE history SET sealed = ?1 WHERE id = ?2",
        params![crypto::seal(data_key, &row_aad(&tag, id), &json), id],
    )?;
    tx.commit()?;
    Ok(())
}

/// Re-seals the format-1 records under their row binding, once per profile. Needs the
/// keys, so it runs when the vault is opened rather than in the schema migration. A
/// record that does not open, or whose content names another conversation than the one
/// it is filed under, is left as it is (and refused when read).
pub(crate) fn upgrade(conn: &Connection, data_key: &Key, index_key: &Key) -> Result<()> {
    let done: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![UPGRADED_KEY],
            |r| r.get(0),
        )
        .optional()?;
    if done.is_some() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let old: Vec<(i64, Vec<u8>, Vec<u8>)> = {
        let mut stmt = tx.prepare("SELECT id, peer_tag, sealed FROM history WHERE format = 1")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut left = 0usize;
    for (id, tag, sealed) in old {
        let entry = crypto::open(data_key, AAD_V1, &sealed)
            .and_then(|plain| serde_json::from_slice::<HistoryEntry>(&plain).ok());
        let Some(entry) = entry.filter(|e| peer_tag(index_key, e.account, &e.peer) == tag) else {
            left += 1;
            continue;
        };
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&entry).map_err(|_| tampered(id))?);
        tx.execute(
            "UPDATE history SET sealed = ?1, format = ?2 WHERE id = ?3",
            params![
                crypto::seal(data_key, &row_aad(&tag, id), &plain),
                FORMAT_ROW_BOUND,
                id
            ],
        )?;
    }
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, 'true') ON CONFLICT(key) DO NOTHING",
        params![UPGRADED_KEY],
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
        let plain =
            crypto::open(data_key, &row_aad(&tag, id), &sealed).ok_or_else(|| tampered(id))?;
        let entry: HistoryEntry = serde_json::from_slice(&plain).map_err(|_| tampered(id))?;
        if entry.account != account || entry.peer != peer {
            return Err(tampered(id));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Re-seals every record under `new` (same row binding) inside the caller's transaction.
pub(crate) fn reseal_all(tx: &rusqlite::Transaction<'_>, old: &Key, new: &Key) -> Result<()> {
    let records: Vec<(i64, Vec<u8>, Vec<u8>, i64)> = {
        let mut stmt = tx.prepare("SELECT id, peer_tag, sealed, format FROM history")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, tag, sealed, format) in records {
        if format != FORMAT_ROW_BOUND {
            return Err(tampered(id));
        }
        let aad = row_aad(&tag, id);
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

/// Deletes every record and rewrites the database so no freed page, journal or WAL frame
/// still holds the old bytes; says so when that last part could not be done.
pub(crate) fn erase_all(conn: &Connection) -> Result<()> {
    conn.execute_batch("DELETE FROM history;")?;
    super::db::wipe_replaced(conn, "the history was deleted")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

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

    #[test]
    fn records_from_schema_1_are_resealed_to_their_row_unless_they_were_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Profile::open(dir.path()).expect("open");
        // Back to what an older Hushphone wrote: schema 1, no row binding yet.
        p.conn
            .execute_batch(
                "ALTER TABLE history DROP COLUMN format; DELETE FROM settings WHERE key = 'history.row-bound'; PRAGMA user_version = 1;",
            )
            .expect("downgrade");
        let carol = entry("carol@localhost", "kept");
        insert_v1(&p, &carol, "carol@localhost");
        // Already moved before the upgrade: dave's conversation holds carol's line.
        insert_v1(&p, &entry("carol@localhost", "moved"), "dave@localhost");
        drop(p);

        let p = Profile::open(dir.path()).expect("migrates and re-seals");
        let formats: Vec<i64> = {
            let mut stmt = p
                .conn
                .prepare("SELECT format FROM history ORDER BY id")
                .expect("prepare");
            stmt.query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(formats, vec![FORMAT_ROW_BOUND, 1]);
        assert_eq!(
            p.history_with(AccountId(1), "carol@localhost")
                .expect("read"),
            vec![carol]
        );
        assert!(matches!(
            p.history_with(AccountId(1), "dave@localhost"),
            Err(CoreError::TamperedSecret(_))
        ));
        // After the upgrade, a format-1 record can only have been slipped in: refused.
        insert_v1(&p, &entry("erin@localhost", "late"), "erin@localhost");
        drop(p);
        let p = Profile::open(dir.path()).expect("open");
        assert!(matches!(
            p.history_with(AccountId(1), "erin@localhost"),
            Err(CoreError::TamperedSecret(_))
        ));
    }
}
