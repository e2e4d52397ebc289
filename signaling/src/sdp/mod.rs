//! SDP offer/answer (RFC 3264) for calls with several media streams: one
//! [`StreamDescription`] per m-line, audio (Opus, PCMU, PCMA, telephone-event) and
//! video (VP8), each with its direction (hold) and its own ZRTP hello hash
//! (`a=zrtp-hash`, RFC 6189 §8; multistream keys every stream). Parsing goes through
//! webrtc-rs `sdp` after a size check; what we send is written here, one line at a
//! time, so it is exactly what peers expect. A body with a malformed `a=zrtp-hash` is
//! refused as a whole: the call would otherwise be answered and then fail to key its
//! media. The codec names are this module's own: signalling knows what a peer may
//! offer, not how to encode it.

mod negotiate;
mod parse;
mod write;

pub use negotiate::{accepted, negotiate};
pub use parse::{parse, parse_session};
pub use write::{LocalRtcp, LocalStream, StreamCodecs, write, write_session};

use crate::SignalingError;
use std::net::IpAddr;

/// Largest SDP body we parse.
pub const MAX_SDP: usize = 16 * 1024;
/// Most m-lines we read from one body: a call has audio, video and a screen share;
/// more is an attack on our memory, not a call.
pub const MAX_STREAMS: usize = 8;

/// A codec a peer may offer, by its SDP name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus at 48 kHz.
    Opus,
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// VP8 video (RFC 7741).
    Vp8,
}

impl Codec {
    /// The kind of stream it belongs in.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus | Codec::Pcmu | Codec::Pcma => MediaKind::Audio,
            Codec::Vp8 => MediaKind::Video,
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
            Codec::Vp8 => 90000,
        }
    }

    /// The encoding name as written in `a=rtpmap`.
    pub fn sdp_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
            Codec::Vp8 => "VP8",
        }
    }

    /// The payload type we give it in our offers.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
            Codec::Vp8 => 96,
        }
    }
}

/// What an m-line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video` (a camera or a shared screen).
    Video,
}

impl MediaKind {
    fn word(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

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

    /// Whether this side's media is paused (the other side holds it, or nothing flows).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// One m-line as one side describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// Audio or video; `None` for a kind we do not handle (it is refused by port 0).
    pub kind: Option<MediaKind>,
    /// The m-line's media word, as written (echoed in a refusal).
    pub media: String,
    /// The transport protocol, as written (`RTP/AVP`, `RTP/SAVP`...).
    pub proto: String,
    /// The formats, as written (echoed in a refusal).
    pub formats: Vec<String>,
    /// Where to send media.
    pub addr: IpAddr,
    /// RTP port; 0 means the stream is refused or removed.
    pub port: u16,
    /// Offered codecs with their payload types, in preference order.
    pub codecs: Vec<(u8, Codec)>,
    /// telephone-event payload types with their clock rates.
    pub telephone_events: Vec<(u8, u32)>,
    /// Media direction.
    pub direction: Direction,
    /// `a=zrtp-hash` of this stream (or of the session), if present: always a version
    /// and 64 hex digits.
    pub zrtp_hash: Option<String>,
    /// `a=content` (RFC 4796): `slides` marks a shared screen.
    pub content: Option<String>,
    /// `a=rtcp-mux` (RFC 5761): RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// `a=rtcp` (RFC 3605): RTCP's own port, and address if another.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
}

impl StreamDescription {
    /// Where to send this stream's RTCP: the RTP port under rtcp-mux, else the port
    /// `a=rtcp` names, else the next one up (RFC 3550 §11); always at the stream's
    /// own address. An `a=rtcp` naming another address is not followed: our reports
    /// and key frame requests would go to a third party the SDP named.
    pub fn rtcp_destination(&self) -> std::net::SocketAddr {
        match (self.rtcp_mux, self.rtcp) {
            (true, _) => (self.addr, self.port).into(),
            (false, Some((port, _))) => (self.addr, port).into(),
            (false, None) => (self.addr, self.port.saturating_add(1)).into(),
        }
    }

    /// Whether we may carry it: a kind we know, plain RTP profile (ZRTP keys SRTP
    /// itself; SDES `RTP/SAVP` would put keys in signalling).
    pub fn is_ours(&self) -> bool {
        self.kind.is_some() && self.proto == "RTP/AVP"
    }
}

/// A whole body: its streams in m-line order (answers keep that order, RFC 3264 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The m-lines, at most [`MAX_STREAMS`].
    pub streams: Vec<StreamDescription>,
}

impl SessionDescription {
    /// The first audio stream that is not refused.
    pub fn audio(&self) -> Option<&StreamDescription> {
        self.streams
            .iter()
            .find(|s| s.kind == Some(MediaKind::Audio) && s.port != 0)
    }
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

/// What offer/answer settled on for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec.
    pub codec: Codec,
    /// Its payload type (the offerer's numbering).
    pub payload_type: u8,
    /// telephone-event payload type at the codec's clock, if both support it (audio).
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

/// What one audio body carries: every codec we offer, or the one an answer settled on.
#[derive(Debug, Clone, Copy)]
pub enum Codecs<'a> {
    /// An offer of these codecs, in preference order.
    Offer(&'a [Codec]),
    /// An answer with the negotiated codec.
    Answer(&'a Negotiated),
}

#[cfg(test)]
mod tests;
