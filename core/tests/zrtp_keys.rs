//! ZRTP keys through the phone core, with real phones on loopback: "verified" belongs to
//! the key (ZID) the SAS was compared on, a verified address that presents another key
//! is flagged until the user compares again, and the ZID cache lives sealed in the vault
//! (nothing retained in the clear on disk, continuity and "verified" across a restart;
//! a verdict is in the vault when its command answers, and at exit before the network
//! is waited on).

use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
use hush_core::model::{AccountSettings, EncryptionPolicy, SipSettings};
use hush_core::security::PeerKey;
use hush_core::snapshot::{AccountStatus, CallId, CallState};
use hush_core::{
    CallSecurity, Command, CoreError, Event, NewAccount, Phone, Profile, Reply, Secret,
};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const MASTER: &str = "correct horse battery";
/// What every echo listener is called: the address whose keys the tests follow.
const ECHO: &str = "echo@127.0.0.1";

fn phone(dir: &Path) -> Phone {
    Phone::start(Profile::open(dir).expect("profile")).expect("phone")
}

/// Waits (bounded) for an event matching `f` and returns what it extracts.
fn wait<T>(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match phone.next_event(rx, left) {
            Some(ev) => {
                if let Some(v) = f(&ev) {
                    return v;
                }
            }
            None => panic!("no {what} within 15 s"),
        }
    }
}

/// Starts a built-in echo peer (answers by itself, as `echo`) on this phone.
fn echo_peer(phone: &Phone) -> SocketAddr {
    let Reply::Listening(addr) = phone
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(MediaChoice {
                source: SourceSpec::Echo,
                sink: SinkSpec::Null,
                video: None,
            }),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected Listening")
    };
    addr
}

/// A finished handshake: our call, and its security once ZRTP settled.
struct Secured {
    call: CallId,
    security: CallSecurity,
}

/// Calls `echo@addr` and waits until ZRTP is done (whatever the outcome).
fn call(phone: &Phone, addr: SocketAddr) -> Secured {
    let mut rx = phone.events();
    let Reply::Call(call) = phone
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("echo@{addr}"),
            audio: MediaChoice {
                source: SourceSpec::Tone(440.0),
                sink: SinkSpec::Null,
                video: None,
            },
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let security = wait(phone, &mut rx, "the call's security", |ev| match ev {
        Event::CallSecurity { call: c, security } if *c == call && security.sas().is_some() => {
            Some(security.clone())
        }
        Event::CallSecurity {
            call: c,
            security: CallSecurity::Failed(why),
        } if *c == call => panic!("call failed: {why}"),
        _ => None,
    });
    Secured { call, security }
}

/// The call on `phone` that its echo peer answered.
fn answered(phone: &Phone) -> CallId {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut watch = phone.watch();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    loop {
        // The newest: the echo side of an earlier call may not have seen its BYE yet.
        if let Some(c) = phone
            .snapshot()
            .calls
            .iter()
            .filter(|c| c.automatic && c.security.sas().is_some())
            .max_by_key(|c| c.id.0)
        {
            return c.id;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the echo side did not go secure within 15 s"
        );
        rt.block_on(async {
            let _ = tokio::time::timeout(left, watch.changed()).await;
        });
    }
}

fn verify(phone: &Phone, call: CallId) {
    phone
        .execute_blocking(Command::SetSasVerified {
            call,
            verified: true,
        })
        .expect("verify");
}

fn hang_up(phone: &Phone, call: CallId) {
    let mut rx = phone.events();
    phone
        .execute_blocking(Command::Hangup { call })
        .expect("hang up");
    wait(phone, &mut rx, "the end of the call", |ev| match ev {
        Event::CallState {
            call: c,
            state: CallState::Ended(_),
        } if *c == call => Some(()),
        _ => None,
    });
}

/// One call with the echo peer on `peer` (a phone of its own), each side confirming the
/// SAS when told to. Returns what the caller saw.
fn call_with(caller: &Phone, peer: &Phone, at: SocketAddr, confirm: [bool; 2]) -> CallSecurity {
    let s = call(caller, at);
    if confirm[0] {
        verify(caller, s.call);
    }
    if confirm[1] {
        verify(peer, answered(peer));
    }
    hang_up(caller, s.call);
    s.security
}

fn keys(phone: &Phone, peer: &str) -> Vec<PeerKey> {
    match phone
        .execute_blocking(Command::PeerKeys { peer: peer.into() })
        .expect("keys")
    {
        Reply::PeerKeys(k) => k,
        other => panic!("unexpected {other:?}"),
    }
}

fn is_verified(s: &CallSecurity) -> bool {
    matches!(s, CallSecurity::Secure { verified: true, .. })
}

#[test]
fn a_verified_contact_with_a_new_key_is_flagged_until_compared_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = phone(&dir.path().join("alice"));
    let bob = phone(&dir.path().join("bob"));
    let mallory = phone(&dir.path().join("mallory"));
    let (at_bob, at_mallory) = (echo_peer(&bob), echo_peer(&mallory));

    call_with(&alice, &bob, at_bob, [true, true]);
    assert!(is_verified(&call_with(&alice, &bob, at_bob, [false; 2])));

    // The same address, another device and key: not green, and not the plain orange.
    let mut rx = alice.events();
    let s = call(&alice, at_mallory);
    let CallSecurity::NewKey { sas } = &s.security else {
        panic!("expected the new-key state, got {:?}", s.security)
    };
    assert_eq!(
        s.security.label(),
        "new key for a verified contact: compare the code aloud"
    );
    let view = alice
        .snapshot()
        .calls
        .iter()
        .find(|c| c.id == s.call)
        .map(|c| c.security.clone());
    assert_eq!(view, Some(s.security.clone()), "the snapshot says so too");
    wait(&alice, &mut rx, "the announcement", |ev| match ev {
        Event::CallSecurity {
            call,
            security: CallSecurity::NewKey { .. },
        } if *call == s.call => Some(()),
        _ => None,
    });
    let listed = keys(&alice, ECHO);
    assert_eq!(listed.len(), 2);
    assert!(listed[0].last_seen && !listed[0].verified, "{listed:?}");
    assert!(listed[1].verified, "the first key stays verified");

    // "Not verified" keeps the warning; it never turns into the ordinary orange.
    alice
        .execute_blocking(Command::SetSasVerified {
            call: s.call,
            verified: false,
        })
        .expect("unverify");
    let still = alice
        .snapshot()
        .calls
        .iter()
        .find(|c| c.id == s.call)
        .map(|c| c.security.clone());
    assert_eq!(still, Some(s.security.clone()));

    // The user compares the code aloud and confirms: verified, for this key.
    verify(&alice, s.call);
    let now = alice
        .snapshot()
        .calls
        .iter()
        .find(|c| c.id == s.call)
        .map(|c| c.security.clone());
    assert_eq!(
        now,
        Some(CallSecurity::Secure {
            sas: sas.clone(),
            verified: true
        })
    );
    verify(&mallory, answered(&mallory));
    hang_up(&alice, s.call);
    assert!(keys(&alice, ECHO).iter().all(|k| k.verified));
    assert!(is_verified(&call_with(
        &alice, &mallory, at_mallory, [false; 2]
    )));
}

#[test]
fn verifying_outside_a_call_marks_only_the_key_last_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = phone(&dir.path().join("alice"));
    let bob = phone(&dir.path().join("bob"));
    let mallory = phone(&dir.path().join("mallory"));
    let (at_bob, at_mallory) = (echo_peer(&bob), echo_peer(&mallory));

    // Mallory reaches Alice first under the same address and confirms whatever she can.
    let first = call_with(&alice, &mallory, at_mallory, [false, true]);
    assert!(matches!(
        first,
        CallSecurity::Secure {
            verified: false,
            ..
        }
    ));
    let mallory_key = keys(&alice, ECHO).remove(0).key;
    // Then the real Bob; he confirms on his side, Alice later, outside the call.
    call_with(&alice, &bob, at_bob, [false, true]);
    let listed = keys(&alice, ECHO);
    let last = listed.iter().find(|k| k.last_seen).expect("last seen");
    assert_ne!(last.key, mallory_key, "the last seen key is Bob's");
    alice
        .execute_blocking(Command::SetPeerVerified {
            peer: ECHO.into(),
            key: last.key.clone(),
            verified: true,
        })
        .expect("verify Bob's key");
    let verified: Vec<String> = match alice.execute_blocking(Command::ListVerifiedPeers) {
        Ok(Reply::VerifiedPeers(v)) => v.into_iter().map(|k| k.key).collect(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(verified, vec![last.key.clone()]);

    // Mallory's key did not come along: her next call is flagged, Bob's is green.
    let again = call_with(&alice, &mallory, at_mallory, [false; 2]);
    assert!(matches!(again, CallSecurity::NewKey { .. }), "{again:?}");
    assert!(is_verified(&call_with(&alice, &bob, at_bob, [false; 2])));

    let err = alice
        .execute_blocking(Command::SetPeerVerified {
            peer: ECHO.into(),
            key: "00".repeat(12),
            verified: true,
        })
        .expect_err("a key never seen");
    assert!(
        err.to_string().contains("has not presented the key"),
        "{err}"
    );
    assert!(
        alice
            .execute_blocking(Command::SetPeerVerified {
                peer: ECHO.into(),
                key: "not a key".into(),
                verified: true,
            })
            .is_err()
    );
}

/// The retained secrets as the ZRTP engine keeps them, read back through the vault.
fn retained_secrets(dir: &Path) -> Vec<Vec<u8>> {
    let mut profile = Profile::open(dir).expect("profile");
    profile.unlock(&Secret::from(MASTER)).expect("unlock");
    let image = profile.zrtp_cache().expect("cache").expect("an image");
    let mut db = rusqlite::Connection::open_in_memory().expect("db");
    db.deserialize_read_exact(rusqlite::MAIN_DB, &image[..], image.len(), false)
        .expect("load");
    let mut stmt = db
        .prepare("SELECT rs1 FROM zrtp WHERE rs1 IS NOT NULL UNION SELECT rs2 FROM zrtp WHERE rs2 IS NOT NULL")
        .expect("query");
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("secrets")
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn with_a_master_password_no_file_holds_a_retained_secret_and_keys_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().join("p");
    {
        let mut profile = Profile::open(&dir).expect("profile");
        profile
            .set_master_password(&Secret::from(MASTER))
            .expect("master password");
    }
    // A plaintext cache written by an earlier version: moved into the vault and erased.
    let old = hush_media::zrtp::ZidStore::open(None).expect("store");
    std::fs::write(dir.join("zrtp-cache.db"), &*old.image().expect("image")).expect("old cache");

    let p = phone(&dir);
    let err = p
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: None,
            policy: EncryptionPolicy::Mandatory,
        })
        .and_then(|_| {
            p.execute_blocking(Command::PlaceCall {
                account: None,
                target: "echo@127.0.0.1:9".into(),
                audio: MediaChoice::default(),
                policy: None,
            })
        })
        .expect_err("no ZRTP keys while locked");
    assert!(matches!(err, CoreError::Locked), "{err}");
    p.execute_blocking(Command::Unlock {
        password: Secret::from(MASTER),
    })
    .expect("unlock");
    assert!(
        !dir.join("zrtp-cache.db").exists(),
        "the plaintext cache is gone"
    );

    // The echo peer lives in the same phone: two calls share the one cache.
    let at = echo_peer(&p);
    let first = call(&p, at);
    assert!(matches!(
        first.security,
        CallSecurity::Secure {
            verified: false,
            ..
        }
    ));
    verify(&p, first.call);
    verify(&p, answered(&p));
    hang_up(&p, first.call);

    // Sealed after each change, not only at exit: the vault has the verification while
    // the phone still runs (a crash now would lose nothing). Sealing raises no event, so
    // the vault itself is polled, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut profile = Profile::open(&dir).expect("profile");
        profile.unlock(&Secret::from(MASTER)).expect("unlock");
        let image = profile.zrtp_cache().expect("cache").expect("image");
        let store = hush_media::zrtp::ZidStore::open(Some(&image)).expect("store");
        if store.verified_keys().expect("keys").len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the vault never got the verification"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(p);

    let secrets = retained_secrets(&dir);
    // Both sides of the echo call derive the same rs1: one secret, held twice.
    assert!(
        !secrets.is_empty() && secrets.iter().all(|s| s.len() == 32),
        "the engine retained its secrets: {}",
        secrets.len()
    );
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    assert!(!files.is_empty());
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == &s[..]),
                "{} holds a retained secret in the clear",
                f.display()
            );
        }
    }

    // Restart: same retained secrets (no mismatch) and still verified.
    let p = phone(&dir);
    p.execute_blocking(Command::Unlock {
        password: Secret::from(MASTER),
    })
    .expect("unlock");
    let at = echo_peer(&p);
    let again = call(&p, at);
    assert!(is_verified(&again.security), "{:?}", again.security);
    hang_up(&p, again.call);
}

/// A registrar on loopback that accepts every REGISTER but never answers the one that
/// un-registers (Expires 0): at exit it is a black hole, as a server gone dark is, and
/// the phone's un-registration waits on it longer than the exit allows.
struct SilentAtExit {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The 200 OK to a REGISTER: its Via, From, To (tagged), Call-ID, CSeq and Contact.
fn ok_to_register(request: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in request.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" if !value.contains(";tag=") => {
                out.push_str(&format!("To:{value};tag=silent\r\n"));
            }
            "to" | "t" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "contact" | "m" if !value.contains("expires=") => {
                out.push_str(&format!("Contact:{value};expires=600\r\n"));
            }
            "contact" | "m" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Expires: 600\r\nContent-Length: 0\r\n\r\n");
    out
}

fn unregisters(request: &str) -> bool {
    hush_harness::sip_header(request, "Expires").is_some_and(|e| e.trim() == "0")
        || hush_harness::sip_header(request, "Contact").is_some_and(|c| c.contains("expires=0"))
}

impl SilentAtExit {
    fn start() -> SilentAtExit {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind registrar");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !halt.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                if request.starts_with("REGISTER ") && !unregisters(&request) {
                    let _ = sock.send_to(ok_to_register(&request).as_bytes(), from);
                }
            }
        });
        SilentAtExit {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentAtExit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A phone on `dir` with a SIP account registered at `registrar`.
fn registered_phone(dir: &Path, registrar: SocketAddr) -> Phone {
    let p = phone(dir);
    let mut rx = p.events();
    let existing = p.snapshot().accounts.first().map(|a| a.config.id);
    let account = match existing {
        Some(id) => id,
        None => match p
            .execute_blocking(Command::AddAccount(NewAccount {
                address: "alice@127.0.0.1".into(),
                display_name: None,
                password: Some(Secret::from("alicepw")),
                remember_password: true,
                settings: AccountSettings::Sip(SipSettings {
                    registrar: Some(format!("sip:{registrar}")),
                    ..SipSettings::default()
                }),
            }))
            .expect("add account")
        {
            Reply::Account(a) => a.id,
            other => panic!("unexpected {other:?}"),
        },
    };
    p.execute_blocking(Command::Connect {
        account,
        password: None,
    })
    .expect("connect");
    wait(&p, &mut rx, "registration", |ev| match ev {
        Event::AccountStatus {
            account: a,
            status: AccountStatus::Online,
        } if *a == account => Some(()),
        _ => None,
    });
    p
}

/// The echo peer's keys as the vault of the profile at `dir` holds them.
fn sealed_keys(dir: &Path) -> Vec<PeerKey> {
    let mut profile = Profile::open(dir).expect("profile");
    let image = profile.zrtp_cache().expect("cache").expect("an image");
    let store = hush_media::zrtp::ZidStore::open(Some(&image)).expect("store");
    store
        .keys_of(ECHO)
        .expect("keys")
        .into_iter()
        .map(|k| PeerKey {
            peer: k.peer_uri,
            key: k.zid.to_string(),
            verified: k.verified,
            last_seen: k.last_seen,
        })
        .collect()
}

#[test]
fn a_verdict_given_just_before_quitting_is_in_the_vault_even_if_the_registrar_went_dark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice_dir = dir.path().join("alice");
    let bob = phone(&dir.path().join("bob"));
    let at_bob = echo_peer(&bob);
    let registrar = SilentAtExit::start();

    // A key both sides verified: in the vault as soon as the command answered.
    let alice = registered_phone(&alice_dir, registrar.addr);
    call_with(&alice, &bob, at_bob, [true, true]);
    assert!(
        sealed_keys(&alice_dir).iter().any(|k| k.verified),
        "the verification was not in the vault when its command answered"
    );

    // On the next call the user withdraws it, and quits at once, the call still up.
    let again = call(&alice, at_bob);
    assert!(is_verified(&again.security), "{:?}", again.security);
    alice
        .execute_blocking(Command::SetSasVerified {
            call: again.call,
            verified: false,
        })
        .expect("withdraw");
    drop(alice);
    let keys = sealed_keys(&alice_dir);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].verified, "the withdrawal was lost at exit");

    // Outside a call: "verified" again, and quit at once.
    let alice = registered_phone(&alice_dir, registrar.addr);
    alice
        .execute_blocking(Command::SetPeerVerified {
            peer: ECHO.into(),
            key: keys[0].key.clone(),
            verified: true,
        })
        .expect("verify outside a call");
    drop(alice);
    assert!(
        sealed_keys(&alice_dir)[0].verified,
        "the verification was lost at exit"
    );
}

/// The port of the first `m=audio` line of the SDP in a SIP message.
fn offered_audio_port(msg: &str) -> u16 {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio line in {msg}"))
}

/// Best effort, and the peer signalled its Hello hash: a Hello that does not match it,
/// sent from the peer's own media address before the peer's real one, ends the call as
/// tampering. It never lets the call go on in cleartext, and the words say tampering.
#[test]
fn one_spoofed_hello_ends_a_best_effort_call_as_tampering_never_cleartext() {
    use hush_media::zrtp::{ZrtpConfig, ZrtpFailure, ZrtpSession};
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut events = phone.events();
    let bob = hush_harness::SipPeer::bind("bob").expect("peer");
    let media = UdpSocket::bind("127.0.0.1:0").expect("bob's media socket");
    media
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let now = Instant::now();
    // Bob's real ZRTP endpoint: its Hello hash goes into his answer. Another endpoint's
    // Hello (anyone can make one) is what the attacker sends.
    let real = ZrtpSession::new(&ZrtpConfig::default(), 7, now).expect("bob's zrtp");
    let hash = real.hello_hash().expect("hash");
    let mut other = ZrtpSession::new(&ZrtpConfig::default(), 7, now).expect("other zrtp");
    other.start(now).expect("start");
    let foreign_hello = (1..100u64)
        .find_map(|i| {
            other.handle_timeout(now + Duration::from_millis(10 * i));
            other.poll_transmit()
        })
        .expect("a Hello");
    let Reply::Call(call) = phone
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{}", bob.addr()),
            audio: MediaChoice::default(),
            policy: Some(EncryptionPolicy::BestEffort),
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let (invite, from) = bob
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the INVITE");
    let phone_media = SocketAddr::from(([127, 0, 0, 1], offered_audio_port(&invite)));
    let answer = format!(
        "v=0\r\no=bob 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=zrtp-hash:{hash}\r\na=sendrecv\r\n",
        media.local_addr().expect("addr").port()
    );
    bob.accept(&invite, from, "bob-1", &answer).expect("200 OK");
    // The phone's ZRTP has started once its Hello reaches Bob's media address.
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = media.recv_from(&mut buf).expect("the phone's first ZRTP");
        if n > 24 && &buf[16..24] == b"Hello   " {
            break;
        }
    }
    media
        .send_to(&foreign_hello, phone_media)
        .expect("send the spoofed Hello");
    let mut saw_cleartext = false;
    let why = wait(&phone, &mut events, "the call's end", |ev| match ev {
        Event::CallSecurity {
            call: c,
            security: CallSecurity::Cleartext,
        } if *c == call => {
            saw_cleartext = true;
            None
        }
        Event::CallState {
            call: c,
            state: CallState::Ended(why),
        } if *c == call => Some(why.clone()),
        _ => None,
    });
    assert!(!saw_cleartext, "the call went on in cleartext");
    assert_eq!(why, ZrtpFailure::HelloHashMismatch.to_string());
    assert!(why.contains("tampering"), "{why}");
}
