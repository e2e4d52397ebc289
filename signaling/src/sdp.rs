//! SDP offer/answer (RFC 3264) for one audio stream: codecs (Opus, PCMU, PCMA),
//! telephone-event, direction (hold), and the ZRTP hello hash (`a=zrtp-hash`, RFC 6189
//! §8). Parsing goes through webrtc-rs `sdp` after a size check; what we send is
//! written here, one line at a time, so it is exactly what peers expect. A body with a
//! malformed `a=zrtp-hash` is refused as a whole: the call would otherwise be answered
//! and then fail to key its media.

use crate::SignalingError;
use hush_media::codec::CodecKind;
use std::io::Cursor;
use std::net::IpAddr;

/// Largest SDP body we parse.
pub const MAX_SDP: usize = 16 * 1024;
/// Dynamic payload types we use in offers.
const PT_OPUS: u8 = 111;
const PT_TE_48K: u8 = 100;
const PT_TE_8K: u8 = 101;

/// Which way media flows (RFC 3264 §6.1); hold is sendonly or inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// We (or they) only send: the other side is on hold.
    SendOnly,
    /// Only receive.
    RecvOnly,
    /// Nothing flows.
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction to answer with: the mirror image.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// The audio stream as one side describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioDescription {
    /// Where to send media.
    pub addr: IpAddr,
    /// RTP port; 0 means the stream is refused.
    pub port: u16,
    /// Offered codecs with their payload types, in preference order.
    pub codecs: Vec<(u8, CodecKind)>,
    /// telephone-event payload types with their clock rates.
    pub telephone_events: Vec<(u8, u32)>,
    /// Media direction.
    pub direction: Direction,
    /// `a=zrtp-hash` value, if present: always a version and 64 hex digits.
    pub zrtp_hash: Option<String>,
}

/// Whether `h` is an RFC 6189 §8 `zrtp-hash` value: `1*DIGIT "." 1*DIGIT SP 64HEXDIG`.
pub fn is_zrtp_hash(h: &str) -> bool {
    let mut parts = h.split(' ');
    let (Some(version), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    version
        .split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
        && hash.len() == 64
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What offer/answer settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec.
    pub codec: CodecKind,
    /// Its payload type (the offerer's numbering).
    pub payload_type: u8,
    /// telephone-event payload type at the codec's clock, if both support it.
    pub telephone_event: Option<u8>,
}

fn bad(why: impl Into<String>) -> SignalingError {
    SignalingError::Protocol(format!("SDP: {}", why.into()))
}

/// Our side of the session, as written into an offer or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// `o=` session id (random per call).
    pub session_id: u64,
    /// `o=` version, increased with every new offer or answer in the call.
    pub version: u64,
    /// Our media address.
    pub addr: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Media direction.
    pub direction: Direction,
    /// Our `a=zrtp-hash`.
    pub zrtp_hash: Option<String>,
}

/// What the body carries: every codec we offer, or the one an answer settled on.
#[derive(Debug, Clone, Copy)]
pub enum Codecs<'a> {
    /// An offer of these codecs, in preference order.
    Offer(&'a [CodecKind]),
    /// An answer with the negotiated codec.
    Answer(&'a Negotiated),
}

/// Writes our SDP body.
pub fn write(local: &LocalMedia, codecs: Codecs<'_>) -> String {
    let LocalMedia {
        session_id,
        version,
        addr,
        port,
        direction,
        ref zrtp_hash,
    } = *local;
    let (codecs, chosen) = match codecs {
        Codecs::Offer(c) => (c, None),
        Codecs::Answer(n) => (&[][..], Some(n)),
    };
    let ip = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let mut formats: Vec<(u8, String, Option<String>)> = Vec::new();
    match chosen {
        Some(n) => {
            formats.push((n.payload_type, rtpmap(n.codec), fmtp(n.codec)));
            if let Some(te) = n.telephone_event {
                formats.push((
                    te,
                    format!("telephone-event/{}", n.codec.clock_rate()),
                    Some("0-15".into()),
                ));
            }
        }
        None => {
            for &c in codecs {
                formats.push((pt_for(c), rtpmap(c), fmtp(c)));
            }
            if codecs.contains(&CodecKind::Opus) {
                formats.push((
                    PT_TE_48K,
                    "telephone-event/48000".into(),
                    Some("0-15".into()),
                ));
            }
            if codecs.iter().any(|c| c.clock_rate() == 8000) {
                formats.push((PT_TE_8K, "telephone-event/8000".into(), Some("0-15".into())));
            }
        }
    }
    let pts: Vec<String> = formats.iter().map(|(pt, _, _)| pt.to_string()).collect();
    let mut s = format!(
        "v=0\r\no=hushphone {session_id} {version} IN {ip} {addr}\r\ns=Hushphone\r\nc=IN {ip} {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        pts.join(" ")
    );
    for (pt, map, fmtp) in &formats {
        s.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
        if let Some(f) = fmtp {
            s.push_str(&format!("a=fmtp:{pt} {f}\r\n"));
        }
    }
    s.push_str("a=ptime:20\r\n");
    s.push_str(&format!("a={}\r\n", direction.attr()));
    if let Some(h) = zrtp_hash.as_deref() {
        s.push_str(&format!("a=zrtp-hash:{h}\r\n"));
    }
    s
}

fn pt_for(c: CodecKind) -> u8 {
    c.static_payload_type().unwrap_or(PT_OPUS)
}

fn rtpmap(c: CodecKind) -> String {
    match c {
        CodecKind::Opus => "opus/48000/2".into(),
        other => format!("{}/{}", other.sdp_name(), other.clock_rate()),
    }
}

fn fmtp(c: CodecKind) -> Option<String> {
    (c == CodecKind::Opus).then(|| "useinbandfec=1; stereo=0; sprop-stereo=0".into())
}

/// Reads the first audio stream of an SDP body.
pub fn parse(body: &[u8]) -> Result<AudioDescription, SignalingError> {
    if body.len() > MAX_SDP {
        return Err(bad("body too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let sd = sdp::SessionDescription::unmarshal(&mut Cursor::new(text))
        .map_err(|e| bad(e.to_string()))?;
    let m = sd
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio")
        .ok_or_else(|| bad("no audio stream"))?;
    let conn = m
        .connection_information
        .as_ref()
        .or(sd.connection_information.as_ref());
    let addr: IpAddr = conn
        .and_then(|c| c.address.as_ref())
        .ok_or_else(|| bad("no connection address"))?
        .address
        .parse()
        .map_err(|_| bad("connection address is not an IP address"))?;
    let port = u16::try_from(m.media_name.port.value).map_err(|_| bad("port out of range"))?;
    fn values<'a>(
        attrs: &'a [sdp::description::common::Attribute],
        key: &'a str,
    ) -> impl Iterator<Item = &'a str> {
        attrs
            .iter()
            .filter(move |a| a.key == key)
            .filter_map(|a| a.value.as_deref())
    }
    let attr = |key: &'static str| values(&m.attributes, key);
    let mut codecs = Vec::new();
    let mut telephone_events = Vec::new();
    for f in &m.media_name.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        if pt > 127 {
            continue;
        }
        let map = attr("rtpmap").find_map(|v| {
            let (p, rest) = v.split_once(' ')?;
            (p.parse::<u8>().ok()? == pt).then(|| rest.trim().to_ascii_lowercase())
        });
        let (name, rate) = match &map {
            Some(m) => {
                let mut parts = m.split('/');
                (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().and_then(|r| r.parse::<u32>().ok()),
                )
            }
            None => match pt {
                0 => ("pcmu".to_owned(), Some(8000)),
                8 => ("pcma".to_owned(), Some(8000)),
                _ => continue,
            },
        };
        match (name.as_str(), rate) {
            ("pcmu", Some(8000)) => codecs.push((pt, CodecKind::Pcmu)),
            ("pcma", Some(8000)) => codecs.push((pt, CodecKind::Pcma)),
            ("opus", Some(48000)) => codecs.push((pt, CodecKind::Opus)),
            ("telephone-event", Some(r)) => telephone_events.push((pt, r)),
            _ => {}
        }
    }
    let has = |k: &str| {
        m.attributes.iter().any(|a| a.key == k) || sd.attributes.iter().any(|a| a.key == k)
    };
    let mut direction = if has("inactive") {
        Direction::Inactive
    } else if has("sendonly") {
        Direction::SendOnly
    } else if has("recvonly") {
        Direction::RecvOnly
    } else {
        Direction::SendRecv
    };
    // RFC 2543-style hold: connection address 0.0.0.0.
    if addr.is_unspecified() && direction == Direction::SendRecv {
        direction = Direction::SendOnly;
    }
    let zrtp_hash = attr("zrtp-hash")
        .next()
        .or_else(|| {
            sd.attributes
                .iter()
                .find(|a| a.key == "zrtp-hash")
                .and_then(|a| a.value.as_deref())
        })
        .map(|h| h.trim().to_owned());
    if let Some(h) = &zrtp_hash
        && !is_zrtp_hash(h)
    {
        return Err(bad(
            "a=zrtp-hash is malformed (expected a version and 64 hex digits)",
        ));
    }
    Ok(AudioDescription {
        addr,
        port,
        codecs,
        telephone_events,
        direction,
        zrtp_hash,
    })
}

/// Picks the codec for an answer: the offerer's most preferred one that we support.
pub fn negotiate(
    offer: &AudioDescription,
    supported: &[CodecKind],
) -> Result<Negotiated, SignalingError> {
    let (pt, codec) = offer
        .codecs
        .iter()
        .find(|(_, c)| supported.contains(c))
        .copied()
        .ok_or_else(|| bad("no codec in common (we speak Opus, PCMU and PCMA)"))?;
    let telephone_event = offer
        .telephone_events
        .iter()
        .find(|(_, r)| *r == codec.clock_rate())
        .map(|(pt, _)| *pt);
    Ok(Negotiated {
        codec,
        payload_type: pt,
        telephone_event,
    })
}

/// Reads what the answerer chose from its answer to our offer.
pub fn accepted(
    answer: &AudioDescription,
    offered: &[CodecKind],
) -> Result<Negotiated, SignalingError> {
    if answer.port == 0 {
        return Err(bad("the peer refused the audio stream"));
    }
    negotiate(answer, offered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What linphonec 5.1 (Debian 12) actually offers, captured from the wire.
    const LINPHONE_OFFER: &str = include_str!("../tests/fixtures/linphonec-5.1-offer.sdp");

    #[test]
    fn parses_a_linphone_offer() {
        let d = parse(LINPHONE_OFFER.as_bytes()).expect("parse");
        assert_eq!(d.addr, "127.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(d.port, 7080);
        assert_eq!(d.codecs, vec![(0, CodecKind::Pcmu)]);
        assert_eq!(d.telephone_events, vec![(96, 8000)]);
        assert_eq!(d.direction, Direction::SendRecv);
        assert!(
            d.zrtp_hash
                .as_deref()
                .is_some_and(|h| h.starts_with("1.10 416309f3"))
        );
        let n =
            negotiate(&d, &[CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma]).expect("negotiate");
        assert_eq!(
            n,
            Negotiated {
                codec: CodecKind::Pcmu,
                payload_type: 0,
                telephone_event: Some(96)
            }
        );
    }

    #[test]
    fn our_offer_and_answer_round_trip() {
        let all = [CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma];
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let local = |port, zrtp: Option<&str>| LocalMedia {
            session_id: 1,
            version: 1,
            addr: ip,
            port,
            direction: Direction::SendRecv,
            zrtp_hash: zrtp.map(str::to_owned),
        };
        let hash = format!("1.10 {}", "0123456789abcdef".repeat(4));
        let offer = write(&local(4000, Some(&hash)), Codecs::Offer(&all));
        let d = parse(offer.as_bytes()).expect("our offer parses");
        assert_eq!(
            d.codecs,
            vec![
                (111, CodecKind::Opus),
                (0, CodecKind::Pcmu),
                (8, CodecKind::Pcma)
            ]
        );
        assert_eq!(d.telephone_events, vec![(100, 48000), (101, 8000)]);
        assert_eq!(d.zrtp_hash.as_deref(), Some(hash.as_str()));
        // A G.711-only answerer picks PCMU and the 8 kHz telephone-event.
        let n = negotiate(&d, &[CodecKind::Pcmu]).expect("negotiate");
        assert_eq!(n.telephone_event, Some(101));
        let answer = write(&local(5000, None), Codecs::Answer(&n));
        let a = parse(answer.as_bytes()).expect("answer parses");
        assert_eq!(accepted(&a, &all).expect("accepted"), n);
    }

    #[test]
    fn hold_and_refusal() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let local = LocalMedia {
            session_id: 1,
            version: 2,
            addr: ip,
            port: 4000,
            direction: Direction::SendOnly,
            zrtp_hash: None,
        };
        let hold = write(&local, Codecs::Offer(&[CodecKind::Pcmu]));
        assert_eq!(
            parse(hold.as_bytes()).expect("parse").direction,
            Direction::SendOnly
        );
        let old_hold = LINPHONE_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert_eq!(
            parse(old_hold.as_bytes()).expect("parse").direction,
            Direction::SendOnly
        );
        let refused = LINPHONE_OFFER.replace("m=audio 7080", "m=audio 0");
        assert!(
            accepted(
                &parse(refused.as_bytes()).expect("parse"),
                &[CodecKind::Pcmu]
            )
            .is_err()
        );
        let video_only = "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n";
        assert!(parse(video_only.as_bytes()).is_err());
        let g729 = LINPHONE_OFFER.replace("RTP/AVP 0 96", "RTP/AVP 18 96");
        assert!(negotiate(&parse(g729.as_bytes()).expect("parse"), &[CodecKind::Pcmu]).is_err());
    }

    #[test]
    fn hostile_bodies_are_errors() {
        for body in [
            &b""[..],
            b"garbage",
            b"v=0\r\n",
            b"\xff\xfe",
            b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 99999999 RTP/AVP 0\r\n",
            b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 not-an-ip\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n",
        ] {
            assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        assert!(parse(&vec![b'a'; MAX_SDP + 1]).is_err());
    }

    #[test]
    fn a_malformed_zrtp_hash_refuses_the_body() {
        let good = parse(LINPHONE_OFFER.as_bytes())
            .expect("parse")
            .zrtp_hash
            .expect("linphonec sends a hash");
        assert!(is_zrtp_hash(&good), "{good}");
        let hex = "0123456789abcdef".repeat(4);
        for bad in [
            format!("1.10 {}", "zz".repeat(32)),
            format!("1.10 {}", &hex[..63]),
            format!("1.10 {hex}0"),
            hex.clone(),
            format!("x.10 {hex}"),
            format!("1.10  {hex}"),
            format!("1.10 {hex} extra"),
            format!("11111.1 {hex}"),
        ] {
            assert!(!is_zrtp_hash(&bad), "{bad}");
            let body = LINPHONE_OFFER.replace(&good, &bad);
            let err = parse(body.as_bytes()).expect_err(&bad);
            assert!(
                err.to_string().contains("a=zrtp-hash is malformed"),
                "{err}"
            );
        }
    }
}
