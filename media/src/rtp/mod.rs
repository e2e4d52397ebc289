//! RTP (RFC 3550) framing, the demultiplexing of one media port into RTP, RTCP
//! (RFC 5761) and ZRTP (RFC 6189 §5), and which source addresses media and ZRTP are
//! taken from.

pub mod feedback;
mod packet;
mod remote;
mod rtcp;

pub use packet::{RtpHeader, parse, write};
pub use remote::{HelloHash, MAX_ZRTP_CANDIDATES, PeerAddress};
pub use rtcp::{
    ReceptionStats, Report, ReportBlock, SenderInfo, build_report, clock_q16, parse_report,
    round_trip_ms,
};

/// What arrived on the media port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RTP (or SRTP) packet.
    Rtp,
    /// An RTCP (or SRTCP) packet.
    Rtcp,
    /// A ZRTP packet.
    Zrtp,
    /// None of those: drop it.
    Unknown,
}

/// Classifies a datagram from the media port.
pub fn classify(buf: &[u8]) -> Kind {
    if crate::zrtp::is_zrtp(buf) {
        return Kind::Zrtp;
    }
    if buf.len() < 8 || buf[0] >> 6 != 2 {
        return Kind::Unknown;
    }
    // RFC 5761 §4: RTCP packet types 192..=223 sit where RTP has marker + payload type.
    if (192..=223).contains(&buf[1]) {
        Kind::Rtcp
    } else {
        Kind::Rtp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux() {
        assert_eq!(
            classify(&[0x10, 0, 0, 1, b'Z', b'R', b'T', b'P', 0, 0, 0, 0]),
            Kind::Zrtp
        );
        assert_eq!(
            classify(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Kind::Rtp
        );
        assert_eq!(
            classify(&[0x80, 0x80 | 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Kind::Rtp
        );
        assert_eq!(classify(&[0x80, 200, 0, 6, 0, 0, 0, 0]), Kind::Rtcp);
        assert_eq!(classify(&[0x00, 0, 0]), Kind::Unknown);
        assert_eq!(classify(&[]), Kind::Unknown);
    }
}
