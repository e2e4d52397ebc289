//! Writing our bodies: one m-line per stream, in the order given.

use super::{Codec, Codecs, Direction, LocalMedia, MediaKind, Negotiated};
use std::fmt::Write as _;
use std::net::IpAddr;

/// Dynamic payload types of telephone-event in our offers.
const PT_TE_48K: u8 = 100;
const PT_TE_8K: u8 = 101;

/// What one of our m-lines carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCodecs {
    /// An offer of these codecs (all of one kind), in preference order.
    Offer(Vec<Codec>),
    /// An answer with the negotiated codec.
    Answer(Negotiated),
    /// A stream we refuse (or removed): port 0, the peer's own m-line echoed.
    Refused {
        /// The media word of the peer's m-line.
        media: String,
        /// Its protocol.
        proto: String,
        /// Its formats.
        formats: Vec<String>,
    },
}

/// One of our m-lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStream {
    /// Our RTP port (ignored for a refused stream).
    pub port: u16,
    /// Media direction.
    pub direction: Direction,
    /// Our `a=zrtp-hash` for this stream (its own ZRTP Hello).
    pub zrtp_hash: Option<String>,
    /// `a=content` (RFC 4796), e.g. `slides` for a shared screen.
    pub content: Option<String>,
    /// Codecs, or a refusal.
    pub codecs: StreamCodecs,
    /// Our RTCP: `a=rtcp-mux` (in an offer, with `a=rtcp` as the fallback; in an answer,
    /// accepted), and the port of our own RTCP socket, if any.
    pub rtcp: LocalRtcp,
}

/// Where our RTCP is, as an m-line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalRtcp {
    /// `a=rtcp-mux`.
    pub mux: bool,
    /// `a=rtcp:PORT`.
    pub port: Option<u16>,
}

/// Writes a body with one m-line per stream.
pub fn write_session(
    session_id: u64,
    version: u64,
    addr: IpAddr,
    streams: &[LocalStream],
) -> String {
    let ip = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=hushphone {session_id} {version} IN {ip} {addr}\r\ns=Hushphone\r\nc=IN {ip} {addr}\r\nt=0 0\r\n"
    );
    for stream in streams {
        write_stream(&mut s, stream);
    }
    s
}

fn write_stream(s: &mut String, stream: &LocalStream) {
    let (kind, formats) = match &stream.codecs {
        StreamCodecs::Refused {
            media,
            proto,
            formats,
        } => {
            let formats = if formats.is_empty() {
                "0".to_owned()
            } else {
                formats.join(" ")
            };
            let _ = write!(s, "m={media} 0 {proto} {formats}\r\n");
            return;
        }
        StreamCodecs::Offer(codecs) => {
            let kind = codecs.first().map_or(MediaKind::Audio, |c| c.kind());
            let mut formats: Vec<(u8, String, Option<String>)> = codecs
                .iter()
                .map(|&c| (c.payload_type(), rtpmap(c), fmtp(c)))
                .collect();
            if codecs.contains(&Codec::Opus) {
                formats.push((
                    PT_TE_48K,
                    "telephone-event/48000".into(),
                    Some("0-15".into()),
                ));
            }
            if codecs.iter().any(|c| c.clock_rate() == 8000) {
                formats.push((PT_TE_8K, "telephone-event/8000".into(), Some("0-15".into())));
            }
            (kind, formats)
        }
        StreamCodecs::Answer(n) => {
            let mut formats = vec![(n.payload_type, rtpmap(n.codec), fmtp(n.codec))];
            if let Some(te) = n.telephone_event {
                formats.push((
                    te,
                    format!("telephone-event/{}", n.codec.clock_rate()),
                    Some("0-15".into()),
                ));
            }
            (n.codec.kind(), formats)
        }
    };
    let pts: Vec<String> = formats.iter().map(|(pt, _, _)| pt.to_string()).collect();
    let _ = write!(
        s,
        "m={} {} RTP/AVP {}\r\n",
        kind.word(),
        stream.port,
        pts.join(" ")
    );
    for (pt, map, fmtp) in &formats {
        let _ = write!(s, "a=rtpmap:{pt} {map}\r\n");
        if let Some(f) = fmtp {
            let _ = write!(s, "a=fmtp:{pt} {f}\r\n");
        }
    }
    if kind == MediaKind::Audio {
        s.push_str("a=ptime:20\r\n");
    }
    if kind == MediaKind::Video {
        // Key frames on request (RFC 4585 PLI, RFC 5104 FIR), for every format.
        for (pt, _, _) in &formats {
            let _ = write!(s, "a=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n");
        }
    }
    if let Some(port) = stream.rtcp.port {
        let _ = write!(s, "a=rtcp:{port}\r\n");
    }
    if stream.rtcp.mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    let _ = write!(s, "a={}\r\n", stream.direction.attr());
    if let Some(c) = &stream.content {
        let _ = write!(s, "a=content:{c}\r\n");
    }
    if let Some(h) = stream.zrtp_hash.as_deref() {
        let _ = write!(s, "a=zrtp-hash:{h}\r\n");
    }
}

/// Writes a body with one audio stream.
pub fn write(local: &LocalMedia, codecs: Codecs<'_>) -> String {
    let codecs = match codecs {
        Codecs::Offer(c) => StreamCodecs::Offer(c.to_vec()),
        Codecs::Answer(n) => StreamCodecs::Answer(*n),
    };
    let stream = LocalStream {
        port: local.port,
        direction: local.direction,
        zrtp_hash: local.zrtp_hash.clone(),
        content: None,
        codecs,
        rtcp: LocalRtcp::default(),
    };
    write_session(local.session_id, local.version, local.addr, &[stream])
}

fn rtpmap(c: Codec) -> String {
    match c {
        Codec::Opus => "opus/48000/2".into(),
        other => format!("{}/{}", other.sdp_name(), other.clock_rate()),
    }
}

fn fmtp(c: Codec) -> Option<String> {
    (c == Codec::Opus).then(|| "useinbandfec=1; stereo=0; sprop-stereo=0".into())
}
