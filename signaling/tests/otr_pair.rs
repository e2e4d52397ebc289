//! Two libotr engines wired back to back in memory: AKE from either side, messages,
//! fragmentation, SMP with question and shared secret (right and wrong), fingerprint
//! verification, the buddy ending the session, "require encryption", hostile input.

use hush_signaling::otr::{
    ChatSecurity, Incoming, MAX_HELD, MIN_FRAGMENT, OtrEngine, OtrError, OtrEvent, OtrLimits,
    OtrPolicy, SmpEvent, Transmit,
};
use hush_sim::{Conditions, Endpoint};

use std::borrow::BorrowMut;
use std::time::Instant;

const A: &str = "alice@localhost";
const B: &str = "bob@localhost";

/// One side of a conversation: an engine (owned, or lent for one exchange), and what
/// its user was shown.
struct Side<'s, E> {
    engine: E,
    me: &'s str,
    peer: &'s str,
    shown: Vec<String>,
    /// Everything shown, with whether libotr decrypted it.
    incoming: Vec<Incoming>,
    events: Vec<OtrEvent>,
    /// What it put on the wire since the pair last collected it.
    sent: Vec<Transmit>,
}

/// A side that owns its engine (the pair's).
type Buddy = Side<'static, OtrEngine>;

impl<E: BorrowMut<OtrEngine>> std::ops::Deref for Side<'_, E> {
    type Target = OtrEngine;
    fn deref(&self) -> &OtrEngine {
        self.engine.borrow()
    }
}

impl<E: BorrowMut<OtrEngine>> std::ops::DerefMut for Side<'_, E> {
    fn deref_mut(&mut self) -> &mut OtrEngine {
        self.engine.borrow_mut()
    }
}

/// OTR has no timers: the links only carry the bodies, in order.
impl<E: BorrowMut<OtrEngine>> Endpoint for Side<'_, E> {
    type Message = String;

    fn transmit(&mut self, _now: Instant) -> Option<String> {
        let t = self.engine.borrow_mut().poll_transmit()?;
        let body = t.body.clone();
        self.sent.push(t);
        Some(body)
    }

    fn receive(&mut self, _now: Instant, body: String) {
        let engine = self.engine.borrow_mut();
        if let Some(s) = engine.receive(self.me, self.peer, &body) {
            self.shown.push(s.text.clone());
            self.incoming.push(s);
        }
        while let Some(e) = engine.poll_event() {
            self.events.push(e);
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        None
    }

    fn timeout(&mut self, _now: Instant) {}
}

impl<'s, E: BorrowMut<OtrEngine>> Side<'s, E> {
    fn new(engine: E, me: &'s str, peer: &'s str) -> Side<'s, E> {
        Side {
            engine,
            me,
            peer,
            shown: Vec::new(),
            incoming: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
        }
    }
}

fn buddy(me: &'static str, peer: &'static str) -> Buddy {
    let mut engine = engine();
    engine.generate_key(me).expect("key");
    Side::new(engine, me, peer)
}

struct Pair {
    a: Buddy,
    b: Buddy,
    /// Everything either side sent.
    wire: Vec<Transmit>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: buddy(A, B),
            b: buddy(B, A),
            wire: Vec::new(),
        }
    }

    /// Delivers everything in flight, in order, until both sides are quiet (hush-sim
    /// bounds the steps).
    fn settle(&mut self) {
        Pair::exchange(&mut self.a, &mut self.b);
        for side in [&mut self.a, &mut self.b] {
            while let Some(e) = side.engine.poll_event() {
                side.events.push(e);
            }
        }
        self.wire.append(&mut self.a.sent);
        self.wire.append(&mut self.b.sent);
    }

    fn exchange(a: &mut Buddy, b: &mut Buddy) {
        hush_sim::Pair::new(a, b, Conditions::perfect(), 0).drive();
    }

    fn private(&mut self) {
        self.a.start(A, B).expect("start");
        self.settle();
        assert_eq!(self.a.state(A, B), ChatSecurity::PrivateUnverified);
        assert_eq!(self.b.state(B, A), ChatSecurity::PrivateUnverified);
    }
}

fn engine() -> OtrEngine {
    OtrEngine::new().expect("libotr starts")
}

#[test]
fn ake_from_either_side_and_messages_both_ways() {
    let mut p = Pair::new();
    let fa = p.a.fingerprint(A).expect("fingerprint");
    assert_eq!(fa.split(' ').count(), 5);
    p.private();
    assert!(p.a.events.iter().any(|e| matches!(
        e,
        OtrEvent::Secure {
            verified: false,
            ..
        }
    )));
    assert_eq!(
        p.b.peer_fingerprint(B, A).as_deref(),
        Some(fa.as_str()),
        "bob sees alice's real fingerprint"
    );
    p.a.send(A, B, "the plan is on").expect("send");
    p.settle();
    assert_eq!(p.b.shown, vec!["the plan is on".to_owned()]);
    assert!(
        p.wire.iter().all(|t| !t.body.contains("the plan is on")),
        "nothing readable on the wire"
    );
    p.b.send(B, A, "understood").expect("send");
    p.settle();
    assert_eq!(p.a.shown, vec!["understood".to_owned()]);

    // Bob starts the next one.
    let mut q = Pair::new();
    q.b.start(B, A).expect("start");
    q.settle();
    assert_eq!(q.a.state(A, B), ChatSecurity::PrivateUnverified);
}

#[test]
fn long_messages_are_fragmented_and_reassembled() {
    let mut p = Pair::new();
    p.a.set_max_message_size(300);
    p.b.set_max_message_size(300);
    p.private();
    let long = "x".repeat(5000);
    p.wire.clear();
    p.a.send(A, B, &long).expect("send");
    p.settle();
    assert_eq!(p.b.shown, vec![long]);
    assert!(p.wire.len() > 10, "split into fragments: {}", p.wire.len());
    assert!(p.wire.iter().all(|t| t.body.len() <= 300));
}

#[test]
fn smp_with_question_and_with_shared_secret() {
    let mut p = Pair::new();
    p.private();
    let fb = p.b.fingerprint(B).expect("fp");
    // Question, right answer.
    p.a.smp_start(A, B, Some("where did we meet?"), "the library")
        .expect("smp");
    p.settle();
    assert!(p.b.events.iter().any(|e| matches!(e, OtrEvent::Smp { event: SmpEvent::AskedQuestion(q), .. } if q == "where did we meet?")));
    p.b.smp_respond(B, A, "the library").expect("respond");
    p.settle();
    assert!(p.a.events.iter().any(|e| matches!(
        e,
        OtrEvent::Smp {
            event: SmpEvent::Succeeded,
            ..
        }
    )));
    assert_eq!(p.a.state(A, B), ChatSecurity::PrivateVerified);
    assert!(
        p.a.known_fingerprints()
            .iter()
            .any(|k| k.fingerprint == fb && k.verified)
    );

    // Shared secret from bob's side, wrong answer.
    let mut q = Pair::new();
    q.private();
    q.b.smp_start(B, A, None, "blue").expect("smp");
    q.settle();
    assert!(q.a.events.iter().any(|e| matches!(
        e,
        OtrEvent::Smp {
            event: SmpEvent::AskedSecret,
            ..
        }
    )));
    q.a.smp_respond(A, B, "green").expect("respond");
    q.settle();
    assert!(q.b.events.iter().any(|e| matches!(
        e,
        OtrEvent::Smp {
            event: SmpEvent::Failed,
            ..
        }
    )));
    assert_eq!(q.b.state(B, A), ChatSecurity::PrivateUnverified);
}

#[test]
fn fingerprint_verification_and_ending() {
    let mut p = Pair::new();
    p.private();
    let fa = p.a.fingerprint(A).expect("fp");
    // Pasted with odd spacing and case.
    let pasted = fa.to_uppercase().replace(' ', "");
    p.b.set_verified(B, A, &pasted, true).expect("verify");
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    assert!(p.b.set_verified(B, A, "0000", true).is_err());
    let file = p.b.fingerprints_file().expect("fingerprints");
    assert!(String::from_utf8_lossy(&file).contains("verified"));

    p.a.end(A, B).expect("end");
    p.settle();
    assert_eq!(p.a.state(A, B), ChatSecurity::NotPrivate);
    assert_eq!(
        p.b.state(B, A),
        ChatSecurity::Finished,
        "the buddy ended it"
    );
    assert!(
        p.b.events
            .iter()
            .any(|e| matches!(e, OtrEvent::Finished { .. }))
    );
    assert!(
        p.b.send(B, A, "still there?").is_err(),
        "sending is blocked until bob acts"
    );
}

#[test]
fn require_encryption_never_sends_plaintext() {
    let mut p = Pair::new();
    p.a.set_default_policy(A, OtrPolicy::Require);
    let r = p.a.send(A, B, "secret before the session");
    assert!(r.is_err(), "held, not sent");
    assert_eq!(p.a.held(A, B), 1);
    p.settle(); // the query started the AKE; the held message goes out encrypted
    assert_eq!(p.b.shown, vec!["secret before the session".to_owned()]);
    assert!(
        p.wire.iter().all(|t| t.body.starts_with("?OTR")),
        "every body on the wire is OTR"
    );
    assert!(p.wire.iter().all(|t| !t.body.contains("secret before")));
    assert_eq!(p.a.refused_plaintext(), 0);

    // After bob ends it, alice's next message is held again, not sent.
    p.b.end(B, A).expect("end");
    p.settle();
    assert_eq!(p.a.state(A, B), ChatSecurity::Finished);
    assert!(p.a.send(A, B, "after the end").is_err());
    p.settle();
    assert!(p.wire.iter().all(|t| !t.body.contains("after the end")));
}

#[test]
fn keys_round_trip_through_pidgin_files() {
    let mut a = engine();
    let file = a.generate_key(A).expect("key").to_vec();
    let fp = a.fingerprint(A).expect("fp");
    let mut again = engine();
    again.load_private_keys(&file).expect("load");
    assert_eq!(again.fingerprint(A), Some(fp));
    assert!(
        again
            .load_private_keys(b"(privkeys (account (name")
            .is_err()
    );
    // Pidgin's otr.fingerprints: buddy, account, protocol, 40 hex digits, trust.
    let line = format!(
        "carol@localhost\t{A}\tprpl-jabber\t{}\tverified\n",
        "ab".repeat(20)
    );
    again
        .load_fingerprints(line.as_bytes())
        .expect("fingerprints");
    let known = again.known_fingerprints();
    assert_eq!(known.len(), 1);
    assert!(
        known[0].verified && known[0].peer == "carol@localhost",
        "{known:?}"
    );
    assert_eq!(
        known[0].fingerprint.replace(' ', "").to_lowercase(),
        "ab".repeat(20)
    );
    let written = again.fingerprints_file().expect("write");
    assert_eq!(
        String::from_utf8_lossy(&written),
        line,
        "written back identically"
    );
}

#[test]
fn garbage_is_dropped_with_a_notice() {
    let mut a = engine();
    a.generate_key(A).expect("key");
    for body in [
        "?OTR:",
        "?OTR:AAMD",
        "?OTR:!!!!notbase64!!!!.",
        "?OTR|1|2|1,99999,xxxx,",
        "?OTR,1,65535,abc,",
        "?OTR Error: hello",
        &format!("?OTR:{}.", "A".repeat(100_000)),
    ] {
        let shown = a.receive(A, B, body);
        assert!(
            shown
                .as_ref()
                .is_none_or(|s| !s.text.starts_with("?OTR:") && !s.encrypted),
            "{body:.20} -> {shown:?}"
        );
    }
    let mut notices = 0;
    while let Some(e) = a.poll_event() {
        if matches!(e, OtrEvent::Notice { .. }) {
            notices += 1;
        }
    }
    assert!(notices >= 2, "dropped with notices ({notices})");
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

#[test]
fn endless_fragments_keep_memory_bounded_and_the_session_usable() {
    let mut p = Pair::new();
    p.private();
    let chunk = "A".repeat(60_000);
    let before = rss_kib();
    // 2,000 fragments (~120 MB) of messages that never complete, in both wire formats.
    for i in 0..2_000u32 {
        let k = i % 63 + 1;
        let body = if i % 2 == 0 {
            format!("?OTR,{k},64,{chunk},")
        } else {
            format!("?OTR|00000100|00000100,{k:05},00064,{chunk},")
        };
        let shown = p.b.engine.receive(B, A, &body);
        assert!(
            shown.is_none_or(|s| !s.text.starts_with("?OTR")),
            "fragment shown"
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "memory grew by {grown} KiB");
    // Still private and working afterwards.
    p.a.send(A, B, "still here").expect("send");
    p.settle();
    assert!(
        p.b.shown.iter().any(|m| m == "still here"),
        "{:?}",
        p.b.shown
    );
}

#[test]
fn forgetting_the_fingerprint_in_use_is_refused_and_the_session_goes_on() {
    let mut p = Pair::new();
    p.private();
    let fa = p.a.fingerprint(A).expect("fp");
    // libotr keeps the session's fingerprint in the instance (child) context while
    // the list holding it belongs to the master: forgetting it would free what the
    // session still points at. Read the state right after, as the core does.
    let forgotten = p.b.forget(B, A, &fa);
    let state = p.b.state(B, A);
    let in_use = p.b.peer_fingerprint(B, A);
    let err = forgotten.expect_err("the fingerprint in use is not forgotten");
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(state, ChatSecurity::PrivateUnverified);
    assert_eq!(in_use.as_deref(), Some(fa.as_str()));
    assert!(p.b.known_fingerprints().iter().any(|k| k.fingerprint == fa));
    p.a.send(A, B, "still private").expect("send");
    p.settle();
    assert_eq!(p.b.shown, vec!["still private".to_owned()]);
    // Once the conversation is over it can go.
    p.b.end(B, A).expect("end");
    p.settle();
    p.b.forget(B, A, &fa).expect("forget after the end");
    assert!(p.b.known_fingerprints().is_empty());
    assert_eq!(p.b.state(B, A), ChatSecurity::NotPrivate);
}

#[test]
fn a_library_that_refuses_to_start_gives_no_engine() {
    // Only the release whose private structs and leaks the wrapper relies on.
    for version in [(3, 0, 0), (4, 0, 0), (4, 1, 0), (4, 9, 0), (5, 1, 1)] {
        let Err(err) = OtrEngine::for_api_version(version) else {
            panic!("libotr accepted API version {version:?}");
        };
        assert!(matches!(err, OtrError::Unavailable(_)), "{err:?}");
        let words = err.to_string();
        assert!(
            words.contains("private chat is unavailable")
                && words.contains("nothing is sent unencrypted"),
            "{words}"
        );
    }
    // The refusals changed nothing: the right version still starts and works.
    let mut p = Pair::new();
    p.private();
}

#[test]
fn held_messages_beyond_the_cap_are_refused_not_lost() {
    let mut a = engine();
    a.generate_key(A).expect("key");
    a.set_default_policy(A, OtrPolicy::Require);
    for i in 0..MAX_HELD {
        assert_eq!(a.send(A, B, &format!("held {i}")), Err(OtrError::Held));
    }
    assert_eq!(a.held(A, B), MAX_HELD);
    let err = a.send(A, B, "one too many").expect_err("refused");
    assert_eq!(
        err,
        OtrError::TooManyHeld {
            peer: B.into(),
            max: MAX_HELD
        }
    );
    assert!(err.to_string().contains("not kept and not sent"), "{err}");
    assert_eq!(a.held(A, B), MAX_HELD, "the refused one is not kept");
    let given_up = a.drop_held(A, B);
    assert_eq!(given_up.len(), MAX_HELD);
    assert!(!given_up.iter().any(|m| m == "one too many"));
    while let Some(t) = a.poll_transmit() {
        assert!(
            t.body.starts_with("?OTR"),
            "only OTR queries left: {:.30}",
            t.body
        );
    }
}

#[test]
fn only_what_libotr_decrypted_is_marked_encrypted() {
    let mut p = Pair::new();
    // Before any session, bodies that merely look like OTR are plaintext. A one-piece
    // "fragment" is reassembled by libotr into a plain message, and shown.
    for body in ["?OTR,1,1,hello,", "?OTR|00000100|00000000,00001,00001,hi,"] {
        let shown = p.b.engine.receive(B, "mallory@localhost", body);
        assert!(
            shown.as_ref().is_none_or(|s| !s.encrypted),
            "{body} -> {shown:?}"
        );
    }
    let plain = p.b.engine.receive(B, A, "just text").expect("shown");
    assert!(!plain.encrypted);
    p.private();
    p.a.send(A, B, "under otr").expect("send");
    p.settle();
    assert_eq!(
        p.b.incoming,
        vec![Incoming {
            text: "under otr".into(),
            encrypted: true
        }]
    );
    // During the session, plaintext (even shaped like OTR) is never marked encrypted.
    for body in ["in the clear", "?OTR,1,1,sneaky,"] {
        let shown = p.b.engine.receive(B, A, body);
        assert!(
            shown.as_ref().is_none_or(|s| !s.encrypted),
            "{body} -> {shown:?}"
        );
    }
}

/// Delivers everything between two engines until both are quiet (hush-sim bounds the
/// steps); returns what `y` reported.
fn exchange(x: &mut OtrEngine, xn: &str, y: &mut OtrEngine, yn: &str) -> Vec<OtrEvent> {
    let mut a = Side::new(x, xn, yn);
    let mut b = Side::new(y, yn, xn);
    hush_sim::Pair::new(&mut a, &mut b, Conditions::perfect(), 0).drive();
    while let Some(e) = b.engine.poll_event() {
        b.events.push(e);
    }
    while a.engine.poll_event().is_some() {}
    b.events
}

fn quiet(e: &mut OtrEngine) {
    while e.poll_transmit().is_some() {}
    while e.poll_event().is_some() {}
}

#[test]
fn a_flood_of_senders_keeps_libotr_bounded_and_the_real_conversation_alive() {
    let mut p = Pair::new();
    p.b.set_limits(OtrLimits {
        peers: 16,
        ..OtrLimits::default()
    });
    p.private();
    p.b.send(B, A, "hello alice").expect("bob takes part");
    p.settle();
    let filler = "A".repeat(1_000);
    for i in 0..2_000u32 {
        let from = format!("stranger{i}@evil.example");
        let body = match i % 4 {
            // Starts a key exchange: libotr makes a context and answers.
            0 => "?OTR?v3?".to_owned(),
            // A fragment from a new instance: libotr makes an instance context.
            1 => format!("?OTR|{:08x}|00000000,00001,00002,{filler},", 0x100 + i),
            2 => format!("?OTR,1,3,{filler},"),
            _ => "hello".to_owned(),
        };
        let _ = p.b.engine.receive(B, &from, &body);
        quiet(&mut p.b);
        // 16 strangers at most, plus alice whom bob wrote to.
        assert!(p.b.peer_count() <= 17, "{} buddies", p.b.peer_count());
    }
    assert!(
        p.b.context_count() <= 17 * 2,
        "{} contexts",
        p.b.context_count()
    );
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateUnverified);
    p.a.send(A, B, "still here").expect("send");
    p.settle();
    assert!(
        p.b.shown.iter().any(|m| m == "still here"),
        "{:?}",
        p.b.shown
    );
}

#[test]
fn idle_private_conversations_nobody_took_part_in_make_room_verified_ones_stay() {
    let mut bob = engine();
    bob.generate_key(B).expect("key");
    // One buddy that merely wrote may be kept; verified ones do not count.
    bob.set_limits(OtrLimits {
        peers: 1,
        ..OtrLimits::default()
    });
    let names = ["carol@localhost", "dave@localhost", "erin@localhost"];
    let mut others: Vec<OtrEngine> = names
        .iter()
        .map(|n| {
            let mut e = engine();
            e.generate_key(n).expect("key");
            e
        })
        .collect();
    // Carol starts a private conversation and bob verifies her; then dave starts one
    // bob never writes in.
    others[0].start(names[0], B).expect("start");
    exchange(&mut others[0], names[0], &mut bob, B);
    let carol_fp = others[0].fingerprint(names[0]).expect("fp");
    bob.set_verified(B, names[0], &carol_fp, true)
        .expect("verify");
    others[1].start(names[1], B).expect("start");
    exchange(&mut others[1], names[1], &mut bob, B);
    assert_eq!(bob.state(B, names[1]), ChatSecurity::PrivateUnverified);
    // Erin makes a third: dave's idle conversation is closed to make room, with words.
    others[2].start(names[2], B).expect("start");
    let events = exchange(&mut others[2], names[2], &mut bob, B);
    assert_eq!(bob.state(B, names[2]), ChatSecurity::PrivateUnverified);
    assert_eq!(bob.state(B, names[1]), ChatSecurity::NotPrivate);
    assert!(
        events.iter().any(|e| matches!(
            e,
            OtrEvent::Notice { peer, text, .. } if peer == names[1] && text.contains("closed")
        )),
        "{events:?}"
    );
    assert_eq!(
        bob.state(B, names[0]),
        ChatSecurity::PrivateVerified,
        "verified stays"
    );
    assert_eq!(bob.peer_count(), 2, "carol and erin");
}

#[test]
fn one_sender_naming_endless_instances_keeps_few_and_its_session() {
    let mut p = Pair::new();
    p.b.set_limits(OtrLimits {
        instances: 4,
        ..OtrLimits::default()
    });
    p.private();
    for i in 0..1_000u32 {
        let body = format!("?OTR|{:08x}|00000000,00001,00002,xyz,", 0x1000 + i);
        let _ = p.b.engine.receive(B, A, &body);
        quiet(&mut p.b);
    }
    assert!(p.b.context_count() <= 1 + 4, "{}", p.b.context_count());
    // The real instance was kept: the next real message is decrypted and private again.
    p.b.incoming.clear();
    p.a.send(A, B, "the real me").expect("send");
    p.settle();
    assert_eq!(
        p.b.incoming,
        vec![Incoming {
            text: "the real me".into(),
            encrypted: true
        }]
    );
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateUnverified);
}

#[test]
fn a_sender_cycling_keys_leaves_a_bounded_fingerprint_list() {
    let mut b = engine();
    b.generate_key(B).expect("key");
    b.set_limits(OtrLimits {
        fingerprints: 3,
        instances: 2,
        ..OtrLimits::default()
    });
    for _ in 0..5 {
        let mut a = engine();
        a.generate_key(A).expect("key");
        a.start(A, B).expect("start");
        exchange(&mut a, A, &mut b, B);
        assert_eq!(b.state(B, A), ChatSecurity::PrivateUnverified);
        a.end(A, B).expect("end");
        exchange(&mut a, A, &mut b, B);
        assert_eq!(b.state(B, A), ChatSecurity::Finished);
    }
    let known = b.known_fingerprints();
    assert!(known.len() <= 3, "{known:?}");
    assert!(b.context_count() <= 1 + 2, "{}", b.context_count());
}

#[test]
fn fragments_from_many_senders_stay_within_the_budget() {
    let mut b = engine();
    b.generate_key(B).expect("key");
    b.set_limits(OtrLimits {
        fragment_total: 1 << 20,
        ..OtrLimits::default()
    });
    let piece = "A".repeat(60_000);
    for i in 0..200 {
        let from = format!("s{i}@evil.example");
        assert!(
            b.receive(B, &from, &format!("?OTR,1,64,{piece},"))
                .is_none()
        );
        quiet(&mut b);
        assert!(
            b.fragment_bytes() <= (1 << 20) + 64 * 1024,
            "{}",
            b.fragment_bytes()
        );
    }
    // One sender's single message is capped too (192 KiB by default).
    for k in 1..=10 {
        let _ = b.receive(B, "big@evil.example", &format!("?OTR,{k},64,{piece},"));
        quiet(&mut b);
    }
    assert!(b.fragment_bytes() <= (1 << 20) + 64 * 1024);
}

#[test]
fn forgetting_a_key_only_an_abandoned_instance_uses_ends_that_instance_first() {
    let mut p = Pair::new();
    p.private();
    let old = p.a.fingerprint(A).expect("fp");
    // Alice reinstalls: a new key and a new instance; the old one never said goodbye.
    let mut again = engine();
    again.generate_key(A).expect("key");
    p.a.engine = again;
    p.private();
    let new = p.a.fingerprint(A).expect("fp");
    assert_eq!(p.b.peer_fingerprint(B, A).as_deref(), Some(new.as_str()));
    // The key of the abandoned instance can go (that instance is ended); the current
    // one cannot.
    p.b.forget(B, A, &old).expect("the old key goes");
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateUnverified);
    let known: Vec<String> =
        p.b.known_fingerprints()
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
    assert_eq!(known, vec![new.clone()]);
    assert!(matches!(
        p.b.forget(B, A, &new),
        Err(OtrError::FingerprintInUse(_))
    ));
    p.a.send(A, B, "new device").expect("send");
    p.settle();
    assert!(p.b.shown.iter().any(|m| m == "new device"));
}

/// One engine speaking for `n` strangers at a hostile server, one key shared by all
/// (generating a DSA key each would take minutes): `s{i}@evil.example`.
fn strangers(n: usize) -> (OtrEngine, Vec<String>) {
    let mut e = engine();
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
    assert_eq!(e.key_accounts().len(), n);
    (e, names)
}

/// A previous session's files: alice's keys and her fingerprints file, which holds
/// bob's key (unverified); and bob's engine, still able to talk to her.
fn yesterday() -> (Vec<u8>, Vec<u8>, String, OtrEngine) {
    let mut p = Pair::new();
    p.private();
    let file = p.a.fingerprints_file().expect("fingerprints").to_vec();
    let bob_fp = p.b.fingerprint(B).expect("fp");
    (p.a.private_keys().to_vec(), file, bob_fp, p.b.engine)
}

/// Alice today, from yesterday's files.
fn alice_from(keys: &[u8], fingerprints: &[u8]) -> OtrEngine {
    let mut a = engine();
    a.load_private_keys(keys).expect("keys");
    a.load_fingerprints(fingerprints).expect("fingerprints");
    a
}

fn knows(e: &OtrEngine, peer: &str, fingerprint: &str) -> bool {
    e.known_fingerprints()
        .iter()
        .any(|k| k.peer == peer && k.fingerprint == fingerprint)
}

#[test]
fn a_flood_never_deletes_the_keys_of_a_buddy_from_the_fingerprints_file() {
    let (keys, file, bob_fp, _) = yesterday();
    let mut a = alice_from(&keys, &file);
    // Today bob only says hello in plaintext (anyone can send that in his name)...
    assert!(a.receive(A, B, "hello").is_some());
    quiet(&mut a);
    // ...and then more strangers than alice keeps complete a key exchange with her.
    let (mut m, names) = strangers(OtrLimits::default().peers + 1);
    for n in &names {
        m.start(n, A).expect("start");
        exchange(&mut m, n, &mut a, A);
        assert_eq!(a.state(A, n), ChatSecurity::PrivateUnverified);
    }
    assert!(knows(&a, B, &bob_fp), "bob's key is still known");
    let saved = String::from_utf8(a.fingerprints_file().expect("file").to_vec()).expect("text");
    assert!(
        saved.contains(&bob_fp.replace(' ', "").to_lowercase()),
        "and still saved"
    );
    // Someone with another key for bob is a changed key, not a first contact.
    let mut impostor = engine();
    impostor.generate_key(B).expect("key");
    impostor.start(B, A).expect("start");
    let events = exchange(&mut impostor, B, &mut a, A);
    assert!(
        events.iter().any(|e| matches!(
            e,
            OtrEvent::NewFingerprint { peer, changed: true, .. } if peer == B
        )),
        "{events:?}"
    );
}

#[test]
fn keys_from_the_fingerprints_file_are_never_trimmed() {
    let (keys, file, bob_fp, _) = yesterday();
    let mut a = alice_from(&keys, &file);
    a.set_limits(OtrLimits {
        fingerprints: 2,
        instances: 2,
        ..OtrLimits::default()
    });
    // A server impersonating bob runs key exchanges with ever new keys.
    for _ in 0..4 {
        let mut impostor = engine();
        impostor.generate_key(B).expect("key");
        impostor.start(B, A).expect("start");
        exchange(&mut impostor, B, &mut a, A);
        impostor.end(B, A).expect("end");
        exchange(&mut impostor, B, &mut a, A);
    }
    let known: Vec<_> = a
        .known_fingerprints()
        .into_iter()
        .filter(|k| k.peer == B)
        .collect();
    assert!(knows(&a, B, &bob_fp), "{known:?}");
    assert!(
        known.len() <= 2,
        "the impostor's keys are trimmed: {known:?}"
    );
    let saved = String::from_utf8(a.fingerprints_file().expect("file").to_vec()).expect("text");
    assert!(saved.contains(&bob_fp.replace(' ', "").to_lowercase()));
}

/// A DH-commit from `A`'s address but another key and instance (a hostile server, or
/// another device): the first message of a key exchange, authenticated by nothing.
fn dh_commit_from_another_instance() -> (OtrEngine, String) {
    let mut m = engine();
    m.generate_key(A).expect("key");
    let _ = m.receive(A, B, "?OTRv3?");
    let commit = m.poll_transmit().expect("a DH-commit").body;
    // Type 0x02, protocol 3: "?OTR:AAMC".
    assert!(commit.starts_with("?OTR:AAMC"), "{commit:.12}");
    assert!(m.poll_transmit().is_none());
    (m, commit)
}

#[test]
fn a_dh_commit_from_a_new_instance_neither_downgrades_nor_diverts_the_conversation() {
    for policy in [OtrPolicy::Opportunistic, OtrPolicy::Manual] {
        let mut p = Pair::new();
        p.b.set_default_policy(B, policy);
        p.private();
        let (_m, commit) = dh_commit_from_another_instance();
        assert!(p.b.engine.receive(B, A, &commit).is_none());
        quiet(&mut p.b); // bob's answer to that instance goes nowhere
        assert_eq!(
            p.b.state(B, A),
            ChatSecurity::PrivateUnverified,
            "{policy:?}: still private"
        );
        p.b.send(B, A, "for alice only").expect("send");
        let t = p.b.poll_transmit().expect("sent");
        assert!(p.b.poll_transmit().is_none());
        assert!(
            t.body.starts_with("?OTR:") && !t.body.contains("for alice only"),
            "{policy:?}: {:.60}",
            t.body
        );
        assert_eq!(
            p.a.engine.receive(A, B, &t.body),
            Some(Incoming {
                text: "for alice only".into(),
                encrypted: true
            }),
            "{policy:?}: alice's real session reads it"
        );
    }
}

#[test]
fn under_require_a_key_exchange_from_a_new_instance_gets_no_held_message() {
    let mut p = Pair::new();
    p.b.set_default_policy(B, OtrPolicy::Require);
    p.private();
    let (mut m, commit) = dh_commit_from_another_instance();
    assert!(p.b.engine.receive(B, A, &commit).is_none());
    // Bob writes while that key exchange is under way: his live session takes it.
    assert_eq!(p.b.send(B, A, "the secret"), Ok(()));
    assert_eq!(p.b.held(B, A), 0, "nothing waits for another session");
    // The server hands everything bob sends to mallory's instance only, and lets the
    // key exchange finish.
    let mut sent = Vec::new();
    let mut mallory_read = Vec::new();
    let mut events = Vec::new();
    for _ in 0..50 {
        let mut moved = false;
        while let Some(t) = p.b.poll_transmit() {
            moved = true;
            sent.push(t.body.clone());
            mallory_read.extend(m.receive(A, B, &t.body));
        }
        while let Some(t) = m.poll_transmit() {
            moved = true;
            let _ = p.b.engine.receive(B, A, &t.body);
        }
        while let Some(e) = p.b.poll_event() {
            events.push(e);
        }
        if !moved {
            break;
        }
    }
    assert!(
        mallory_read.iter().all(|s| !s.text.contains("the secret")),
        "{mallory_read:?}"
    );
    // Mallory's finished exchange is a changed key for alice: bob is warned.
    assert!(
        events.iter().any(|e| matches!(
            e,
            OtrEvent::NewFingerprint { peer, changed: true, .. } if peer == A
        )),
        "{events:?}"
    );
    let alice_read: Vec<Incoming> = sent
        .iter()
        .filter_map(|b| p.a.engine.receive(A, B, b))
        .collect();
    assert!(
        alice_read
            .iter()
            .any(|s| s.text == "the secret" && s.encrypted),
        "{alice_read:?}"
    );
}

#[test]
fn a_flood_of_fragments_never_discards_a_known_buddys_half_received_message() {
    let mut p = Pair::new();
    p.b.set_limits(OtrLimits {
        fragment_total: 1 << 20,
        ..OtrLimits::default()
    });
    p.a.set_max_message_size(16 * 1024);
    p.private();
    p.b.send(B, A, "go ahead").expect("bob takes part");
    p.settle();
    let long = "y".repeat(100_000);
    p.a.send(A, B, &long).expect("send");
    let mut pieces = Vec::new();
    while let Some(t) = p.a.poll_transmit() {
        pieces.push(t.body);
    }
    let last = pieces.pop().expect("pieces");
    assert!(pieces.len() >= 5, "{}", pieces.len());
    for piece in &pieces {
        assert!(p.b.engine.receive(B, A, piece).is_none());
    }
    // Strangers each start a 60 KB message they never finish, well past the budget.
    let filler = "A".repeat(60_000);
    let mut notices = 0;
    for i in 0..100 {
        let from = format!("s{i}@evil.example");
        assert!(
            p.b.engine
                .receive(B, &from, &format!("?OTR,1,64,{filler},"))
                .is_none()
        );
        while let Some(e) = p.b.poll_event() {
            if matches!(&e, OtrEvent::Notice { peer, text, .. } if peer.ends_with("@evil.example") && text.contains("discarded"))
            {
                notices += 1;
            }
        }
        while p.b.poll_transmit().is_some() {}
        assert!(
            p.b.fragment_bytes() <= (1 << 20) + 192 * 1024,
            "{}",
            p.b.fragment_bytes()
        );
    }
    assert_eq!(
        p.b.engine.receive(B, A, &last),
        Some(Incoming {
            text: long,
            encrypted: true
        }),
        "alice's message arrives whole"
    );
    assert!(notices > 0, "strangers' partial messages go with a notice");
}

#[test]
fn a_message_in_more_pieces_than_accepted_is_dropped_wherever_its_header_sits() {
    let mut p = Pair::new();
    p.private();
    p.a.set_max_message_size(200);
    let text = "z".repeat(12_000);
    for prefix in ["", "look: "] {
        p.a.send(A, B, &text).expect("send");
        let mut pieces = Vec::new();
        while let Some(t) = p.a.poll_transmit() {
            pieces.push(t.body);
        }
        // Real libotr v3 fragments: "?OTR|sender|receiver,k,n,piece,".
        assert!(pieces.len() > 64, "{}", pieces.len());
        assert!(pieces[0].starts_with("?OTR|"), "{:.40}", pieces[0]);
        let shown: Vec<Incoming> = pieces
            .iter()
            .filter_map(|b| p.b.engine.receive(B, A, &format!("{prefix}{b}")))
            .collect();
        assert!(shown.is_empty(), "{prefix:?}: {} shown", shown.len());
        assert_eq!(p.b.fragment_bytes(), 0, "{prefix:?}: nothing buffered");
        let mut dropped = 0;
        while let Some(e) = p.b.poll_event() {
            if matches!(&e, OtrEvent::Notice { text, .. } if text.contains("too many pieces")) {
                dropped += 1;
            }
        }
        assert_eq!(dropped, pieces.len(), "{prefix:?}");
    }
    // A message in fewer pieces still gets through.
    p.a.set_max_message_size(2_000);
    p.a.send(A, B, &text).expect("send");
    p.settle();
    assert_eq!(p.b.shown, vec![text]);
}

#[test]
fn a_held_message_that_cannot_go_out_is_refused_or_reported_never_lost() {
    let mut p = Pair::new();
    p.a.set_default_policy(A, OtrPolicy::Require);
    // What libotr could never send is refused at once: not held, no key exchange.
    assert!(matches!(
        p.a.send(A, B, "nul\0byte"),
        Err(OtrError::InvalidInput(_))
    ));
    assert_eq!(p.a.held(A, B), 0);
    assert!(p.a.poll_transmit().is_none());
    // One libotr refuses when the session begins (at this fragment size it would take
    // more than libotr's 65,535 pieces) comes back, words and all; the others go out.
    p.a.set_max_message_size(MIN_FRAGMENT);
    let huge = "h".repeat(1_400_000);
    for text in ["before", &huge, "after"] {
        assert_eq!(p.a.send(A, B, text), Err(OtrError::Held));
    }
    p.settle();
    assert_eq!(p.a.held(A, B), 0);
    assert_eq!(p.b.shown, vec!["before".to_owned(), "after".to_owned()]);
    let not_sent: Vec<&OtrEvent> =
        p.a.events
            .iter()
            .filter(|e| matches!(e, OtrEvent::NotSent { .. }))
            .collect();
    assert!(
        matches!(
            not_sent.as_slice(),
            [OtrEvent::NotSent { peer, text, reason, .. }]
                if peer == B && *text == huge && reason.contains("library error")
        ),
        "{:?}",
        not_sent.len()
    );
}

#[test]
fn fragment_sizes_libotr_cannot_work_with_are_raised() {
    let mut p = Pair::new();
    // At 37 bytes libotr divides by zero for v3; below, it sends nothing at all.
    p.a.set_max_message_size(37);
    p.b.set_max_message_size(1);
    p.private();
    p.a.send(A, B, "in tiny pieces").expect("send");
    p.settle();
    assert_eq!(p.b.shown, vec!["in tiny pieces".to_owned()]);
    let pieces: Vec<usize> = p
        .wire
        .iter()
        .filter(|t| t.body.starts_with("?OTR|") || t.body.starts_with("?OTR,"))
        .map(|t| t.body.len())
        .collect();
    assert!(pieces.len() > 20, "{pieces:?}");
    assert!(pieces.iter().all(|l| *l <= MIN_FRAGMENT), "{pieces:?}");
}

/// A key file for alice whose secret number is written the way libgcrypt sometimes
/// writes it, as a quoted string of raw bytes (some above 0x7F, so not UTF-8), and the
/// key's fingerprint.
fn key_in_raw_bytes() -> (Vec<u8>, String) {
    for _ in 0..5 {
        let mut e = engine();
        let file = e.generate_key(A).expect("key").to_vec();
        let fp = e.fingerprint(A).expect("fp");
        let at = |needle: &[u8]| file.windows(needle.len()).position(|w| w == needle);
        let start = at(b"(x #").expect("x in hex") + 4;
        let end = start + file[start..].iter().position(|b| *b == b'#').expect("end");
        let hex = std::str::from_utf8(&file[start..end]).expect("hex");
        let mut out = file[..start - 1].to_vec();
        out.push(b'"');
        for i in (0..hex.len()).step_by(2) {
            match u8::from_str_radix(&hex[i..i + 2], 16).expect("hex") {
                b @ (0x20..=0x7e | 0xa1..=0xff) if b != b'"' && b != b'\\' => out.push(b),
                b => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            }
        }
        out.push(b'"');
        out.extend_from_slice(&file[end + 1..]);
        if std::str::from_utf8(&out).is_err() {
            return (out, fp);
        }
    }
    panic!("no key with a byte above 0xA0 in five");
}

#[test]
fn a_key_written_in_raw_bytes_is_kept_as_text_and_still_signs() {
    let (file, fp) = key_in_raw_bytes();
    let mut a = engine();
    a.load_private_keys(&file).expect("libotr reads it");
    assert_eq!(a.fingerprint(A).as_deref(), Some(fp.as_str()));
    // The vault keeps keys as text: that text loads back into the same key, which still
    // signs (a key exchange completes with it).
    let kept = std::str::from_utf8(a.private_keys())
        .expect("kept as text")
        .to_owned();
    let mut p = Pair::new();
    p.a.engine = engine();
    p.a.load_private_keys(kept.as_bytes()).expect("loads back");
    p.private();
    assert_eq!(p.b.peer_fingerprint(B, A).as_deref(), Some(fp.as_str()));
}

/// Alice and bob in a private conversation in which bob has verified alice's key.
fn verified_pair(policy: OtrPolicy) -> Pair {
    let mut p = Pair::new();
    p.b.set_default_policy(B, policy);
    p.private();
    let fp = p.a.fingerprint(A).expect("alice's key");
    p.b.set_verified(B, A, &fp, true).expect("verify");
    p.settle();
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    p.b.events.clear();
    p
}

/// Mallory, from another instance of alice's address with her own key, finishes a key
/// exchange with bob: the server hands her what bob answers, and nothing to alice.
/// Returns mallory's engine and bob's events meanwhile.
fn mallory_finishes_a_key_exchange(p: &mut Pair) -> (OtrEngine, Vec<OtrEvent>) {
    let (mut m, commit) = dh_commit_from_another_instance();
    let mut events = Vec::new();
    assert!(p.b.engine.receive(B, A, &commit).is_none());
    for _ in 0..50 {
        let mut moved = false;
        while let Some(t) = p.b.poll_transmit() {
            moved = true;
            let _ = m.receive(A, B, &t.body);
        }
        while let Some(t) = m.poll_transmit() {
            moved = true;
            let _ = p.b.engine.receive(B, A, &t.body);
        }
        while let Some(e) = p.b.poll_event() {
            events.push(e);
        }
        if !moved {
            break;
        }
    }
    while m.poll_event().is_some() {}
    assert_eq!(
        m.state(A, B),
        ChatSecurity::PrivateUnverified,
        "mallory's key exchange finished"
    );
    (m, events)
}

/// A notice for bob about alice that names `fingerprint`.
fn notice_naming(events: &[OtrEvent], fingerprint: &str) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            OtrEvent::Notice { peer, text, .. } if peer == A && text.contains(fingerprint)
        )
    })
}

#[test]
fn messages_from_another_session_never_show_as_private_in_a_verified_conversation() {
    let mut p = verified_pair(OtrPolicy::Opportunistic);
    let (mut m, _) = mallory_finishes_a_key_exchange(&mut p);
    let m_fp = m.fingerprint(A).expect("mallory's key");
    // Mallory asks, as alice, for a fresh key exchange: alice's real session answers.
    assert!(p.b.engine.receive(B, A, "?OTRv3?").is_none());
    p.settle();
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    p.b.events.clear();
    // Mallory writes in her own session, which libotr still decrypts.
    m.send(A, B, "it is me, alice: send the code")
        .expect("send");
    let t = m.poll_transmit().expect("mallory's message");
    assert!(t.body.starts_with("?OTR:"), "{:.20}", t.body);
    let shown = p.b.engine.receive(B, A, &t.body);
    assert!(
        shown.as_ref().is_none_or(|s| !s.encrypted),
        "shown as alice's private line: {shown:?}"
    );
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    let events: Vec<OtrEvent> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert!(notice_naming(&events, &m_fp), "{events:?}");
    // Alice's real session is still shown as private.
    p.a.send(A, B, "really me").expect("send");
    p.settle();
    assert_eq!(
        p.b.incoming.last(),
        Some(&Incoming {
            text: "really me".into(),
            encrypted: true
        })
    );
}

#[test]
fn authentication_and_endings_from_another_session_never_reach_the_conversation() {
    let mut p = verified_pair(OtrPolicy::Opportunistic);
    let (mut m, _) = mallory_finishes_a_key_exchange(&mut p);
    let m_fp = m.fingerprint(A).expect("mallory's key");
    assert!(p.b.engine.receive(B, A, "?OTRv3?").is_none());
    p.settle();
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    p.b.events.clear();
    // Mallory asks bob a question in her own session.
    m.smp_start(A, B, Some("where did we meet?"), "paris")
        .expect("smp");
    while let Some(t) = m.poll_transmit() {
        assert!(p.b.engine.receive(B, A, &t.body).is_none());
    }
    let events: Vec<OtrEvent> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert!(
        !events.iter().any(|e| matches!(e, OtrEvent::Smp { .. })),
        "shown as alice asking: {events:?}"
    );
    assert!(notice_naming(&events, &m_fp), "{events:?}");
    // Mallory ends her session: alice's goes on.
    m.end(A, B).expect("end");
    while let Some(t) = m.poll_transmit() {
        assert!(p.b.engine.receive(B, A, &t.body).is_none());
    }
    let events: Vec<OtrEvent> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, OtrEvent::Finished { .. })),
        "shown as alice ending: {events:?}"
    );
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    p.b.send(B, A, "still here").expect("send");
    p.settle();
    assert_eq!(p.a.shown.last().map(String::as_str), Some("still here"));
}
#[test]
fn a_key_exchange_from_another_session_does_not_take_over_a_verified_conversation() {
    let mut p = verified_pair(OtrPolicy::Opportunistic);
    let (mut m, events) = mallory_finishes_a_key_exchange(&mut p);
    let m_fp = m.fingerprint(A).expect("mallory's key");
    let a_fp = p.a.fingerprint(A).expect("alice's key");
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    assert_eq!(p.b.peer_fingerprint(B, A), Some(a_fp));
    // Bob is told, in words, and not that a private conversation started.
    assert!(notice_naming(&events, &m_fp), "{events:?}");
    assert!(
        !events.iter().any(|e| matches!(
            e,
            OtrEvent::Secure {
                verified: false,
                ..
            }
        )),
        "{events:?}"
    );
    p.b.send(B, A, "for alice only").expect("send");
    let t = p.b.poll_transmit().expect("sent");
    assert!(p.b.poll_transmit().is_none());
    assert!(
        m.receive(A, B, &t.body)
            .is_none_or(|s| !s.text.contains("for alice only")),
        "mallory read it"
    );
    assert_eq!(
        p.a.engine.receive(A, B, &t.body),
        Some(Incoming {
            text: "for alice only".into(),
            encrypted: true
        })
    );
    // Once bob verifies the new key, the conversation switches to it.
    p.b.set_verified(B, A, &m_fp, true).expect("verify");
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    assert_eq!(p.b.peer_fingerprint(B, A), Some(m_fp));
    p.b.send(B, A, "for the new key").expect("send");
    let t = p.b.poll_transmit().expect("sent");
    assert_eq!(
        m.receive(A, B, &t.body).map(|s| s.text),
        Some("for the new key".into())
    );
}

#[test]
fn under_require_messages_held_for_a_verified_buddy_never_go_to_an_unverified_key() {
    let mut p = verified_pair(OtrPolicy::Require);
    // Bob ends the conversation: what he writes now waits.
    p.b.end(B, A).expect("end");
    p.settle();
    assert_eq!(p.b.state(B, A), ChatSecurity::NotPrivate);
    assert_eq!(p.b.send(B, A, "the held secret"), Err(OtrError::Held));
    quiet(&mut p.b); // the query goes nowhere
    let (mut m, _) = mallory_finishes_a_key_exchange(&mut p);
    assert_eq!(p.b.held(B, A), 1, "still waiting");
    assert_eq!(p.b.state(B, A), ChatSecurity::NotPrivate);
    while let Some(t) = p.b.poll_transmit() {
        let read = m.receive(A, B, &t.body);
        assert!(
            read.is_none_or(|s| !s.text.contains("the held secret")),
            "released to mallory"
        );
    }
    // Alice comes back with her verified key: the message goes to her.
    p.a.start(A, B).expect("start");
    p.settle();
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
    assert_eq!(p.b.held(B, A), 0);
    assert!(
        p.a.shown.iter().any(|s| s == "the held secret"),
        "{:?}",
        p.a.shown
    );
}

/// Mallory, with her own key but alice's instance tag: tags are in clear in every
/// message header, so anyone can claim one.
fn mallory_with_alices_tag(p: &Pair) -> OtrEngine {
    let mut m = engine();
    m.generate_key(A).expect("key");
    let tags = p.a.instance_tags_file().expect("alice's tags");
    m.load_instance_tags(&tags).expect("load");
    assert_eq!(instance_tag(&m), instance_tag(&p.a));
    m
}

/// An engine's instance tag (it has one account).
fn instance_tag(e: &OtrEngine) -> u32 {
    let file = e.instance_tags_file().expect("tags");
    let text = String::from_utf8(file.to_vec()).expect("text");
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a tag");
    u32::from_str_radix(line.rsplit('\t').next().expect("field"), 16).expect("hex")
}

/// Mallory runs a key exchange with bob under alice's instance tag; what bob sends
/// meanwhile goes to her. Returns what she could read of it; bob's events go to
/// `p.b.events`.
fn same_tag_key_exchange(p: &mut Pair, m: &mut OtrEngine) -> Vec<Incoming> {
    let mut read = Vec::new();
    let _ = m.receive(A, B, "?OTRv3?");
    for _ in 0..50 {
        let mut moved = false;
        while let Some(t) = m.poll_transmit() {
            moved = true;
            let _ = p.b.engine.receive(B, A, &t.body);
        }
        while let Some(t) = p.b.poll_transmit() {
            moved = true;
            read.extend(m.receive(A, B, &t.body));
        }
        if !moved {
            break;
        }
    }
    while let Some(e) = p.b.poll_event() {
        p.b.events.push(e);
    }
    while m.poll_event().is_some() {}
    assert_eq!(
        m.state(A, B),
        ChatSecurity::PrivateUnverified,
        "mallory's key exchange finished"
    );
    read
}

#[test]
fn a_new_key_under_the_pinned_instance_tag_never_takes_a_verified_conversation() {
    for policy in [
        OtrPolicy::Opportunistic,
        OtrPolicy::Manual,
        OtrPolicy::Require,
    ] {
        let mut p = verified_pair(policy);
        let a_fp = p.a.fingerprint(A).expect("alice's key");
        let mut m = mallory_with_alices_tag(&p);
        let m_fp = m.fingerprint(A).expect("mallory's key");
        let read = same_tag_key_exchange(&mut p, &mut m);
        assert!(read.is_empty(), "{policy:?}: {read:?}");
        assert_ne!(
            p.b.state(B, A),
            ChatSecurity::PrivateUnverified,
            "{policy:?}: shown private with mallory's key"
        );
        assert_ne!(p.b.peer_fingerprint(B, A), Some(m_fp.clone()), "{policy:?}");
        assert!(
            !p.b.events.iter().any(|e| matches!(
                e,
                OtrEvent::Secure { fingerprint, .. } if *fingerprint == m_fp
            )),
            "{policy:?}: {:?}",
            p.b.events
        );
        assert!(
            notice_naming(&p.b.events, &m_fp),
            "{policy:?}: {:?}",
            p.b.events
        );
        // What bob writes now reaches no one who can read it: refused in words, or held.
        let sent = p.b.send(B, A, "for alice only");
        if policy == OtrPolicy::Require {
            assert_eq!(sent, Err(OtrError::Held), "{policy:?}");
            let events: Vec<OtrEvent> = std::iter::from_fn(|| p.b.poll_event()).collect();
            assert!(notice_naming(&events, &m_fp), "{policy:?}: {events:?}");
        } else {
            assert!(
                matches!(&sent, Err(OtrError::KeyChanged { fingerprint, .. }) if *fingerprint == m_fp),
                "{policy:?}: {sent:?}"
            );
        }
        while let Some(t) = p.b.poll_transmit() {
            assert!(
                m.receive(A, B, &t.body)
                    .is_none_or(|s| !s.text.contains("for alice only")),
                "{policy:?}: mallory read it"
            );
        }
        // Alice's verified key comes back under her tag: private with it again.
        p.a.start(A, B).expect("start");
        p.settle();
        assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified, "{policy:?}");
        assert_eq!(p.b.peer_fingerprint(B, A), Some(a_fp), "{policy:?}");
        if policy == OtrPolicy::Require {
            assert_eq!(p.b.held(B, A), 0);
            assert!(
                p.a.shown.iter().any(|s| s == "for alice only"),
                "{:?}",
                p.a.shown
            );
        }
    }
}

#[test]
fn an_error_then_a_same_tag_key_exchange_never_resends_the_last_message() {
    for policy in [OtrPolicy::Opportunistic, OtrPolicy::Require] {
        let mut p = verified_pair(policy);
        p.b.send(B, A, "the last secret").expect("send");
        p.settle();
        assert_eq!(
            p.a.shown.last().map(String::as_str),
            Some("the last secret")
        );
        let mut m = mallory_with_alices_tag(&p);
        // One fragment, in alice's session, carrying an OTR error: libotr marks the last
        // message as one to resend after the next key exchange.
        let error = format!(
            "?OTR|{:08x}|{:08x},00001,00001,?OTR Error: x,",
            instance_tag(&p.a),
            instance_tag(&p.b)
        );
        assert!(
            p.b.engine
                .receive(B, A, &error)
                .is_none_or(|s| !s.encrypted)
        );
        quiet(&mut p.b);
        let read = same_tag_key_exchange(&mut p, &mut m);
        assert!(
            !read.iter().any(|s| s.text.contains("the last secret")),
            "{policy:?}: mallory read bob's last message: {read:?}"
        );
    }
}

#[test]
fn an_otr_v2_key_exchange_is_never_offered_started_nor_answered() {
    for policy in [
        OtrPolicy::Opportunistic,
        OtrPolicy::Manual,
        OtrPolicy::Require,
    ] {
        // OTR v2 has no instance tags: its key exchange would run beside the pinned one.
        let mut b = engine();
        b.generate_key(B).expect("key");
        b.set_default_policy(B, policy);
        b.start(B, A).expect("start");
        let query = b.poll_transmit().expect("query").body;
        assert!(query.starts_with("?OTRv3?"), "{policy:?}: {query}");
        assert!(b.receive(B, A, "?OTRv2?").is_none());
        // A v2 message's header starts with version 0x0002: "?OTR:AAI".
        while let Some(t) = b.poll_transmit() {
            assert!(
                !t.body.starts_with("?OTR:AAI"),
                "{policy:?}: {:.20}",
                t.body
            );
        }
        // Nor in a verified conversation.
        let mut p = verified_pair(policy);
        assert!(p.b.engine.receive(B, A, "?OTRv2?").is_none());
        while let Some(t) = p.b.poll_transmit() {
            assert!(
                !t.body.starts_with("?OTR:AAI"),
                "{policy:?}: {:.20}",
                t.body
            );
        }
        assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified, "{policy:?}");
    }
}

#[test]
fn a_verified_buddys_second_verified_device_is_heard_unverified_ones_are_not() {
    let mut p = verified_pair(OtrPolicy::Opportunistic);
    // Alice's second device, with its own key, goes private with bob; bob verifies it.
    let mut a2 = engine();
    a2.generate_key(A).expect("key");
    let a2_fp = a2.fingerprint(A).expect("second key");
    a2.start(A, B).expect("start");
    exchange(&mut a2, A, &mut p.b, B);
    assert_eq!(a2.state(A, B), ChatSecurity::PrivateUnverified);
    p.b.set_verified(B, A, &a2_fp, true).expect("verify");
    assert_eq!(p.b.peer_fingerprint(B, A), Some(a2_fp.clone()));
    quiet(&mut p.b);
    // The first device, verified too, writes: bob sees it, as private.
    let a1_fp = p.a.fingerprint(A).expect("first key");
    p.a.send(A, B, "from my laptop").expect("send");
    let t = p.a.poll_transmit().expect("sent");
    assert_eq!(
        p.b.engine.receive(B, A, &t.body),
        Some(Incoming {
            text: "from my laptop".into(),
            encrypted: true
        })
    );
    let events: Vec<OtrEvent> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert!(notice_naming(&events, &a1_fp), "{events:?}");
    // Once bob no longer trusts the first device's key, its lines are dropped again.
    p.b.set_verified(B, A, &a1_fp, false).expect("unverify");
    quiet(&mut p.b);
    p.a.send(A, B, "still the laptop").expect("send");
    let t = p.a.poll_transmit().expect("sent");
    assert_eq!(p.b.engine.receive(B, A, &t.body), None);
    let events: Vec<OtrEvent> = std::iter::from_fn(|| p.b.poll_event()).collect();
    assert!(notice_naming(&events, &a1_fp), "{events:?}");
    assert_eq!(p.b.state(B, A), ChatSecurity::PrivateVerified);
}

#[test]
fn the_refusal_notice_says_whether_the_conversation_is_still_private() {
    // The conversation is private with alice's verified key: it says it stays so.
    let mut p = verified_pair(OtrPolicy::Opportunistic);
    let (m, events) = mallory_finishes_a_key_exchange(&mut p);
    let m_fp = m.fingerprint(A).expect("mallory's key");
    let says = |events: &[OtrEvent], words: &str| {
        events.iter().any(|e| {
            matches!(e, OtrEvent::Notice { text, .. } if text.contains(&m_fp) && text.contains(words))
        })
    };
    assert!(says(&events, "stays with"), "{events:?}");
    // Bob ended it: the words say it is not private now, not that it stays verified.
    let mut p = verified_pair(OtrPolicy::Opportunistic);
    p.b.end(B, A).expect("end");
    p.settle();
    assert_eq!(p.b.state(B, A), ChatSecurity::NotPrivate);
    let (m, events) = mallory_finishes_a_key_exchange(&mut p);
    let m_fp = m.fingerprint(A).expect("mallory's key");
    let says = |events: &[OtrEvent], words: &str| {
        events.iter().any(|e| {
            matches!(e, OtrEvent::Notice { text, .. } if text.contains(&m_fp) && text.contains(words))
        })
    };
    assert!(says(&events, "is not private now"), "{events:?}");
    assert!(!says(&events, "stays with"), "{events:?}");
}
