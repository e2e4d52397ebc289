//! OTR through a real Prosody: AKE time (median of 10) and 1,000 sequential message
//! round trips, Hushphone talking to the C libotr peer, against two C libotr peers
//! talking to each other, in the same run. Both sides' XMPP transport is the same.
//!
//! `cargo run --release --manifest-path benches/Cargo.toml --bin otr_chat`

#[allow(dead_code)] // shared with the tests, which use more of it
#[path = "../../core/tests/otr_buddy/mod.rs"]
mod otr_buddy;

mod common;
use common::{median, wait};
use hush_core::model::{AccountSettings, OtrPolicySetting, XmppSettings};
use hush_core::snapshot::AccountStatus;
use hush_core::{ChatSecurity, Command, Event, NewAccount, Phone, Profile, Reply, Secret};
use hush_harness::{ServerKind, XmppServer};
use otr_buddy::Buddy;
use std::time::{Duration, Instant};

const AKES: usize = 10;
const ROUND_TRIPS: usize = 1_000;

fn hushphone(server: &XmppServer, dir: &std::path::Path) -> (Duration, Duration) {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let fp = hush_signaling::xmpp::cert_fingerprint_from_pem(&pem).expect("fp");
    let phone = Phone::start(Profile::open(dir).expect("profile")).expect("phone");
    let mut rx = phone.events();
    let Ok(Reply::Account(acc)) = phone.execute_blocking(Command::RegisterXmpp(NewAccount {
        address: "alice@localhost".into(),
        display_name: None,
        password: Some(Secret::from("alice-bench")),
        remember_password: true,
        settings: AccountSettings::Xmpp(XmppSettings {
            server: Some(format!("127.0.0.1:{}", server.port())),
            pinned_cert_sha256: Some(hush_signaling::xmpp::format_fingerprint(&fp)),
            socks5_proxy: None,
            otr_policy: OtrPolicySetting::Manual,
        }),
    })) else {
        panic!("register")
    };
    let account = acc.id;
    phone
        .execute_blocking(Command::Connect {
            account,
            password: None,
        })
        .expect("connect");
    wait(&phone, &mut rx, |e| {
        matches!(
            e,
            Event::AccountStatus {
                status: AccountStatus::Online,
                ..
            }
        )
    });
    // Our first key is made while the account logs in: not part of what is measured.
    if !phone
        .snapshot()
        .otr_keys
        .iter()
        .any(|k| k.account == account)
    {
        wait(&phone, &mut rx, |e| matches!(e, Event::OtrKey { .. }));
    }
    let buddy = Buddy::start(server, "bob");
    let peer = buddy.jid.clone();
    let mut akes = Vec::new();
    for i in 0..AKES {
        let start = Instant::now();
        phone
            .execute_blocking(Command::OtrStart {
                account,
                peer: peer.clone(),
            })
            .expect("start");
        security_is(&phone, &mut rx, ChatSecurity::PrivateUnverified);
        akes.push(start.elapsed());
        phone
            .execute_blocking(Command::OtrEnd {
                account,
                peer: peer.clone(),
            })
            .expect("end");
        security_is(&phone, &mut rx, ChatSecurity::NotPrivate);
        // As in the C pair: the buddy sees the end, then ends its side too, so every
        // AKE starts from plaintext on both sides.
        ends_too(&buddy, "alice@localhost", i);
    }
    phone
        .execute_blocking(Command::OtrStart {
            account,
            peer: peer.clone(),
        })
        .expect("start");
    security_is(&phone, &mut rx, ChatSecurity::PrivateUnverified);
    buddy.echo(true);
    let start = Instant::now();
    for i in 0..ROUND_TRIPS {
        let text = format!("message {i}");
        phone
            .execute_blocking(Command::SendChat {
                account,
                to: peer.clone(),
                body: text.clone(),
            })
            .expect("send");
        wait(
            &phone,
            &mut rx,
            |e| matches!(e, Event::ChatLine { line, .. } if !line.from_me && line.body == text),
        );
    }
    (median(akes), start.elapsed())
}

fn c_pair(server: &XmppServer) -> (Duration, Duration) {
    let a = Buddy::start(server, "carol");
    let b = Buddy::start(server, "dave");
    let mut akes = Vec::new();
    for i in 0..AKES {
        let start = Instant::now();
        a.run(&format!("query {}", b.jid));
        a.wait("secure", |s| {
            (s.events.iter().filter(|e| e.starts_with("secure")).count() > i).then_some(())
        });
        akes.push(start.elapsed());
        a.run(&format!("end {}", b.jid));
        ends_too(&b, &a.jid, i);
    }
    a.run(&format!("query {}", b.jid));
    a.wait("secure", |s| {
        (s.events.iter().filter(|e| e.starts_with("secure")).count() > AKES).then_some(())
    });
    b.echo(true);
    let start = Instant::now();
    for i in 0..ROUND_TRIPS {
        let text = format!("message {i}");
        a.say(&b.jid, &text);
        a.wait("echo", |s| {
            s.shown.last().filter(|m| **m == text).map(|_| ())
        });
    }
    (median(akes), start.elapsed())
}

fn main() {
    let server = XmppServer::start(ServerKind::Prosody).expect("prosody");
    let dir = tempfile_dir();
    let ours = hushphone(&server, &dir);
    let theirs = c_pair(&server);
    let _ = std::fs::remove_dir_all(&dir);
    println!("| pair | AKE (median of {AKES}) | {ROUND_TRIPS} round trips | per round trip |");
    println!("|---|---|---|---|");
    for (name, (ake, rt)) in [
        ("Hushphone ↔ C libotr", ours),
        ("C libotr ↔ C libotr", theirs),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.2} s | {:.2} ms |",
            ake.as_secs_f64() * 1e3,
            rt.as_secs_f64(),
            rt.as_secs_f64() * 1e3 / ROUND_TRIPS as f64
        );
    }
    println!(
        "ratio (ours / C pair): AKE {:.2}×, round trips {:.2}×",
        ours.0.as_secs_f64() / theirs.0.as_secs_f64(),
        ours.1.as_secs_f64() / theirs.1.as_secs_f64()
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hush-otr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Waits for the conversation's security to become `security`.
fn security_is(
    phone: &Phone,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    security: ChatSecurity,
) {
    wait(
        phone,
        rx,
        |e| matches!(e, Event::ChatSecurity { security: s, .. } if *s == security),
    );
}

/// The buddy sees the other side end (its `i`+1-th "finished"), then ends its side
/// too, so the next AKE starts from plaintext on both sides.
fn ends_too(buddy: &Buddy, other: &str, i: usize) {
    buddy.wait("finished", |s| {
        (s.events
            .iter()
            .filter(|e| e.starts_with("finished"))
            .count()
            > i)
            .then_some(())
    });
    buddy.run(&format!("end {other}"));
}
