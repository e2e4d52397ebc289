//! Where the profile lives: `--profile DIR`, else `$HUSHPHONE_PROFILE`, else the XDG data
//! directory (`~/.local/share/hushphone`).

use crate::error::{CoreError, Result};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that overrides the profile directory.
pub const PROFILE_ENV: &str = "HUSHPHONE_PROFILE";
/// File name of the profile database inside the profile directory.
pub const DB_FILE: &str = "profile.db";
/// Where earlier versions kept libbzrtp's ZID cache in the clear; it now lives sealed in
/// the vault, and a file found here is moved in and erased.
pub const ZRTP_CACHE_FILE: &str = "zrtp-cache.db";

/// Picks the profile directory: explicit flag, then environment, then XDG default.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(PROFILE_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    directories::ProjectDirs::from("", "", "hushphone")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| CoreError::InvalidInput("no home directory: pass --profile DIR".into()))
}

/// Creates the directory (owner-only) if needed and tightens an existing one.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CoreError::io(dir, e))?;
    }
    let meta = fs::metadata(dir).map_err(|e| CoreError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(CoreError::InvalidInput(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| CoreError::io(dir, e))?;
    }
    Ok(())
}
