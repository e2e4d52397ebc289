//! Reading a peer's body: every m-line, bounded, each checked on its own.

use super::{
    Codec, Direction, MAX_SDP, MAX_STREAMS, MediaKind, SessionDescription, StreamDescription, bad,
    is_zrtp_hash,
};
use crate::SignalingError;
use sdp::description::common::Attribute;
use std::io::Cursor;
use std::net::IpAddr;

/// Most formats we keep from one m-line.
const MAX_FORMATS: usize = 64;

/// Reads every m-line of an SDP body.
pub fn parse_session(body: &[u8]) -> Result<SessionDescription, SignalingError> {
    if body.len() > MAX_SDP {
        return Err(bad("body too large"));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let sd = sdp::SessionDescription::unmarshal(&mut Cursor::new(text))
        .map_err(|e| bad(e.to_string()))?;
    if sd.media_descriptions.is_empty() {
        return Err(bad("no media stream"));
    }
    if sd.media_descriptions.len() > MAX_STREAMS {
        return Err(bad(format!("more than {MAX_STREAMS} media streams")));
    }
    let session_hash = value(&sd.attributes, "zrtp-hash");
    let session_direction = direction_of(&sd.attributes);
    let mut streams = Vec::with_capacity(sd.media_descriptions.len());
    for m in &sd.media_descriptions {
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
        let kind = match m.media_name.media.as_str() {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        };
        let formats: Vec<String> = m
            .media_name
            .formats
            .iter()
            .take(MAX_FORMATS)
            .cloned()
            .collect();
        let (codecs, telephone_events) = match kind {
            Some(kind) => codecs_of(kind, &formats, &m.attributes),
            None => (Vec::new(), Vec::new()),
        };
        let mut direction = direction_of(&m.attributes)
            .or(session_direction)
            .unwrap_or(Direction::SendRecv);
        // RFC 2543-style hold: connection address 0.0.0.0.
        if addr.is_unspecified() && direction == Direction::SendRecv {
            direction = Direction::SendOnly;
        }
        let zrtp_hash = value(&m.attributes, "zrtp-hash")
            .or(session_hash)
            .map(|h| h.trim().to_owned());
        if let Some(h) = &zrtp_hash
            && !is_zrtp_hash(h)
        {
            return Err(bad(
                "a=zrtp-hash is malformed (expected a version and 64 hex digits)",
            ));
        }
        // Echoed in our answers: only a token (RFC 4796), never a line break.
        let content = value(&m.attributes, "content")
            .map(str::trim)
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= 64
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.,".contains(&b))
            })
            .map(str::to_ascii_lowercase);
        let rtcp_mux = m.attributes.iter().any(|a| a.key == "rtcp-mux");
        let rtcp = value(&m.attributes, "rtcp").and_then(rtcp_attribute);
        streams.push(StreamDescription {
            kind,
            media: m.media_name.media.chars().take(32).collect(),
            proto: m.media_name.protos.join("/").chars().take(32).collect(),
            formats,
            addr,
            port,
            codecs,
            telephone_events,
            direction,
            zrtp_hash,
            content,
            rtcp_mux,
            rtcp,
        });
    }
    Ok(SessionDescription { streams })
}

/// Reads the first audio stream of an SDP body (refused streams included: a port of 0
/// says the peer refused it).
pub fn parse(body: &[u8]) -> Result<StreamDescription, SignalingError> {
    parse_session(body)?
        .streams
        .into_iter()
        .find(|s| s.kind == Some(MediaKind::Audio))
        .ok_or_else(|| bad("no audio stream"))
}

fn value<'a>(attrs: &'a [Attribute], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

/// `a=rtcp:PORT [IN IP4|IP6 ADDRESS]` (RFC 3605); a port of 0 or a value that does not
/// parse is ignored (the next port up is then assumed).
fn rtcp_attribute(v: &str) -> Option<(u16, Option<IpAddr>)> {
    let mut words = v.split_ascii_whitespace();
    let port = words.next()?.parse::<u16>().ok().filter(|p| *p != 0)?;
    let addr = match (words.next(), words.next(), words.next()) {
        (Some("IN"), Some("IP4" | "IP6"), Some(a)) => Some(a.parse::<IpAddr>().ok()?),
        _ => None,
    };
    Some((port, addr))
}

fn direction_of(attrs: &[Attribute]) -> Option<Direction> {
    let has = |k: &str| attrs.iter().any(|a| a.key == k);
    if has("inactive") {
        Some(Direction::Inactive)
    } else if has("sendonly") {
        Some(Direction::SendOnly)
    } else if has("recvonly") {
        Some(Direction::RecvOnly)
    } else if has("sendrecv") {
        Some(Direction::SendRecv)
    } else {
        None
    }
}

type Codecs = (Vec<(u8, Codec)>, Vec<(u8, u32)>);

/// The codecs we know among an m-line's formats, in the peer's order.
fn codecs_of(kind: MediaKind, formats: &[String], attrs: &[Attribute]) -> Codecs {
    let mut codecs = Vec::new();
    let mut telephone_events = Vec::new();
    for f in formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        if pt > 127 {
            continue;
        }
        let map = attrs
            .iter()
            .filter(|a| a.key == "rtpmap")
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
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
        let codec = match (name.as_str(), rate) {
            ("pcmu", Some(8000)) => Some(Codec::Pcmu),
            ("pcma", Some(8000)) => Some(Codec::Pcma),
            ("opus", Some(48000)) => Some(Codec::Opus),
            ("vp8", Some(90000)) => Some(Codec::Vp8),
            ("telephone-event", Some(r)) if kind == MediaKind::Audio => {
                telephone_events.push((pt, r));
                None
            }
            _ => None,
        };
        if let Some(c) = codec.filter(|c| c.kind() == kind) {
            codecs.push((pt, c));
        }
    }
    (codecs, telephone_events)
}
