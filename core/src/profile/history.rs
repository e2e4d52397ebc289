//! Chat and call history, sealed at rest. Off by default; a per-contact choice overrides
//! the default. Records are indexed by a keyed tag of (account, peer) so that who the user
//! talks to is not readable from the file either.

use super::crypto::{self, Key};
use crate::error::{CoreError, Result};
use crate::model::AccountId;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub(crate) const AAD: &[u8] = b"hushphone/history/v1";
const DEFAULT_KEY: &str = "history.enabled";

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

/// Stores `entry` sealed. The caller has already checked that logging is on.
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
    conn.execute(
        "INSERT INTO history (peer_tag, sealed) VALUES (?1, ?2)",
        params![
            peer_tag(index_key, entry.account, &entry.peer),
            crypto::seal(data_key, AAD, &json)
        ],
    )?;
    Ok(())
}

/// Everything remembered with one peer, oldest first. Records that fail to open are
/// reported as tampered rather than skipped silently.
pub(crate) fn with_peer(
    conn: &Connection,
    data_key: &Key,
    index_key: &Key,
    account: AccountId,
    peer: &str,
) -> Result<Vec<HistoryEntry>> {
    let mut stmt =
        conn.prepare("SELECT id, sealed FROM history WHERE peer_tag = ?1 ORDER BY id")?;
    let rows = stmt.query_map(params![peer_tag(index_key, account, peer)], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, sealed) = row?;
        let plain = crypto::open(data_key, AAD, &sealed)
            .ok_or_else(|| CoreError::TamperedSecret(format!("history record {id}")))?;
        let entry: HistoryEntry = serde_json::from_slice(&plain)
            .map_err(|_| CoreError::TamperedSecret(format!("history record {id}")))?;
        out.push(entry);
    }
    Ok(out)
}

/// Number of stored records (for the UI and tests).
pub(crate) fn count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM history", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Deletes every record and rewrites the database so no freed page, journal or WAL frame
/// still holds the old bytes.
pub(crate) fn erase_all(conn: &Connection) -> Result<()> {
    conn.execute_batch("DELETE FROM history;")?;
    conn.execute_batch("VACUUM;")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
