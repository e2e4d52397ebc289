use super::*;

fn jid(s: &str) -> BareJid {
    s.parse().expect("jid")
}

fn drain(c: &mut ChatCore) -> Vec<Outbound> {
    std::iter::from_fn(|| c.poll_outbound()).collect()
}

fn events(c: &mut ChatCore) -> Vec<XmppEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn messages_typed_offline_go_out_once_after_reconnect() {
    let mut c = ChatCore::new(jid("alice@localhost"), "s1".into());
    let id = c
        .send_message(jid("bob@localhost"), "hello".into(), None)
        .expect("queued");
    assert!(drain(&mut c).is_empty(), "nothing goes out while offline");
    c.online(false);
    let out = drain(&mut c);
    let msgs: Vec<&Outbound> = out.iter().filter(|o| o.track.is_some()).collect();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].track.as_deref(), Some(id.as_str()));
    // Connection lost before the server acknowledged: resent with the same id.
    c.offline("gone".into(), false);
    c.online(false);
    let again: Vec<Outbound> = drain(&mut c)
        .into_iter()
        .filter(|o| o.track.is_some())
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].track.as_deref(), Some(id.as_str()));
    c.delivered(&id);
    assert_eq!(c.pending(), 0);
    // A resumed session does not resend.
    c.offline("blip".into(), false);
    c.online(true);
    assert!(drain(&mut c).iter().all(|o| o.track.is_none()));
}

#[test]
fn duplicate_ids_are_shown_once() {
    let mut c = ChatCore::new(jid("bob@localhost"), "s2".into());
    let mut m = Message::chat(Some(Jid::from(jid("bob@localhost"))));
    m.from = Some("alice@localhost/phone".parse().expect("jid"));
    m.id = Some(tokio_xmpp::parsers::message::Id("x-1".into()));
    m.bodies.insert(Default::default(), "hi".into());
    c.handle(m.clone().into());
    c.handle(m.into());
    let got: Vec<XmppEvent> = events(&mut c)
        .into_iter()
        .filter(|e| matches!(e, XmppEvent::Message { .. }))
        .collect();
    assert_eq!(got.len(), 1);
}

#[test]
fn subscription_requests_wait_for_a_decision() {
    let mut c = ChatCore::new(jid("bob@localhost"), "s3".into());
    let mut p = Presence::new(PresenceType::Subscribe);
    p.from = Some(Jid::from(jid("carol@localhost")));
    c.handle(p.clone().into());
    c.handle(p.into());
    assert_eq!(
        events(&mut c),
        vec![XmppEvent::SubscriptionRequest {
            from: jid("carol@localhost")
        }]
    );
    assert_eq!(c.requests().count(), 1, "ignored requests stay listed");
    c.deny(jid("carol@localhost"));
    assert_eq!(c.requests().count(), 0);
    let out = drain(&mut c);
    assert!(matches!(&out[0].stanza, Stanza::Presence(p) if p.type_ == PresenceType::Unsubscribed));
}

#[test]
fn unknown_iqs_get_an_error_and_foreign_roster_pushes_are_refused() {
    let mut c = ChatCore::new(jid("bob@localhost"), "s4".into());
    let payload: Element = "<query xmlns='jabber:iq:version'/>".parse().expect("xml");
    c.handle(
        Iq::Get {
            from: Some(Jid::from(jid("eve@localhost"))),
            to: None,
            id: "v1".into(),
            payload,
        }
        .into(),
    );
    let push: Element = "<query xmlns='jabber:iq:roster'><item jid='mallory@evil'/></query>"
        .parse()
        .expect("xml");
    c.handle(
        Iq::Set {
            from: Some(Jid::from(jid("eve@localhost"))),
            to: None,
            id: "p1".into(),
            payload: push,
        }
        .into(),
    );
    let out = drain(&mut c);
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|o| matches!(&o.stanza, Stanza::Iq(Iq::Error { .. })))
    );
    assert!(
        events(&mut c).is_empty(),
        "no roster change from a stranger"
    );
}

fn chat_from(from: &str, id: &str, body: &str) -> Stanza {
    let mut m = Message::chat(Some(Jid::from(jid("bob@localhost"))));
    m.from = Some(from.parse().expect("jid"));
    m.id = Some(tokio_xmpp::parsers::message::Id(id.into()));
    m.bodies.insert(Default::default(), body.into());
    m.into()
}

#[test]
fn a_flood_of_senders_keeps_per_sender_state_bounded() {
    let mut c = ChatCore::new(jid("bob@localhost"), "s6".into());
    c.online(false);
    drain(&mut c);
    // The roster (our first IQ) holds one friend.
    let roster: Element = "<query xmlns='jabber:iq:roster'>\
         <item jid='friend@localhost' subscription='both'/></query>"
        .parse()
        .expect("xml");
    c.handle(
        Iq::Result {
            from: None,
            to: None,
            id: "s6-1".into(),
            payload: Some(roster),
        }
        .into(),
    );
    events(&mut c);
    let long_id = "i".repeat(1_000);
    for i in 0..5_000 {
        let sender = format!("s{i}@evil.example");
        c.handle(chat_from(
            &format!("{sender}/r{i}"),
            &format!("{long_id}{i}"),
            "hi",
        ));
        let mut p = Presence::new(PresenceType::None);
        p.from = Some(format!("{sender}/r{i}").parse().expect("jid"));
        c.handle(p.into());
        let mut p = Presence::new(PresenceType::Subscribe);
        p.from = Some(sender.parse().expect("jid"));
        c.handle(p.into());
        let mut p = Presence::new(PresenceType::None);
        p.from = Some(format!("friend@localhost/device{i}").parse().expect("jid"));
        c.handle(p.into());
        // The server never answers our IQs (and keeps resetting the stream).
        c.set_contact(jid("friend@localhost"), Some(format!("F{i}")), None);
        if i % 10 == 0 {
            c.offline("gone".into(), false);
            c.online(false);
        }
        drain(&mut c);
        events(&mut c);
    }
    let t = c.tracked();
    assert!(t.senders <= MAX_SENDERS, "{t:?}");
    assert!(t.message_ids <= MAX_SENDERS * SEEN_IDS, "{t:?}");
    assert_eq!(t.present, 1, "only the friend's presence is kept: {t:?}");
    assert!(t.resources <= MAX_RESOURCES, "{t:?}");
    assert!(t.pending_iqs <= MAX_PENDING_IQS, "{t:?}");
    assert!(t.requests <= MAX_REQUESTS, "{t:?}");
    // The friend still gets through, once.
    c.handle(chat_from("friend@localhost/phone", "f-1", "still here"));
    c.handle(chat_from("friend@localhost/phone", "f-1", "still here"));
    let got: Vec<XmppEvent> = events(&mut c)
        .into_iter()
        .filter(
            |e| matches!(e, XmppEvent::Message { from, .. } if *from == jid("friend@localhost")),
        )
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    // The newest requests are the ones kept.
    assert!(c.requests().any(|r| *r == jid("s4999@evil.example")));
}

#[test]
fn oversized_and_empty_bodies() {
    let mut c = ChatCore::new(jid("bob@localhost"), "s5".into());
    assert!(c.send_message(jid("a@b"), String::new(), None).is_none());
    assert!(
        c.send_message(jid("a@b"), "x".repeat(MAX_BODY + 1), None)
            .is_none()
    );
    let mut m = Message::chat(None);
    m.from = Some(Jid::from(jid("a@b")));
    m.bodies
        .insert(Default::default(), "y".repeat(MAX_BODY + 1));
    c.handle(m.into());
    assert!(
        !events(&mut c)
            .iter()
            .any(|e| matches!(e, XmppEvent::Message { .. }))
    );
}

/// An online core whose roster (its first IQ, `{prefix}-1`) holds `friend`.
fn with_friend(prefix: &str, friend: &str) -> ChatCore {
    let mut c = ChatCore::new(jid("bob@localhost"), prefix.into());
    c.online(false);
    drain(&mut c);
    let roster: Element = format!(
        "<query xmlns='jabber:iq:roster'><item jid='{friend}' subscription='both'/></query>"
    )
    .parse()
    .expect("xml");
    c.handle(
        Iq::Result {
            from: None,
            to: None,
            id: format!("{prefix}-1"),
            payload: Some(roster),
        }
        .into(),
    );
    events(&mut c);
    c
}

fn subscribe(c: &mut ChatCore, from: &str) {
    let mut p = Presence::new(PresenceType::Subscribe);
    p.from = Some(from.parse().expect("jid"));
    c.handle(p.into());
}

#[test]
fn strangers_never_push_out_the_message_ids_of_senders_the_user_knows() {
    let mut c = with_friend("s7", "friend@localhost");
    // Someone outside the roster the user wrote to.
    c.engage(jid("pen-pal@elsewhere.example"));
    let known = ["friend@localhost/phone", "pen-pal@elsewhere.example/laptop"];
    for from in known {
        c.handle(chat_from(from, "m-1", "once"));
    }
    assert_eq!(events(&mut c).len(), 2);
    // More strangers than the cap write, each once.
    for i in 0..(MAX_SENDERS * 2) {
        c.handle(chat_from(&format!("s{i}@evil.example/r"), "x", "hi"));
    }
    events(&mut c);
    let t = c.tracked();
    assert!(t.senders <= MAX_SENDERS, "{t:?}");
    assert_eq!(t.known_senders, 2, "{t:?}");
    // Both resend the same message (their server lost our acknowledgement): it is
    // shown once.
    for from in known {
        c.handle(chat_from(from, "m-1", "once"));
    }
    assert!(events(&mut c).is_empty(), "shown twice");
    // Removed from the roster, the friend is a stranger again: bounded like one.
    c.handle(
        Iq::Set {
            from: None,
            to: None,
            id: "push-1".into(),
            payload: "<query xmlns='jabber:iq:roster'>\
                      <item jid='friend@localhost' subscription='remove'/></query>"
                .parse()
                .expect("xml"),
        }
        .into(),
    );
    assert_eq!(c.tracked().known_senders, 1);
}

#[test]
fn a_flood_of_requests_never_drops_a_known_senders_and_says_what_it_drops() {
    let mut c = with_friend("s8", "friend@localhost");
    c.engage(jid("pen-pal@elsewhere.example"));
    subscribe(&mut c, "friend@localhost");
    subscribe(&mut c, "pen-pal@elsewhere.example");
    let flood = MAX_REQUESTS + 44;
    for i in 0..flood {
        subscribe(&mut c, &format!("s{i}@evil.example"));
    }
    let dropped: Vec<BareJid> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            XmppEvent::RequestDropped { from } => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 44, "each drop is reported");
    assert_eq!(dropped[0], jid("s0@evil.example"), "the oldest first");
    assert!(c.requests().any(|r| *r == jid("friend@localhost")));
    assert!(c.requests().any(|r| *r == jid("pen-pal@elsewhere.example")));
    assert_eq!(c.tracked().requests, MAX_REQUESTS + 2);
}
