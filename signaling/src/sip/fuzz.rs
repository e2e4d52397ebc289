//! The entry point of the `sip_datagram` fuzz target (feature `fuzzing`): one raw
//! datagram through rsipstack's parser, then through everything of ours that is pure
//! and reads what a peer sent — request classification, where a call comes from and
//! whether it is taken, SDP offer/answer, digest challenges as the stack answers them
//! (realm policy included), end reasons. Panics when one of our invariants breaks;
//! never otherwise.

use super::admission::{Admission, Live, MAX_RINGING_PER_SOURCE, Refusal, pin_via};
use super::digest::{self, Challenged};
use super::event::EndReason;
use super::outgoing;
use super::realm::{AccountRealms, withheld_words};
use super::stack::Incoming;
use super::uri::parse_target;
use crate::sdp::{self, Codec, Codecs, LocalMedia, LocalStream, StreamCodecs};
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Host, Method, Param, Request, Response, SipMessage, Transport};
use rsipstack::transport::connection::SipConnection;
use std::net::{IpAddr, SocketAddr};

const OURS: &str = "ours.example";
const ALL: [Codec; 4] = [Codec::Opus, Codec::Pcmu, Codec::Pcma, Codec::Vp8];

/// Runs one datagram as the SIP side would see it from the network.
pub fn sip_datagram(data: &[u8]) {
    match SipMessage::try_from(data) {
        Ok(SipMessage::Request(req)) => request(&req),
        Ok(SipMessage::Response(resp)) => response(&resp),
        Err(_) => {}
    }
}

fn request(req: &Request) {
    classified(req);
    for source in sources(req) {
        replied_to_source(req, source);
        admitted(Some(source.ip()));
    }
    if let Ok(from) = req.from_header() {
        let _ = from.typed();
    }
    let _ = parse_target(&req.uri.to_string());
    body(req.body());
}

/// The classification follows its table: a request with a To tag belongs to a dialog
/// (whatever its method); without one, INVITE is a new call, OPTIONS a probe, ACK a
/// stray, anything else not allowed.
fn classified(req: &Request) {
    let tagged = req
        .to_header()
        .ok()
        .and_then(|to| to.typed().ok())
        .is_some_and(|to| to.params.iter().any(|p| matches!(p, Param::Tag(_))));
    let expected = match (&req.method, tagged) {
        (_, true) => Incoming::InDialog,
        (Method::Invite, false) => Incoming::NewCall,
        (Method::Options, false) => Incoming::Options,
        (Method::Ack, false) => Incoming::StrayAck,
        _ => Incoming::NotAllowed,
    };
    assert_eq!(
        Incoming::of(req),
        expected,
        "{:?} classified wrongly",
        req.method
    );
}

/// Where the datagram is said to come from: a fixed stranger, and the Via's own sent-by
/// when that is an address (then the transport adds no `received` of its own and keeps
/// whatever the sender wrote).
fn sources(req: &Request) -> Vec<SocketAddr> {
    let mut all = vec![SocketAddr::from(([192, 0, 2, 50], 5060))];
    let sent_by = req
        .via_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .and_then(|v| SocketAddr::try_from(v.uri.host_with_port.clone()).ok());
    all.extend(sent_by);
    all
}

/// Whatever the request says about where it came from, once the transport and we have
/// seen it our responses go back to the address it came from.
fn replied_to_source(req: &Request, source: SocketAddr) {
    let Ok(SipMessage::Request(mut seen)) =
        SipConnection::update_msg_received(req.clone().into(), source, Transport::Udp)
    else {
        return;
    };
    pin_via(&mut seen, source);
    let Ok(via) = seen.via_header() else { return };
    if let Ok((_, target)) = SipConnection::parse_target_from_via(via)
        && let Host::IpAddr(ip) = target.host
    {
        assert_eq!(
            ip,
            source.ip(),
            "a response would go to {ip}, not to {source}"
        );
    }
}

/// One address rings at most `MAX_RINGING_PER_SOURCE` times, unless it is the account's
/// server.
fn admitted(source: Option<IpAddr>) {
    let ringing = |_: &str| Live::Ringing;
    let mut stranger = Admission::default();
    for n in 0..MAX_RINGING_PER_SOURCE {
        assert_eq!(stranger.admit(source, ringing), Ok(()));
        stranger.taken(n.to_string(), source);
    }
    assert_eq!(stranger.admit(source, ringing), Err(Refusal::SourceBusy));
    if let Some(ip) = source {
        let mut server = Admission::default();
        server.trust_server(ip);
        for n in 0..=MAX_RINGING_PER_SOURCE {
            assert_eq!(server.admit(source, ringing), Ok(()));
            server.taken(n.to_string(), source);
        }
    }
}

/// An offer (or answer) in a body: what parses is sane, and our answer to it parses
/// back to the same choice, with one m-line for each of the offer's.
fn body(b: &[u8]) {
    session(b);
    let Ok(offer) = sdp::parse(b) else { return };
    if let Some(h) = &offer.zrtp_hash {
        assert!(sdp::is_zrtp_hash(h), "a malformed zrtp-hash parsed: {h:?}");
    }
    let _ = sdp::accepted(&offer, &ALL);
    let Ok(neg) = sdp::negotiate(&offer, &ALL) else {
        return;
    };
    let local = LocalMedia {
        session_id: 1,
        version: 1,
        addr: offer.addr,
        port: offer.port.max(1),
        direction: offer.direction.reversed(),
        zrtp_hash: offer.zrtp_hash.clone(),
    };
    let answer = sdp::write(&local, Codecs::Answer(&neg));
    let back = sdp::parse(answer.as_bytes()).expect("our own answer parses");
    assert_eq!(back.zrtp_hash, local.zrtp_hash);
    assert_eq!(
        sdp::negotiate(&back, &ALL).map(|n| n.codec).ok(),
        Some(neg.codec)
    );
}

/// Every m-line of a body answered (chosen or refused): the answer keeps their number
/// and order.
fn session(b: &[u8]) {
    let Ok(offer) = sdp::parse_session(b) else {
        return;
    };
    assert!(offer.streams.len() <= sdp::MAX_STREAMS);
    let answer: Vec<LocalStream> = offer
        .streams
        .iter()
        .map(|s| LocalStream {
            port: 4000,
            direction: s.direction.reversed(),
            zrtp_hash: s.zrtp_hash.clone(),
            content: None,
            codecs: match sdp::negotiate(s, &ALL) {
                Ok(n) if s.is_ours() && s.port != 0 => StreamCodecs::Answer(n),
                _ => StreamCodecs::Refused {
                    media: s.media.clone(),
                    proto: s.proto.clone(),
                    formats: s.formats.clone(),
                },
            },
            rtcp: sdp::LocalRtcp::default(),
        })
        .collect();
    let addr = offer.streams.first().map(|s| s.addr);
    let Some(addr) = addr else { return };
    let text = sdp::write_session(1, 1, addr, &answer);
    if let Ok(back) = sdp::parse_session(text.as_bytes()) {
        assert_eq!(back.streams.len(), offer.streams.len(), "{text}");
    }
}

fn response(resp: &Response) {
    let _ = EndReason::from_status(&resp.status_code).to_string();
    let asked = digest::realm_asked(resp);
    body(resp.body());
    let cred = |configured: Option<&str>| Credential {
        username: "alice".into(),
        password: "secret".into(),
        realm: configured.map(str::to_owned),
        auth_username: None,
    };
    let sent = InviteOption {
        callee: parse_target("bob@x").expect("a fixed target parses"),
        ..Default::default()
    };
    // The account's realm, learned from the registrar or configured: the INVITE the
    // stack would send again answers that realm and nothing else.
    let learned = AccountRealms::default();
    learned.learn(OURS);
    let nothing = AccountRealms::default();
    for answered in 0..3 {
        for (realms, configured) in [(&learned, None), (&nothing, Some(OURS))] {
            match outgoing::answer(resp, &cred(configured), &sent, answered, realms) {
                Ok(Some(retry)) => answers_only_ours(resp, &retry),
                Ok(None) => {}
                Err(realm) => {
                    assert_ne!(realm, OURS, "our own realm was refused");
                    let words = withheld_words("the other side", &realm, &realms.known(configured));
                    assert!(!words.contains(['\n', '\r']), "{words}");
                }
            }
        }
        // No realm of ours at all (a direct call): nothing is ever answered.
        assert!(!matches!(
            outgoing::answer(resp, &cred(None), &sent, answered, &nothing),
            Ok(Some(_))
        ));
    }
    // Once the account's realm is known, the registrar cannot move the password to
    // another one.
    if let Some(other) = asked.filter(|r| r != OURS) {
        assert!(!learned.permits_registrar(&other, None), "{other:?}");
        assert!(!learned.permits(&other, None), "{other:?}");
    }
    // A registrar's first challenge teaches its realm; afterwards no other passes.
    let fresh = AccountRealms::default();
    let first = |r: &str| fresh.permits_registrar(r, None);
    if let Challenged::Answer { realm, .. } =
        digest::authorization(resp, &cred(None), "REGISTER", "sip:x", 0, first)
    {
        fresh.learn(&realm);
        let other = format!("{realm}.other");
        assert!(!fresh.permits_registrar(&other, None), "{other:?}");
        assert_eq!(fresh.known(None), vec![realm]);
    }
}

/// `retry` carries exactly one answer, of the kind the challenge asked for (401:
/// Authorization, 407: Proxy-Authorization), for our realm.
fn answers_only_ours(resp: &Response, retry: &InviteOption) {
    let code = resp.status_code.code();
    let answers: Vec<&Header> = retry
        .headers
        .iter()
        .flatten()
        .filter(|h| digest::is_authorization(h))
        .collect();
    let [answer] = answers[..] else {
        panic!("{} answers in one request", answers.len());
    };
    let text = match (answer, code) {
        (Header::Authorization(v), 401) => v.value(),
        (Header::ProxyAuthorization(v), 407) => v.value(),
        _ => panic!("answer {answer:?} does not fit a {code}"),
    };
    assert!(
        text.contains(&format!("realm=\"{OURS}\"")),
        "the password went to another realm: {text}"
    );
}
