//! Opening the profile database: refuse anything damaged or foreign without touching it,
//! create new profiles atomically, and apply schema migrations in transactions.

use crate::error::{CoreError, Result};
use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `PRAGMA application_id` of a Hushphone profile ("HUSH").
const APPLICATION_ID: i64 = 0x4855_5348;
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Each entry moves the schema one version up; index + 1 is the version it produces.
/// Never edit a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: vault, sealed secrets, accounts, settings, sealed history.
    "CREATE TABLE vault (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        mode TEXT NOT NULL CHECK (mode IN ('none', 'password')),
        kdf_salt BLOB,
        kdf_m INTEGER,
        kdf_t INTEGER,
        kdf_p INTEGER,
        wrapped_key BLOB NOT NULL
    );
    CREATE TABLE secrets (name TEXT PRIMARY KEY, sealed BLOB NOT NULL);
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        protocol TEXT NOT NULL,
        address TEXT NOT NULL,
        display_name TEXT,
        remember_password INTEGER NOT NULL,
        settings TEXT NOT NULL,
        UNIQUE (protocol, address)
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE history_prefs (peer_tag BLOB PRIMARY KEY, enabled INTEGER NOT NULL);
    CREATE TABLE history (id INTEGER PRIMARY KEY, peer_tag BLOB NOT NULL, sealed BLOB NOT NULL);
    CREATE INDEX history_by_peer ON history (peer_tag, id);",
    // 2: history records sealed bound to their row (format 2); rows written before
    // stay format 1 until the vault is next opened (sealing needs the keys).
    "ALTER TABLE history ADD COLUMN format INTEGER NOT NULL DEFAULT 1;",
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens the profile database at `path`, creating it if it does not exist.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    match fs::symlink_metadata(path) {
        Ok(_) => open_existing(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(CoreError::io(path, e)),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CoreError {
    CoreError::CorruptProfile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn open_existing(path: &Path) -> Result<Connection> {
    let meta = fs::metadata(path).map_err(|e| CoreError::io(path, e))?;
    if !meta.is_file() {
        return Err(corrupt(path, "not a regular file"));
    }
    let mut header = [0u8; 16];
    let mut f = fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    if meta.len() < 512 || f.read_exact(&mut header).is_err() || &header != SQLITE_MAGIC {
        return Err(corrupt(
            path,
            "not an SQLite database (missing header or truncated)",
        ));
    }
    drop(f);
    // No CREATE flag: if the file vanished meanwhile we fail instead of making a new one.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| corrupt(path, e.to_string()))?;
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| corrupt(path, e.to_string()))?;
    if app_id != APPLICATION_ID {
        return Err(corrupt(
            path,
            "an SQLite database, but not a Hushphone profile",
        ));
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| corrupt(path, e.to_string()))?;
    if check != "ok" {
        return Err(corrupt(path, format!("integrity check failed: {check}")));
    }
    configure(&conn, path)?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Builds the new profile under a temporary name and renames it into place, so a crash
/// during creation never leaves a half-made profile that later looks damaged.
fn create(path: &Path) -> Result<Connection> {
    let tmp = tmp_path(path);
    let _ = fs::remove_file(&tmp);
    {
        let conn = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        restrict(&tmp)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = DELETE; PRAGMA application_id = {APPLICATION_ID};"
        ))?;
        migrate(&conn, &tmp)?;
        super::vault::init(&conn)?;
        conn.close().map_err(|(_, e)| e)?;
    }
    let file = fs::File::open(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    file.sync_all().map_err(|e| CoreError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    open_existing(path)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".new");
    path.with_file_name(name)
}

fn configure(conn: &Connection, path: &Path) -> Result<()> {
    // The pragma, not `busy_timeout()`: that helper needs SQLite 3.44, Debian 12 has 3.40.
    conn.query_row("PRAGMA busy_timeout = 5000", [], |_| Ok(()))?;
    // WAL + FULL: a commit survives power loss; a killed writer leaves the old state.
    // secure_delete: freed pages are zeroed, so erased history does not linger.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "profile database did not switch to WAL");
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;",
    )?;
    restrict(path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        let side = PathBuf::from(side);
        if side.exists() {
            restrict(&side)?;
        }
    }
    Ok(())
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version();
    if version > latest {
        return Err(CoreError::ProfileTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: latest,
        });
    }
    if version < 0 {
        return Err(corrupt(path, format!("negative schema version {version}")));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = i as i64 + 1;
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {next}"))?;
        tx.commit()?;
        tracing::info!(version = next, "profile schema migrated");
    }
    Ok(())
}

/// Rewrites the database files so nothing deleted or replaced survives in them: VACUUM
/// rebuilds the database without free pages, and a TRUNCATE checkpoint copies the WAL
/// into the main file and empties it. `done` already happened (it is committed), so
/// whatever fails here — VACUUM refused because another connection writes, the
/// checkpoint kept from finishing — is [`CoreError::NotWiped`], naming `done`: the old
/// bytes may still be on disk, and the change must not look as if it failed.
pub(crate) fn wipe_replaced(conn: &Connection, done: &'static str) -> Result<()> {
    let not_wiped = |reason: String| CoreError::NotWiped {
        done,
        path: conn.path().map(PathBuf::from).unwrap_or_default(),
        reason,
    };
    let refused = |e: rusqlite::Error| {
        tracing::warn!(error = %e, "profile could not be rewritten");
        not_wiped(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                "another connection is writing to it".into()
            }
            _ => e.to_string(),
        })
    };
    conn.execute_batch("VACUUM;").map_err(refused)?;
    let (busy, log, checkpointed): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(refused)?;
    if busy != 0 || log != checkpointed {
        tracing::warn!(busy, log, checkpointed, "profile checkpoint did not finish");
        return Err(not_wiped(if busy != 0 {
            "another connection is reading it".into()
        } else {
            format!("{} of {log} log pages copied", checkpointed.max(0))
        }));
    }
    Ok(())
}

/// Owner-only permissions: the profile holds sealed secrets and private metadata.
pub(crate) fn restrict(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| CoreError::io(path, e))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
