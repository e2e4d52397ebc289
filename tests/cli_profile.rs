//! The `hushphone` binary's profile and account commands, run as a user or script would.

use hush_core::model::{AccountSettings, SipSettings};
use hush_core::profile::{Direction, HistoryEntry, HistoryRecord};
use hush_core::{AccountId, CoreError, NewAccount, Profile, Secret};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn hushphone(profile: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hushphone");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn accounts_are_added_listed_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("profile");
    let o = hushphone(
        &p,
        &[
            "--stdin",
            "account",
            "add",
            "sip",
            "sip:alice@127.0.0.1:5060",
            "--name",
            "Alice Doe",
        ],
        "alicepw\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        r#"account id=1 protocol=sip address=alice@127.0.0.1:5060 remember_password=true name="Alice Doe""#
    );
    let o = hushphone(
        &p,
        &[
            "account",
            "add",
            "xmpp",
            "bob@localhost",
            "--no-remember",
            "--server",
            "127.0.0.1:5222",
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let o = hushphone(&p, &["--json", "account", "list"], "");
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "account");
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[0]["address"], "alice@127.0.0.1:5060");
    assert_eq!(lines[1]["protocol"], "xmpp");
    assert_eq!(lines[1]["remember_password"], false);

    // A bad address is a clear message, not a crash.
    let o = hushphone(
        &p,
        &["--stdin", "account", "add", "sip", "not an address"],
        "pw\n",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a valid sip address"),
        "{}",
        stderr(&o)
    );
    // Without --stdin and without a terminal we say how to give the password.
    let o = hushphone(&p, &["account", "add", "sip", "carol@example.org"], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--stdin"), "{}", stderr(&o));

    let o = hushphone(&p, &["account", "remove", "alice@127.0.0.1:5060"], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = hushphone(&p, &["account", "list"], "");
    assert_eq!(stdout(&o).lines().count(), 1);
    let o = hushphone(&p, &["account", "remove", "nobody@nowhere"], "");
    assert!(stderr(&o).contains("no account matches"), "{}", stderr(&o));

    let profile = Profile::open(&p).expect("open");
    assert!(
        profile
            .accounts()
            .expect("list")
            .iter()
            .all(|a| a.address != "alice@127.0.0.1:5060")
    );
}

#[test]
fn master_password_lifecycle_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("profile");
    let o = hushphone(
        &p,
        &["--stdin", "account", "add", "sip", "alice@example.org"],
        "sip-pw\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = hushphone(
        &p,
        &["--stdin", "profile", "set-master-password"],
        "short\n",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("at least 8"), "{}", stderr(&o));
    let o = hushphone(
        &p,
        &["--stdin", "profile", "set-master-password"],
        "first-master\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let o = hushphone(&p, &["--json", "profile", "info"], "");
    let info: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(info["master_password"], true);
    assert_eq!(info["history_default"], false);

    let o = hushphone(
        &p,
        &["--stdin", "profile", "change-master-password"],
        "wrong-master\nsecond-master\n",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("wrong master password"),
        "{}",
        stderr(&o)
    );
    let o = hushphone(
        &p,
        &["--stdin", "profile", "change-master-password"],
        "first-master\nsecond-master\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // Removing asks for confirmation first.
    let o = hushphone(
        &p,
        &["--stdin", "profile", "remove-master-password"],
        "second-master\n",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let mut profile = Profile::open(&p).expect("open");
    assert!(
        profile.is_locked(),
        "still protected after the unconfirmed removal"
    );
    assert!(matches!(
        profile.unlock(&Secret::from("first-master")),
        Err(CoreError::WrongMasterPassword)
    ));
    profile
        .unlock(&Secret::from("second-master"))
        .expect("unlock");
    let acc = profile.find_account("alice@example.org").expect("account");
    assert_eq!(
        profile
            .account_password(acc.id)
            .expect("pw")
            .map(|s| s.expose().to_owned())
            .as_deref(),
        Some("sip-pw")
    );
    drop(profile);

    let o = hushphone(
        &p,
        &["--stdin", "profile", "remove-master-password", "--yes"],
        "second-master\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!Profile::open(&p).expect("open").is_locked());
}

#[test]
fn damaged_profile_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("profile");
    std::fs::create_dir(&p).expect("mkdir");
    let db = p.join("profile.db");
    std::fs::write(
        &db,
        b"this is not a database, but it is long enough to pass a size check".repeat(20),
    )
    .expect("write");
    let before = std::fs::read(&db).expect("read");
    let o = hushphone(&p, &["account", "list"], "");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&db.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("left untouched"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&db).expect("read"), before);
}

/// Tiny deterministic generator for kill points; the seed is printed for replay.
struct Lcg(u64);
impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A writer killed with SIGKILL at random points of a master-password change (which
/// re-seals every secret and history record) leaves the profile with either the old or
/// the new password, and every secret intact.
#[test]
fn killed_writer_leaves_old_or_new_state() {
    const ACCOUNTS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("profile");
    {
        let mut profile = Profile::open(&p).expect("create");
        profile.set_history_default(true).expect("history on");
        for i in 0..ACCOUNTS {
            profile
                .add_account(NewAccount {
                    address: format!("user{i}@example.org"),
                    display_name: None,
                    password: Some(Secret::new(format!("password-{i}"))),
                    remember_password: true,
                    settings: AccountSettings::Sip(SipSettings::default()),
                })
                .expect("add");
            profile
                .log(&HistoryEntry {
                    account: AccountId(1),
                    peer: format!("peer{i}@example.org"),
                    at_unix_ms: i as i64,
                    record: HistoryRecord::Message {
                        direction: Direction::Outgoing,
                        body: format!("message {i}"),
                    },
                })
                .expect("log");
        }
        profile
            .set_master_password(&Secret::from("password-A"))
            .expect("set");
    }
    let passwords = ["password-A", "password-B"];
    let mut current = 0usize;

    // How long one complete change takes, to spread the kill points over it.
    let start = Instant::now();
    let o = hushphone(
        &p,
        &["--stdin", "profile", "change-master-password"],
        "password-A\npassword-B\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    current = 1 - current;
    let full = start.elapsed();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    eprintln!("kill-point seed {seed}, full run {full:?}");
    let mut rng = Lcg(seed);
    let (mut old_seen, mut new_seen) = (0, 0);
    for round in 0..16 {
        let next = 1 - current;
        let mut child = Command::new(env!("CARGO_BIN_EXE_hushphone"))
            .arg("--profile")
            .arg(&p)
            .args(["--stdin", "profile", "change-master-password"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let input = format!("{}\n{}\n", passwords[current], passwords[next]);
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        // Kill anywhere from start-up to a little after the expected end.
        let delay = full.mul_f64(0.3 + rng.next_f64() * 0.9);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("reap");

        let mut profile = Profile::open(&p)
            .unwrap_or_else(|e| panic!("round {round}: profile broken after kill: {e}"));
        let opened_with = passwords
            .iter()
            .position(|pw| profile.unlock(&Secret::from(*pw)).is_ok())
            .unwrap_or_else(|| panic!("round {round}: neither password opens the profile"));
        if opened_with == current {
            old_seen += 1;
        } else {
            new_seen += 1;
        }
        current = opened_with;
        let accounts = profile.accounts().expect("accounts");
        assert_eq!(accounts.len(), ACCOUNTS, "round {round}");
        for (i, a) in accounts.iter().enumerate() {
            let pw = profile
                .account_password(a.id)
                .expect("secret opens")
                .expect("secret present");
            assert_eq!(pw.expose(), format!("password-{i}"), "round {round}");
        }
        assert_eq!(
            profile.history_len().expect("history"),
            ACCOUNTS as u64,
            "round {round}"
        );
        let h = profile
            .history_with(AccountId(1), "peer7@example.org")
            .expect("history opens");
        assert_eq!(h.len(), 1, "round {round}");
        eprintln!(
            "round {round}: killed after {delay:?} (exit {status:?}), opened with {}",
            passwords[opened_with]
        );
    }
    eprintln!("old state {old_seen} times, new state {new_seen} times");
    assert!(full > Duration::ZERO);
}

#[test]
fn profile_directory_comes_from_the_environment_when_no_flag_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from_env = dir.path().join("from-env");
    let o = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .args(["--json", "profile", "info"])
        .env("HUSHPHONE_PROFILE", &from_env)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(info["dir"], from_env.display().to_string());
    assert!(from_env.join("profile.db").is_file());
    // The flag wins over the environment.
    let from_flag = dir.path().join("from-flag");
    let o = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(&from_flag)
        .args(["--json", "profile", "info"])
        .env("HUSHPHONE_PROFILE", &from_env)
        .output()
        .expect("run");
    let info: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(info["dir"], from_flag.display().to_string());
}

#[test]
fn otr_export_makes_existing_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("profile");
    let (keys, fps) = (
        dir.path().join("otr.private_key"),
        dir.path().join("otr.fingerprints"),
    );
    // Left readable by everyone by an earlier tool.
    for f in [&keys, &fps] {
        std::fs::write(f, "OLD CONTENT\n").expect("write");
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let o = hushphone(
        &p,
        &[
            "xmpp",
            "otr",
            "export",
            "--keys",
            keys.to_str().expect("utf-8"),
            "--fingerprints",
            fps.to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [&keys, &fps] {
        let mode = std::fs::metadata(f).expect("exported").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
        let text = std::fs::read_to_string(f).expect("read");
        assert!(!text.contains("OLD CONTENT"), "{}: {text}", f.display());
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 3, "no temporary file left behind: {names:?}");
}
