//! Nothing the network does (or fails to do) holds up the phone: with a registrar name
//! whose lookup never ends, a peer that never answers our re-INVITE and a server that
//! never answers an account creation, chat messages still arrive through a real
//! Prosody, a second call still goes secure, and every command still gets its answer
//! at once.

mod chat_common;

use chat_common::{online, register_with, wait};
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
use hush_core::model::{AccountSettings, EncryptionPolicy, OtrPolicySetting, SipSettings};
use hush_core::snapshot::{AccountStatus, CallState};
use hush_core::{
    CallSecurity, Command, Event, NewAccount, Phone, Profile, Reply, Resolver, Secret,
};
use hush_harness::{ServerKind, SipPeer, XmppServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A name service that never answers; it says which names it was asked for.
fn hanging_resolver(asked: std::sync::mpsc::Sender<String>) -> Resolver {
    let asked = std::sync::Mutex::new(asked);
    Arc::new(move |host: String, _port: u16| {
        if let Ok(tx) = asked.lock() {
            let _ = tx.send(host);
        }
        Box::pin(std::future::pending())
    })
}

/// Runs `command` and says how long the phone took to answer it (bounded).
fn answer_time(phone: &Phone, command: Command) -> (Duration, hush_core::Result<Reply>) {
    let start = Instant::now();
    let reply = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(phone.execute_blocking(command));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the phone answered no command for 10 s")
    });
    (start.elapsed(), reply)
}

#[test]
fn a_hanging_name_service_and_a_silent_peer_hold_up_neither_chat_nor_calls() {
    let server = XmppServer::start(ServerKind::Prosody).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (asked_tx, asked) = std::sync::mpsc::channel();
    let alice = Phone::start_with_resolver(
        Profile::open(&dir.path().join("alice")).expect("profile"),
        hanging_resolver(asked_tx),
    )
    .expect("phone");
    let bob =
        Phone::start(Profile::open(&dir.path().join("bob")).expect("profile")).expect("phone");
    let mut ae = alice.events();
    let mut be = bob.events();
    // Plain chat (OTR only when asked): what is measured here is the phone's own
    // responsiveness, not an OTR key exchange the first messages would start.
    let a = register_with(&alice, &server, "alice", OtrPolicySetting::Manual);
    let b = register_with(&bob, &server, "bob", OtrPolicySetting::Manual);
    online(&alice, &mut ae, a);
    online(&bob, &mut be, b);

    // 1. A SIP account whose registrar's name never resolves: connecting answers at
    // once, and the account says it is connecting.
    let Reply::Account(sip) = alice
        .execute_blocking(Command::AddAccount(NewAccount {
            address: "alice@stuck.example".into(),
            display_name: None,
            password: Some(Secret::from("pw")),
            remember_password: true,
            settings: AccountSettings::Sip(SipSettings::default()),
        }))
        .expect("add")
    else {
        panic!("expected account")
    };
    // Its own receiver for the lookup's end, which may come while the rest runs.
    let mut lookup_end = alice.events();
    let (took, reply) = answer_time(
        &alice,
        Command::Connect {
            account: sip.id,
            password: None,
        },
    );
    reply.expect("connect is accepted; the lookup goes on by itself");
    assert!(took < Duration::from_secs(1), "connect waited {took:?}");
    wait(&alice, &mut ae, "the lookup under way", |e| {
        matches!(e, Event::AccountStatus { account, status: AccountStatus::Connecting } if *account == sip.id).then_some(())
    });
    assert_eq!(
        asked.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("stuck.example"),
        "the registrar's name is being looked up"
    );

    // 2. A call whose peer picks up, then never answers our hold re-INVITE.
    let silent = SipPeer::bind("carol").expect("peer");
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("media sink");
    let port = sink.local_addr().expect("addr").port();
    let Reply::Call(stuck) = alice
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("carol@{}", silent.addr()),
            audio: MediaChoice::default(),
            policy: Some(EncryptionPolicy::BestEffort),
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let (invite, from) = silent
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the INVITE");
    let answer = format!(
        "v=0\r\no=carol 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    silent
        .accept(&invite, from, "carol-1", &answer)
        .expect("200 OK");
    wait(&alice, &mut ae, "connected", |e| {
        matches!(e, Event::CallState { call, state: CallState::Connected } if *call == stuck)
            .then_some(())
    });
    let (took, reply) = answer_time(
        &alice,
        Command::Hold {
            call: stuck,
            on: true,
        },
    );
    reply.expect("hold");
    assert!(took < Duration::from_secs(1), "hold waited {took:?}");
    silent
        .next_request("INVITE", Duration::from_secs(5))
        .expect("the re-INVITE, which carol never answers");

    // 3. Meanwhile a chat message arrives, and one goes out.
    let sent = Instant::now();
    bob.execute_blocking(Command::SendChat {
        account: b,
        to: "alice@localhost".into(),
        body: "are you there?".into(),
    })
    .expect("send");
    wait(&alice, &mut ae, "bob's message", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "are you there?").then_some(())
    });
    let (took, reply) = answer_time(
        &alice,
        Command::SendChat {
            account: a,
            to: "bob@localhost".into(),
            body: "yes".into(),
        },
    );
    reply.expect("send");
    assert!(took < Duration::from_secs(1), "sending waited {took:?}");
    wait(&bob, &mut be, "alice's answer", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "yes").then_some(())
    });
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the chat round trip took {:?}",
        sent.elapsed()
    );

    // 4. And a second call goes secure: the echo test.
    let Reply::Listening(echo) = alice
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
    let Reply::Call(second) = alice
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("echo@{echo}"),
            audio: MediaChoice {
                source: SourceSpec::Silence,
                sink: SinkSpec::Null,
                video: None,
            },
            policy: None,
        })
        .expect("second call")
    else {
        panic!("expected Call")
    };
    wait(&alice, &mut ae, "the second call secure", |e| {
        matches!(e, Event::CallSecurity { call, security: CallSecurity::Secure { .. } } if *call == second).then_some(())
    });

    // 5. Creating an account on a server that accepts the connection and then says
    // nothing: the command waits in the background; chat and commands do not.
    let silent_server = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let silent_addr = silent_server.local_addr().expect("addr");
    let mut quiet = chat_common::settings(&server);
    quiet.server = Some(silent_addr.to_string());
    alice.send(Command::RegisterXmpp(NewAccount {
        address: "newcomer@localhost".into(),
        display_name: None,
        password: Some(Secret::from("newcomer-secret")),
        remember_password: false,
        settings: AccountSettings::Xmpp(quiet),
    }));
    let (_held_open, _) = silent_server.accept().expect("the phone connects");
    let (took, reply) = answer_time(&alice, Command::ListVerifiedPeers);
    reply.expect("a command while the registration waits");
    assert!(took < Duration::from_secs(1), "a command waited {took:?}");
    bob.execute_blocking(Command::SendChat {
        account: b,
        to: "alice@localhost".into(),
        body: "still there?".into(),
    })
    .expect("send");
    wait(&alice, &mut ae, "bob's second message", |e| {
        matches!(e, Event::ChatLine { line, .. } if line.body == "still there?").then_some(())
    });

    // The held call still waits for carol (and is not shown on hold before she
    // agrees); the account waits for its name, or has given up on it with words.
    let snap = alice.snapshot();
    let held = snap.calls.iter().find(|c| c.id == stuck).expect("still up");
    assert_eq!(held.state, CallState::Connected);
    assert!(matches!(
        snap.accounts
            .iter()
            .find(|x| x.config.id == sip.id)
            .map(|x| &x.status),
        Some(AccountStatus::Connecting | AccountStatus::Error(_))
    ));
    // The lookup is given up after its 5 s, with words; nothing else waited for it.
    let why = wait(&alice, &mut lookup_end, "the lookup's end", |e| match e {
        Event::AccountStatus {
            account,
            status: AccountStatus::Error(why),
        } if *account == sip.id => Some(why.clone()),
        _ => None,
    });
    assert!(
        why.contains("no answer from the name service within 5 s"),
        "{why}"
    );
}
