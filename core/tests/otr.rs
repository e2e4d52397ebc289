//! OTR through the phone core against a real buddy: the C libotr peer (compiled by the
//! harness) on real Prosody and ejabberd (every test runs on both). AKE from each side, messages both ways with
//! fragmentation, SMP by question and by shared secret from each side, fingerprint
//! verification and persistence, a changed key, the buddy ending the session, and the
//! "require encryption" policy never letting plaintext out — asserted on what the buddy
//! and the server actually received.

mod otr_buddy;

use hush_core::model::{AccountSettings, OtrPolicySetting, XmppSettings};
use hush_core::snapshot::{AccountStatus, SmpView};
use hush_core::{
    AccountId, ChatSecurity, Command, Event, NewAccount, Phone, Profile, Reply, Secret,
};
use hush_harness::{ServerKind, XmppServer, per_server_blocking};
use otr_buddy::Buddy;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::Receiver;

fn settings(server: &XmppServer, policy: OtrPolicySetting) -> XmppSettings {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let fp = hush_signaling::xmpp::cert_fingerprint_from_pem(&pem).expect("fp");
    XmppSettings {
        server: Some(format!("127.0.0.1:{}", server.port())),
        pinned_cert_sha256: Some(hush_signaling::xmpp::format_fingerprint(&fp)),
        socks5_proxy: None,
        otr_policy: policy,
    }
}

struct Side {
    phone: Phone,
    rx: Receiver<Event>,
    account: AccountId,
}

impl Side {
    /// A phone with a new in-band registered account, online.
    fn register(dir: &Path, server: &XmppServer, user: &str, policy: OtrPolicySetting) -> Side {
        let phone = Phone::start(Profile::open(dir).expect("profile")).expect("phone");
        let rx = phone.events();
        let new = NewAccount {
            address: format!("{user}@localhost"),
            display_name: None,
            password: Some(Secret::new(format!("{user}-secret"))),
            remember_password: true,
            settings: AccountSettings::Xmpp(settings(server, policy)),
        };
        let account = match phone
            .execute_blocking(Command::RegisterXmpp(new))
            .expect("in-band registration")
        {
            Reply::Account(a) => a.id,
            other => panic!("{other:?}"),
        };
        let mut side = Side { phone, rx, account };
        side.online();
        side
    }

    /// Reopens an existing profile and connects its first account.
    fn reopen(dir: &Path) -> Side {
        let phone = Phone::start(Profile::open(dir).expect("profile")).expect("phone");
        let rx = phone.events();
        let account = phone.snapshot().accounts[0].config.id;
        let mut side = Side { phone, rx, account };
        side.online();
        side
    }

    fn online(&mut self) {
        let account = self.account;
        self.phone
            .execute_blocking(Command::Connect {
                account,
                password: None,
            })
            .expect("connect");
        self.wait("online", |e| match e {
            Event::AccountStatus {
                account: a,
                status: AccountStatus::Online,
            } if *a == account => Some(()),
            Event::AccountStatus {
                status: AccountStatus::Error(e),
                ..
            } => panic!("{e}"),
            _ => None,
        });
        // A first key is made while the account logs in (the snapshot has it once the
        // event is out, so one that came before "online" is not waited for).
        let keyed = |s: &Side| {
            s.phone
                .snapshot()
                .otr_keys
                .iter()
                .any(|k| k.account == account)
        };
        if !keyed(self) {
            self.wait("our OTR key", |e| match e {
                Event::OtrKey { account: a, .. } if *a == account => Some(()),
                _ => None,
            });
        }
        assert!(keyed(self), "the key is in the snapshot");
    }

    fn wait<T>(&mut self, what: &str, f: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(ev) = self.phone.next_event(
            &mut self.rx,
            deadline.saturating_duration_since(Instant::now()),
        ) {
            if let Some(v) = f(&ev) {
                return v;
            }
        }
        panic!("no {what} within 15 s")
    }

    fn security(&mut self, peer: &str, want: ChatSecurity) {
        if self.current_security(peer) == Some(want) {
            return;
        }
        self.wait(&format!("{want:?}"), |e| match e {
            Event::ChatSecurity {
                peer: p, security, ..
            } if p == peer && *security == want => Some(()),
            _ => None,
        });
    }

    fn current_security(&self, peer: &str) -> Option<ChatSecurity> {
        self.phone
            .snapshot()
            .chats
            .iter()
            .find(|c| c.peer == peer)
            .map(|c| c.security)
    }

    fn do_(&self, command: Command) -> hush_core::Result<Reply> {
        self.phone.execute_blocking(command)
    }

    fn send(&self, to: &str, body: &str) -> hush_core::Result<Reply> {
        self.do_(Command::SendChat {
            account: self.account,
            to: to.into(),
            body: body.into(),
        })
    }

    fn received(&mut self, body: &str) -> hush_core::snapshot::ChatLine {
        let want = body.to_owned();
        self.wait(&format!("message {body:.20}"), move |e| match e {
            Event::ChatLine { line, .. } if !line.from_me && line.body == want => {
                Some(line.clone())
            }
            _ => None,
        })
    }

    fn smp(&mut self, what: &str, f: impl Fn(&SmpView) -> bool) -> SmpView {
        self.wait(what, |e| match e {
            Event::Smp { progress, .. } if f(progress) => Some(progress.clone()),
            _ => None,
        })
    }

    fn own_fingerprint(&self) -> String {
        self.phone
            .snapshot()
            .otr_keys
            .iter()
            .find(|k| k.account == self.account)
            .map(|k| k.fingerprint.clone())
            .expect("an OTR key for the account")
    }
}

fn private(alice: &mut Side, buddy: &Buddy) {
    alice
        .do_(Command::OtrStart {
            account: alice.account,
            peer: buddy.jid.clone(),
        })
        .expect("start");
    alice.security(&buddy.jid, ChatSecurity::PrivateUnverified);
    buddy.wait("secure", |s| {
        s.events
            .iter()
            .any(|e| e.starts_with("secure"))
            .then_some(())
    });
}

per_server_blocking!(
    ake_from_each_side_messages_fragments_and_ending,
    ake_from_each_side_messages_fragments_and_ending_on
);
fn ake_from_each_side_messages_fragments_and_ending_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = Side::register(dir.path(), &server, "alice", OtrPolicySetting::Manual);
    let buddy = Buddy::start(&server, "buddy");
    buddy.run("policy manual");
    let b = buddy.jid.clone();

    // We start it.
    private(&mut alice, &buddy);
    let peer_fp = alice
        .phone
        .snapshot()
        .chats
        .iter()
        .find(|c| c.peer == b)
        .and_then(|c| c.peer_fingerprint.clone())
        .expect("peer fingerprint shown");
    assert_eq!(peer_fp, buddy.fingerprint(), "we see the buddy's real key");

    alice.send(&b, "hello over otr").expect("send");
    buddy.wait("message", |s| {
        s.shown.iter().any(|m| m == "hello over otr").then_some(())
    });
    buddy.say("alice@localhost", "hello back");
    let line = alice.received("hello back");
    assert!(line.encrypted, "a decrypted message is marked encrypted");

    // A message that needs fragments each way.
    let long: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let raw_before = buddy.seen().raw.len();
    alice.send(&b, &long).expect("send long");
    buddy.wait("long message", |s| s.shown.contains(&long).then_some(()));
    assert!(buddy.seen().raw.len() - raw_before > 1, "it was fragmented");
    buddy.run("fragment 1000");
    let long_back: String = long.chars().rev().take(9_000).collect();
    buddy.say("alice@localhost", &long_back);
    alice.received(&long_back);

    // Nothing the buddy received was readable by the server.
    let seen = buddy.seen();
    assert!(
        seen.raw.iter().all(|r| r.starts_with("?OTR")),
        "only OTR traffic after the session started: {:?}",
        seen.raw
            .iter()
            .map(|r| &r[..r.len().min(40)])
            .collect::<Vec<_>>()
    );
    let stored = server.stored_bytes();
    assert!(
        contains(&stored, b"buddy"),
        "the server's store was not read"
    );
    assert!(!contains(&stored, b"hello over otr") && !contains(&stored, b"hello back"));

    // We end it: the buddy is told.
    alice
        .do_(Command::OtrEnd {
            account: alice.account,
            peer: b.clone(),
        })
        .expect("end");
    alice.security(&b, ChatSecurity::NotPrivate);
    buddy.wait("finished", |s| {
        s.events
            .iter()
            .any(|e| e.starts_with("finished"))
            .then_some(())
    });

    // The buddy starts it.
    buddy.run("end alice@localhost");
    buddy.run("query alice@localhost");
    alice.security(&b, ChatSecurity::PrivateUnverified);

    // The buddy ends it: we see Finished, and sending is refused until we act.
    buddy.run("end alice@localhost");
    alice.security(&b, ChatSecurity::Finished);
    let err = alice.send(&b, "are you there?").expect_err("refused");
    assert!(
        err.to_string().contains("ended the private conversation"),
        "{err}"
    );
    assert!(!buddy.seen().shown.iter().any(|m| m == "are you there?"));
}

per_server_blocking!(
    smp_by_question_and_shared_secret_from_each_side,
    smp_by_question_and_shared_secret_from_each_side_on
);
fn smp_by_question_and_shared_secret_from_each_side_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = Side::register(dir.path(), &server, "alice", OtrPolicySetting::Manual);
    let buddy = Buddy::start(&server, "buddy");
    let b = buddy.jid.clone();
    private(&mut alice, &buddy);
    let ask = |alice: &Side, question: Option<&str>, secret: &str| {
        alice
            .do_(Command::OtrAuthenticate {
                account: alice.account,
                peer: b.clone(),
                question: question.map(str::to_owned),
                secret: Secret::from(secret),
            })
            .expect("authenticate")
    };
    let buddy_gets = |what: &str, n: usize| {
        buddy.wait(what, |s| {
            (s.events.iter().filter(|e| e.starts_with(what)).count() >= n).then_some(())
        })
    };

    // We ask; the buddy answers wrong: failure on both sides, still unverified.
    ask(&alice, Some("Where did we meet?"), "harbour");
    buddy_gets("smp question", 1);
    let q = buddy
        .seen()
        .events
        .iter()
        .find_map(|e| {
            e.strip_prefix("smp question alice@localhost ")
                .map(hush_harness::unhex)
        })
        .expect("question");
    assert_eq!(q, "Where did we meet?");
    buddy.run(&format!(
        "smpa alice@localhost {}",
        hush_harness::hex("harbor")
    ));
    alice.smp("failure", |v| *v == SmpView::Failed);
    buddy_gets("smp failure", 1);
    assert_eq!(
        alice.current_security(&b),
        Some(ChatSecurity::PrivateUnverified)
    );

    // Right answer: verified.
    ask(&alice, Some("Where did we meet?"), "harbour");
    buddy_gets("smp question", 2);
    buddy.run(&format!(
        "smpa alice@localhost {}",
        hush_harness::hex("harbour")
    ));
    alice.smp("success", |v| *v == SmpView::Succeeded);
    alice.security(&b, ChatSecurity::PrivateVerified);
    buddy_gets("smp success", 1);

    // The buddy asks; we answer (wrong, then right).
    buddy.run(&format!(
        "smpq alice@localhost {} {}",
        hush_harness::hex("Our cat?"),
        hush_harness::hex("Mimi")
    ));
    let asked = alice.smp("question", |v| matches!(v, SmpView::Asked(_)));
    assert_eq!(asked, SmpView::Asked("Our cat?".into()));
    alice
        .do_(Command::OtrRespond {
            account: alice.account,
            peer: b.clone(),
            secret: Secret::from("Rex"),
        })
        .expect("respond");
    buddy_gets("smp failure", 2);
    alice.smp("failure", |v| *v == SmpView::Failed);
    buddy.run(&format!(
        "smpq alice@localhost {} {}",
        hush_harness::hex("Our cat?"),
        hush_harness::hex("Mimi")
    ));
    alice.smp("question", |v| matches!(v, SmpView::Asked(_)));
    alice
        .do_(Command::OtrRespond {
            account: alice.account,
            peer: b.clone(),
            secret: Secret::from("Mimi"),
        })
        .expect("respond");
    buddy_gets("smp success", 2);
    alice.smp("success", |v| *v == SmpView::Succeeded);

    // Shared secret, each way.
    ask(&alice, None, "correct horse");
    buddy_gets("smp secret", 1);
    buddy.run(&format!(
        "smpa alice@localhost {}",
        hush_harness::hex("correct horse")
    ));
    alice.smp("success", |v| *v == SmpView::Succeeded);
    buddy_gets("smp success", 3);
    buddy.run(&format!(
        "smps alice@localhost {}",
        hush_harness::hex("battery staple")
    ));
    alice.smp("secret asked", |v| *v == SmpView::SecretAsked);
    alice
        .do_(Command::OtrRespond {
            account: alice.account,
            peer: b.clone(),
            secret: Secret::from("battery staple"),
        })
        .expect("respond");
    buddy_gets("smp success", 4);

    // Without a session there is nothing to authenticate in.
    alice
        .do_(Command::OtrEnd {
            account: alice.account,
            peer: b.clone(),
        })
        .expect("end");
    let err = ask_err(&alice, &b);
    assert!(err.contains("no private conversation"), "{err}");
}

fn ask_err(alice: &Side, b: &str) -> String {
    alice
        .do_(Command::OtrAuthenticate {
            account: alice.account,
            peer: b.to_owned(),
            question: None,
            secret: Secret::from("x"),
        })
        .expect_err("not private")
        .to_string()
}

per_server_blocking!(
    fingerprint_verification_persists_and_a_changed_key_warns,
    fingerprint_verification_persists_and_a_changed_key_warns_on
);
fn fingerprint_verification_persists_and_a_changed_key_warns_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("alice");
    let mut alice = Side::register(&profile, &server, "alice", OtrPolicySetting::Opportunistic);
    let buddy = Buddy::start(&server, "buddy");
    let b = buddy.jid.clone();
    let ours = alice.own_fingerprint();
    assert_eq!(ours.len(), 44, "5 groups of 8 hex digits: {ours}");
    private(&mut alice, &buddy);
    let theirs = buddy.fingerprint();
    let trust = |alice: &Side, fp: &str| {
        alice.do_(Command::OtrTrust {
            account: alice.account,
            peer: b.clone(),
            fingerprint: fp.into(),
            verified: true,
        })
    };
    // A fingerprint the buddy never showed is refused.
    let err = trust(&alice, "0123456789abcdef0123456789abcdef01234567").expect_err("wrong");
    assert!(err.to_string().contains("never showed"), "{err}");
    assert!(trust(&alice, "12345").is_err(), "malformed");
    // Pasted in another case, without spaces: accepted.
    trust(&alice, &theirs.replace(' ', "").to_lowercase()).expect("verify");
    alice.security(&b, ChatSecurity::PrivateVerified);
    let known = alice.phone.snapshot().known_fingerprints.clone();
    assert!(
        known
            .iter()
            .any(|k| k.peer == b && k.fingerprint == theirs && k.verified),
        "{known:?}"
    );

    // Restart: the same key, the buddy still verified — all from the vault.
    drop(alice);
    let mut alice = Side::reopen(&profile);
    assert_eq!(alice.own_fingerprint(), ours, "the key survived a restart");
    assert!(
        alice
            .phone
            .snapshot()
            .known_fingerprints
            .iter()
            .any(|k| k.peer == b && k.verified),
        "verification survived a restart"
    );
    buddy.run("end alice@localhost");
    buddy.run("query alice@localhost");
    alice.security(&b, ChatSecurity::PrivateVerified);

    // The buddy comes back from a new session with another key: a warning, and the
    // conversation does not move to that key until it is verified.
    buddy.new_key();
    let new = buddy.fingerprint();
    assert_ne!(new, theirs);
    buddy.run("query alice@localhost");
    let changed = alice.wait("changed fingerprint", |e| match e {
        Event::OtrFingerprint { changed, .. } => Some(*changed),
        _ => None,
    });
    assert!(changed, "a different key for a known buddy is flagged");
    alice.wait("notice about the other session", |e| match e {
        Event::ChatLine { line, .. }
            if line.notice && line.body.contains("wants to talk privately") =>
        {
            Some(())
        }
        _ => None,
    });
    let chat = alice
        .phone
        .snapshot()
        .chats
        .iter()
        .find(|c| c.peer == b)
        .cloned()
        .expect("chat");
    assert_eq!(chat.security, ChatSecurity::PrivateVerified);
    assert_eq!(chat.peer_fingerprint.as_deref(), Some(theirs.as_str()));
    assert!(chat.fingerprint_changed);
    assert!(
        chat.lines
            .iter()
            .any(|l| l.notice && l.body.contains("WARNING"))
    );
    assert!(
        chat.lines.iter().any(|l| l.notice
            && l.body.contains("wants to talk privately")
            && l.body.contains(&new)),
        "the new key is named"
    );

    // Verifying the new key switches the conversation to it.
    trust(&alice, &new).expect("verify the new key");
    alice.wait("the new key in use", |e| match e {
        Event::ChatSecurity {
            security: ChatSecurity::PrivateVerified,
            fingerprint: Some(f),
            ..
        } if *f == new => Some(()),
        _ => None,
    });

    // Forgetting the old key leaves the new one.
    alice
        .do_(Command::OtrForget {
            account: alice.account,
            peer: b.clone(),
            fingerprint: theirs.clone(),
        })
        .expect("forget");
    let known = alice.phone.snapshot().known_fingerprints.clone();
    assert!(!known.iter().any(|k| k.fingerprint == theirs), "{known:?}");
    assert!(known.iter().any(|k| k.peer == b), "{known:?}");
}

per_server_blocking!(
    forgetting_the_fingerprint_in_use_is_refused_and_the_chat_stays_private,
    forgetting_the_fingerprint_in_use_is_refused_and_the_chat_stays_private_on
);
fn forgetting_the_fingerprint_in_use_is_refused_and_the_chat_stays_private_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = Side::register(
        dir.path(),
        &server,
        "alice",
        OtrPolicySetting::Opportunistic,
    );
    let buddy = Buddy::start(&server, "buddy");
    let b = buddy.jid.clone();
    private(&mut alice, &buddy);
    let theirs = buddy.fingerprint();
    let forget = |alice: &Side| {
        alice.do_(Command::OtrForget {
            account: alice.account,
            peer: b.clone(),
            fingerprint: theirs.clone(),
        })
    };
    // Settings -> "Forget" on the key the live conversation uses: libotr would free it
    // under the conversation, which the core reads right after.
    let err = forget(&alice).expect_err("the fingerprint in use is kept");
    assert!(
        err.to_string().contains("in use") && err.to_string().contains("end the conversation"),
        "{err}"
    );
    let chat = alice
        .phone
        .snapshot()
        .chats
        .iter()
        .find(|c| c.peer == b)
        .cloned()
        .expect("chat");
    assert_eq!(chat.security, ChatSecurity::PrivateUnverified);
    assert_eq!(chat.peer_fingerprint.as_deref(), Some(theirs.as_str()));
    assert!(
        alice
            .phone
            .snapshot()
            .known_fingerprints
            .iter()
            .any(|k| k.peer == b && k.fingerprint == theirs)
    );
    // The conversation goes on, encrypted, both ways.
    alice.send(&b, "after the refused forget").expect("send");
    buddy.wait("message", |s| {
        s.shown
            .iter()
            .any(|m| m == "after the refused forget")
            .then_some(())
    });
    buddy.say("alice@localhost", "still private");
    assert!(alice.received("still private").encrypted);
    // Ended, it can go; the conversation is plaintext and knows no key.
    alice
        .do_(Command::OtrEnd {
            account: alice.account,
            peer: b.clone(),
        })
        .expect("end");
    alice.security(&b, ChatSecurity::NotPrivate);
    forget(&alice).expect("forget once ended");
    let snap = alice.phone.snapshot();
    assert!(
        !snap
            .known_fingerprints
            .iter()
            .any(|k| k.fingerprint == theirs)
    );
    let chat = snap.chats.iter().find(|c| c.peer == b).expect("chat");
    assert_eq!(chat.security, ChatSecurity::NotPrivate);
    assert_eq!(chat.peer_fingerprint, None);
}

per_server_blocking!(
    only_what_otr_decrypted_is_marked_encrypted,
    only_what_otr_decrypted_is_marked_encrypted_on
);
fn only_what_otr_decrypted_is_marked_encrypted_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = Side::register(
        dir.path(),
        &server,
        "alice",
        OtrPolicySetting::Opportunistic,
    );
    let buddy = Buddy::start(&server, "buddy");
    let b = buddy.jid.clone();
    // Plaintext past libotr, shaped like OTR: a one-piece "fragment", which libotr
    // reassembles into plain text and shows.
    let shaped = "?OTR,1,1,this is not encrypted,";
    buddy.send_raw("alice@localhost", shaped);
    let line = alice.received(shaped);
    assert!(!line.encrypted, "plaintext shown as encrypted");
    assert_ne!(
        alice.current_security(&b),
        Some(ChatSecurity::PrivateUnverified)
    );
    // A really decrypted one is marked so.
    private(&mut alice, &buddy);
    buddy.say("alice@localhost", "really encrypted");
    assert!(alice.received("really encrypted").encrypted);
}

per_server_blocking!(
    require_policy_never_lets_plaintext_out,
    require_policy_never_lets_plaintext_out_on
);
fn require_policy_never_lets_plaintext_out_on(kind: ServerKind) {
    let mut server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alice = Side::register(dir.path(), &server, "alice", OtrPolicySetting::Require);
    let buddy = Buddy::start(&server, "buddy");
    buddy.run("policy manual");
    let b = buddy.jid.clone();
    alice
        .do_(Command::SetHistoryFor {
            account: alice.account,
            peer: b.clone(),
            choice: Some(true),
        })
        .expect("history on");

    // Typed before any session: held, OTR started, then sent encrypted only.
    alice.send(&b, "the plan is at noon").expect("send");
    let held = alice
        .phone
        .snapshot()
        .chats
        .iter()
        .find(|c| c.peer == b)
        .map(|c| {
            c.lines
                .iter()
                .any(|l| l.held && l.body == "the plan is at noon")
        });
    assert_eq!(held, Some(true), "shown as held");
    buddy.wait("the held message", |s| {
        s.shown
            .iter()
            .any(|m| m == "the plan is at noon")
            .then_some(())
    });
    alice.security(&b, ChatSecurity::PrivateUnverified);

    // The buddy ends the session; we end ours; typing again holds and restarts OTR.
    buddy.run("end alice@localhost");
    alice.security(&b, ChatSecurity::Finished);
    alice
        .do_(Command::OtrEnd {
            account: alice.account,
            peer: b.clone(),
        })
        .expect("end");
    alice.send(&b, "second secret").expect("send");
    buddy.wait("second", |s| {
        s.shown.iter().any(|m| m == "second secret").then_some(())
    });

    // Across a server crash: typed while the server is down, sent encrypted after.
    server.go_down();
    alice.send(&b, "third secret").expect("send while offline");
    server.restart().expect("restart");
    // Both sides log in again first: a restarting ejabberd refuses logins until it has
    // loaded its accounts, and a refused login is retried after 4, 8 and 16 s.
    if let Err(e) = buddy.try_wait_up_to(Duration::from_secs(60), "third", |s| {
        s.shown.iter().any(|m| m == "third secret").then_some(())
    }) {
        // Everything needed to tell a lost message from a side that never came back.
        let snapshot = alice.phone.snapshot();
        panic!(
            "{e}\nalice's accounts: {:?}\nalice's chat: {:?}\nserver log:\n{}",
            snapshot.accounts,
            snapshot.chats.iter().find(|c| c.peer == b),
            server.log_tail()
        );
    }

    let seen = buddy.seen();
    // The store is really read: the buddy's account is in it.
    assert!(
        contains(&server.stored_bytes(), b"buddy"),
        "the server's store was not read"
    );
    for secret in ["the plan", "second secret", "third secret"] {
        assert!(
            !seen.raw.iter().any(|r| r.contains(secret)),
            "{secret:?} reached the buddy in plaintext"
        );
        assert!(!contains(&server.stored_bytes(), secret.as_bytes()));
    }
    assert!(
        seen.raw.iter().all(|r| r.starts_with("?OTR")),
        "{:?}",
        seen.raw
    );

    // History keeps what was said, decrypted (sealed on disk), never ciphertext.
    let account = alice.account;
    drop(alice);
    let profile = Profile::open(dir.path()).expect("profile");
    let history = profile.history_with(account, &b).expect("history");
    let bodies: Vec<String> = history
        .iter()
        .filter_map(|h| match &h.record {
            hush_core::profile::HistoryRecord::Message { body, .. } => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert!(
        bodies.iter().any(|b| b == "the plan is at noon"),
        "{bodies:?}"
    );
    assert!(!bodies.iter().any(|b| b.contains("?OTR")), "{bodies:?}");
    let db = std::fs::read(profile.db_path()).expect("db");
    assert!(!contains(&db, b"the plan is at noon"), "history is sealed");
}

per_server_blocking!(
    pidgin_files_import_and_export,
    pidgin_files_import_and_export_on
);
fn pidgin_files_import_and_export_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    // A Pidgin identity: a key for "carol@localhost/Home" and a verified buddy.
    let donor = Side::register(
        &dir.path().join("donor"),
        &server,
        "carol",
        OtrPolicySetting::Manual,
    );
    let Reply::OtrFiles { keys, .. } = donor.do_(Command::OtrExport).expect("export") else {
        panic!("no files")
    };
    let donor_fp = donor.own_fingerprint();
    drop(donor);
    let pidgin_keys = keys
        .expose()
        .replace("carol@localhost", "carol@localhost/Home");
    let fp_hex = donor_fp.replace(' ', "").to_lowercase();
    let pidgin_fps = format!(
        "dave@localhost\tcarol@localhost/Home\tprpl-jabber\t{}\tverified\n",
        "00112233445566778899aabbccddeeff00112233"
    );

    let phone =
        Phone::start(Profile::open(&dir.path().join("new")).expect("profile")).expect("phone");
    phone
        .execute_blocking(Command::OtrImport {
            keys: Some(Secret::new(pidgin_keys.clone())),
            fingerprints: Some(pidgin_fps.clone()),
        })
        .expect("import");
    let bad = phone.execute_blocking(Command::OtrImport {
        keys: Some(Secret::from("(privkeys (account (name")),
        fingerprints: None,
    });
    assert!(bad.is_err(), "a broken key file is refused");
    let new = NewAccount {
        address: "carol@localhost".into(),
        display_name: None,
        password: Some(Secret::from("carol-secret")),
        remember_password: true,
        settings: AccountSettings::Xmpp(settings(&server, OtrPolicySetting::Manual)),
    };
    let Reply::Account(acc) = phone
        .execute_blocking(Command::AddAccount(new))
        .expect("add")
    else {
        panic!()
    };
    let mut side = Side {
        phone,
        rx: tokio::sync::broadcast::channel(1).1,
        account: acc.id,
    };
    side.rx = side.phone.events();
    side.online();
    assert_eq!(
        side.own_fingerprint().replace(' ', "").to_lowercase(),
        fp_hex,
        "the imported key is used for the account"
    );
    let known = side.phone.snapshot().known_fingerprints.clone();
    assert!(
        known
            .iter()
            .any(|k| k.peer == "dave@localhost" && k.verified),
        "the verified buddy carried over: {known:?}"
    );
    let Reply::OtrFiles { keys, fingerprints } = side.do_(Command::OtrExport).expect("export")
    else {
        panic!()
    };
    assert!(keys.expose().contains("carol@localhost/Home"));
    assert!(fingerprints.contains("dave@localhost\tcarol@localhost/Home\tprpl-jabber\t00112233"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
