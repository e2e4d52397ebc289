//! ZRTP's ZID cache (retained secrets, "SAS verified" flags) inside the vault: one sealed
//! secret holding the image of libbzrtp's database, which the call layer keeps in memory.
//! Earlier versions kept that database in the clear as `zrtp-cache.db`; it is moved into
//! the vault the first time the vault is open, and the file is overwritten and removed.

use super::{Profile, paths};
use crate::error::{CoreError, Result};
use rusqlite::{Connection, OpenFlags};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// The vault secret holding the cache image.
const SECRET_NAME: &str = "zrtp/zid-cache";
/// A plaintext cache larger than this is not an old Hushphone cache: left untouched.
const MAX_LEGACY_LEN: u64 = 16 << 20;

impl Profile {
    /// The ZID cache image sealed in the vault (`None` before the first secure call).
    /// A plaintext `zrtp-cache.db` left by an earlier version is moved in first: sealed,
    /// then overwritten and removed. Needs the vault open.
    pub fn zrtp_cache(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let mut stored = self.secret(SECRET_NAME)?;
        let legacy = self.dir().join(paths::ZRTP_CACHE_FILE);
        if std::fs::symlink_metadata(&legacy).is_ok() {
            if stored.is_none() {
                let image = read_legacy(&legacy)?;
                self.put_secret(SECRET_NAME, &image)?;
                tracing::info!("moved the plaintext ZRTP cache into the vault");
                stored = Some(image);
            } else {
                tracing::warn!(
                    "a plaintext ZRTP cache sat beside the vault's; the vault's is kept"
                );
            }
            for path in with_side_files(&legacy) {
                erase(&path)?;
            }
        }
        Ok(stored)
    }

    /// Seals a new image of the ZID cache in the vault, replacing the previous one.
    pub fn save_zrtp_cache(&mut self, image: &[u8]) -> Result<()> {
        self.put_secret(SECRET_NAME, image)
    }
}

/// Reads a plaintext cache through SQLite (so a journal left by a crash is applied) and
/// returns its image. Anything that is not libbzrtp's cache is refused and left alone.
fn read_legacy(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let refuse = |reason: &str| {
        CoreError::InvalidInput(format!(
            "{}: {reason}; it was left untouched (remove it to go on)",
            path.display()
        ))
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| CoreError::io(path, e))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    if meta.len() > MAX_LEGACY_LEN {
        return Err(refuse("too large to be a ZRTP cache"));
    }
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| refuse(&format!("cannot open it: {e}")))?;
    let ok = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ziduri'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| refuse(&format!("not an SQLite database: {e}")))?;
    if ok != 1 {
        return Err(refuse("an SQLite database, but not a ZRTP cache"));
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| refuse(&e.to_string()))?;
    if check != "ok" {
        return Err(refuse(&format!("damaged: {check}")));
    }
    let data = conn
        .serialize(rusqlite::MAIN_DB)
        .map_err(|e| refuse(&e.to_string()))?;
    Ok(match data {
        rusqlite::serialize::Data::Shared(shared) => Zeroizing::new(shared.to_vec()),
        rusqlite::serialize::Data::Owned(mut owned) => {
            let copy = Zeroizing::new(owned.to_vec());
            owned.zeroize();
            copy
        }
    })
}

/// The cache file and the journal files SQLite may have left beside it.
fn with_side_files(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        out.push(PathBuf::from(side));
    }
    out
}

/// Overwrites a regular file with zeros, flushes it, and removes it. A symlink is only
/// removed. (On copy-on-write file systems and SSDs old blocks may survive; the vault is
/// what protects the secrets from now on.)
fn erase(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CoreError::io(path, e)),
    };
    if meta.is_file() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| CoreError::io(path, e))?;
        let zeros = [0u8; 64 * 1024];
        let mut left = meta.len();
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])
                .map_err(|e| CoreError::io(path, e))?;
            left -= n as u64;
        }
        f.sync_all().map_err(|e| CoreError::io(path, e))?;
    }
    std::fs::remove_file(path).map_err(|e| CoreError::io(path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn legacy_cache(path: &Path, secret: &[u8]) {
        let conn = Connection::open(path).expect("create");
        conn.execute_batch(
            "CREATE TABLE ziduri (zuid INTEGER PRIMARY KEY, zid BLOB, selfuri TEXT, peeruri TEXT);
             CREATE TABLE zrtp (zuid INTEGER, rs1 BLOB, pvs BLOB);",
        )
        .expect("schema");
        conn.execute("INSERT INTO zrtp VALUES (1, ?1, x'01')", [secret])
            .expect("row");
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_plaintext_cache_moves_into_the_vault_and_is_erased() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = b"retained-secret-0123456789abcdef";
        {
            let mut p = Profile::open(dir.path()).expect("profile");
            p.set_master_password(&Secret::from("correct horse"))
                .expect("set");
        }
        legacy_cache(&dir.path().join(paths::ZRTP_CACHE_FILE), secret);
        let mut p = Profile::open(dir.path()).expect("profile");
        assert!(matches!(p.zrtp_cache(), Err(CoreError::Locked)));
        assert!(
            dir.path().join(paths::ZRTP_CACHE_FILE).exists(),
            "locked: untouched"
        );
        p.unlock(&Secret::from("correct horse")).expect("unlock");
        let image = p.zrtp_cache().expect("migrate").expect("an image");
        assert!(contains(&image, secret), "the image is the old cache");
        assert!(!dir.path().join(paths::ZRTP_CACHE_FILE).exists());
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(
                !contains(&bytes, secret),
                "no plaintext secret left in the profile"
            );
        }
        drop(p);
        let mut p = Profile::open(dir.path()).expect("profile");
        p.unlock(&Secret::from("correct horse")).expect("unlock");
        let again = p.zrtp_cache().expect("read").expect("kept");
        assert_eq!(*again, *image);
    }

    #[test]
    fn a_foreign_file_under_the_cache_name_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Profile::open(dir.path()).expect("profile");
        let path = dir.path().join(paths::ZRTP_CACHE_FILE);
        std::fs::write(&path, b"my notes, not a database").expect("write");
        let err = p.zrtp_cache().expect_err("refused");
        assert!(err.to_string().contains("left untouched"), "{err}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"my notes, not a database"
        );
    }
}
