//! `hushphone xmpp ...` against real Prosody and ejabberd, as a script would use it.

use hush_harness::{ServerKind, XmppServer, per_server_blocking};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn hushphone(profile: &Path, args: &[&str], stdin: &str) -> (bool, Vec<Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(profile)
        .args(["--json", "--stdin"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("wait");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status.success(),
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fingerprint(server: &XmppServer) -> String {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    hush_signaling::xmpp::format_fingerprint(
        &hush_signaling::xmpp::cert_fingerprint_from_pem(&pem).expect("fp"),
    )
}

fn register(dir: &Path, server: &XmppServer, user: &str) {
    let (ok, records, err) = hushphone(
        dir,
        &[
            "xmpp",
            "register",
            &format!("{user}@localhost"),
            "--server",
            &format!("127.0.0.1:{}", server.port()),
            "--pin-cert",
            &fingerprint(server),
        ],
        &format!("{user}-pass-1\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(records[0]["created"], true);
}

fn has(records: &[Value], kind: &str, key: &str, value: &str) -> bool {
    records.iter().any(|r| r["type"] == kind && r[key] == value)
}

per_server_blocking!(
    accounts_roster_messages_and_requests,
    accounts_roster_messages_and_requests_on
);
fn accounts_roster_messages_and_requests_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let root = tempfile::tempdir().expect("tempdir");
    let p = |u: &str| root.path().join(u);
    for u in ["alice", "bob", "carol", "dave"] {
        register(&p(u), &server, u);
    }

    let (ok, r, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "add",
            "--account",
            "alice@localhost",
            "bob@localhost",
            "--alias",
            "Bob",
            "--group",
            "Friends",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(
        has(&r, "contact", "subscription", "waiting-for-authorization"),
        "{r:?}"
    );
    let (ok, r, err) = hushphone(
        &p("bob"),
        &[
            "xmpp",
            "authorize",
            "--account",
            "bob@localhost",
            "alice@localhost",
        ],
        "",
    );
    assert!(ok, "{err}\n{r:?}");
    assert!(has(&r, "request", "answer", "authorized"));

    // Bob is offline now: the message waits on the server.
    let (ok, r, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "send",
            "--account",
            "alice@localhost",
            "bob@localhost",
            "are you there?",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(r.iter().any(|x| x["type"] == "delivered"));
    let (ok, r, err) = hushphone(
        &p("bob"),
        &[
            "xmpp",
            "listen",
            "--account",
            "bob@localhost",
            "--count",
            "1",
            "--duration",
            "15",
        ],
        "",
    );
    assert!(ok, "{err}");
    let msg = r
        .iter()
        .find(|x| x["type"] == "message")
        .expect("message line");
    assert_eq!(msg["body"], "are you there?");
    assert_eq!(msg["peer"], "alice@localhost");
    assert_eq!(msg["delayed"], true);

    let (_, r, _) = hushphone(
        &p("alice"),
        &["xmpp", "roster", "--account", "alice@localhost"],
        "",
    );
    let bob = r
        .iter()
        .find(|x| x["type"] == "contact" && x["address"] == "bob@localhost")
        .expect("bob in roster");
    assert_eq!(
        (
            bob["alias"].as_str(),
            bob["group"].as_str(),
            bob["subscription"].as_str()
        ),
        (Some("Bob"), Some("Friends"), Some("authorized"))
    );

    // Deny: carol is told.
    hushphone(
        &p("carol"),
        &[
            "xmpp",
            "add",
            "--account",
            "carol@localhost",
            "alice@localhost",
        ],
        "",
    );
    let (ok, _, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "deny",
            "--account",
            "alice@localhost",
            "carol@localhost",
        ],
        "",
    );
    assert!(ok, "{err}");
    let (_, r, _) = hushphone(
        &p("carol"),
        &["xmpp", "roster", "--account", "carol@localhost"],
        "",
    );
    assert!(
        has(&r, "contact", "subscription", "none"),
        "carol was refused: {r:?}"
    );

    // Ignore: dave keeps waiting, and alice still sees his request.
    hushphone(
        &p("dave"),
        &[
            "xmpp",
            "add",
            "--account",
            "dave@localhost",
            "alice@localhost",
        ],
        "",
    );
    let (ok, _, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "ignore",
            "--account",
            "alice@localhost",
            "dave@localhost",
        ],
        "",
    );
    assert!(ok, "{err}");
    let (_, r, _) = hushphone(
        &p("dave"),
        &["xmpp", "roster", "--account", "dave@localhost"],
        "",
    );
    assert!(
        has(&r, "contact", "subscription", "waiting-for-authorization"),
        "{r:?}"
    );
    let (_, r, _) = hushphone(
        &p("alice"),
        &["xmpp", "roster", "--account", "alice@localhost"],
        "",
    );
    assert!(
        has(&r, "request", "from", "dave@localhost"),
        "the request stays listed: {r:?}"
    );

    // Password change: the saved password follows, the old one no longer works.
    let (ok, _, err) = hushphone(
        &p("alice"),
        &["xmpp", "passwd", "--account", "alice@localhost"],
        "alice-pass-2\n",
    );
    assert!(ok, "{err}");
    let (ok, records, err) = hushphone(
        &p("alice"),
        &["xmpp", "roster", "--account", "alice@localhost"],
        "",
    );
    assert!(ok, "logs in with the new saved password: {err} {records:?}");
    let stale = root.path().join("stale");
    let (ok, _, _) = hushphone(
        &stale,
        &[
            "account",
            "add",
            "xmpp",
            "alice@localhost",
            "--server",
            &format!("127.0.0.1:{}", server.port()),
            "--pin-cert",
            &fingerprint(&server),
        ],
        "alice-pass-1\n",
    );
    assert!(ok);
    let (ok, _, err) = hushphone(
        &stale,
        &["xmpp", "roster", "--account", "alice@localhost"],
        "",
    );
    assert!(!ok);
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

per_server_blocking!(
    untrusted_server_is_refused_with_its_fingerprint,
    untrusted_server_is_refused_with_its_fingerprint_on
);
fn untrusted_server_is_refused_with_its_fingerprint_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = hushphone(
        dir.path(),
        &[
            "xmpp",
            "register",
            "mallory@localhost",
            "--server",
            &format!("127.0.0.1:{}", server.port()),
        ],
        "pw-12345\n",
    );
    assert!(!ok);
    assert!(
        err.contains("not trusted") && err.contains(&fingerprint(&server)),
        "{err}"
    );
}

per_server_blocking!(rooms_from_the_command_line, rooms_from_the_command_line_on);
fn rooms_from_the_command_line_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let root = tempfile::tempdir().expect("tempdir");
    register(&root.path().join("alice"), &server, "alice");
    register(&root.path().join("bob"), &server, "bob");
    let mut bob = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(root.path().join("bob"))
        .args([
            "--json",
            "xmpp",
            "join",
            "--account",
            "bob@localhost",
            "plans@conference.localhost",
            "--nick",
            "Bob",
            "--duration",
            "8",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bob joins");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = bob.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                let _ = tx.send(v);
            }
        }
    });
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("bob joined");
        if v["type"] == "joined" {
            break;
        }
    }
    let (ok, r, err) = hushphone(
        &root.path().join("alice"),
        &[
            "xmpp",
            "join",
            "--account",
            "alice@localhost",
            "plans@conference.localhost",
            "--nick",
            "Alice",
            "--say",
            "meet at noon",
            "--duration",
            "1",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(
        r.iter()
            .any(|x| x["type"] == "occupants"
                && x["nicks"].as_str().is_some_and(|n| n.contains("Bob"))),
        "{r:?}"
    );
    let heard = loop {
        let v = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("room message at bob");
        if v["type"] == "room-message" {
            break v;
        }
    };
    assert_eq!(
        (heard["from"].as_str(), heard["body"].as_str()),
        (Some("Alice"), Some("meet at noon"))
    );
    let _ = bob.wait();
}

/// Runs hushphone in the background; its JSON lines arrive on the returned channel.
fn spawn(
    profile: &Path,
    args: &[&str],
    stdin: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(profile)
        .args(["--json", "--stdin"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    (child, rx)
}

per_server_blocking!(
    otr_authentication_between_two_cli_processes,
    otr_authentication_between_two_cli_processes_on
);
fn otr_authentication_between_two_cli_processes_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let root = tempfile::tempdir().expect("tempdir");
    let p = |u: &str| root.path().join(u);
    for u in ["alice", "bob"] {
        register(&p(u), &server, u);
    }
    let (ok, r, err) = hushphone(
        &p("alice"),
        &["xmpp", "otr", "fingerprint", "--account", "alice@localhost"],
        "",
    );
    assert!(ok, "{err}");
    let ours = r
        .iter()
        .find(|x| x["type"] == "fingerprint")
        .and_then(|x| x["fingerprint"].as_str())
        .expect("our fingerprint")
        .to_owned();
    assert_eq!(ours.len(), 44, "{ours}");

    // Bob waits for a question; alice asks it. The answer comes on stdin, never argv.
    let (mut bob, bob_lines) = spawn(
        &p("bob"),
        &[
            "xmpp",
            "otr",
            "smp-answer",
            "--account",
            "bob@localhost",
            "alice@localhost",
            "--timeout",
            "30",
        ],
        "harbour\n",
    );
    let mut bob_seen = Vec::new();
    loop {
        let v = bob_lines
            .recv_timeout(Duration::from_secs(20))
            .expect("bob comes online");
        let online = v["type"] == "status" && v["status"] == "online";
        bob_seen.push(v);
        if online {
            break;
        }
    }
    let (ok, r, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "otr",
            "smp-question",
            "--account",
            "alice@localhost",
            "bob@localhost",
            "--question",
            "Where did we meet?",
        ],
        "harbour\n",
    );
    assert!(ok, "{err}\n{r:?}");
    assert!(has(&r, "security", "state", "private-unverified"), "{r:?}");
    assert!(has(&r, "smp", "state", "succeeded"), "{r:?}");
    assert!(has(&r, "security", "state", "private-verified"), "{r:?}");
    let status = bob.wait().expect("bob exits");
    bob_seen.extend(bob_lines.try_iter());
    assert!(status.success(), "{bob_seen:?}");
    assert!(
        bob_seen.iter().any(|v| v["type"] == "smp"
            && v["state"] == "asked"
            && v["detail"] == "Where did we meet?"),
        "{bob_seen:?}"
    );
    assert!(has(&bob_seen, "smp", "state", "succeeded"), "{bob_seen:?}");

    // The verification was saved: a later run lists bob as verified.
    let (ok, r, err) = hushphone(
        &p("alice"),
        &["xmpp", "otr", "fingerprint", "--account", "alice@localhost"],
        "",
    );
    assert!(ok, "{err}");
    assert!(
        r.iter()
            .any(|x| x["type"] == "known" && x["peer"] == "bob@localhost" && x["verified"] == true),
        "{r:?}"
    );
    // A fingerprint bob never showed is refused with a reason.
    let (ok, _, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "otr",
            "verify",
            "--account",
            "alice@localhost",
            "bob@localhost",
            "00000000 11111111 22222222 33333333 44444444",
        ],
        "",
    );
    assert!(!ok && err.contains("never showed"), "{err}");
    let (ok, r, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "otr",
            "policy",
            "--account",
            "alice@localhost",
            "require",
        ],
        "",
    );
    assert!(ok && has(&r, "policy", "policy", "require"), "{err}");
    let (ok, _, err) = hushphone(
        &p("alice"),
        &[
            "xmpp",
            "otr",
            "policy",
            "--account",
            "alice@localhost",
            "sometimes",
        ],
        "",
    );
    assert!(
        !ok && err.contains("manual, opportunistic, require"),
        "{err}"
    );

    // Export in Pidgin's formats, private files.
    let (keys, fps) = (
        root.path().join("otr.private_key"),
        root.path().join("otr.fingerprints"),
    );
    let (ok, _, err) = hushphone(
        &p("alice"),
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
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt;
    for f in [&keys, &fps] {
        let mode = std::fs::metadata(f).expect("exported").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert!(
        std::fs::read_to_string(&keys)
            .expect("keys")
            .contains("alice@localhost")
    );
    assert!(
        std::fs::read_to_string(&fps)
            .expect("fps")
            .contains("bob@localhost\talice@localhost\tprpl-jabber\t")
    );
}

/// A login refused for another reason than the password is told in its own words on the
/// command line: an account that ejabberd's rules refuse a session (its password is
/// right) is a policy refusal, never "wrong username or password".
#[test]
fn a_login_refused_by_policy_says_so_not_wrong_password() {
    let server = XmppServer::start(ServerKind::Ejabberd).expect("ejabberd starts");
    let dir = tempfile::tempdir().expect("tempdir");
    register(dir.path(), &server, "barred");
    let (ok, _, err) = hushphone(
        dir.path(),
        &["xmpp", "roster", "--account", "barred@localhost"],
        "",
    );
    assert!(!ok);
    assert!(err.contains("refused the login by its policy"), "{err}");
    assert!(!err.contains("wrong username"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
