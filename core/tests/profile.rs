//! The profile store against a real SQLite database on disk.

use hush_core::model::{AccountSettings, SipSettings, XmppSettings};
use hush_core::profile::{Direction, HistoryEntry, HistoryRecord, VaultMode};
use hush_core::{AccountId, Command, CoreError, NewAccount, Phone, Profile, Secret};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn sip_account(address: &str, password: &str, remember: bool) -> NewAccount {
    NewAccount {
        address: address.into(),
        display_name: None,
        password: Some(Secret::from(password)),
        remember_password: remember,
        settings: AccountSettings::Sip(SipSettings::default()),
    }
}

/// Every byte of every file in the profile directory (db, WAL, journal...).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read profile dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            out.extend(std::fs::read(&path).expect("read file"));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn new_profile_is_private_and_history_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("profile");
    let p = Profile::open(&pdir).expect("create profile");
    assert_eq!(
        std::fs::metadata(&pdir).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&pdir).expect("list") {
        let path = entry.expect("entry").path();
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
    }
    assert!(!p.history_default().expect("default"));
    assert_eq!(p.vault_mode().expect("mode"), VaultMode::Unprotected);
    assert!(!p.is_locked());
}

#[test]
fn remembered_password_is_sealed_and_forgotten_one_is_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    let kept = p
        .add_account(sip_account(
            "sip:alice@example.org",
            "kept-password-123",
            true,
        ))
        .expect("add");
    let not_kept = p
        .add_account(sip_account("bob@example.org", "never-stored-456", false))
        .expect("add");
    assert_eq!(kept.address, "alice@example.org");
    drop(p);
    let p = Profile::open(dir.path()).expect("reopen");
    assert_eq!(
        p.account_password(kept.id)
            .expect("read")
            .map(|s| s.expose().to_owned())
            .as_deref(),
        Some("kept-password-123")
    );
    assert!(p.account_password(not_kept.id).expect("read").is_none());
    drop(p);
    let bytes = all_bytes(dir.path());
    assert!(
        !contains(&bytes, b"never-stored-456"),
        "unremembered password reached disk"
    );
    assert!(
        !contains(&bytes, b"kept-password-123"),
        "remembered password stored in plaintext"
    );
}

#[test]
fn duplicate_and_invalid_accounts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    p.add_account(sip_account("alice@example.org", "x", true))
        .expect("add");
    assert!(matches!(
        p.add_account(sip_account("sip:alice@Example.org", "y", true)),
        Err(CoreError::DuplicateAccount(_))
    ));
    assert!(matches!(
        p.add_account(sip_account("not an address", "y", true)),
        Err(CoreError::InvalidInput(_))
    ));
    // Same address on another protocol is a different account.
    let x = NewAccount {
        settings: AccountSettings::Xmpp(XmppSettings::default()),
        ..sip_account("alice@example.org", "z", false)
    };
    p.add_account(x)
        .expect("xmpp account with the same address");
    assert_eq!(p.accounts().expect("list").len(), 2);
    let found = p.find_account("sip:alice@example.org");
    assert!(
        matches!(found, Err(CoreError::InvalidInput(_))),
        "ambiguous address needs the id"
    );
    let id = p.find_account("1").expect("by id").id;
    p.remove_account(id).expect("remove");
    assert!(
        p.account_password(id).expect("read").is_none(),
        "password removed with the account"
    );
    assert!(matches!(
        p.remove_account(AccountId(99)),
        Err(CoreError::NoSuchAccount(_))
    ));
}

#[test]
fn master_password_set_change_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    let acc = p
        .add_account(sip_account("alice@example.org", "sip-secret-1", true))
        .expect("add");
    p.put_secret("otr/key", b"PRIVATE KEY BYTES").expect("put");
    assert!(matches!(
        p.set_master_password(&Secret::from("short")),
        Err(CoreError::WeakMasterPassword(_))
    ));
    p.set_master_password(&Secret::from("correct horse battery"))
        .expect("set");
    drop(p);

    let mut p = Profile::open(dir.path()).expect("reopen");
    assert!(p.is_locked());
    assert!(matches!(p.account_password(acc.id), Err(CoreError::Locked)));
    assert!(matches!(
        p.unlock(&Secret::from("wrong password!")),
        Err(CoreError::WrongMasterPassword)
    ));
    assert!(p.is_locked(), "a wrong password leaves the vault locked");
    p.unlock(&Secret::from("correct horse battery"))
        .expect("unlock");
    assert_eq!(
        p.secret("otr/key")
            .expect("read")
            .as_deref()
            .map(|v| v.to_vec()),
        Some(b"PRIVATE KEY BYTES".to_vec())
    );

    let sealed_before = sealed_blobs(p.connection());
    assert!(matches!(
        p.change_master_password(
            &Secret::from("not the password"),
            &Secret::from("new password here")
        ),
        Err(CoreError::WrongMasterPassword)
    ));
    assert_eq!(
        sealed_blobs(p.connection()),
        sealed_before,
        "a wrong old password changes nothing"
    );
    p.change_master_password(
        &Secret::from("correct horse battery"),
        &Secret::from("new password here"),
    )
    .expect("change");
    let sealed_after = sealed_blobs(p.connection());
    assert_eq!(sealed_after.len(), sealed_before.len());
    for (a, b) in sealed_before.iter().zip(&sealed_after) {
        assert_ne!(a, b, "every secret is re-sealed under the new key");
    }
    drop(p);

    let mut p = Profile::open(dir.path()).expect("reopen");
    assert!(matches!(
        p.unlock(&Secret::from("correct horse battery")),
        Err(CoreError::WrongMasterPassword)
    ));
    p.unlock(&Secret::from("new password here"))
        .expect("new password opens");
    assert_eq!(
        p.account_password(acc.id)
            .expect("read")
            .map(|s| s.expose().to_owned())
            .as_deref(),
        Some("sip-secret-1")
    );
    p.remove_master_password(&Secret::from("new password here"))
        .expect("remove");
    drop(p);

    let p = Profile::open(dir.path()).expect("reopen");
    assert!(!p.is_locked());
    assert_eq!(p.vault_mode().expect("mode"), VaultMode::Unprotected);
    assert_eq!(
        p.secret("otr/key")
            .expect("read")
            .as_deref()
            .map(|v| v.to_vec()),
        Some(b"PRIVATE KEY BYTES".to_vec())
    );
}

fn sealed_blobs(conn: &rusqlite::Connection) -> Vec<Vec<u8>> {
    let mut stmt = conn
        .prepare("SELECT sealed FROM secrets ORDER BY name")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn assert_corrupt_and_untouched(pdir: &Path, what: &str) {
    let db = pdir.join("profile.db");
    let before = std::fs::read(&db).expect("read db");
    match Profile::open(pdir) {
        Err(e @ CoreError::CorruptProfile { .. }) => {
            assert!(
                e.to_string().contains(&db.display().to_string()),
                "{what}: message names the file: {e}"
            );
        }
        Err(e) => panic!("{what}: expected CorruptProfile, got {e}"),
        Ok(_) => panic!("{what}: a damaged profile was opened"),
    }
    assert_eq!(
        std::fs::read(&db).expect("read db"),
        before,
        "{what}: file was modified"
    );
}

fn make_profile(pdir: &Path) {
    let mut p = Profile::open(pdir).expect("create");
    for i in 0..40 {
        p.add_account(sip_account(
            &format!("user{i}@example.org"),
            &"pw".repeat(200),
            true,
        ))
        .expect("add");
    }
    drop(p);
    // Fold the WAL into the main file so truncation hits real data.
    let conn = rusqlite::Connection::open(pdir.join("profile.db")).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.execute_batch("PRAGMA journal_mode = DELETE")
        .expect("journal");
}

#[test]
fn damaged_profiles_are_reported_with_their_path_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");

    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).expect("mkdir");
    std::fs::write(garbage.join("profile.db"), vec![0x5au8; 8192]).expect("write");
    assert_corrupt_and_untouched(&garbage, "garbage");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::write(empty.join("profile.db"), b"").expect("write");
    assert_corrupt_and_untouched(&empty, "zero-length");

    let truncated = dir.path().join("truncated");
    make_profile(&truncated);
    let db = truncated.join("profile.db");
    let len = std::fs::metadata(&db).expect("meta").len();
    assert!(len > 8192, "fixture is several pages ({len} bytes)");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    assert_corrupt_and_untouched(&truncated, "truncated");

    let header_only = dir.path().join("header-only");
    make_profile(&header_only);
    let db = header_only.join("profile.db");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open")
        .set_len(100)
        .expect("truncate");
    assert_corrupt_and_untouched(&header_only, "header only");

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    {
        let conn = rusqlite::Connection::open(foreign.join("profile.db")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .expect("fill");
    }
    assert_corrupt_and_untouched(&foreign, "foreign sqlite");
}

#[test]
fn hostile_vault_parameters_are_refused_without_deriving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    p.set_master_password(&Secret::from("a good master password"))
        .expect("set");
    // 4 TiB of memory would be requested if we trusted the file.
    p.connection()
        .execute("UPDATE vault SET kdf_m = 4294967295", [])
        .expect("tamper");
    drop(p);
    match Profile::open(dir.path()) {
        Err(e @ CoreError::CorruptProfile { .. }) => {
            assert!(e.to_string().contains("profile.db"), "{e}")
        }
        Err(e) => panic!("expected CorruptProfile, got {e}"),
        Ok(_) => panic!("a vault asking for 4 TiB was accepted"),
    }
}

#[test]
fn tampered_secret_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    p.put_secret("a", b"one").expect("put");
    p.put_secret("b", b"two").expect("put");
    // Swap the two ciphertexts: each is bound to its name, so both must fail.
    p.connection()
        .execute_batch(
            "UPDATE secrets SET name = 'tmp' WHERE name = 'a'; UPDATE secrets SET name = 'a' WHERE name = 'b'; UPDATE secrets SET name = 'b' WHERE name = 'tmp';",
        )
        .expect("swap");
    assert!(matches!(p.secret("a"), Err(CoreError::TamperedSecret(_))));
    assert!(matches!(p.secret("b"), Err(CoreError::TamperedSecret(_))));
}

fn message(account: AccountId, peer: &str, body: &str) -> HistoryEntry {
    HistoryEntry {
        account,
        peer: peer.into(),
        at_unix_ms: 1_700_000_000_000,
        record: HistoryRecord::Message {
            direction: Direction::Incoming,
            body: body.into(),
        },
    }
}

#[test]
fn history_is_opt_in_per_contact_sealed_and_erasable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    let acc = AccountId(1);
    let secret_text = "MEET-AT-THE-BRIDGE-AT-NINE";

    // Off by default: nothing is written.
    assert!(
        !p.log(&message(acc, "carol@localhost", secret_text))
            .expect("log")
    );
    assert_eq!(p.history_len().expect("len"), 0);

    // Per-contact on, default still off.
    p.set_history_for(acc, "carol@localhost", Some(true))
        .expect("toggle");
    assert!(
        p.log(&message(acc, "carol@localhost", secret_text))
            .expect("log")
    );
    assert!(
        !p.log(&message(acc, "dave@localhost", "not logged"))
            .expect("log")
    );
    // Default on, but a per-contact "off" wins.
    p.set_history_default(true).expect("default");
    p.set_history_for(acc, "erin@localhost", Some(false))
        .expect("toggle");
    assert!(
        !p.log(&message(acc, "erin@localhost", "not logged either"))
            .expect("log")
    );
    assert!(
        p.log(&message(acc, "dave@localhost", "now logged"))
            .expect("log")
    );
    assert_eq!(p.history_len().expect("len"), 2);
    let carol = p.history_with(acc, "carol@localhost").expect("read");
    assert_eq!(carol, vec![message(acc, "carol@localhost", secret_text)]);

    // At rest: neither the text nor the contact is readable.
    let sealed: Vec<u8> = p
        .connection()
        .query_row("SELECT sealed FROM history LIMIT 1", [], |r| r.get(0))
        .expect("row");
    let bytes = all_bytes(dir.path());
    assert!(!contains(&bytes, secret_text.as_bytes()));
    assert!(!contains(&bytes, b"carol@localhost"));
    assert!(
        contains(&bytes, &sealed[sealed.len() - 32..]),
        "the search can find a stored record"
    );

    p.erase_history().expect("erase");
    assert_eq!(p.history_len().expect("len"), 0);
    assert!(
        p.history_with(acc, "carol@localhost")
            .expect("read")
            .is_empty()
    );
    drop(p);
    let bytes = all_bytes(dir.path());
    assert!(
        !contains(&bytes, &sealed[sealed.len() - 32..]),
        "erased record still in the files"
    );
    assert!(!contains(&bytes, secret_text.as_bytes()));

    // The per-contact choice survives the erase: erasing is not a settings reset.
    let p = Profile::open(dir.path()).expect("reopen");
    assert!(p.history_enabled_for(acc, "carol@localhost").expect("pref"));
    assert!(!p.history_enabled_for(acc, "erin@localhost").expect("pref"));
}

#[test]
fn history_survives_master_password_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Profile::open(dir.path()).expect("open");
    p.set_history_default(true).expect("on");
    p.log(&message(AccountId(1), "carol@localhost", "hello"))
        .expect("log");
    p.set_master_password(&Secret::from("first master pw"))
        .expect("set");
    p.change_master_password(
        &Secret::from("first master pw"),
        &Secret::from("second master pw"),
    )
    .expect("change");
    drop(p);
    let mut p = Profile::open(dir.path()).expect("reopen");
    p.unlock(&Secret::from("second master pw")).expect("unlock");
    assert_eq!(
        p.history_with(AccountId(1), "carol@localhost")
            .expect("read")
            .len(),
        1
    );
}

/// The vault's stored key (the data key itself while no master password is set) and
/// every sealed blob, read through a connection of our own that is closed on return.
fn vault_at_rest(db: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let conn = rusqlite::Connection::open(db).expect("open");
    let key: Vec<u8> = conn
        .query_row("SELECT wrapped_key FROM vault", [], |r| r.get(0))
        .expect("vault");
    let mut blobs = sealed_blobs(&conn);
    let mut stmt = conn.prepare("SELECT sealed FROM history").expect("prepare");
    let history: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    blobs.extend(history);
    (key, blobs)
}

/// Asserts that nothing of an earlier vault is left in any file of the profile.
fn assert_gone(pdir: &Path, (key, blobs): &(Vec<u8>, Vec<Vec<u8>>), when: &str) {
    let bytes = all_bytes(pdir);
    assert!(
        !contains(&bytes, key),
        "{when}: the old vault key is still in the files"
    );
    for b in blobs {
        assert!(
            !contains(&bytes, &b[b.len() - 32..]),
            "{when}: an old sealed blob is still in the files"
        );
    }
}

#[test]
fn a_new_master_password_leaves_no_old_key_in_the_files_while_the_phone_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("p");
    let db = pdir.join("profile.db");
    let mut p = Profile::open(&pdir).expect("open");
    p.add_account(sip_account("alice@example.org", "sip-secret-1", true))
        .expect("add");
    p.put_secret("otr/key", b"PRIVATE KEY BYTES").expect("put");
    p.set_history_default(true).expect("on");
    p.log(&message(AccountId(1), "carol@localhost", "hello"))
        .expect("log");
    let unprotected = vault_at_rest(&db);
    assert_eq!(unprotected.0.len(), 32, "the unsealed data key");
    assert!(
        contains(&all_bytes(&pdir), &unprotected.0),
        "the check can fail"
    );
    // The window holds the profile open for as long as it runs.
    let phone = Phone::start(p).expect("phone");
    phone
        .execute_blocking(Command::SetMasterPassword {
            new: Secret::from("first master pw"),
        })
        .expect("set");
    assert_gone(&pdir, &unprotected, "after setting a master password");
    let first = vault_at_rest(&db);
    phone
        .execute_blocking(Command::ChangeMasterPassword {
            old: Secret::from("first master pw"),
            new: Secret::from("second master pw"),
        })
        .expect("change");
    assert_gone(&pdir, &first, "after changing the master password");
    drop(phone);
    let mut p = Profile::open(&pdir).expect("reopen");
    p.unlock(&Secret::from("second master pw")).expect("unlock");
    assert_eq!(
        p.secret("otr/key")
            .expect("read")
            .as_deref()
            .map(|v| v.to_vec()),
        Some(b"PRIVATE KEY BYTES".to_vec())
    );
}

#[test]
fn erasing_history_says_so_when_another_reader_keeps_the_old_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("profile.db");
    let mut p = Profile::open(dir.path()).expect("open");
    p.set_history_default(true).expect("on");
    p.log(&message(AccountId(1), "carol@localhost", "MEET-AT-NINE"))
        .expect("log");
    let (_, blobs) = vault_at_rest(&db);
    let record = blobs.last().expect("the history record").clone();
    // Another program reading the profile keeps SQLite from emptying the WAL.
    let reader = rusqlite::Connection::open(&db).expect("open");
    reader.execute_batch("BEGIN").expect("begin");
    let _: i64 = reader
        .query_row("SELECT count(*) FROM history", [], |r| r.get(0))
        .expect("read");
    let err = p
        .erase_history()
        .expect_err("the old bytes could not be wiped");
    assert!(matches!(err, CoreError::NotWiped { .. }), "{err}");
    let words = err.to_string();
    assert!(
        words.starts_with("the history was deleted, but the old data is still in")
            && words.contains(&db.display().to_string()),
        "{words}"
    );
    assert_eq!(p.history_len().expect("len"), 0);
    reader.execute_batch("COMMIT").expect("commit");
    drop(reader);
    p.erase_history().expect("erased once nobody else reads");
    let bytes = all_bytes(dir.path());
    assert!(!contains(&bytes, &record[record.len() - 32..]));
}

fn history_rows(db: &Path) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT id, peer_tag FROM history ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn edit(db: &Path, sql: &str, params: impl rusqlite::Params) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute(sql, params).expect("edit");
}

#[test]
fn a_history_record_moved_to_another_conversation_is_refused_not_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("profile.db");
    let acc = AccountId(1);
    let mut p = Profile::open(dir.path()).expect("open");
    p.set_history_default(true).expect("on");
    p.log(&message(acc, "carol@localhost", "for carol only"))
        .expect("log");
    p.log(&message(acc, "dave@localhost", "for dave"))
        .expect("log");
    drop(p);
    let rows = history_rows(&db);
    let [(carol_id, carol_tag), (dave_id, dave_tag)] = &rows[..] else {
        panic!("two records: {rows:?}")
    };

    // Carol's record filed under dave's conversation.
    edit(
        &db,
        "UPDATE history SET peer_tag = ?1 WHERE id = ?2",
        rusqlite::params![dave_tag, carol_id],
    );
    let p = Profile::open(dir.path()).expect("open");
    match p.history_with(acc, "dave@localhost") {
        Err(CoreError::TamperedHistory(id)) => assert_eq!(id, *carol_id),
        other => panic!("a moved record must be refused, got {other:?}"),
    }
    drop(p);

    // Put back, it opens again; a copy under another row id is refused too.
    edit(
        &db,
        "UPDATE history SET peer_tag = ?1 WHERE id = ?2",
        rusqlite::params![carol_tag, carol_id],
    );
    edit(
        &db,
        "INSERT INTO history (peer_tag, sealed, format) SELECT peer_tag, sealed, format FROM history WHERE id = ?1",
        rusqlite::params![dave_id],
    );
    let p = Profile::open(dir.path()).expect("open");
    assert_eq!(
        p.history_with(acc, "carol@localhost").expect("read"),
        vec![message(acc, "carol@localhost", "for carol only")]
    );
    assert!(matches!(
        p.history_with(acc, "dave@localhost"),
        Err(CoreError::TamperedHistory(_))
    ));
}

#[test]
fn an_erased_record_put_back_from_an_older_copy_is_refused_not_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("profile.db");
    let acc = AccountId(1);
    let mut p = Profile::open(dir.path()).expect("open");
    p.set_history_default(true).expect("on");
    p.log(&message(acc, "carol@localhost", "hello"))
        .expect("log");
    p.log(&message(acc, "carol@localhost", "the line erased"))
        .expect("log");
    drop(p);
    // An older copy of the profile keeps the row as it was.
    let (old_id, tag, sealed): (i64, Vec<u8>, Vec<u8>) = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row(
            "SELECT id, peer_tag, sealed FROM history ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the row");
    let put_back = || {
        edit(
            &db,
            "INSERT INTO history (id, peer_tag, sealed, format) VALUES (?1, ?2, ?3, 2)",
            rusqlite::params![old_id, tag, sealed],
        )
    };
    let mut p = Profile::open(dir.path()).expect("open");
    p.erase_history().expect("erase");
    drop(p);
    // Put back into its own (now free) row, with nothing written since the erase.
    put_back();
    let p = Profile::open(dir.path()).expect("open");
    match p.history_with(acc, "carol@localhost") {
        Err(CoreError::TamperedHistory(id)) => assert_eq!(id, old_id),
        other => panic!("an erased record must not come back, got {other:?}"),
    }
    drop(p);
    // The epoch cannot be removed on its own: it lives with the index key, and without
    // that the profile does not open.
    let saved: Vec<(String, Vec<u8>)> = {
        let conn = rusqlite::Connection::open(&db).expect("open");
        let mut stmt = conn
            .prepare("SELECT name, sealed FROM secrets WHERE name LIKE 'vault/index-key%'")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(saved.len(), 1, "{saved:?}");
    edit(
        &db,
        "DELETE FROM secrets WHERE name LIKE 'vault/index-key%'",
        [],
    );
    assert!(matches!(
        Profile::open(dir.path()),
        Err(CoreError::TamperedSecret(_))
    ));
    edit(
        &db,
        "INSERT INTO secrets (name, sealed) VALUES (?1, ?2)",
        rusqlite::params![saved[0].0, saved[0].1],
    );
    edit(&db, "DELETE FROM history", []);
    // And once new lines were written after the erase (they take the first row ids).
    let mut p = Profile::open(dir.path()).expect("open");
    p.log(&message(acc, "carol@localhost", "after the erase"))
        .expect("log");
    drop(p);
    put_back();
    let p = Profile::open(dir.path()).expect("open");
    match p.history_with(acc, "carol@localhost") {
        Err(CoreError::TamperedHistory(id)) => assert_eq!(id, old_id),
        other => panic!("an erased record must not come back, got {other:?}"),
    }
    drop(p);
    edit(
        &db,
        "DELETE FROM history WHERE id = ?1",
        rusqlite::params![old_id],
    );
    let p = Profile::open(dir.path()).expect("open");
    assert_eq!(
        p.history_with(acc, "carol@localhost").expect("read"),
        vec![message(acc, "carol@localhost", "after the erase")],
        "what was written after the erase still opens"
    );
}

#[test]
fn a_record_slipped_into_the_history_stops_a_password_change_and_says_what_clears_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("profile.db");
    let mut p = Profile::open(dir.path()).expect("open");
    p.set_history_default(true).expect("on");
    p.log(&message(AccountId(1), "carol@localhost", "hello"))
        .expect("log");
    drop(p);
    // Someone who can write the file puts a record in the format of before history was
    // sealed to its row (as if copied from an older copy of the profile).
    edit(
        &db,
        "INSERT INTO history (peer_tag, sealed, format) VALUES (x'00', x'0000', 1)",
        [],
    );
    let planted = history_rows(&db).last().expect("planted").0;
    let mut p = Profile::open(dir.path()).expect("open");
    let err = p
        .set_master_password(&Secret::from("a long master pw"))
        .expect_err("the planted record cannot be vouched for");
    assert!(
        matches!(err, CoreError::TamperedHistory(id) if id == planted),
        "{err}"
    );
    let words = err.to_string();
    assert!(
        words.starts_with(&format!(
            "history record {planted} failed its integrity check"
        )) && words.contains("`hushphone history erase`"),
        "{words}"
    );
    assert_eq!(
        p.vault_mode().expect("mode"),
        VaultMode::Unprotected,
        "nothing was changed"
    );
    // What the words say works.
    p.erase_history().expect("erase");
    p.set_master_password(&Secret::from("a long master pw"))
        .expect("set once the history is erased");
}
