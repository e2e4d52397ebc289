//! Chat through the phone core against real Prosody and ejabberd: accounts created in-band, a
//! contact authorized, messages both ways (logged only where history is on), a room.

mod chat_common;

use chat_common::{online, register_with, wait};
use hush_core::command::RequestAnswer;
use hush_core::model::OtrPolicySetting;
use hush_core::snapshot::Subscription;
use hush_core::{Command, Event, Phone, Profile};
use hush_harness::{ServerKind, XmppServer, per_server_blocking};

per_server_blocking!(two_phones_chat_through_the_server, two_phones_chat_on);
fn two_phones_chat_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let alice =
        Phone::start(Profile::open(&dir.path().join("a")).expect("profile")).expect("phone");
    let bob = Phone::start(Profile::open(&dir.path().join("b")).expect("profile")).expect("phone");
    let (mut ae, mut be) = (alice.events(), bob.events());
    // Plain chat (OTR has its own tests): an opportunistic key exchange started by
    // the first message would decide whether the reply arrives in time.
    let a = register_with(&alice, &server, "alice", OtrPolicySetting::Manual);
    let b = register_with(&bob, &server, "bob", OtrPolicySetting::Manual);
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
