//! XMPP chat through real Prosody and ejabberd (every test runs against both): roster, subscriptions (authorize, deny, ignore),
//! messages, offline delivery, rooms, and a server restart with no loss and no
//! duplicate.

use hush_harness::{ServerKind, XmppServer, per_server};
use hush_signaling::xmpp::account::{self, XmppCommand, XmppHandle};
use hush_signaling::xmpp::chat::{Show, XmppEvent};
use hush_signaling::xmpp::{
    BareJid, HushConnector, Trust, cert_fingerprint_from_pem, register_account,
};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;

struct Account {
    handle: XmppHandle,
    events: Receiver<XmppEvent>,
    seen: Vec<XmppEvent>,
}

fn connector(server: &XmppServer) -> HushConnector {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    HushConnector::direct(
        "127.0.0.1",
        server.port(),
        Trust::Pinned(cert_fingerprint_from_pem(&pem).expect("fp")),
    )
}

fn jid(s: &str) -> BareJid {
    s.parse().expect("jid")
}

async fn create(server: &XmppServer, user: &str) {
    register_account(
        &connector(server),
        &jid(&format!("{user}@localhost")),
        &format!("{user}-pw-1"),
    )
    .await
    .expect("register");
}

fn login(server: &XmppServer, user: &str) -> Account {
    login_via(connector(server), user)
}

fn login_via(connector: HushConnector, user: &str) -> Account {
    let (handle, events) = account::start(
        connector,
        jid(&format!("{user}@localhost")),
        format!("{user}-pw-1"),
    );
    Account {
        handle,
        events,
        seen: Vec::new(),
    }
}

impl Account {
    /// Waits (bounded) for an event matching `f`, keeping everything seen.
    async fn wait<T>(&mut self, what: &str, f: impl Fn(&XmppEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(ev)) => {
                    let hit = f(&ev);
                    self.seen.push(ev);
                    if let Some(v) = hit {
                        return v;
                    }
                }
                _ => panic!("no {what} within 15 s; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for the connection to drop (the driver then reconnects).
    async fn connection_lost(&mut self) {
        self.wait("offline", |e| {
            matches!(
                e,
                XmppEvent::Offline {
                    permanent: false,
                    ..
                }
            )
            .then_some(())
        })
        .await;
    }

    /// Keeps whatever events are waiting.
    fn drain(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.seen.push(ev);
        }
    }

    /// Like [`Account::wait`], but an event already seen counts too.
    async fn seen_or_wait<T>(&mut self, what: &str, f: impl Fn(&XmppEvent) -> Option<T>) -> T {
        if let Some(v) = self.seen.iter().find_map(&f) {
            return v;
        }
        self.wait(what, f).await
    }

    async fn online(&mut self) {
        self.wait("online", |e| {
            matches!(e, XmppEvent::Online { .. }).then_some(())
        })
        .await;
        self.wait("roster", |e| {
            matches!(e, XmppEvent::Roster(_)).then_some(())
        })
        .await;
    }

    fn messages(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                XmppEvent::Message { body, .. } => Some(body.clone()),
                _ => None,
            })
            .collect()
    }
}

async fn befriend(a: &mut Account, b: &mut Account, a_jid: &str, b_jid: &str) {
    a.handle.command(XmppCommand::AddContact {
        jid: jid(b_jid),
        name: Some("Bob".into()),
        group: Some("Friends".into()),
    });
    let waiting = a
        .wait("waiting contact", |e| match e {
            XmppEvent::ContactUpdated(c) if c.jid == jid(b_jid) && c.waiting => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(waiting.name.as_deref(), Some("Bob"));
    assert_eq!(waiting.group.as_deref(), Some("Friends"));
    b.wait("request", |e| {
        matches!(e, XmppEvent::SubscriptionRequest { from } if *from == jid(a_jid)).then_some(())
    })
    .await;
    b.handle.command(XmppCommand::Authorize(jid(a_jid)));
    a.wait("authorized", |e| match e {
        XmppEvent::ContactUpdated(c) if c.jid == jid(b_jid) && c.we_see_them => Some(()),
        _ => None,
    })
    .await;
    a.wait("bob online", |e| {
        matches!(e, XmppEvent::Presence { jid: j, show: Show::Available } if *j == jid(b_jid))
            .then_some(())
    })
    .await;
}

per_server!(
    roster_messages_offline_delivery_and_subscriptions,
    roster_messages_offline_delivery_and_subscriptions_on
);
async fn roster_messages_offline_delivery_and_subscriptions_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    for u in ["alice", "bob", "carol", "dave"] {
        create(&server, u).await;
    }
    let mut alice = login(&server, "alice");
    let mut bob = login(&server, "bob");
    alice.online().await;
    bob.online().await;
    befriend(&mut alice, &mut bob, "alice@localhost", "bob@localhost").await;
    // And the other way: bob's authorization asked to see alice; alice authorizes. (The
    // request may have come while alice waited for bob's presence: ejabberd sends it
    // sooner than Prosody.)
    alice
        .seen_or_wait("bob's request", |e| {
            matches!(e, XmppEvent::SubscriptionRequest { from } if *from == jid("bob@localhost"))
                .then_some(())
        })
        .await;
    alice
        .handle
        .command(XmppCommand::Authorize(jid("bob@localhost")));
    bob.wait("alice authorized", |e| match e {
        XmppEvent::ContactUpdated(c)
            if c.jid == jid("alice@localhost") && c.we_see_them && c.they_see_us =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    alice.handle.command(XmppCommand::Send {
        to: jid("bob@localhost"),
        body: "hi bob".into(),
        id: None,
    });
    alice
        .wait("delivery", |e| {
            matches!(e, XmppEvent::Delivered { .. }).then_some(())
        })
        .await;
    bob.wait("message", |e| {
        matches!(e, XmppEvent::Message { body, .. } if body == "hi bob").then_some(())
    })
    .await;
    bob.handle.command(XmppCommand::Send {
        to: jid("alice@localhost"),
        body: "hi alice".into(),
        id: None,
    });
    alice
        .wait("reply", |e| {
            matches!(e, XmppEvent::Message { body, .. } if body == "hi alice").then_some(())
        })
        .await;

    // Rename and move.
    alice.handle.command(XmppCommand::UpdateContact {
        jid: jid("bob@localhost"),
        name: Some("Robert".into()),
        group: Some("Work".into()),
    });
    alice
        .wait("renamed", |e| match e {
            XmppEvent::ContactUpdated(c)
                if c.name.as_deref() == Some("Robert") && c.group.as_deref() == Some("Work") =>
            {
                Some(())
            }
            _ => None,
        })
        .await;

    // Offline delivery: bob leaves, alice writes, bob comes back.
    bob.handle.command(XmppCommand::Stop);
    alice
        .wait("bob offline", |e| {
            matches!(
                e,
                XmppEvent::Presence {
                    show: Show::Offline,
                    ..
                }
            )
            .then_some(())
        })
        .await;
    alice.handle.command(XmppCommand::Send {
        to: jid("bob@localhost"),
        body: "while you were out".into(),
        id: None,
    });
    alice
        .wait("stored", |e| {
            matches!(e, XmppEvent::Delivered { .. }).then_some(())
        })
        .await;
    let mut bob = login(&server, "bob");
    let delayed = bob
        .wait("offline message", |e| match e {
            XmppEvent::Message { body, delayed, .. } if body == "while you were out" => {
                Some(*delayed)
            }
            _ => None,
        })
        .await;
    assert!(delayed, "marked as delivered later by the server");

    // Deny: carol asks alice, alice denies; carol is told (her contact stays unauthorized).
    let mut carol = login(&server, "carol");
    carol.online().await;
    carol.handle.command(XmppCommand::AddContact {
        jid: jid("alice@localhost"),
        name: None,
        group: None,
    });
    alice
        .wait("carol's request", |e| {
            matches!(e, XmppEvent::SubscriptionRequest { from } if *from == jid("carol@localhost"))
                .then_some(())
        })
        .await;
    alice
        .handle
        .command(XmppCommand::Deny(jid("carol@localhost")));
    carol
        .wait("denied", |e| match e {
            XmppEvent::ContactUpdated(c)
                if c.jid == jid("alice@localhost") && !c.waiting && !c.we_see_them =>
            {
                Some(())
            }
            _ => None,
        })
        .await;

    // Ignore: dave asks alice; alice does nothing; dave keeps waiting.
    let mut dave = login(&server, "dave");
    dave.online().await;
    dave.handle.command(XmppCommand::AddContact {
        jid: jid("alice@localhost"),
        name: None,
        group: None,
    });
    alice
        .wait("dave's request", |e| {
            matches!(e, XmppEvent::SubscriptionRequest { from } if *from == jid("dave@localhost"))
                .then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // give a wrong answer time to arrive
    dave.drain();
    let last = dave.seen.iter().rev().find_map(|e| match e {
        XmppEvent::ContactUpdated(c) if c.jid == jid("alice@localhost") => Some(c.clone()),
        _ => None,
    });
    assert!(
        last.is_some_and(|c| c.waiting && !c.we_see_them),
        "dave still waits: {:?}",
        dave.seen
    );

    // Remove.
    alice
        .handle
        .command(XmppCommand::RemoveContact(jid("bob@localhost")));
    alice
        .wait("removed", |e| {
            matches!(e, XmppEvent::ContactRemoved(j) if *j == jid("bob@localhost")).then_some(())
        })
        .await;
    assert_eq!(
        bob.messages()
            .iter()
            .filter(|m| *m == "while you were out")
            .count(),
        1
    );
}

per_server!(rooms_with_two_members, rooms_with_two_members_on);
async fn rooms_with_two_members_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    create(&server, "alice").await;
    create(&server, "bob").await;
    let mut alice = login(&server, "alice");
    let mut bob = login(&server, "bob");
    alice.online().await;
    bob.online().await;
    let room = jid("secret@conference.localhost");
    alice.handle.command(XmppCommand::JoinRoom {
        room: room.clone(),
        nick: "Alice".into(),
        password: None,
    });
    alice
        .wait("joined", |e| {
            matches!(e, XmppEvent::RoomJoined { .. }).then_some(())
        })
        .await;
    bob.handle.command(XmppCommand::JoinRoom {
        room: room.clone(),
        nick: "Bob".into(),
        password: None,
    });
    bob.wait("joined", |e| {
        matches!(e, XmppEvent::RoomJoined { .. }).then_some(())
    })
    .await;
    alice
        .wait("two occupants", |e| match e {
            XmppEvent::RoomOccupants { occupants, .. } if occupants.len() == 2 => Some(()),
            _ => None,
        })
        .await;
    alice.handle.command(XmppCommand::SendRoom {
        room: room.clone(),
        body: "hello room".into(),
    });
    let nick = bob
        .wait("room message", |e| match e {
            XmppEvent::RoomMessage { body, nick, .. } if body == "hello room" => Some(nick.clone()),
            _ => None,
        })
        .await;
    assert_eq!(nick, "Alice");
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.drain();
    assert!(
        !alice
            .seen
            .iter()
            .any(|e| matches!(e, XmppEvent::RoomMessage { body, .. } if body == "hello room")),
        "own echo not repeated"
    );
    bob.handle.command(XmppCommand::LeaveRoom(room.clone()));
    alice
        .wait("bob left", |e| match e {
            XmppEvent::RoomOccupants { occupants, .. }
                if occupants == &vec!["Alice".to_owned()] =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
}

per_server!(
    server_restart_loses_and_duplicates_nothing,
    server_restart_loses_and_duplicates_nothing_on
);
async fn server_restart_loses_and_duplicates_nothing_on(kind: ServerKind) {
    let mut server = XmppServer::start(kind).expect("server starts");
    create(&server, "alice").await;
    create(&server, "bob").await;
    let mut alice = login(&server, "alice");
    let mut bob = login(&server, "bob");
    alice.online().await;
    bob.online().await;
    befriend(&mut alice, &mut bob, "alice@localhost", "bob@localhost").await;

    server.go_down();
    alice.connection_lost().await;
    // Typed while the server is down.
    for i in 0..3 {
        alice.handle.command(XmppCommand::Send {
            to: jid("bob@localhost"),
            body: format!("queued {i}"),
            id: None,
        });
    }
    server.restart().expect("server again");
    let back = Instant::now();
    alice
        .wait("alice back", |e| {
            matches!(e, XmppEvent::Online { .. }).then_some(())
        })
        .await;
    // Once the server accepts again, the client is back within its longest retry delay
    // (4 s) and a login or two. ejabberd takes long enough to boot that the delay has
    // reached that cap, and the first session after its crash fails to resume and is
    // checked on a connection of its own before the next.
    let bound = Duration::from_secs(match kind {
        ServerKind::Prosody => 5,
        ServerKind::Ejabberd => 12,
    });
    assert!(
        back.elapsed() < bound,
        "back within {bound:?}, took {:?}",
        back.elapsed()
    );
    let all_seen = |seen: &[String]| (0..3).all(|i| seen.contains(&format!("queued {i}")));
    collect_messages(&mut bob, Duration::from_secs(10), all_seen).await;
    let mut again = None;
    if !all_seen(&bob.messages()) && kind == ServerKind::Ejabberd {
        // ejabberd 23.01 writes its offline store behind: a message stored while the
        // recipient's first presence is being handled misses that delivery and comes at
        // the next login. Log in again: it must come then, and only once.
        bob.handle.command(XmppCommand::Stop);
        let mut next = login(&server, "bob");
        next.online().await;
        let before = bob.messages();
        collect_messages(&mut next, Duration::from_secs(10), |m| {
            all_seen(&[before.clone(), m.to_vec()].concat())
        })
        .await;
        again = Some(next);
    }
    // Anything more that would come, comes now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut received = Vec::new();
    for account in std::iter::once(&mut bob).chain(again.as_mut()) {
        account.drain();
        received.extend(account.messages());
    }
    for i in 0..3 {
        let n = received
            .iter()
            .filter(|m| **m == format!("queued {i}"))
            .count();
        assert_eq!(
            n, 1,
            "message {i} seen {n} times; bob saw {:?}; alice saw {:?}",
            bob.seen, alice.seen
        );
    }
}

/// Messages the account receives until `done` says enough or `limit` passes.
async fn collect_messages(
    account: &mut Account,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let got = account.messages();
        if done(&got) {
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, account.events.recv()).await {
            Ok(Some(ev)) => account.seen.push(ev),
            _ => return account.messages(),
        }
    }
}

per_server!(
    wrong_password_stops_the_account,
    wrong_password_stops_the_account_on
);
async fn wrong_password_stops_the_account_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    create(&server, "alice").await;
    let (_h, mut events) =
        account::start(connector(&server), jid("alice@localhost"), "wrong".into());
    let start = Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(
                    e @ XmppEvent::Offline {
                        permanent: true, ..
                    },
                ) => return e,
                Some(_) => {}
                None => panic!("ended without a reason"),
            }
        }
    })
    .await
    .expect("an error within seconds");
    assert_eq!(
        ev,
        XmppEvent::Offline {
            reason: "wrong username or password".into(),
            permanent: true
        }
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

per_server!(
    a_room_created_with_a_password_requires_it,
    a_room_created_with_a_password_requires_it_on
);
async fn a_room_created_with_a_password_requires_it_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    create(&server, "alice").await;
    create(&server, "bob").await;
    let mut alice = login(&server, "alice");
    let mut bob = login(&server, "bob");
    alice.online().await;
    bob.online().await;
    let room = jid("locked@conference.localhost");
    alice.handle.command(XmppCommand::JoinRoom {
        room: room.clone(),
        nick: "Alice".into(),
        password: Some("open sesame".into()),
    });
    alice
        .wait("room protected", |e| {
            matches!(e, XmppEvent::RoomProtected { .. }).then_some(())
        })
        .await;
    for wrong in [None, Some("guess".to_owned())] {
        bob.handle.command(XmppCommand::JoinRoom {
            room: room.clone(),
            nick: "Bob".into(),
            password: wrong.clone(),
        });
        let reason = bob
            .wait("refused", |e| match e {
                XmppEvent::Error { reason } => Some(reason.clone()),
                XmppEvent::RoomJoined { .. } => panic!("joined with {wrong:?}"),
                _ => None,
            })
            .await;
        assert_eq!(
            reason,
            "cannot join locked@conference.localhost: wrong room password"
        );
    }
    bob.handle.command(XmppCommand::JoinRoom {
        room: room.clone(),
        nick: "Bob".into(),
        password: Some("open sesame".into()),
    });
    bob.wait("joined", |e| {
        matches!(e, XmppEvent::RoomJoined { .. }).then_some(())
    })
    .await;
    alice
        .wait("two occupants", |e| match e {
            XmppEvent::RoomOccupants { occupants, .. } if occupants.len() == 2 => Some(()),
            _ => None,
        })
        .await;
}

per_server!(
    a_dropped_connection_resumes_its_session_and_loses_nothing,
    a_dropped_connection_resumes_on
);
async fn a_dropped_connection_resumes_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    create(&server, "alice").await;
    create(&server, "bob").await;
    // Alice goes through a relay that can drop her connection with the server still up.
    let relay = hush_harness::Relay::start(server.port()).expect("relay");
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let via_relay = HushConnector::direct(
        "127.0.0.1",
        relay.port(),
        Trust::Pinned(cert_fingerprint_from_pem(&pem).expect("fp")),
    );
    let mut alice = login_via(via_relay, "alice");
    let mut bob = login(&server, "bob");
    alice.online().await;
    bob.online().await;
    befriend(&mut alice, &mut bob, "alice@localhost", "bob@localhost").await;

    relay.cut();
    alice.connection_lost().await;
    // Written to alice while her connection is down: her session, kept by the server,
    // holds it until she resumes.
    bob.handle.command(XmppCommand::Send {
        to: jid("alice@localhost"),
        body: "while you were away".into(),
        id: None,
    });
    let resumed = alice
        .wait("alice back", |e| match e {
            XmppEvent::Online { resumed } => Some(*resumed),
            _ => None,
        })
        .await;
    assert!(
        resumed,
        "the session was resumed (XEP-0198), not started again; saw {:?}",
        alice.seen
    );
    collect_messages(&mut alice, Duration::from_secs(10), |m| {
        m.iter().any(|b| b == "while you were away")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    alice.drain();
    let n = alice
        .messages()
        .iter()
        .filter(|b| *b == "while you were away")
        .count();
    assert_eq!(n, 1, "delivered once; alice saw {:?}", alice.seen);
}
