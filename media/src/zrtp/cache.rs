//! Reading and changing libbzrtp's ZID cache outside a call (its schema: `ziduri` maps
//! our URI and the peer's URI to a `zuid`; `zrtp.pvs` is the "SAS verified" flag).

use crate::MediaError;
use rusqlite::{Connection, OpenFlags, params};
use std::path::Path;

fn err(path: &Path, e: impl std::fmt::Display) -> MediaError {
    MediaError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Sets or clears "SAS verified" for every cache entry of `peer_uri`. Returns how many
/// entries changed; 0 means we have never completed ZRTP with that peer.
pub fn set_peer_verified(
    cache: &Path,
    peer_uri: &str,
    verified: bool,
) -> Result<usize, MediaError> {
    if !cache.exists() {
        return Ok(0);
    }
    let conn = Connection::open_with_flags(cache, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| err(cache, e))?;
    conn.query_row("PRAGMA busy_timeout = 5000", [], |_| Ok(()))
        .map_err(|e| err(cache, e))?;
    let flag: &[u8] = if verified { &[1] } else { &[0] };
    conn.execute(
        "UPDATE zrtp SET pvs = ?1 WHERE zuid IN (SELECT zuid FROM ziduri WHERE peeruri = ?2)",
        params![flag, peer_uri],
    )
    .map_err(|e| err(cache, e))
}

/// Whether `peer_uri` is marked verified in the cache.
pub fn peer_verified(cache: &Path, peer_uri: &str) -> Result<Option<bool>, MediaError> {
    if !cache.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(cache, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(cache, e))?;
    let mut stmt = conn
        .prepare("SELECT pvs FROM zrtp WHERE zuid IN (SELECT zuid FROM ziduri WHERE peeruri = ?1)")
        .map_err(|e| err(cache, e))?;
    let flags: Vec<Option<Vec<u8>>> = stmt
        .query_map(params![peer_uri], |r| r.get(0))
        .map_err(|e| err(cache, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cache, e))?;
    if flags.is_empty() {
        return Ok(None);
    }
    Ok(Some(flags.iter().any(|f| f.as_deref() == Some(&[1]))))
}

/// The peers marked "SAS verified", for the user to review and withdraw. A cache with
/// thousands of peers is cut at 1,000 entries.
pub fn verified_peers(cache: &Path) -> Result<Vec<String>, MediaError> {
    if !cache.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(cache, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(cache, e))?;
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT peeruri FROM ziduri JOIN zrtp USING (zuid) \
             WHERE pvs = x'01' ORDER BY peeruri LIMIT 1000",
        )
        .map_err(|e| err(cache, e))?;
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| err(cache, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cache, e))
}
