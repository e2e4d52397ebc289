//! Chat through the phone core against a real Prosody: accounts created in-band, a
//! contact authorized, messages both ways (logged only where history is on), a room;
//! and a flood from a hostile server's many senders that leaves memory bounded and the
//! account working.

mod hostile_server;

use hostile_server::HostileServer;
use hush_core::command::RequestAnswer;
use hush_core::model::{AccountSettings, XmppSettings};
use hush_core::snapshot::{AccountStatus, Subscription};
use hush_core::{AccountId, Command, Event, NewAccount, Phone, Profile, Reply, Secret};
use hush_harness::Prosody;
use std::time::{Duration, Instant};

fn settings(server: &Prosody) -> XmppSettings {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let fp = hush_signaling::xmpp::cert_fingerprint_from_pem(&pem).expect("fp");
    XmppSettings {
        server: Some(format!("127.0.0.1:{}", server.port())),
        pinned_cert_sha256: Some(hush_signaling::xmpp::format_fingerprint(&fp)),
        socks5_proxy: None,
        otr_policy: Default::default(),
    }
}

fn register(phone: &Phone, server: &Prosody, user: &str) -> AccountId {
    let new = NewAccount {
        address: format!("{user}@localhost"),
        display_name: None,
        password: Some(Secret::new(format!("{user}-secret"))),
        remember_password: true,
        settings: AccountSettings::Xmpp(settings(server)),
    };
    match phone
        .execute_blocking(Command::RegisterXmpp(new))
        .expect("in-band registration")
    {
        Reply::Account(a) => a.id,
        other => panic!("{other:?}"),
    }
}

fn wait<T>(
    phone: &Phone,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    what: &str,
    f: impl Fn(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        if let Some(v) = f(&ev) {
            return v;
        }
    }
    panic!("no {what} within 15 s")
}

fn online(phone: &Phone, rx: &mut tokio::sync::broadcast::Receiver<Event>, account: AccountId) {
    phone
        .execute_blocking(Command::Connect {
            account,
            password: None,
        })
        .expect("connect");
    wait(phone, rx, "online", |e| match e {
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
}

#[test]
fn two_phones_chat_through_prosody() {
    let server = Prosody::start().expect("prosody");
    let dir = tempfile::tempdir().expect("tempdir");
    let alice =
        Phone::start(Profile::open(&dir.path().join("a")).expect("profile")).expect("phone");
    let bob = Phone::start(Profile::open(&dir.path().join("b")).expect("profile")).expect("phone");
    let (mut ae, mut be) = (alice.events(), bob.events());
    let a = register(&alice, &server, "alice");
    let b = register(&bob, &server, "bob");
    online(&alice, &mut ae, a);
    online(&bob, &mut be, b);

    alice
        .execute_blocking(Command::AddContact {
            account: a,
            address: "bob@localhost".into(),
            alias: Some("Bob".into()),
            group: Some("Team".into()),
        })
        .expect("add");
    wait(&alice, &mut ae, "waiting", |e| match e {
        Event::Contact { contact, .. }
            if contact.subscription == Subscription::WaitingForAuthorization =>
        {
            Some(())
        }
        _ => None,
    });
    wait(&bob, &mut be, "request", |e| {
        matches!(e, Event::SubscriptionRequest { from, .. } if from == "alice@localhost")
            .then_some(())
    });
    assert_eq!(bob.snapshot().requests.len(), 1, "the request is listed");
    bob.execute_blocking(Command::AnswerRequest {
        account: b,
        from: "alice@localhost".into(),
        answer: RequestAnswer::Authorize,
    })
    .expect("authorize");
    wait(&alice, &mut ae, "authorized", |e| match e {
        Event::Contact { contact, .. } if contact.subscription == Subscription::Authorized => {
            Some(())
        }
        _ => None,
    });
    let snap = alice.snapshot();
    let bob_row = snap
        .contacts
        .iter()
        .find(|c| c.address == "bob@localhost")
        .expect("bob listed");
    assert_eq!(
        (bob_row.alias.as_deref(), bob_row.group.as_deref()),
        (Some("Bob"), Some("Team"))
    );

    // History on for bob only, on alice's side.
    alice
        .execute_blocking(Command::SetHistoryFor {
            account: a,
            peer: "bob@localhost".into(),
            choice: Some(true),
        })
        .expect("history");
    alice
        .execute_blocking(Command::SendChat {
            account: a,
            to: "bob@localhost".into(),
            body: "hello from alice".into(),
        })
        .expect("send");
    wait(&bob, &mut be, "message", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "hello from alice").then_some(())
    });
    wait(&alice, &mut ae, "delivered", |e| {
        matches!(e, Event::ChatDelivered { .. }).then_some(())
    });
    bob.execute_blocking(Command::SendChat {
        account: b,
        to: "alice@localhost".into(),
        body: "hi alice".into(),
    })
    .expect("send");
    wait(&alice, &mut ae, "reply", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "hi alice").then_some(())
    });
    let lines = alice
        .snapshot()
        .chats
        .iter()
        .find(|c| c.peer == "bob@localhost")
        .map(|c| c.lines.clone())
        .expect("chat");
    assert_eq!(
        lines
            .iter()
            .filter(|l| !l.notice)
            .map(|l| (l.from_me, l.body.as_str()))
            .collect::<Vec<_>>(),
        vec![(true, "hello from alice"), (false, "hi alice")]
    );
    assert!(lines.iter().any(|l| l.from_me && l.delivered));
    assert!(
        bob.execute_blocking(Command::SendChat {
            account: b,
            to: "not a jid".into(),
            body: "x".into()
        })
        .is_err()
    );

    // Room.
    for (p, acc, nick) in [(&alice, a, "Alice"), (&bob, b, "Bob")] {
        p.execute_blocking(Command::JoinRoom {
            account: acc,
            room: "team@conference.localhost".into(),
            nick: nick.into(),
            password: None,
        })
        .expect("join");
    }
    wait(&alice, &mut ae, "both in the room", |e| match e {
        Event::RoomOccupants { occupants, .. } if occupants.len() == 2 => Some(()),
        _ => None,
    });
    bob.execute_blocking(Command::SendRoom {
        account: b,
        room: "team@conference.localhost".into(),
        body: "room hello".into(),
    })
    .expect("say");
    let sender = wait(&alice, &mut ae, "room line", |e| match e {
        Event::RoomLine { line, .. } if line.body == "room hello" => Some(line.sender.clone()),
        _ => None,
    });
    assert_eq!(sender, "Bob");
    drop(alice);
    drop(bob);

    // Alice logged the conversation with bob (history on for him); bob logged nothing.
    let pa = Profile::open(&dir.path().join("a")).expect("profile");
    let logged = pa.history_with(a, "bob@localhost").expect("history");
    assert_eq!(logged.len(), 2, "{logged:?}");
    let pb = Profile::open(&dir.path().join("b")).expect("profile");
    assert_eq!(
        pb.history_len().expect("len"),
        0,
        "history is off by default"
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Every sender says something, asks for OTR, and starts a fragmented OTR message it
/// never finishes (every other one from a new OTR instance). Three messages a sender:
/// Prosody archives them all, and beyond 10,000 archived messages it slows to a crawl.
fn flood(hostile: &mut HostileServer, senders: std::ops::Range<u32>) {
    let text = "x".repeat(2_000);
    for i in senders {
        let user = format!("mallory{i}");
        let to = "alice@localhost";
        hostile.send(&user, "r", to, &format!("flood {i} {text}"));
        hostile.send(&user, "r", to, "?OTR?v3?");
        let fragment = if i % 2 == 0 {
            format!("?OTR,1,3,{text},")
        } else {
            format!("?OTR|{:08x}|00000000,00001,00002,{text},", 0x100 + i)
        };
        hostile.send(&user, &format!("r{i}"), to, &fragment);
    }
}

/// Sends one more message after the flood and waits (bounded) until alice shows it:
/// everything sent before it has been handled.
fn handled(
    phone: &Phone,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    hostile: &mut HostileServer,
    tag: &str,
) {
    hostile.send("last", "r", "alice@localhost", tag);
    let deadline = Instant::now() + Duration::from_secs(240);
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        if matches!(&ev, Event::ChatLine { line, .. } if line.body == tag) {
            return;
        }
    }
    panic!("the flood was not handled within 240 s");
}

#[test]
fn a_flood_from_many_senders_keeps_memory_bounded_and_friends_get_through() {
    let server = Prosody::start().expect("prosody");
    let dir = tempfile::tempdir().expect("tempdir");
    let alice =
        Phone::start(Profile::open(&dir.path().join("a")).expect("profile")).expect("phone");
    let bob = Phone::start(Profile::open(&dir.path().join("b")).expect("profile")).expect("phone");
    let (mut ae, mut be) = (alice.events(), bob.events());
    let a = register(&alice, &server, "alice");
    let b = register(&bob, &server, "bob");
    online(&alice, &mut ae, a);
    online(&bob, &mut be, b);
    alice
        .execute_blocking(Command::AddContact {
            account: a,
            address: "bob@localhost".into(),
            alias: None,
            group: None,
        })
        .expect("add");
    wait(&alice, &mut ae, "bob in the roster", |e| {
        matches!(e, Event::Contact { contact, .. } if contact.address == "bob@localhost")
            .then_some(())
    });

    let mut hostile = HostileServer::connect(&server);
    // Warm up (allocator, caches, the first few hundred conversations), then measure.
    flood(&mut hostile, 0..300);
    handled(&alice, &mut ae, &mut hostile, "warm");
    let before = rss_kib();
    flood(&mut hostile, 300..2_900);
    handled(&alice, &mut ae, &mut hostile, "done");
    let grown = rss_kib().saturating_sub(before);
    let snap = alice.snapshot();
    // 2,900 senders came; the core keeps at most 256 conversations, 64 KiB of text each
    // from strangers, and libotr's and the XMPP layer's per-sender state is capped too.
    assert!(
        snap.chats.len() <= 256,
        "{} conversations",
        snap.chats.len()
    );
    let stranger_bytes = snap
        .chats
        .iter()
        .map(|c| c.lines.iter().map(|l| l.body.len()).sum::<usize>())
        .max()
        .unwrap_or(0);
    assert!(
        stranger_bytes <= 64 * 1024,
        "{stranger_bytes} bytes in one conversation"
    );
    // Measured: about 5 MiB with the bounds; 28 MiB and 2,901 conversations without.
    assert!(
        grown < 16 * 1024,
        "memory grew by {grown} KiB over 2,600 senders"
    );
    assert_eq!(
        snap.accounts
            .iter()
            .find(|v| v.config.id == a)
            .map(|v| v.status.clone()),
        Some(AccountStatus::Online)
    );

    // The friend still gets through, both ways.
    bob.execute_blocking(Command::SendChat {
        account: b,
        to: "alice@localhost".into(),
        body: "are you still there?".into(),
    })
    .expect("send");
    wait(&alice, &mut ae, "the friend's message", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "are you still there?")
            .then_some(())
    });
    alice
        .execute_blocking(Command::SendChat {
            account: a,
            to: "bob@localhost".into(),
            body: "yes, all fine".into(),
        })
        .expect("send");
    wait(&bob, &mut be, "the answer", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "yes, all fine").then_some(())
    });
}
