//! The ZID cache, held in memory. libbzrtp keeps retained secrets and the "SAS verified"
//! flag in SQLite (its schema: `ziduri` binds our URI, the peer's URI and the peer's ZID
//! to a `zuid`; `zrtp` holds `rs1`, `rs2` and the flag `pvs` per `zuid`). Here that
//! database lives in memory only: the caller seals [`ZidStore::image`] in its vault after
//! each change ([`ZidStore::on_change`]) and hands it back to [`ZidStore::open`], so the
//! secrets reach the disk only under the caller's key.
//!
//! The user's verdicts ("I compared the SAS with this key of this address and it
//! matched") are kept apart from libbzrtp's flag, in a table of our own in the same
//! database (`hush_verdict`, one row per verified peer address and ZID), written only
//! when the user verifies or withdraws. libbzrtp clears its `pvs` flag whenever a peer
//! presenting that ZID fails the retained-secret check, before anything is
//! authenticated: anyone who copies a contact's ZID from a cleartext Hello could erase
//! the flag with one unfinished handshake. Our table is out of its reach.
//!
//! One store serves every call at once. libbzrtp and our own queries take the same lock
//! (`bctbx_mutex_t`, a pthread mutex here) around each cache operation.

use crate::MediaError;
use rusqlite::{Connection, MAIN_DB, OpenFlags, params};
use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use zeroize::{Zeroize, Zeroizing};

/// The largest image accepted: a cache of thousands of peers is well under a MiB.
pub const MAX_IMAGE_LEN: usize = 16 << 20;
/// At most this many cache entries are kept per peer address, besides those that are
/// never dropped for it: an entry with a verdict of the user's, the first entry of each
/// pair of our address and the peer's, the peer's last active device (libbzrtp's
/// `active` flag), and the entries of a call in progress. Beyond it the oldest of the
/// others are dropped when the cache is saved, so a caller inventing fresh keys under a
/// contact's address cannot push the contact's key, and its continuity, out.
pub const MAX_KEYS_PER_PEER: usize = 16;
/// At most this many keys are listed per question, whatever the cache holds.
const MAX_LISTED: usize = 1000;
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Creates the verdict table and carries over the flags libbzrtp held until now (run
/// once: the table's existence marks the migration as done).
const CREATE_VERDICTS: &str = "\
    CREATE TABLE hush_verdict (peeruri TEXT NOT NULL, zid BLOB NOT NULL, \
                               PRIMARY KEY (peeruri, zid)) WITHOUT ROWID; \
    INSERT OR IGNORE INTO hush_verdict (peeruri, zid) \
      SELECT zu.peeruri, zu.zid FROM ziduri zu JOIN zrtp z ON z.zuid = zu.zuid \
      WHERE z.pvs = x'01' AND zu.peeruri <> 'self' AND length(zu.zid) = 12;";

/// Creates the table of where each verdict was given: the user compared the SAS with
/// this key on this address of ours (run once; existing verdicts count for every
/// address of ours that met the key).
const CREATE_CONFIRMED: &str = "\
    CREATE TABLE hush_confirmed (selfuri TEXT NOT NULL, peeruri TEXT NOT NULL, \
                                 zid BLOB NOT NULL, \
                                 PRIMARY KEY (selfuri, peeruri, zid)) WITHOUT ROWID; \
    INSERT OR IGNORE INTO hush_confirmed (selfuri, peeruri, zid) \
      SELECT zu.selfuri, zu.peeruri, zu.zid FROM ziduri zu \
      JOIN hush_verdict v ON v.peeruri = zu.peeruri AND v.zid = zu.zid;";

/// A ZRTP identity (RFC 6189 §4.9): 96 random bits a device uses for all its calls. The
/// key continuity and the "verified" flag belong to it, not to the address it calls from.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Zid(pub [u8; 12]);

impl Zid {
    /// Reads the 24 hex digits we print (spaces ignored).
    pub fn parse(text: &str) -> Result<Zid, MediaError> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let bad = || MediaError::InvalidInput(format!("{text:?} is not a key id (24 hex digits)"));
        if digits.len() != 24 {
            return Err(bad());
        }
        let mut zid = [0u8; 12];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            zid[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Zid(zid))
    }

    fn from_blob(blob: &[u8]) -> Option<Zid> {
        blob.try_into().ok().map(Zid)
    }
}

impl std::fmt::Display for Zid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Zid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zid({self})")
    }
}

/// One key (ZID) the cache knows for a peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedKey {
    /// The peer's address as the cache records it (`user@host`).
    pub peer_uri: String,
    /// The peer's ZID.
    pub zid: Zid,
    /// The user compared the SAS on a call with this key and confirmed it.
    pub verified: bool,
    /// The key of the last secure call with this address.
    pub last_seen: bool,
}

/// What the cache says about the key a peer presents on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// This very key was verified (from any of our own addresses).
    pub this_key_verified: bool,
    /// Another key of the same address was verified.
    pub other_key_verified: bool,
}

/// The mutex libbzrtp takes around each cache operation (`bctbx_mutex_t` is a
/// `pthread_mutex_t` on Linux). Boxed so its address never changes.
struct EngineLock(Box<UnsafeCell<libc::pthread_mutex_t>>);

impl EngineLock {
    fn new() -> EngineLock {
        EngineLock(Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)))
    }

    fn ptr(&self) -> *mut c_void {
        self.0.get().cast()
    }

    fn hold(&self) -> EngineGuard<'_> {
        // SAFETY: the mutex was initialised in `new`, lives in its own box until `drop`,
        // and every lock is paired with the unlock in `EngineGuard::drop`.
        unsafe { libc::pthread_mutex_lock(self.0.get()) };
        EngineGuard(self)
    }
}

impl Drop for EngineLock {
    fn drop(&mut self) {
        // SAFETY: no guard and no libbzrtp context can exist any more: both borrow or
        // share the store that owns this lock, and it is being dropped.
        unsafe { libc::pthread_mutex_destroy(self.0.get()) };
    }
}

struct EngineGuard<'a>(&'a EngineLock);

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: locked by this thread in `EngineLock::hold`.
        unsafe { libc::pthread_mutex_unlock(self.0.0.get()) };
    }
}

/// Counts committed changes and tells the owner, from whichever thread committed.
#[derive(Default)]
struct Changes {
    generation: AtomicU64,
    notify: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// SQLite's commit hook (`sqlite3_commit_hook`): runs inside every commit, libbzrtp's
/// included, with the connection busy. It only counts and signals.
unsafe extern "C" fn on_commit(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the boxed `Changes` of the `Inner` that owns the connection; the
    // hook is removed in `Inner::drop` before either goes away.
    let changes = unsafe { &*(arg as *const Changes) };
    changes.generation.fetch_add(1, Ordering::SeqCst);
    if let Some(notify) = changes.notify.get() {
        notify();
    }
    0
}

/// (our address, peer address) of each call in progress, with how many calls hold it.
type LiveCalls = Mutex<std::collections::HashMap<(String, String), usize>>;

struct Inner {
    /// Declared before `lock`: the connection closes before the mutex is destroyed.
    conn: Mutex<Connection>,
    lock: EngineLock,
    /// Boxed: the commit hook holds its address.
    changes: Box<Changes>,
    /// Entries of these pairs are never dropped: libbzrtp holds their `zuid` during a
    /// handshake and would write its secrets under a row that no longer exists.
    live: LiveCalls,
}

/// A call in progress on a pair of addresses; see [`ZidStore::hold_live`].
pub(crate) struct LiveCall {
    inner: Arc<Inner>,
    key: (String, String),
}

impl Drop for LiveCall {
    fn drop(&mut self) {
        let mut live = match self.inner.live.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = live.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.key);
            }
        }
    }
}

// SAFETY: the connection is opened in SQLite's serialized mode and all our use of it is
// behind `conn`'s mutex; the pthread mutex is made for use from any thread.
unsafe impl Send for Inner {}
// SAFETY: as above; shared access goes through the two mutexes only.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // Overwrite the secrets in the in-memory pages (secure_delete is on) before the
        // buffer goes back to the allocator. Nobody is told: this is not a change to keep.
        let conn = match self.conn.get_mut() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        // SAFETY: a valid open connection; a null callback removes the hook.
        unsafe { rusqlite::ffi::sqlite3_commit_hook(conn.handle(), None, std::ptr::null_mut()) };
        let _engine = self.lock.hold();
        let _ = conn.execute_batch(
            "DELETE FROM zrtp; DELETE FROM lime; DELETE FROM ziduri; DELETE FROM hush_verdict; \
             DELETE FROM hush_confirmed;",
        );
    }
}

/// libbzrtp's ZID cache in memory, shared by all calls. Cheap to clone.
#[derive(Clone)]
pub struct ZidStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ZidStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZidStore")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// Entries of a peer address beyond the newest `?1` of those that may go: not verified,
/// not the first of their pair of addresses, not the active device, not in a call.
const EVICT_BEYOND_PER_PEER: &str = "\
    SELECT zuid FROM (SELECT zu.zuid, ROW_NUMBER() OVER \
                        (PARTITION BY zu.peeruri ORDER BY zu.zuid DESC) AS n \
                      FROM ziduri zu WHERE zu.peeruri <> 'self' \
                        AND COALESCE(zu.active, 0) = 0 \
                        AND zu.zuid NOT IN (SELECT MIN(o.zuid) FROM ziduri o \
                                            GROUP BY o.selfuri, o.peeruri) \
                        AND NOT EXISTS (SELECT 1 FROM hush_verdict v \
                                        WHERE v.peeruri = zu.peeruri AND v.zid = zu.zid) \
                        AND NOT EXISTS (SELECT 1 FROM temp.hush_live l \
                                        WHERE l.selfuri = zu.selfuri AND l.peeruri = zu.peeruri)) \
    WHERE n > ?1";
/// The `?1` oldest entries of any peer address that carry no verdict and are not in a
/// call.
const EVICT_OLDEST: &str = "\
    SELECT zu.zuid FROM ziduri zu WHERE zu.peeruri <> 'self' AND NOT EXISTS \
      (SELECT 1 FROM hush_verdict v WHERE v.peeruri = zu.peeruri AND v.zid = zu.zid) \
      AND NOT EXISTS (SELECT 1 FROM temp.hush_live l \
                      WHERE l.selfuri = zu.selfuri AND l.peeruri = zu.peeruri) \
    ORDER BY zu.zuid LIMIT ?1";

/// Removes the entries `select` names (given `n`), with their secrets, sparing the pairs
/// of addresses in `live`; how many.
fn evict(
    c: &mut Connection,
    select: &str,
    n: i64,
    live: &[(String, String)],
) -> rusqlite::Result<usize> {
    let tx = c.transaction()?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS hush_evict (zuid INTEGER PRIMARY KEY); \
         CREATE TEMP TABLE IF NOT EXISTS hush_live (selfuri TEXT NOT NULL, peeruri TEXT NOT NULL);",
    )?;
    tx.execute("DELETE FROM hush_evict", [])?;
    tx.execute("DELETE FROM hush_live", [])?;
    for (self_uri, peer_uri) in live {
        tx.execute(
            "INSERT INTO hush_live (selfuri, peeruri) VALUES (?1, ?2)",
            params![self_uri, peer_uri],
        )?;
    }
    let found = tx.execute(&format!("INSERT INTO hush_evict {select}"), [n])?;
    if found == 0 {
        // Nothing changed: end without a commit, which would count as a change.
        tx.rollback()?;
        return Ok(0);
    }
    tx.execute_batch(
        "DELETE FROM zrtp WHERE zuid IN (SELECT zuid FROM hush_evict); \
         DELETE FROM lime WHERE zuid IN (SELECT zuid FROM hush_evict); \
         DELETE FROM ziduri WHERE zuid IN (SELECT zuid FROM hush_evict); \
         DELETE FROM hush_evict;",
    )?;
    tx.commit()?;
    Ok(found)
}

/// The database as bytes, copied into memory that is wiped on drop.
fn serialize(c: &mut Connection) -> rusqlite::Result<Zeroizing<Vec<u8>>> {
    Ok(match c.serialize(MAIN_DB)? {
        rusqlite::serialize::Data::Shared(shared) => Zeroizing::new(shared.to_vec()),
        rusqlite::serialize::Data::Owned(mut owned) => {
            let copy = Zeroizing::new(owned.to_vec());
            owned.zeroize();
            copy
        }
    })
}

fn db_err(e: rusqlite::Error) -> MediaError {
    MediaError::Cache(e.to_string())
}

impl ZidStore {
    /// Opens the cache from an image made by [`ZidStore::image`], or empty. libbzrtp
    /// creates or upgrades its tables now, so queries work before the first call.
    pub fn open(image: Option<&[u8]>) -> Result<ZidStore, MediaError> {
        let mut conn = Connection::open_in_memory_with_flags(
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_FULL_MUTEX,
        )
        .map_err(db_err)?;
        if let Some(image) = image {
            if image.len() > MAX_IMAGE_LEN {
                return Err(MediaError::Cache(format!(
                    "the stored cache is {} bytes, more than the {MAX_IMAGE_LEN} accepted",
                    image.len()
                )));
            }
            if !image.starts_with(SQLITE_MAGIC) {
                return Err(MediaError::Cache(
                    "the stored cache is not an SQLite database".into(),
                ));
            }
            conn.deserialize_read_exact(MAIN_DB, image, image.len(), false)
                .map_err(db_err)?;
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(db_err)?;
            if check != "ok" {
                return Err(MediaError::Cache(format!(
                    "the stored cache is damaged: {check}"
                )));
            }
        }
        // Sorts and temporary tables stay in memory too: the secrets never spill to a
        // temporary file.
        conn.execute_batch("PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;")
            .map_err(db_err)?;
        let inner = Inner {
            conn: Mutex::new(conn),
            lock: EngineLock::new(),
            changes: Box::default(),
            live: LiveCalls::default(),
        };
        let store = ZidStore {
            inner: Arc::new(inner),
        };
        let (db, lock) = store.engine_handles()?;
        // SAFETY: `db` is the open connection owned by `store`, `lock` its initialised
        // mutex; libbzrtp uses both only during this call.
        let rc = unsafe { bzrtp_sys::bzrtp_initCache_lock(db, lock) };
        if rc != 0
            && rc as u32 != bzrtp_sys::BZRTP_CACHE_SETUP
            && rc as u32 != bzrtp_sys::BZRTP_CACHE_UPDATE
        {
            return Err(MediaError::Cache(format!(
                "libbzrtp could not set up its tables (error {rc:#06x})"
            )));
        }
        store.with(|c| {
            let present: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                 WHERE type = 'table' AND name = 'hush_verdict')",
                [],
                |r| r.get(0),
            )?;
            if !present {
                let tx = c.transaction()?;
                tx.execute_batch(CREATE_VERDICTS)?;
                tx.commit()?;
            }
            let confirmed: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                 WHERE type = 'table' AND name = 'hush_confirmed')",
                [],
                |r| r.get(0),
            )?;
            if !confirmed {
                let tx = c.transaction()?;
                tx.execute_batch(CREATE_CONFIRMED)?;
                tx.commit()?;
            }
            Ok(())
        })?;
        // Counted from here: creating the tables of an empty cache is nothing to save.
        let changes: *const Changes = &*store.inner.changes;
        store.with(|c| {
            // SAFETY: a valid open connection; `changes` outlives the registration (see
            // `on_commit`).
            unsafe {
                rusqlite::ffi::sqlite3_commit_hook(
                    c.handle(),
                    Some(on_commit),
                    changes.cast_mut().cast(),
                )
            };
            Ok(())
        })?;
        Ok(store)
    }

    /// The connection and the engine lock, for `bzrtp_setZIDCache_lock`. Valid while
    /// this store (or a clone) lives.
    pub(crate) fn engine_handles(&self) -> Result<(*mut c_void, *mut c_void), MediaError> {
        let conn = self
            .inner
            .conn
            .lock()
            .map_err(|_| MediaError::Cache("the cache lock is poisoned".into()))?;
        // SAFETY: reading the handle does not use it; it stays valid while `inner` lives.
        let db = unsafe { conn.handle() };
        Ok((db.cast(), self.inner.lock.ptr()))
    }

    /// Runs `f` on the connection holding both locks, so libbzrtp is never midway.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, MediaError> {
        let mut conn = self
            .inner
            .conn
            .lock()
            .map_err(|_| MediaError::Cache("the cache lock is poisoned".into()))?;
        let _engine = self.inner.lock.hold();
        f(&mut conn).map_err(db_err)
    }

    /// Calls `notify` after every committed change (a call reaching secure, a
    /// verification), from the thread that made it; it must only signal, not block.
    /// Set once; later calls are ignored.
    pub fn on_change(&self, notify: impl Fn() + Send + Sync + 'static) {
        let _ = self.inner.changes.notify.set(Box::new(notify));
    }

    /// How many changes were committed since [`ZidStore::open`].
    pub fn generation(&self) -> u64 {
        self.inner.changes.generation.load(Ordering::SeqCst)
    }

    /// The whole database as bytes, to seal. It holds the retained secrets: wiped on drop.
    ///
    /// The cache is kept within what [`ZidStore::open`] accepts: first each peer address
    /// keeps at most [`MAX_KEYS_PER_PEER`] entries, then, while the image is over
    /// [`MAX_IMAGE_LEN`], the oldest entries without a verdict of the user's go. If the
    /// user's verdicts alone exceed it, this fails and nothing is sealed.
    pub fn image(&self) -> Result<Zeroizing<Vec<u8>>, MediaError> {
        self.image_within(MAX_IMAGE_LEN)
    }

    /// Marks a call in progress between `self_uri` and `peer_uri` until the returned
    /// value is dropped: their entries are not dropped meanwhile.
    pub(crate) fn hold_live(&self, self_uri: &str, peer_uri: &str) -> LiveCall {
        let key = (self_uri.to_owned(), peer_uri.to_owned());
        let mut live = match self.inner.live.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        *live.entry(key.clone()).or_insert(0) += 1;
        LiveCall {
            inner: self.inner.clone(),
            key,
        }
    }

    /// The pairs of addresses of the calls in progress.
    fn live_calls(&self) -> Vec<(String, String)> {
        let live = match self.inner.live.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        live.keys().cloned().collect()
    }

    fn image_within(&self, limit: usize) -> Result<Zeroizing<Vec<u8>>, MediaError> {
        let image = self.with(|c| {
            // Read under the cache locks: a call that starts later cannot have had
            // libbzrtp pick an entry yet.
            let live = self.live_calls();
            evict(c, EVICT_BEYOND_PER_PEER, MAX_KEYS_PER_PEER as i64, &live)?;
            loop {
                let image = serialize(c)?;
                if image.len() <= limit {
                    return Ok(Some(image));
                }
                let entries: i64 = c.query_row(
                    "SELECT count(*) FROM ziduri WHERE peeruri <> 'self'",
                    [],
                    |r| r.get(0),
                )?;
                // Roughly the share of the image that is too much, and some more.
                let excess = (image.len() - limit) as i64;
                let n = (entries * excess / image.len() as i64 + 1)
                    .max(entries / 16)
                    .max(16);
                if evict(c, EVICT_OLDEST, n, &live)? == 0 {
                    return Ok(None);
                }
                tracing::info!(
                    evicted = n,
                    "the ZRTP key cache is full: dropped its oldest unverified keys"
                );
                c.execute_batch("VACUUM")?;
            }
        })?;
        image.ok_or_else(|| {
            MediaError::Cache(format!(
                "the keys you verified alone take more than the {limit} bytes the cache may \
                 hold; withdraw some verifications"
            ))
        })
    }

    /// What the user's verdicts say about `zid` presented by `peer_uri`.
    pub fn key_status(&self, peer_uri: &str, zid: &Zid) -> Result<KeyStatus, MediaError> {
        self.with(|c| {
            c.query_row(
                "SELECT \
                   EXISTS (SELECT 1 FROM hush_verdict WHERE peeruri = ?1 AND zid = ?2), \
                   EXISTS (SELECT 1 FROM hush_verdict WHERE peeruri = ?1 AND zid <> ?2)",
                params![peer_uri, &zid.0[..]],
                |r| {
                    Ok(KeyStatus {
                        this_key_verified: r.get(0)?,
                        other_key_verified: r.get(1)?,
                    })
                },
            )
        })
    }

    /// Whether the user compared the SAS with `zid` (as `peer_uri`) on our address
    /// `self_uri`: a verdict counts only there, as the retained secret of another
    /// address of ours proves nothing about who holds it.
    pub fn confirmed_on(
        &self,
        self_uri: &str,
        peer_uri: &str,
        zid: &Zid,
    ) -> Result<bool, MediaError> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM hush_confirmed \
                 WHERE selfuri = ?1 AND peeruri = ?2 AND zid = ?3)",
                params![self_uri, peer_uri, &zid.0[..]],
                |r| r.get(0),
            )
        })
    }

    /// Whether the cache holds a retained secret shared by our address `self_uri` with
    /// `zid` presented by `peer_uri`. Asked before a handshake writes one: only a secret
    /// that existed before, and matched, shows that this is the same peer as last time.
    /// Only rs1 counts: libbzrtp reports a mismatch only for a cached rs1 that fails, and
    /// drops a failing rs2 silently.
    pub fn has_secret(
        &self,
        self_uri: &str,
        peer_uri: &str,
        zid: &Zid,
    ) -> Result<bool, MediaError> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM ziduri zu JOIN zrtp z ON z.zuid = zu.zuid \
                 WHERE zu.selfuri = ?1 AND zu.peeruri = ?2 AND zu.zid = ?3 \
                   AND length(z.rs1) > 0)",
                params![self_uri, peer_uri, &zid.0[..]],
                |r| r.get(0),
            )
        })
    }

    /// The keys seen from `peer_uri`, the last seen first.
    pub fn keys_of(&self, peer_uri: &str) -> Result<Vec<CachedKey>, MediaError> {
        let mut keys = self.list(
            "SELECT zu.peeruri, zu.zid, \
                    EXISTS (SELECT 1 FROM hush_verdict v WHERE v.peeruri = ?1 AND v.zid = zu.zid), \
                    MAX(COALESCE(zu.active, 0)), MAX(zu.zuid) \
             FROM ziduri zu JOIN zrtp z ON z.zuid = zu.zuid WHERE zu.peeruri = ?1 \
             GROUP BY zu.zid ORDER BY 4 DESC, 5 DESC LIMIT ?2",
            params![peer_uri, MAX_LISTED as i64],
        )?;
        // Several of our addresses may have met this peer; the newest exchange wins.
        for (i, k) in keys.iter_mut().enumerate() {
            k.last_seen = i == 0;
        }
        Ok(keys)
    }

    /// Every verified key, by address.
    pub fn verified_keys(&self) -> Result<Vec<CachedKey>, MediaError> {
        self.list(
            "SELECT v.peeruri, v.zid, 1, \
                    COALESCE((SELECT MAX(COALESCE(zu.active, 0)) FROM ziduri zu \
                              WHERE zu.peeruri = v.peeruri AND zu.zid = v.zid), 0) \
             FROM hush_verdict v ORDER BY 1, 4 DESC LIMIT ?1",
            params![MAX_LISTED as i64],
        )
    }

    fn list(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<CachedKey>, MediaError> {
        self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map(p, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)? != 0,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (peer_uri, zid, verified, last_seen) = row?;
                // A row libbzrtp did not write (wrong ZID length) is skipped, not trusted.
                if let Some(zid) = Zid::from_blob(&zid) {
                    out.push(CachedKey {
                        peer_uri,
                        zid,
                        verified,
                        last_seen,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Sets or clears "SAS verified" for `zid` as a key of `peer_uri`, and for nothing
    /// else. Returns how many cache entries hold that key (under each of our addresses
    /// that met it); 0 means no secure call with that key, and nothing is recorded.
    pub fn set_verified(
        &self,
        peer_uri: &str,
        zid: &Zid,
        verified: bool,
    ) -> Result<usize, MediaError> {
        let entries = self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM ziduri zu JOIN zrtp z ON z.zuid = zu.zuid \
                 WHERE zu.peeruri = ?1 AND zu.zid = ?2",
                params![peer_uri, &zid.0[..]],
                |r| r.get::<_, i64>(0),
            )
        })?;
        if entries == 0 {
            return Ok(0);
        }
        self.record_verdict(None, peer_uri, zid, verified)?;
        Ok(usize::try_from(entries).unwrap_or(usize::MAX))
    }

    /// Writes the user's verdict on `zid` as a key of `peer_uri`, given on our address
    /// `on` (in a call), or, outside a call, for every address of ours that met that key
    /// (the comparison was made in one of those calls). Withdrawing clears it
    /// everywhere. Also sets libbzrtp's own flag to match (it only reports it back;
    /// nothing here reads it).
    pub(crate) fn record_verdict(
        &self,
        on: Option<&str>,
        peer_uri: &str,
        zid: &Zid,
        verified: bool,
    ) -> Result<(), MediaError> {
        let flag: &[u8] = if verified { &[1] } else { &[0] };
        self.with(|c| {
            let tx = c.transaction()?;
            if verified {
                tx.execute(
                    "INSERT OR IGNORE INTO hush_verdict (peeruri, zid) VALUES (?1, ?2)",
                    params![peer_uri, &zid.0[..]],
                )?;
                match on {
                    Some(self_uri) => tx.execute(
                        "INSERT OR IGNORE INTO hush_confirmed (selfuri, peeruri, zid) \
                         VALUES (?1, ?2, ?3)",
                        params![self_uri, peer_uri, &zid.0[..]],
                    )?,
                    None => tx.execute(
                        "INSERT OR IGNORE INTO hush_confirmed (selfuri, peeruri, zid) \
                         SELECT selfuri, peeruri, zid FROM ziduri \
                         WHERE peeruri = ?1 AND zid = ?2",
                        params![peer_uri, &zid.0[..]],
                    )?,
                };
            } else {
                tx.execute(
                    "DELETE FROM hush_verdict WHERE peeruri = ?1 AND zid = ?2",
                    params![peer_uri, &zid.0[..]],
                )?;
                tx.execute(
                    "DELETE FROM hush_confirmed WHERE peeruri = ?1 AND zid = ?2",
                    params![peer_uri, &zid.0[..]],
                )?;
            }
            tx.execute(
                "UPDATE zrtp SET pvs = ?1 WHERE zuid IN \
                 (SELECT zuid FROM ziduri WHERE peeruri = ?2 AND zid = ?3)",
                params![flag, peer_uri, &zid.0[..]],
            )?;
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zids_print_and_parse_as_hex() {
        let z = Zid([0, 1, 2, 3, 0xa, 0xb, 0xc, 0xd, 0xfe, 0xff, 0x10, 0x20]);
        assert_eq!(z.to_string(), "000102030a0b0c0dfeff1020");
        assert_eq!(Zid::parse("00010203 0a0b0c0d FEFF1020").ok(), Some(z));
        for bad in [
            "",
            "0001",
            "zz0102030a0b0c0dfeff1020",
            "000102030a0b0c0dfeff102000",
        ] {
            assert!(Zid::parse(bad).is_err(), "{bad}");
        }
        // Multi-byte characters must not be split into "hex pairs".
        assert!(Zid::parse("ééééééééééé0").is_err());
    }

    #[test]
    fn an_empty_store_round_trips_through_its_image() {
        let store = ZidStore::open(None).expect("open");
        assert_eq!(store.generation(), 0, "creating the tables is not a change");
        let image = store.image().expect("image");
        assert!(image.starts_with(SQLITE_MAGIC));
        let again = ZidStore::open(Some(&image)).expect("reopen");
        assert!(again.verified_keys().expect("list").is_empty());
    }

    #[test]
    fn temporary_storage_never_leaves_memory() {
        for image in [
            None,
            Some(ZidStore::open(None).expect("open").image().expect("image")),
        ] {
            let store = ZidStore::open(image.as_deref().map(|i| &i[..])).expect("open");
            let (temp_store, secure_delete) = store
                .with(|c| {
                    Ok((
                        c.query_row("PRAGMA temp_store", [], |r| r.get::<_, i64>(0))?,
                        c.query_row("PRAGMA secure_delete", [], |r| r.get::<_, i64>(0))?,
                    ))
                })
                .expect("pragmas");
            assert_eq!(temp_store, 2, "MEMORY");
            assert_eq!(secure_delete, 1);
        }
    }

    #[test]
    fn foreign_or_damaged_images_are_refused() {
        assert!(ZidStore::open(Some(b"not a database at all")).is_err());
        let mut image = ZidStore::open(None).expect("open").image().expect("image");
        let n = image.len();
        image[n / 2..].fill(0xa5);
        assert!(ZidStore::open(Some(&image)).is_err());
        assert!(ZidStore::open(Some(&vec![0u8; MAX_IMAGE_LEN + 1])).is_err());
    }

    #[test]
    fn verdicts_held_by_libbzrtp_are_carried_over_once_and_outlive_its_flag() {
        let zid = Zid([7; 12]);
        let store = ZidStore::open(None).expect("open");
        // A cache written before the verdict table existed: libbzrtp's flag only.
        store
            .with(|c| {
                c.execute(
                    "INSERT INTO ziduri (zid, selfuri, peeruri) VALUES (?1, 'me@x', 'bob@x')",
                    params![&zid.0[..]],
                )?;
                let zuid = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO zrtp (zuid, pvs) VALUES (?1, x'01')",
                    params![zuid],
                )?;
                c.execute_batch("DROP TABLE hush_verdict")
            })
            .expect("old cache");
        let image = store.with(serialize).expect("image");
        drop(store);
        let store = ZidStore::open(Some(&image)).expect("reopen");
        let verified = store.verified_keys().expect("list");
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].zid, zid);
        // libbzrtp clears its flag (a peer with this ZID failed the secret check): the
        // user's verdict stands, also after another restart (no second migration).
        store
            .with(|c| c.execute_batch("UPDATE zrtp SET pvs = x'00'"))
            .expect("flag cleared");
        let again = ZidStore::open(Some(&store.image().expect("image"))).expect("reopen");
        let status = again.key_status("bob@x", &zid).expect("status");
        assert!(status.this_key_verified && !status.other_key_verified);
        assert!(again.keys_of("bob@x").expect("keys")[0].verified);
        // Withdrawing is the user's to do.
        assert_eq!(again.set_verified("bob@x", &zid, false).expect("reset"), 1);
        assert!(again.verified_keys().expect("list").is_empty());
        assert_eq!(
            again
                .set_verified("bob@x", &Zid([8; 12]), true)
                .expect("none"),
            0
        );
        assert!(again.verified_keys().expect("list").is_empty());
    }

    /// Adds `n` entries with a secret each, for peer addresses named by `peer` (an SQL
    /// expression of the counter `i`); returns the zid of the first one.
    fn fill(store: &ZidStore, n: i64, peer: &str) {
        store
            .with(|c| {
                c.execute(
                    &format!(
                        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1) \
                         INSERT INTO ziduri (zid, selfuri, peeruri) \
                         SELECT randomblob(12), 'me@x', {peer} FROM k"
                    ),
                    [n],
                )?;
                c.execute(
                    "INSERT INTO zrtp (zuid, rs1, pvs) SELECT zuid, randomblob(32), x'00' \
                     FROM ziduri WHERE peeruri <> 'self' AND zuid NOT IN (SELECT zuid FROM zrtp)",
                    [],
                )
            })
            .expect("fill");
    }

    fn first_zid(store: &ZidStore, peer: &str) -> Zid {
        store
            .with(|c| {
                c.query_row(
                    "SELECT zid FROM ziduri WHERE peeruri = ?1 ORDER BY zuid LIMIT 1",
                    [peer],
                    |r| r.get::<_, Vec<u8>>(0),
                )
            })
            .ok()
            .and_then(|b| Zid::from_blob(&b))
            .expect("a zid")
    }

    #[test]
    fn a_peer_address_keeps_its_newest_keys_and_every_verified_one() {
        let store = ZidStore::open(None).expect("open");
        fill(&store, 40, "'bob@x'");
        let oldest = first_zid(&store, "bob@x");
        assert_eq!(
            store.set_verified("bob@x", &oldest, true).expect("verify"),
            1
        );
        let again = ZidStore::open(Some(&store.image().expect("image"))).expect("reopen");
        let keys = again.keys_of("bob@x").expect("keys");
        assert_eq!(
            keys.len(),
            MAX_KEYS_PER_PEER + 1,
            "the newest, and the verified one"
        );
        assert!(keys.iter().any(|k| k.zid == oldest && k.verified));
    }

    #[test]
    fn fresh_keys_under_a_contacts_address_never_push_out_its_first_active_or_live_entries() {
        let store = ZidStore::open(None).expect("open");
        // Bob's key, never verified; then a caller with fresh keys as bob, again and again.
        fill(&store, 1, "'bob@x'");
        let bob = first_zid(&store, "bob@x");
        fill(&store, MAX_KEYS_PER_PEER as i64 + 1, "'bob@x'");
        // Another entry is libbzrtp's last active device for bob@x.
        let active: Vec<u8> = store
            .with(|c| {
                c.query_row(
                    "UPDATE ziduri SET active = 1 WHERE zuid = \
                       (SELECT zuid FROM ziduri WHERE peeruri = 'bob@x' ORDER BY zuid LIMIT 1 OFFSET 1) \
                     RETURNING zid",
                    [],
                    |r| r.get(0),
                )
            })
            .expect("active");
        // A call with carol@x is in progress: none of hers go, however many.
        let call = store.hold_live("me@x", "carol@x");
        fill(&store, MAX_KEYS_PER_PEER as i64 + 4, "'carol@x'");

        let again = ZidStore::open(Some(&store.image().expect("image"))).expect("reopen");
        let keys = again.keys_of("bob@x").expect("keys");
        assert!(keys.iter().any(|k| k.zid == bob), "Bob's first key stays");
        assert!(
            keys.iter().any(|k| k.zid.0[..] == active[..]),
            "the active device stays"
        );
        assert_eq!(
            keys.len(),
            MAX_KEYS_PER_PEER + 2,
            "the newest, the first, the active"
        );
        assert_eq!(
            again.keys_of("carol@x").expect("keys").len(),
            MAX_KEYS_PER_PEER + 4,
            "nothing of a call in progress"
        );
        drop(call);
        let later = ZidStore::open(Some(&store.image().expect("image"))).expect("reopen");
        assert_eq!(
            later.keys_of("carol@x").expect("keys").len(),
            MAX_KEYS_PER_PEER + 1,
            "trimmed once the call is over: the newest and the first"
        );
    }

    #[test]
    fn a_cache_past_the_size_limit_drops_its_oldest_unverified_keys_when_saved() {
        let store = ZidStore::open(None).expect("open");
        fill(&store, 1, "'alice@x'");
        let verified = first_zid(&store, "alice@x");
        assert_eq!(
            store
                .set_verified("alice@x", &verified, true)
                .expect("verify"),
            1
        );
        // Well past the limit: one key each for many addresses.
        fill(&store, 200_000, "'p' || i || '@x'");
        let full = store.with(serialize).expect("raw image");
        assert!(full.len() > MAX_IMAGE_LEN, "{} bytes", full.len());
        drop(full);
        let image = store.image().expect("trimmed");
        assert!(image.len() <= MAX_IMAGE_LEN, "{} bytes", image.len());
        let again = ZidStore::open(Some(&image)).expect("it opens at the next start");
        assert_eq!(
            again.verified_keys().expect("list").len(),
            1,
            "the verdict stays"
        );
        assert_eq!(again.keys_of("alice@x").expect("keys").len(), 1);
        let newest = again.keys_of("p200000@x").expect("keys");
        assert_eq!(newest.len(), 1, "the newest keys stay");
        assert!(
            again.keys_of("p1@x").expect("keys").is_empty(),
            "the oldest went"
        );
    }

    #[test]
    fn verdicts_alone_past_the_limit_fail_the_save_cleanly() {
        let store = ZidStore::open(None).expect("open");
        fill(&store, 200, "'p' || i || '@x'");
        store
            .with(|c| {
                c.execute(
                    "INSERT INTO hush_verdict SELECT peeruri, zid FROM ziduri WHERE peeruri <> 'self'",
                    [],
                )
            })
            .expect("all verified");
        let err = store.image_within(4096).expect_err("too large");
        assert!(err.to_string().contains("verified"), "{err}");
        assert_eq!(
            store.verified_keys().expect("list").len(),
            200,
            "nothing lost"
        );
        assert!(store.image().is_ok(), "within the real limit");
    }
}
