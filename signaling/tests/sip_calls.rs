//! SIP signalling against real peers on loopback: two of our stacks calling each other
//! directly, through a real Kamailio registrar/proxy with digest authentication, and
//! against a hand-written peer that floods us or asks for our password.

use hush_harness::{Kamailio, SipPeer, sip_header, sip_status};
use hush_signaling::sip::{
    CallKey, EndReason, MAX_DIRECT_CALLS, MAX_RINGING_PER_SOURCE, RING_TIMEOUT, RegistrationHandle,
    RegistrationState, Rejection, SIP_EVENT_QUEUE, SipEvent, SipStack, StackOptions, Transport,
    parse_target,
};
use rsipstack::dialog::authenticate::Credential;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

const OFFER: &str = "v=0\r\no=hushphone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
const ANSWER: &str = "v=0\r\no=hushphone 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";

async fn stack(user: &str) -> (SipStack, Receiver<SipEvent>) {
    SipStack::start(StackOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        transport: Transport::Udp,
        user: user.into(),
        tls_roots: None,
        ring_timeout: RING_TIMEOUT,
    })
    .await
    .expect("stack starts")
}

async fn next(rx: &mut Receiver<SipEvent>) -> SipEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("event within 10 s")
        .expect("stack alive")
}

fn cred(user: &str, pw: &str) -> Credential {
    Credential {
        username: user.into(),
        password: pw.into(),
        realm: None,
        auth_username: None,
    }
}

async fn incoming(rx: &mut Receiver<SipEvent>) -> (CallKey, String, Vec<u8>) {
    loop {
        if let SipEvent::IncomingCall {
            call, from, offer, ..
        } = next(rx).await
        {
            return (call, from, offer);
        }
    }
}

async fn ended(rx: &mut Receiver<SipEvent>) -> EndReason {
    loop {
        if let SipEvent::Ended { reason, .. } = next(rx).await {
            return reason;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_call_answer_hold_and_hangup() {
    let (alice, mut a_rx) = stack("alice").await;
    let (bob, mut b_rx) = stack("bob").await;
    let target = format!("bob@{}", bob.local_addr());
    let from = parse_target(&format!("alice@{}", alice.local_addr())).expect("from");
    let a_call = alice
        .call(&target, from, None, OFFER.into())
        .await
        .expect("INVITE sent");

    let (b_call, from, offer) = incoming(&mut b_rx).await;
    assert!(from.contains("alice"), "{from}");
    assert_eq!(offer, OFFER.as_bytes());
    assert!(
        matches!(next(&mut a_rx).await, SipEvent::Ringing { .. }),
        "180 reaches the caller"
    );
    bob.answer(&b_call, ANSWER.into()).expect("200 OK");
    match next(&mut a_rx).await {
        SipEvent::Answered { call, sdp } => {
            assert_eq!(call, a_call);
            assert_eq!(sdp, ANSWER.as_bytes());
        }
        other => panic!("expected Answered, got {other:?}"),
    }
    let ev = next(&mut b_rx).await;
    assert!(
        matches!(ev, SipEvent::Established { .. }),
        "ACK reaches the callee: {ev:?}"
    );

    // Alice puts Bob on hold: Bob must answer the re-INVITE himself.
    let hold = OFFER.replace("a=sendrecv", "a=sendonly");
    let alice_ref = &alice;
    let (answer, _) = tokio::join!(alice_ref.reinvite(&a_call, hold.clone()), async {
        match next(&mut b_rx).await {
            SipEvent::ReInvite { reinvite, .. } => {
                assert_eq!(reinvite.sdp, hold.as_bytes());
                reinvite
                    .accept(ANSWER.replace("a=sendrecv", "a=recvonly"))
                    .await;
            }
            other => panic!("expected ReInvite, got {other:?}"),
        }
    });
    assert!(String::from_utf8_lossy(&answer.expect("re-INVITE answered")).contains("a=recvonly"));

    alice.hangup(&a_call).expect("BYE");
    assert_eq!(ended(&mut b_rx).await, EndReason::RemoteHangup);
    assert_eq!(ended(&mut a_rx).await, EndReason::LocalHangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_decline_and_cancel() {
    let (alice, mut a_rx) = stack("alice").await;
    let (bob, mut b_rx) = stack("bob").await;
    let target = format!("bob@{}", bob.local_addr());
    let from = || parse_target(&format!("alice@{}", alice.local_addr())).expect("from");

    alice
        .call(&target, from(), None, OFFER.into())
        .await
        .expect("INVITE");
    let (call, _, _) = incoming(&mut b_rx).await;
    bob.reject(&call, Rejection::Busy).expect("486");
    assert_eq!(ended(&mut a_rx).await, EndReason::Busy);

    alice
        .call(&target, from(), None, OFFER.into())
        .await
        .expect("INVITE");
    let (call, _, _) = incoming(&mut b_rx).await;
    bob.reject(&call, Rejection::Declined).expect("603");
    assert_eq!(ended(&mut a_rx).await, EndReason::Declined);

    let a_call = alice
        .call(&target, from(), None, OFFER.into())
        .await
        .expect("INVITE");
    let _ = incoming(&mut b_rx).await;
    loop {
        if let SipEvent::Ringing { .. } = next(&mut a_rx).await {
            break;
        }
    }
    alice.hangup(&a_call).expect("CANCEL");
    assert_eq!(ended(&mut b_rx).await, EndReason::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_at_kamailio_and_a_call_through_it() {
    let k = Kamailio::start().expect("kamailio");
    let registrar = parse_target(&format!("x@127.0.0.1:{}", k.port())).map(|mut u| {
        u.auth = None;
        u
    });
    let registrar = registrar.expect("registrar uri");

    let (alice, mut a_rx) = stack("alice").await;
    let (bob, mut b_rx) = stack("bob").await;

    let (eve, _e_rx) = stack("bob").await;
    let mut wrong = eve.register(registrar.clone(), cred("bob", "not-bobs-password"));
    assert_eq!(
        wrong.wait_settled(Duration::from_secs(10)).await,
        RegistrationState::Refused("wrong username or password".into())
    );

    let mut a_reg = alice.register(registrar.clone(), cred("alice", "alicepw"));
    let mut b_reg = bob.register(registrar.clone(), cred("bob", "bobpw"));
    assert!(
        matches!(
            a_reg.wait_settled(Duration::from_secs(10)).await,
            RegistrationState::Registered { .. }
        ),
        "{}",
        k.log_tail()
    );
    assert!(matches!(
        b_reg.wait_settled(Duration::from_secs(10)).await,
        RegistrationState::Registered { .. }
    ));

    // Alice calls bob's address of record; Kamailio challenges (407) and routes to bob.
    let from = parse_target(&format!("alice@127.0.0.1:{}", k.port())).expect("from");
    let target = format!("bob@127.0.0.1:{}", k.port());
    let a_call = alice
        .call(&target, from, Some(cred("alice", "alicepw")), OFFER.into())
        .await
        .expect("INVITE");
    let (b_call, from, _) = incoming(&mut b_rx).await;
    assert!(from.contains("alice"), "{from}");
    bob.answer(&b_call, ANSWER.into()).expect("answer");
    loop {
        match next(&mut a_rx).await {
            SipEvent::Answered { sdp, .. } => {
                assert_eq!(sdp, ANSWER.as_bytes());
                break;
            }
            SipEvent::Ended { reason, .. } => panic!("call failed: {reason}\n{}", k.log_tail()),
            _ => {}
        }
    }
    bob.hangup(&b_call).expect("BYE from the callee");
    assert_eq!(ended(&mut a_rx).await, EndReason::RemoteHangup);
    assert_eq!(ended(&mut b_rx).await, EndReason::LocalHangup);
    let _ = a_call;

    assert_eq!(a_reg.unregister().await, RegistrationState::Unregistered);
    // Alice is gone from the location table: a call to her now fails with 404.
    let from = parse_target(&format!("bob@127.0.0.1:{}", k.port())).expect("from");
    bob.call(
        &format!("alice@127.0.0.1:{}", k.port()),
        from,
        Some(cred("bob", "bobpw")),
        OFFER.into(),
    )
    .await
    .expect("INVITE");
    match ended(&mut b_rx).await {
        EndReason::Failed(404, _) => {}
        other => panic!("expected 404, got {other:?}"),
    }
}

async fn stream_stack(
    user: &str,
    transport: Transport,
    tls_roots: Option<Vec<u8>>,
) -> (SipStack, Receiver<SipEvent>) {
    SipStack::start(StackOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        transport,
        user: user.into(),
        tls_roots,
        ring_timeout: RING_TIMEOUT,
    })
    .await
    .expect("stack starts")
}

fn server(port: u16) -> rsipstack::sip::Uri {
    let mut u = parse_target(&format!("x@127.0.0.1:{port}")).expect("uri");
    u.auth = None;
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tcp_and_tls_through_kamailio() {
    let k = Kamailio::start_with_tls().expect("kamailio");
    let tls_port = k.tls_port().expect("tls port");
    let cert = k.dir().join("certs/sip.crt");

    // A TLS server whose certificate nobody vouched for is refused, with the reason.
    let (eve, _e_rx) = stream_stack(
        "bob",
        Transport::Tls,
        Some(hush_signaling::sip::trusted_certificates(None).expect("system roots")),
    )
    .await;
    let refused = eve.register(server(tls_port), cred("bob", "bobpw"));
    let why = retrying(&refused, Duration::from_secs(10)).await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    drop(refused);

    let roots = hush_signaling::sip::trusted_certificates(Some(&cert)).expect("roots");
    let (alice, mut a_rx) = stream_stack("alice", Transport::Tcp, None).await;
    let (bob, mut b_rx) = stream_stack("bob", Transport::Tls, Some(roots)).await;
    alice.route_calls_via(&server(k.port()));
    bob.route_calls_via(&server(tls_port));
    let mut a_reg = alice.register(server(k.port()), cred("alice", "alicepw"));
    let mut b_reg = bob.register(server(tls_port), cred("bob", "bobpw"));
    registered([&mut a_reg, &mut b_reg], &k).await;

    // Alice (TCP) calls bob (TLS) through Kamailio and the other way round.
    let (alice_side, bob_side) = alice_and_bob(&alice, &mut a_rx, &bob, &mut b_rx);
    let (alice_side, bob_side) = call_answer_hangup(alice_side, bob_side, &k).await;
    call_answer_hangup(bob_side, alice_side, &k).await;
    assert_eq!(a_reg.unregister().await, RegistrationState::Unregistered);
    assert_eq!(b_reg.unregister().await, RegistrationState::Unregistered);
}

struct Side<'a> {
    stack: &'a SipStack,
    rx: &'a mut Receiver<SipEvent>,
    user: &'static str,
    pw: &'static str,
}

/// `caller` calls `callee` through Kamailio; the callee answers, then hangs up.
async fn call_answer_hangup<'a>(
    caller: Side<'a>,
    callee: Side<'a>,
    k: &Kamailio,
) -> (Side<'a>, Side<'a>) {
    let from = parse_target(&format!("{}@127.0.0.1:{}", caller.user, k.port())).expect("from");
    caller
        .stack
        .call(
            &format!("{}@127.0.0.1:{}", callee.user, k.port()),
            from,
            Some(cred(caller.user, caller.pw)),
            OFFER.into(),
        )
        .await
        .expect("INVITE");
    let (call, from, _) = tokio::time::timeout(Duration::from_secs(8), incoming(callee.rx))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} never rang for {}\n{}",
                callee.user,
                caller.user,
                k.log_tail()
            )
        });
    assert!(from.contains(caller.user), "{from}");
    callee.stack.answer(&call, ANSWER.into()).expect("answer");
    loop {
        match next(caller.rx).await {
            SipEvent::Answered { sdp, .. } => {
                assert_eq!(sdp, ANSWER.as_bytes());
                break;
            }
            SipEvent::Ended { reason, .. } => panic!(
                "{} -> {} failed: {reason}\n{}",
                caller.user,
                callee.user,
                k.log_tail()
            ),
            _ => {}
        }
    }
    callee.stack.hangup(&call).expect("BYE from the callee");
    let hung_up = tokio::time::timeout(Duration::from_secs(8), ended(caller.rx))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}'s BYE never reached {}\n{}",
                callee.user,
                caller.user,
                k.log_tail()
            )
        });
    assert_eq!(hung_up, EndReason::RemoteHangup);
    assert_eq!(ended(callee.rx).await, EndReason::LocalHangup);
    (caller, callee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_digest_registration_and_call() {
    // Kamailio challenges with algorithm=SHA-256 only: an MD5 answer would be refused.
    let k = Kamailio::start_with_sha256_digest().expect("kamailio");
    let (alice, mut a_rx) = stack("alice").await;
    let (bob, mut b_rx) = stack("bob").await;
    let (eve, _e_rx) = stack("bob").await;
    let mut wrong = eve.register(server(k.port()), cred("bob", "not-bobs-password"));
    assert_eq!(
        wrong.wait_settled(Duration::from_secs(10)).await,
        RegistrationState::Refused("wrong username or password".into())
    );
    let mut a_reg = alice.register(server(k.port()), cred("alice", "alicepw"));
    let mut b_reg = bob.register(server(k.port()), cred("bob", "bobpw"));
    registered([&mut a_reg, &mut b_reg], &k).await;
    // The INVITE's 407 is answered with SHA-256 too.
    let (alice_side, bob_side) = alice_and_bob(&alice, &mut a_rx, &bob, &mut b_rx);
    call_answer_hangup(alice_side, bob_side, &k).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_that_never_answers_is_reported_within_seconds() {
    // A UDP socket that reads nothing back: the REGISTER goes out and nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let (alice, _rx) = stack("alice").await;
    let reg = alice.register(server(port), cred("alice", "alicepw"));
    let start = std::time::Instant::now();
    let why = retrying(&reg, Duration::from_secs(15)).await;
    assert_eq!(why, "cannot reach the registrar: no answer within 8 s");
    assert!(start.elapsed() < Duration::from_secs(12));
    assert_eq!(reg.unregister().await, RegistrationState::Unregistered);
}

/// Waits until both registrations are accepted (10 s each at most).
async fn registered(regs: [&mut RegistrationHandle; 2], k: &Kamailio) {
    for reg in regs {
        let s = reg.wait_settled(Duration::from_secs(10)).await;
        assert!(
            matches!(s, RegistrationState::Registered { .. }),
            "{s:?}\n{}",
            k.log_tail()
        );
    }
}

/// Why a registration is retrying, once it says so (within `limit`).
async fn retrying(reg: &RegistrationHandle, limit: Duration) -> String {
    let mut st = reg.state();
    tokio::time::timeout(limit, async {
        loop {
            if let RegistrationState::Retrying(why) = st.borrow_and_update().clone() {
                return why;
            }
            st.changed().await.expect("registration alive");
        }
    })
    .await
    .expect("a retry with its reason in time")
}

/// The two test users with their Kamailio passwords.
fn alice_and_bob<'a>(
    alice: &'a SipStack,
    a_rx: &'a mut Receiver<SipEvent>,
    bob: &'a SipStack,
    b_rx: &'a mut Receiver<SipEvent>,
) -> (Side<'a>, Side<'a>) {
    (
        Side {
            stack: alice,
            rx: a_rx,
            user: "alice",
            pw: "alicepw",
        },
        Side {
            stack: bob,
            rx: b_rx,
            user: "bob",
            pw: "bobpw",
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_asking_for_a_foreign_realm_never_gets_the_password() {
    let k = Kamailio::start().expect("kamailio");
    // "bob" at Kamailio is a rogue callee: it answers every INVITE with a 401 for its
    // own realm, to collect a password hash it could attack offline.
    let mut mallory = SipPeer::bind("bob").expect("peer");
    mallory.register(&k, "bobpw").expect("bob registered");
    let mallory_addr = mallory.addr();
    let rogue = mallory.challenge_invites("evil.example");

    let (alice, mut a_rx) = stack("alice").await;
    let mut a_reg = alice.register(server(k.port()), cred("alice", "alicepw"));
    let s = a_reg.wait_settled(Duration::from_secs(10)).await;
    assert!(
        matches!(s, RegistrationState::Registered { .. }),
        "{s:?}\n{}",
        k.log_tail()
    );
    // From without Kamailio's port: Kamailio relays without challenging itself, so the
    // rogue's challenge is the first and only one the call sees.
    let from = parse_target("alice@127.0.0.1").expect("from");
    alice
        .call(
            &format!("bob@127.0.0.1:{}", k.port()),
            from.clone(),
            Some(cred("alice", "alicepw")),
            OFFER.into(),
        )
        .await
        .expect("INVITE");
    match ended(&mut a_rx).await {
        EndReason::CredentialsWithheld(words) => {
            assert!(words.contains("\"evil.example\""), "{words}");
            assert!(words.contains("\"127.0.0.1\""), "names our realm: {words}");
            assert!(words.ends_with("it was not sent"), "{words}");
        }
        other => panic!("expected the password withheld, got {other:?}"),
    }
    // A direct call has no account: it never answers a challenge at all.
    alice
        .call(&format!("bob@{mallory_addr}"), from, None, OFFER.into())
        .await
        .expect("INVITE");
    match ended(&mut a_rx).await {
        EndReason::CredentialsWithheld(words) => {
            assert!(words.contains("direct call never sends one"), "{words}")
        }
        other => panic!("expected the password withheld, got {other:?}"),
    }
    let seen = rogue.finish();
    assert_eq!(
        seen.iter().filter(|m| m.starts_with("INVITE ")).count(),
        2,
        "both calls reached the rogue once, and were not retried\n{seen:#?}"
    );
    for m in &seen {
        assert!(
            sip_header(m, "Authorization").is_none()
                && sip_header(m, "Proxy-Authorization").is_none(),
            "credentials reached the rogue:\n{m}"
        );
    }
    assert_eq!(a_reg.unregister().await, RegistrationState::Unregistered);
}

/// The realm of the test account's password: configured, so no registrar is needed
/// for the password to be answerable.
const OUR_REALM: &str = "ours.example";

fn account_cred() -> Credential {
    Credential {
        realm: Some(OUR_REALM.into()),
        ..cred("alice", "alicepw")
    }
}

/// Alice calls the raw peer `bob` directly with her account's password at hand; returns
/// the call and the INVITE as the peer got it, with where it came from.
async fn call_the_peer(alice: &SipStack, bob: &SipPeer) -> (CallKey, String, SocketAddr) {
    let from = parse_target(&format!("alice@{}", alice.local_addr())).expect("from");
    let call = alice
        .call(
            &format!("bob@{}", bob.addr()),
            from,
            Some(account_cred()),
            OFFER.into(),
        )
        .await
        .expect("INVITE");
    let (invite, src) = bob
        .next_request("INVITE", Duration::from_secs(5))
        .expect("the INVITE arrives");
    (call, invite, src)
}

/// Every datagram `peer` receives within `limit`.
fn everything(peer: &SipPeer, limit: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    while let Some((m, _)) =
        peer.recv(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        out.push(m);
    }
    out
}

/// Asserts that nothing in `seen` answers a challenge, and that every INVITE in it is
/// `first` again (a retransmission), not a new one.
fn no_second_invite(first: &str, seen: &[String]) {
    for m in seen {
        assert!(
            sip_header(m, "Authorization").is_none()
                && sip_header(m, "Proxy-Authorization").is_none(),
            "the password was answered:\n{m}"
        );
        if m.starts_with("INVITE ") {
            assert_eq!(
                sip_header(m, "CSeq"),
                sip_header(first, "CSeq"),
                "the INVITE was sent again:\n{m}"
            );
        }
    }
}

/// Waits for the Ringing report of alice's call.
async fn rings(rx: &mut Receiver<SipEvent>) {
    loop {
        match next(rx).await {
            SipEvent::Ringing { .. } => return,
            SipEvent::Ended { reason, .. } => panic!("ended before ringing: {reason}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_before_the_challenge_arrives_sends_no_second_invite() {
    let (alice, mut a_rx) = stack("alice").await;
    let bob = SipPeer::bind("bob").expect("peer");
    // Without a hang-up, a challenge for the account's realm is answered: the check
    // below can fail.
    let (_, invite, src) = call_the_peer(&alice, &bob).await;
    bob.challenge(&invite, src, OUR_REALM, "bob-0")
        .expect("401");
    let (again, src) = bob
        .next_request("INVITE", Duration::from_secs(5))
        .expect("the answered INVITE");
    assert!(sip_header(&again, "Authorization").is_some(), "{again}");
    bob.reply(&again, src, "486 Busy Here", Some("bob-0"), &[], "")
        .expect("486");
    assert_eq!(ended(&mut a_rx).await, EndReason::Busy);

    // The user hangs up within one round trip, before the server's 401 arrives.
    let (call, invite, src) = call_the_peer(&alice, &bob).await;
    alice.hangup(&call).expect("hang up");
    bob.challenge(&invite, src, OUR_REALM, "bob-1")
        .expect("401");
    assert_eq!(ended(&mut a_rx).await, EndReason::LocalHangup);
    no_second_invite(&invite, &everything(&bob, Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_challenge_saying_stale_gets_no_second_answer() {
    let (alice, mut a_rx) = stack("alice").await;
    let bob = SipPeer::bind("bob").expect("peer");
    // The first challenge under the account's realm is answered: nothing tells it from
    // a server's.
    let (_, invite, src) = call_the_peer(&alice, &bob).await;
    bob.challenge(&invite, src, OUR_REALM, "bob-0")
        .expect("401");
    let (again, src) = bob
        .next_request("INVITE", Duration::from_secs(5))
        .expect("the answered INVITE");
    assert!(sip_header(&again, "Authorization").is_some(), "{again}");
    // Then the callee asks again, saying the nonce went stale, to collect a second
    // digest (with a nonce of its choice) to guess at.
    let stale = format!(
        "WWW-Authenticate: Digest realm=\"{OUR_REALM}\", nonce=\"fresh-{}\", algorithm=MD5, stale=true",
        bob.addr().port()
    );
    bob.reply(&again, src, "401 Unauthorized", Some("bob-1"), &[stale], "")
        .expect("stale 401");
    match ended(&mut a_rx).await {
        EndReason::CredentialsWithheld(words) => assert!(
            words.contains("asked for your password again") && words.contains(OUR_REALM),
            "{words}"
        ),
        other => panic!("the call ends on the second challenge, saying why: {other:?}"),
    }
    for m in everything(&bob, Duration::from_secs(2)) {
        if m.starts_with("INVITE ") {
            assert_eq!(
                sip_header(&m, "CSeq"),
                sip_header(&again, "CSeq"),
                "a second answer was sent:\n{m}"
            );
        }
    }
}

/// Alice calls bob, it rings, she hangs up and bob accepts the CANCEL (200); returns
/// the INVITE bob got, still unanswered, and where it came from.
async fn rings_then_cancelled(
    alice: &SipStack,
    a_rx: &mut Receiver<SipEvent>,
    bob: &SipPeer,
) -> (String, SocketAddr) {
    let (call, invite, src) = call_the_peer(alice, bob).await;
    bob.reply(&invite, src, "180 Ringing", Some("bob-1"), &[], "")
        .expect("180");
    rings(a_rx).await;
    alice.hangup(&call).expect("hang up");
    let (cancel, from) = bob
        .next_request("CANCEL", Duration::from_secs(5))
        .expect("the CANCEL");
    bob.reply(&cancel, from, "200 OK", Some("bob-1"), &[], "")
        .expect("200 for the CANCEL");
    (invite, src)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_answering_our_cancel_with_a_challenge_is_not_called_again() {
    let (alice, mut a_rx) = stack("alice").await;
    let bob = SipPeer::bind("bob").expect("peer");
    let (invite, src) = rings_then_cancelled(&alice, &mut a_rx, &bob).await;
    // Instead of 487, a challenge for the account's realm (which anyone can learn).
    bob.challenge(&invite, src, OUR_REALM, "bob-1")
        .expect("401");
    assert_eq!(ended(&mut a_rx).await, EndReason::LocalHangup);
    no_second_invite(&invite, &everything(&bob, Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_answering_after_our_cancel_gets_a_bye_and_the_call_stays_hung_up() {
    let (alice, mut a_rx) = stack("alice").await;
    let bob = SipPeer::bind("bob").expect("peer");
    let (invite, src) = rings_then_cancelled(&alice, &mut a_rx, &bob).await;
    // The callee picks up anyway: 200 OK to the INVITE crosses our CANCEL.
    bob.accept(&invite, src, "bob-1", ANSWER).expect("200 OK");
    let (bye, from) = bob
        .next_request("BYE", Duration::from_secs(10))
        .expect("a BYE ends the call the callee picked up");
    bob.reply(&bye, from, "200 OK", None, &[], "")
        .expect("200 for the BYE");
    loop {
        match next(&mut a_rx).await {
            SipEvent::Answered { .. } => panic!("a call the user hung up was reported answered"),
            SipEvent::Ended { reason, .. } => {
                assert_eq!(reason, EndReason::LocalHangup);
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_returns_at_once_and_settle_waits_for_the_far_end_to_hear_it() {
    let (alice, mut a_rx) = stack("alice").await;
    let bob = SipPeer::bind("bob").expect("peer");
    let (call, invite, src) = call_the_peer(&alice, &bob).await;
    bob.accept(&invite, src, "bob-1", ANSWER).expect("200 OK");
    loop {
        if let SipEvent::Answered { .. } = next(&mut a_rx).await {
            break;
        }
    }
    let start = std::time::Instant::now();
    alice.hangup(&call).expect("hang up");
    assert!(start.elapsed() < Duration::from_millis(500));
    let (bye, from) = bob
        .next_request("BYE", Duration::from_secs(5))
        .expect("the BYE");
    // Bob has not answered: the hang-up is still in flight when the limit passes.
    let waited = std::time::Instant::now();
    alice.settle(Duration::from_millis(300)).await;
    assert!(waited.elapsed() >= Duration::from_millis(300));
    bob.reply(&bye, from, "200 OK", None, &[], "")
        .expect("200 for the BYE");
    let waited = std::time::Instant::now();
    alice.settle(Duration::from_secs(10)).await;
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "settle did not notice the answer"
    );
    assert_eq!(ended(&mut a_rx).await, EndReason::LocalHangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_challenges_after_ringing_gets_no_password() {
    let (alice, mut a_rx) = stack("alice").await;
    let bob = SipPeer::bind("bob").expect("peer");
    let (_, invite, src) = call_the_peer(&alice, &bob).await;
    // The callee set up an early dialog (180 with a To tag), then asks for the password
    // under the account's own realm, which is public. A server on the way challenges
    // before anything rings, so this can only be the callee or what is behind it.
    bob.reply(&invite, src, "180 Ringing", Some("bob-1"), &[], "")
        .expect("180");
    rings(&mut a_rx).await;
    bob.challenge(&invite, src, OUR_REALM, "bob-1")
        .expect("401");
    match ended(&mut a_rx).await {
        EndReason::CredentialsWithheld(words) => {
            assert!(words.contains("after the call had reached it"), "{words}");
            assert!(words.ends_with("it was not sent"), "{words}");
        }
        other => panic!("expected the password withheld, got {other:?}"),
    }
    no_second_invite(&invite, &everything(&bob, Duration::from_secs(2)));
}

/// A raw caller on its own loopback address 127.0.0.`n` (all of 127/8 is this machine).
fn caller_at(n: u8) -> SipPeer {
    SipPeer::bind_on("caller", std::net::Ipv4Addr::new(127, 0, 0, n)).expect("peer")
}

/// `MAX_DIRECT_CALLS` calls ringing at `bob`, each from a caller of its own address:
/// all the places strangers may take.
async fn fill_the_line(
    bob: &SipStack,
    b_rx: &mut Receiver<SipEvent>,
) -> Vec<(SipPeer, hush_harness::SentInvite)> {
    let uri = format!("sip:bob@{}", bob.local_addr());
    let mut ringing = Vec::new();
    for n in 0..MAX_DIRECT_CALLS {
        let mut caller = caller_at(10 + n as u8);
        let inv = caller
            .invite(bob.local_addr(), &uri, OFFER)
            .expect("INVITE");
        incoming(b_rx).await;
        ringing.push((caller, inv));
    }
    ringing
}

/// The status codes `caller` got for `inv` until its final one or a 180.
fn first_answers(caller: &SipPeer, inv: &hush_harness::SentInvite) -> Vec<u16> {
    caller
        .responses_until(inv, Duration::from_secs(5), |c| c == 180)
        .iter()
        .filter_map(|m| sip_status(m))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_calls_beyond_the_limit_get_busy() {
    let (bob, mut b_rx) = stack("bob").await;
    let uri = format!("sip:bob@{}", bob.local_addr());
    let ringing = fill_the_line(&bob, &mut b_rx).await;
    let mut late = caller_at(9);
    let one_too_many = late.invite(bob.local_addr(), &uri, OFFER).expect("INVITE");
    let answers = late.responses(&one_too_many, Duration::from_secs(5));
    assert_eq!(
        answers.last().and_then(|m| sip_status(m)),
        Some(486),
        "{answers:#?}"
    );
    // A call that ends frees its place.
    let (first, inv) = &ringing[0];
    first.cancel(inv).expect("CANCEL");
    assert_eq!(ended(&mut b_rx).await, EndReason::Cancelled);
    late.invite(bob.local_addr(), &uri, OFFER).expect("INVITE");
    incoming(&mut b_rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_rings_at_most_twice_but_the_registrar_is_not_limited() {
    let (bob, mut b_rx) = stack("bob").await;
    let uri = format!("sip:bob@{}", bob.local_addr());
    let mut caller = caller_at(2);
    for _ in 0..MAX_RINGING_PER_SOURCE {
        let inv = caller
            .invite(bob.local_addr(), &uri, OFFER)
            .expect("INVITE");
        assert_eq!(first_answers(&caller, &inv).last(), Some(&180));
        incoming(&mut b_rx).await;
    }
    let third = caller
        .invite(bob.local_addr(), &uri, OFFER)
        .expect("INVITE");
    assert_eq!(first_answers(&caller, &third).last(), Some(&486));
    // Another address still gets through: the line itself is not full.
    let mut other = caller_at(3);
    let inv = other.invite(bob.local_addr(), &uri, OFFER).expect("INVITE");
    assert_eq!(first_answers(&other, &inv).last(), Some(&180));

    // Every call through the account's registrar comes from the registrar's address:
    // those are not limited.
    let k = Kamailio::start().expect("kamailio");
    let (registered, mut r_rx) = stack("bob").await;
    let mut reg = registered.register(server(k.port()), cred("bob", "bobpw"));
    let s = reg.wait_settled(Duration::from_secs(10)).await;
    assert!(
        matches!(s, RegistrationState::Registered { .. }),
        "{s:?}\n{}",
        k.log_tail()
    );
    let aor = format!("sip:bob@127.0.0.1:{}", k.port());
    let registrar = std::net::SocketAddr::from(([127, 0, 0, 1], k.port()));
    let mut stranger = caller_at(4);
    for n in 0..=MAX_RINGING_PER_SOURCE {
        let inv = stranger.invite(registrar, &aor, OFFER).expect("INVITE");
        let codes = first_answers(&stranger, &inv);
        assert_eq!(
            codes.last(),
            Some(&180),
            "call {n}: {codes:?}\n{}",
            k.log_tail()
        );
        incoming(&mut r_rx).await;
    }
    assert_eq!(reg.unregister().await, RegistrationState::Unregistered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_naming_other_addresses_in_its_via_still_rings_at_most_twice() {
    let (bob, mut b_rx) = stack("bob").await;
    let uri = format!("sip:bob@{}", bob.local_addr());
    let mut caller = caller_at(5);
    // Its Via's sent-by is its true address, so the transport adds nothing, and each
    // INVITE names another `received`: it must neither count as another address nor
    // send our answers there.
    for n in 0..=MAX_RINGING_PER_SOURCE {
        let inv = caller
            .invite_saying(
                bob.local_addr(),
                &uri,
                OFFER,
                &format!(";received=127.0.0.{}", 20 + n),
            )
            .expect("INVITE");
        let codes = first_answers(&caller, &inv);
        if n < MAX_RINGING_PER_SOURCE {
            assert_eq!(codes.last(), Some(&180), "call {n}: {codes:?}");
            incoming(&mut b_rx).await;
        } else {
            assert_eq!(codes.last(), Some(&486), "call {n}: {codes:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_another_address_is_answered_where_it_came_from() {
    let (bob, _b_rx) = stack("bob").await;
    let caller = caller_at(6);
    let local = caller.addr();
    // A CANCEL for no call: the stack's endpoint answers it (481) by the Via alone,
    // before any handler of ours; the Via names a victim twice.
    let cancel = format!(
        "CANCEL sip:bob@{bob_addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-stray;received=127.0.0.31;received=127.0.0.32\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{local}>;tag=stray\r\n\
         To: <sip:bob@{bob_addr}>\r\n\
         Call-ID: stray-cancel@{local}\r\n\
         CSeq: 1 CANCEL\r\n\
         Content-Length: 0\r\n\r\n",
        bob_addr = bob.local_addr(),
    );
    caller.send(&cancel, bob.local_addr()).expect("CANCEL");
    let (answer, from) = caller
        .recv(Duration::from_secs(5))
        .expect("the answer comes back to the sender");
    assert_eq!(from, bob.local_addr());
    assert_eq!(sip_status(&answer), Some(481), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_is_missed_and_frees_its_place() {
    let ring = Duration::from_secs(4);
    let (bob, mut b_rx) = SipStack::start(StackOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        transport: Transport::Udp,
        user: "bob".into(),
        tls_roots: None,
        ring_timeout: ring,
    })
    .await
    .expect("stack starts");
    let uri = format!("sip:bob@{}", bob.local_addr());
    let start = std::time::Instant::now();
    // INVITEs that never end (as forged ones would not) take every place strangers may.
    let ringing = fill_the_line(&bob, &mut b_rx).await;
    let mut late = caller_at(9);
    let inv = late.invite(bob.local_addr(), &uri, OFFER).expect("INVITE");
    assert_eq!(first_answers(&late, &inv).last(), Some(&486));
    assert!(start.elapsed() < ring, "the line filled too slowly to test");
    // Nobody answers: each is refused with 480 once it rang for the ring timeout, and
    // ends as missed.
    for (caller, inv) in &ringing {
        let answers = caller.responses(inv, ring + Duration::from_secs(5));
        assert_eq!(
            answers.last().and_then(|m| sip_status(m)),
            Some(480),
            "{answers:#?}"
        );
    }
    assert!(start.elapsed() >= ring, "refused before the ring timeout");
    for _ in 0..MAX_DIRECT_CALLS {
        assert_eq!(ended(&mut b_rx).await, EndReason::Missed);
    }
    let inv = late.invite(bob.local_addr(), &uri, OFFER).expect("INVITE");
    assert_eq!(first_answers(&late, &inv).last(), Some(&180));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_call_layer_sheds_new_calls_and_loses_no_end() {
    // Nobody reads bob's events while a caller rings and cancels over and over.
    let (bob, mut b_rx) = stack("bob").await;
    let mut caller = SipPeer::bind("caller").expect("peer");
    let uri = format!("sip:bob@{}", bob.local_addr());
    let mut shed = false;
    for _ in 0..4 * SIP_EVENT_QUEUE {
        let inv = caller
            .invite(bob.local_addr(), &uri, OFFER)
            .expect("INVITE");
        let first = caller.responses_until(&inv, Duration::from_secs(5), |c| c == 180);
        let codes: Vec<u16> = first.iter().filter_map(|m| sip_status(m)).collect();
        if codes.contains(&503) {
            shed = true;
            break;
        }
        assert_eq!(codes.last(), Some(&180), "{first:#?}");
        caller.cancel(&inv).expect("CANCEL");
        let rest = caller.responses(&inv, Duration::from_secs(5));
        let last = rest.last().and_then(|m| sip_status(m));
        if last == Some(503) {
            shed = true;
            break;
        }
        assert_eq!(last, Some(487), "{rest:#?}");
    }
    assert!(shed, "a full event queue must refuse new calls with 503");
    // Every call the call layer was told about is also reported ended.
    let mut open = std::collections::HashSet::new();
    let mut told = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), b_rx.recv()).await {
            Ok(Some(SipEvent::IncomingCall { call, .. })) => {
                told += 1;
                open.insert(call);
            }
            Ok(Some(SipEvent::Ended { call, .. })) => {
                assert!(open.remove(&call), "an end for a call never announced");
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(
        told > 0 && told <= SIP_EVENT_QUEUE,
        "{told} calls announced"
    );
    assert!(open.is_empty(), "ends lost for {open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_tls_stacks_open_no_udp_port() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let bind: std::net::SocketAddr = ([127, 0, 0, 1], hush_harness::free_port()).into();
        let (stack, _rx) = SipStack::start(StackOptions {
            bind,
            transport,
            user: "alice".into(),
            tls_roots: Some(hush_signaling::sip::trusted_certificates(None).expect("system roots")),
            ring_timeout: RING_TIMEOUT,
        })
        .await
        .expect("stack starts");
        assert!(
            std::net::UdpSocket::bind(bind).is_ok(),
            "a {transport:?} account holds UDP {bind}"
        );
        drop(stack);
    }
    // The check can fail: a UDP stack does hold its port.
    let bind: std::net::SocketAddr = ([127, 0, 0, 1], hush_harness::free_port()).into();
    let (udp, _rx) = SipStack::start(StackOptions {
        bind,
        transport: Transport::Udp,
        user: "alice".into(),
        tls_roots: None,
        ring_timeout: RING_TIMEOUT,
    })
    .await
    .expect("stack starts");
    assert!(std::net::UdpSocket::bind(bind).is_err());
    drop(udp);
}
