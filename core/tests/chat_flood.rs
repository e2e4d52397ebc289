//! A flood from a hostile server's many senders leaves memory bounded and the account
//! working. Its own test binary: it measures the process's memory, which another test
//! running beside it would grow, and it keeps Prosody busy.

mod chat_common;
mod hostile_server;

use chat_common::{online, register_with, wait, wait_up_to};
use hostile_server::HostileServer;
use hush_core::model::OtrPolicySetting;
use hush_core::snapshot::AccountStatus;
use hush_core::{Command, Event, Phone, Profile};
use hush_harness::{ServerKind, XmppServer};
use std::time::{Duration, Instant};

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
    let server = XmppServer::start(ServerKind::Prosody).expect("prosody");
    let dir = tempfile::tempdir().expect("tempdir");
    let alice =
        Phone::start(Profile::open(&dir.path().join("a")).expect("profile")).expect("phone");
    let bob = Phone::start(Profile::open(&dir.path().join("b")).expect("profile")).expect("phone");
    let (mut ae, mut be) = (alice.events(), bob.events());
    // Plain chat: this is about bounds under a flood, and an OTR key exchange started
    // by the first messages would decide whether the last ones arrive in time.
    let a = register_with(&alice, &server, "alice", OtrPolicySetting::Manual);
    let b = register_with(&bob, &server, "bob", OtrPolicySetting::Manual);
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

    let XmppServer::Prosody(prosody) = &server else {
        unreachable!("started as Prosody: the flood comes through its component port")
    };
    let mut hostile = HostileServer::connect(prosody);
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
    // Alice answered each stranger's OTR query with the start of a key exchange: her
    // reply to bob waits behind those at the server's rate limit, so it may take a
    // while (that they are sent at all is a separate problem).
    wait_up_to(&bob, &mut be, "the answer", Duration::from_secs(120), |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "yes, all fine").then_some(())
    });
}
