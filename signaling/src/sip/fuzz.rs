//! The entry point of the `sip_datagram` fuzz target (feature `fuzzing`): one raw
//! datagram through rsipstack's parser, then through everything of ours that is pure
//! and reads what a peer sent — request classification, SDP offer/answer, digest
//! challenges and the realm policy, end reasons. Panics when one of our invariants
//! breaks; never otherwise.

use super::digest::{self, Challenged};
use super::event::EndReason;
use super::realm::{AccountRealms, withheld_words};
use super::stack::Incoming;
use super::uri::parse_target;
use crate::sdp::{self, Codecs, LocalMedia};
use hush_media::codec::CodecKind;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Request, Response, SipMessage};

const OURS: &str = "ours.example";
const ALL: [CodecKind; 3] = [CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma];

/// Runs one datagram as the SIP side would see it from the network.
pub fn sip_datagram(data: &[u8]) {
    match SipMessage::try_from(data) {
        Ok(SipMessage::Request(req)) => request(&req),
        Ok(SipMessage::Response(resp)) => response(&resp),
        Err(_) => {}
    }
}

fn request(req: &Request) {
    let _ = Incoming::of(req);
    if let Ok(from) = req.from_header() {
        let _ = from.typed();
    }
    let _ = parse_target(&req.uri.to_string());
    body(req.body());
}

/// An offer (or answer) in a body: what parses is sane, and our answer to it parses
/// back to the same choice.
fn body(b: &[u8]) {
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

fn response(resp: &Response) {
    let _ = EndReason::from_status(&resp.status_code).to_string();
    let _ = digest::realm_asked(resp);
    body(resp.body());
    let cred = Credential {
        username: "alice".into(),
        password: "secret".into(),
        realm: None,
        auth_username: None,
    };
    let code = resp.status_code.code();
    let realms = AccountRealms::default();
    realms.learn(OURS);
    for answered in 0..3 {
        let permitted = |r: &str| realms.permits(r, None);
        match digest::authorization(resp, &cred, "INVITE", "sip:bob@x", answered, permitted) {
            Challenged::Answer { header, realm } => {
                assert_eq!(realm, OURS, "the password went to another realm");
                let text = match (&header, code) {
                    (Header::Authorization(v), 401) => v.value(),
                    (Header::ProxyAuthorization(v), 407) => v.value(),
                    _ => panic!("answer {header:?} does not fit a {code}"),
                };
                assert!(text.contains(&format!("realm=\"{OURS}\"")), "{text}");
            }
            Challenged::Withheld(realm) => {
                assert!(!realms.permits(&realm, None));
                let words = withheld_words("the other side", &realm, &realms.known(None));
                assert!(!words.contains(['\n', '\r']), "{words}");
            }
            Challenged::Unanswerable => {}
        }
    }
    // No realm permitted (a direct call): nothing is ever answered.
    assert!(!matches!(
        digest::authorization(resp, &cred, "INVITE", "sip:bob@x", 0, |_| false),
        Challenged::Answer { .. }
    ));
    // A registrar's first challenge teaches the realm; afterwards only that one passes.
    let fresh = AccountRealms::default();
    let first = |r: &str| fresh.permits_registrar(r, None);
    if let Challenged::Answer { realm, .. } =
        digest::authorization(resp, &cred, "REGISTER", "sip:x", 0, first)
    {
        fresh.learn(&realm);
        assert!(fresh.permits(&realm, None));
    }
}
