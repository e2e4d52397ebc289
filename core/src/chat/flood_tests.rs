//! The chat layer against senders who complete OTR key exchanges, with real libotr on
//! both sides and no server: what the layer tells the account comes out of a detached
//! account handle, and its messages cross a simulated link (`hush-sim`) into the
//! senders' engines, and back.

use super::limits::{MAX_CONVERSATIONS, MAX_PRIVATE_STRANGERS};
use super::otr::{Received, Stored};
use super::{Account, ChatInput, ChatLayer};
use crate::event::Event;
use crate::model::{AccountId, OtrPolicySetting};
use crate::snapshot::{ContactView, Presence, Subscription};
use hush_signaling::otr::{ChatSecurity, OtrEngine};
use hush_signaling::xmpp::account::{XmppCommand, XmppHandle};
use hush_signaling::xmpp::chat::XmppEvent;
use hush_sim::{Conditions, Endpoint, Pair};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const A: AccountId = AccountId(1);
const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const CAROL: &str = "carol@localhost";
/// Not in the roster, but alice verified dave's key in an earlier session.
const DAVE: &str = "dave@localhost";

/// Alice's chat layer: one account, with bob and carol in the roster, and dave's key
/// verified in her fingerprints file.
async fn alice() -> (ChatLayer, UnboundedReceiver<XmppCommand>) {
    let (mut layer, rx, mut inputs) = alice_making_her_key().await;
    let made = next_key(&mut inputs).await;
    let mut events = Vec::new();
    layer.input(made, &mut events, &mut Vec::new()).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::OtrKey { account, .. } if *account == A)),
        "{events:?}"
    );
    (layer, rx)
}

/// Her first key, made off the layer's task, as it comes back to the layer.
async fn next_key(inputs: &mut UnboundedReceiver<ChatInput>) -> ChatInput {
    let made = tokio::time::timeout(std::time::Duration::from_secs(30), inputs.recv())
        .await
        .expect("the key in time")
        .expect("the key");
    assert!(matches!(made, ChatInput::Key(_)));
    made
}

/// Alice's layer, connected, while her first key is still being made.
async fn alice_making_her_key() -> (
    ChatLayer,
    UnboundedReceiver<XmppCommand>,
    UnboundedReceiver<ChatInput>,
) {
    let (tx, inputs) = tokio::sync::mpsc::unbounded_channel();
    let mut layer = ChatLayer::new(tx);
    let stored = Stored {
        fingerprints: Some(
            format!(
                "{DAVE}\t{ALICE}\tprpl-jabber\t{}\tverified\n",
                "d1".repeat(20)
            )
            .into_bytes(),
        ),
        ..Stored::default()
    };
    layer.load_otr(stored).await.expect("otr");
    let (handle, rx) = XmppHandle::detached();
    let contacts = [BOB, CAROL]
        .into_iter()
        .map(|c| {
            let view = ContactView {
                account: A,
                address: c.into(),
                alias: None,
                group: None,
                presence: Presence::Offline,
                subscription: Subscription::Authorized,
            };
            (c.to_owned(), view)
        })
        .collect::<BTreeMap<_, _>>();
    layer.accounts.insert(
        A,
        Account {
            handle,
            jid: ALICE.parse().expect("jid"),
            contacts,
            otr_policy: OtrPolicySetting::Opportunistic,
        },
    );
    layer
        .otr_attach(A, ALICE, OtrPolicySetting::Opportunistic, &mut Vec::new())
        .await
        .expect("attach");
    (layer, rx, inputs)
}

/// One engine speaking for `n` strangers, one DSA key shared by all (generating one
/// each would take minutes): `s{i}@evil.example`.
fn strangers(n: usize) -> (OtrEngine, Vec<String>) {
    let mut e = OtrEngine::new().expect("libotr");
    // `(privkeys (account (name "s0@evil.example") ...))`; the key itself may hold any
    // byte, so the one account block is cut by position, not parsed.
    let file = e.generate_key("s0@evil.example").expect("key").to_vec();
    let at = |needle: &[u8]| file.windows(needle.len()).position(|w| w == needle);
    let start = at(b"(account").expect("an account block");
    let end = file
        .iter()
        .rposition(|b| *b == b')')
        .expect("the list's end");
    let name = at(b"\"s0@evil.example\"").expect("the account name");
    let names: Vec<String> = (0..n).map(|i| format!("s{i}@evil.example")).collect();
    let mut all = b"(privkeys\n".to_vec();
    for other in &names {
        all.extend_from_slice(&file[start..name]);
        all.extend_from_slice(format!("\"{other}\"").as_bytes());
        all.extend_from_slice(&file[name + b"\"s0@evil.example\"".len()..end]);
        all.push(b'\n');
    }
    all.extend_from_slice(b")\n");
    e.load_private_keys(&all).expect("keys");
    (e, names)
}

/// A message between alice's account and a buddy's.
#[derive(Clone)]
struct Stanza {
    from: String,
    to: String,
    body: String,
}

/// Alice's layer as one end of a simulated link: what it tells the account to send
/// goes out, what arrives goes through the layer as the account would deliver it.
struct Alice<'a> {
    layer: &'a mut ChatLayer,
    rx: &'a mut UnboundedReceiver<XmppCommand>,
    events: &'a mut Vec<Event>,
}

impl Endpoint for Alice<'_> {
    type Message = Stanza;
    fn transmit(&mut self, _: Instant) -> Option<Stanza> {
        while let Ok(command) = self.rx.try_recv() {
            if let XmppCommand::Send { to, body, .. } = command {
                let from = ALICE.to_owned();
                return Some(Stanza {
                    from,
                    to: to.to_string(),
                    body,
                });
            }
        }
        None
    }
    fn receive(&mut self, _: Instant, s: Stanza) {
        let message = Received {
            from: s.from,
            id: String::new(),
            body: s.body,
            delayed: false,
        };
        let mut log = Vec::new();
        let received = self.layer.receive(A, message, self.events, &mut log);
        // The layer waits on libotr's thread: the runtime lends this thread for it.
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(received));
    }
    fn next_timeout(&self) -> Option<Instant> {
        None
    }
    fn timeout(&mut self, _: Instant) {}
}

/// A libotr engine speaking for one buddy or many, at the other end.
struct Buddies<'a>(&'a mut OtrEngine);

impl Endpoint for Buddies<'_> {
    type Message = Stanza;
    fn transmit(&mut self, _: Instant) -> Option<Stanza> {
        self.0.poll_transmit().map(|t| Stanza {
            from: t.account,
            to: t.to,
            body: t.body,
        })
    }
    fn receive(&mut self, _: Instant, s: Stanza) {
        let _ = self.0.receive(&s.to, &s.from, &s.body);
        while self.0.poll_event().is_some() {}
    }
    fn next_timeout(&self) -> Option<Instant> {
        None
    }
    fn timeout(&mut self, _: Instant) {}
}

/// Moves messages between alice's layer and `peer` over a link with a server's
/// delay until both are quiet (bounded by the simulation).
fn exchange(
    layer: &mut ChatLayer,
    rx: &mut UnboundedReceiver<XmppCommand>,
    peer: &mut OtrEngine,
    events: &mut Vec<Event>,
) {
    let alice = Alice { layer, rx, events };
    let delay = Conditions::latency(Duration::from_millis(30));
    Pair::new(alice, Buddies(peer), delay, 7).drive();
}

fn has_line(layer: &ChatLayer, peer: &str, body: &str, encrypted: bool) -> bool {
    layer.chats.get(&(A, peer.to_owned())).is_some_and(|c| {
        c.lines
            .iter()
            .any(|l| !l.notice && l.body == body && l.encrypted == encrypted)
    })
}

fn private_strangers(layer: &ChatLayer) -> usize {
    layer
        .chats
        .iter()
        .filter(|((_, peer), c)| c.private() && peer.ends_with("@evil.example"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_strangers_never_crowd_out_contacts_or_decrypted_lines() {
    let (mut layer, mut rx) = alice().await;
    let mut events = Vec::new();
    // As many strangers as there are conversation slots complete a key exchange with
    // alice (her policy answers anyone who offers OTR).
    let (mut m, names) = strangers(MAX_CONVERSATIONS + 1);
    for n in &names[..MAX_CONVERSATIONS] {
        m.start(n, ALICE).expect("start");
        exchange(&mut layer, &mut rx, &mut m, &mut events);
    }
    assert_eq!(private_strangers(&layer), MAX_PRIVATE_STRANGERS);
    assert!(layer.chats.len() <= MAX_CONVERSATIONS);
    let ended = events
        .iter()
        .filter(|e| matches!(e, Event::ChatLine { line, .. } if line.notice && line.body.contains("was ended")))
        .count();
    assert_eq!(ended, MAX_CONVERSATIONS - MAX_PRIVATE_STRANGERS);
    // The oldest were ended, and each stranger was told.
    assert_eq!(m.state(&names[0], ALICE), ChatSecurity::Finished);
    assert_eq!(
        m.state(&names[MAX_CONVERSATIONS - 1], ALICE),
        ChatSecurity::PrivateUnverified
    );

    // A contact with no conversation in memory goes private and writes: shown.
    let mut bob = OtrEngine::new().expect("libotr");
    bob.generate_key(BOB).expect("key");
    bob.start(BOB, ALICE).expect("start");
    exchange(&mut layer, &mut rx, &mut bob, &mut events);
    bob.send(BOB, ALICE, "it's bob").expect("send");
    exchange(&mut layer, &mut rx, &mut bob, &mut events);
    assert!(has_line(&layer, BOB, "it's bob", true));

    // Then the user has a conversation of their own in every slot: nothing may go.
    for i in 0..MAX_CONVERSATIONS {
        layer
            .conversation(A, &format!("friend{i}@localhost"))
            .engaged = true;
    }
    // A contact's message is still shown, with no conversation in memory before...
    let from_carol = Received {
        from: CAROL.into(),
        id: "c1".into(),
        body: "carol here".into(),
        delayed: false,
    };
    layer
        .receive(A, from_carol, &mut events, &mut Vec::new())
        .await;
    assert!(has_line(&layer, CAROL, "carol here", false));
    // ...and so is that of a buddy whose key the user verified.
    let from_dave = Received {
        from: DAVE.into(),
        id: "d1".into(),
        body: "dave here".into(),
        delayed: false,
    };
    layer
        .receive(A, from_dave, &mut events, &mut Vec::new())
        .await;
    assert!(has_line(&layer, DAVE, "dave here", false));
    // ...and so is a stranger's message libotr decrypted (it cannot be decrypted again).
    let late = &names[MAX_CONVERSATIONS];
    m.start(late, ALICE).expect("start");
    exchange(&mut layer, &mut rx, &mut m, &mut events);
    m.send(late, ALICE, "decrypted once").expect("send");
    exchange(&mut layer, &mut rx, &mut m, &mut events);
    assert!(has_line(&layer, late, "decrypted once", true));
    assert_eq!(
        private_strangers(&layer),
        MAX_PRIVATE_STRANGERS,
        "still bounded"
    );
    // A stranger's plaintext only takes the room of an idle stranger's conversation
    // (one of those OTR ended); the table does not grow for it.
    let before = layer.chats.len();
    for i in 0..3 {
        let spam = Received {
            from: format!("nobody{i}@evil.example"),
            id: format!("n{i}"),
            body: "spam".into(),
            delayed: false,
        };
        layer.receive(A, spam, &mut events, &mut Vec::new()).await;
        assert_eq!(layer.chats.len(), before);
    }
    assert!(has_line(&layer, "nobody2@evil.example", "spam", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_someone_makes_the_account_keep_what_they_send_like_a_contacts() {
    let (mut layer, mut rx) = alice().await;
    let mut events = Vec::new();
    layer
        .send(
            A,
            "pen-pal@elsewhere.example",
            "hello".into(),
            &mut events,
            &mut Vec::new(),
        )
        .await
        .expect("send");
    let mut commands = Vec::new();
    while let Ok(c) = rx.try_recv() {
        commands.push(c);
    }
    assert!(
        matches!(commands.first(), Some(XmppCommand::Engage(j)) if j.to_string() == "pen-pal@elsewhere.example"),
        "{commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, XmppCommand::Send { .. })),
        "{commands:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buddy_who_goes_private_while_our_first_key_is_made_is_answered_once_it_is() {
    let (mut layer, mut rx, mut inputs) = alice_making_her_key().await;
    let mut events = Vec::new();
    let mut bob = OtrEngine::new().expect("libotr");
    bob.generate_key(BOB).expect("key");
    bob.start(BOB, ALICE).expect("start");
    // Bob's offer comes in through the account, before alice has a key: it waits (a
    // key exchange answered now would fail), and nothing goes out for it.
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    while let Some(t) = bob.poll_transmit() {
        let place = window.clone().acquire_owned().await.expect("a place");
        let ev = XmppEvent::Message {
            from: BOB.parse().expect("jid"),
            id: "b1".into(),
            body: t.body,
            delayed: false,
        };
        layer
            .input(ChatInput::Xmpp(A, ev, place), &mut events, &mut Vec::new())
            .await;
    }
    assert!(rx.try_recv().is_err(), "nothing is answered without a key");
    assert_eq!(window.available_permits(), 3, "the offer holds its place");
    assert!(!events.iter().any(|e| matches!(e, Event::ChatError { .. })));

    // The key comes: the offer is answered, and the exchange completes.
    let made = next_key(&mut inputs).await;
    layer.input(made, &mut events, &mut Vec::new()).await;
    assert_eq!(window.available_permits(), 4, "its place is given back");
    exchange(&mut layer, &mut rx, &mut bob, &mut events);
    assert_eq!(bob.state(BOB, ALICE), ChatSecurity::PrivateUnverified);
    bob.send(BOB, ALICE, "private at once").expect("send");
    exchange(&mut layer, &mut rx, &mut bob, &mut events);
    assert!(has_line(&layer, BOB, "private at once", true));
}

/// A plain message from bob, as the account delivers it, with its place in `window`.
async fn from_bob(window: &std::sync::Arc<tokio::sync::Semaphore>, body: &str) -> ChatInput {
    let place = window.clone().acquire_owned().await.expect("a place");
    let ev = XmppEvent::Message {
        from: BOB.parse().expect("jid"),
        id: body.into(),
        body: body.into(),
        delayed: true,
    };
    ChatInput::Xmpp(A, ev, place)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waited_for_the_key_is_read_in_order_even_if_the_account_went_offline() {
    let (mut layer, _rx, mut inputs) = alice_making_her_key().await;
    let mut events = Vec::new();
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    for body in ["stored while you were away", "and a second one"] {
        let input = from_bob(&window, body).await;
        layer.input(input, &mut events, &mut Vec::new()).await;
    }
    assert_eq!(window.available_permits(), 2, "both wait for the key");
    layer.disconnect(A);
    let made = next_key(&mut inputs).await;
    layer.input(made, &mut events, &mut Vec::new()).await;
    assert_eq!(window.available_permits(), 4);
    let lines: Vec<&str> = layer.chats[&(A, BOB.to_owned())]
        .lines
        .iter()
        .filter(|l| !l.notice)
        .map(|l| l.body.as_str())
        .collect();
    assert_eq!(lines, ["stored while you were away", "and a second one"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_key_does_not_release_what_waits_for_a_newer_one() {
    let (mut layer, _rx, mut inputs) = alice_making_her_key().await;
    let mut events = Vec::new();
    // The account reconnects under a new number's make (as after remove and add):
    // the first make's key arrives stale.
    let first = next_key(&mut inputs).await;
    let name = layer.otr.names[&A].clone();
    layer.make_key(A, name, false, None);
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let input = from_bob(&window, "wait for me").await;
    layer.input(input, &mut events, &mut Vec::new()).await;
    // The stale key is used (it is the account's), and from then on no message
    // needs to wait; the one waiting stays in order behind the newer make.
    layer.input(first, &mut events, &mut Vec::new()).await;
    assert_eq!(
        window.available_permits(),
        3,
        "still waiting for the newer make"
    );
    let second = next_key(&mut inputs).await;
    layer.input(second, &mut events, &mut Vec::new()).await;
    assert_eq!(window.available_permits(), 4);
    assert!(has_line(&layer, BOB, "wait for me", false));
}
