//! The RTCP a video stream needs beyond reports: walking a compound packet (RFC 3550
//! §6.1) and the payload-specific feedback that asks for a key frame, PLI (RFC 4585
//! §6.3.1) and FIR (RFC 5104 §4.3.1). SLI, RPSI, NACK, TMMBR and the rest are read
//! over and ignored. Every length is checked against the datagram before it is used.

use super::rtcp::{Report, parse_report};
use crate::MediaError;

/// RTCP packet types.
const SR: u8 = 200;
const RR: u8 = 201;
const PSFB: u8 = 206;
/// Payload-specific feedback formats.
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;
/// Most packets we read from one compound datagram (a datagram holds ~40 at most).
const MAX_PACKETS: usize = 64;
/// Most FIR entries we read from one FIR.
const MAX_FIR_ENTRIES: usize = 16;

/// One packet of a compound RTCP datagram, as far as a video stream cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// A sender or receiver report.
    Report(Report),
    /// Picture Loss Indication: the sender of `media` should send a key frame.
    Pli {
        /// Who asks.
        sender: u32,
        /// Whose pictures were lost.
        media: u32,
    },
    /// Full Intra Request for `media`; `seq` tells a new request from a repeated one.
    Fir {
        /// Who asks.
        sender: u32,
        /// Whose stream must send a key frame.
        media: u32,
        /// The request's sequence number.
        seq: u8,
    },
    /// Anything else (SDES, BYE, NACK, TMMBR, SLI, RPSI, REMB...), by packet type.
    Other(u8),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The packets of a (decrypted) compound RTCP datagram, in order. A malformed packet
/// ends the walk with an error (what came before it stands).
pub fn walk(buf: &[u8]) -> Vec<Result<RtcpPacket, MediaError>> {
    let bad = |reason| MediaError::Malformed {
        kind: "RTCP",
        reason,
    };
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() && out.len() < MAX_PACKETS {
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            out.push(Err(bad("too short or not version 2")));
            break;
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            out.push(Err(bad("length field exceeds the packet")));
            break;
        }
        let (pkt, next) = rest.split_at(len);
        rest = next;
        let (fmt, pt) = (pkt[0] & 0x1f, pkt[1]);
        let read: Result<Vec<RtcpPacket>, MediaError> = match pt {
            SR | RR => parse_report(pkt).map(|r| vec![RtcpPacket::Report(r)]),
            PSFB if pkt.len() < 12 => Err(bad("feedback without its two SSRCs")),
            PSFB if fmt == FMT_PLI => Ok(vec![RtcpPacket::Pli {
                sender: be32(pkt, 4),
                media: be32(pkt, 8),
            }]),
            PSFB if fmt == FMT_FIR => {
                // The FCI entries follow the two SSRCs; the media SSRC field is unused.
                let sender = be32(pkt, 4);
                let firs: Vec<RtcpPacket> = pkt[12..]
                    .chunks_exact(8)
                    .take(MAX_FIR_ENTRIES)
                    .map(|e| RtcpPacket::Fir {
                        sender,
                        media: be32(e, 0),
                        seq: e[4],
                    })
                    .collect();
                if firs.is_empty() {
                    Err(bad("FIR without an entry"))
                } else {
                    Ok(firs)
                }
            }
            other => Ok(vec![RtcpPacket::Other(other)]),
        };
        match read {
            Ok(packets) => out.extend(packets.into_iter().map(Ok)),
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

/// Appends a PLI from `sender` about `media` to `out`.
pub fn build_pli(sender: u32, media: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x80 | FMT_PLI, PSFB, 0, 2]);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&media.to_be_bytes());
}

/// Appends a FIR from `sender` asking `media` for a key frame, request number `seq`.
pub fn build_fir(sender: u32, media: u32, seq: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x80 | FMT_FIR, PSFB, 0, 4]);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&media.to_be_bytes());
    out.extend_from_slice(&[seq, 0, 0, 0]);
}

/// Decides which key frame requests to act on: every PLI, but a FIR only when its
/// sequence number is new (a repeated FIR is the same request, RFC 5104 §4.3.1.2).
#[derive(Debug, Default)]
pub struct KeyRequests {
    last_fir: Option<(u32, u8)>,
}

impl KeyRequests {
    /// Whether `packet` asks the stream whose SSRC is `ours` for a new key frame.
    pub fn wants_key(&mut self, ours: u32, packet: &RtcpPacket) -> bool {
        match *packet {
            RtcpPacket::Pli { media, .. } => media == ours,
            RtcpPacket::Fir { sender, media, seq } if media == ours => {
                let new = self.last_fir != Some((sender, seq));
                self.last_fir = Some((sender, seq));
                new
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::rtcp::build_report;

    /// Transport-layer feedback (NACK, TMMBR), read over.
    const RTPFB: u8 = 205;

    #[test]
    fn a_compound_packet_is_read_in_order() {
        let mut buf = Vec::new();
        build_report(7, None, None, &mut buf);
        // SDES with one chunk (type 202), padded to a word.
        buf.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0, 7, 1, 1, b'x', 0]);
        build_pli(7, 42, &mut buf);
        build_fir(7, 42, 3, &mut buf);
        // A NACK (RTPFB, FMT 1) with one entry.
        buf.extend_from_slice(&[0x81, RTPFB, 0, 3, 0, 0, 0, 7, 0, 0, 0, 42, 0, 5, 0, 0]);
        let got: Vec<RtcpPacket> = walk(&buf).into_iter().map(|r| r.expect("ok")).collect();
        assert!(matches!(got[0], RtcpPacket::Report(ref r) if r.ssrc == 7));
        assert_eq!(got[1], RtcpPacket::Other(202));
        assert_eq!(
            got[2],
            RtcpPacket::Pli {
                sender: 7,
                media: 42
            }
        );
        assert_eq!(
            got[3],
            RtcpPacket::Fir {
                sender: 7,
                media: 42,
                seq: 3
            }
        );
        assert_eq!(got[4], RtcpPacket::Other(RTPFB));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn a_fir_with_several_entries_keeps_their_order() {
        let mut buf = vec![0x80 | FMT_FIR, PSFB, 0, 6, 0, 0, 0, 9, 0, 0, 0, 0];
        buf.extend_from_slice(&[0, 0, 0, 1, 10, 0, 0, 0]);
        buf.extend_from_slice(&[0, 0, 0, 2, 20, 0, 0, 0]);
        build_pli(9, 3, &mut buf);
        let got: Vec<RtcpPacket> = walk(&buf).into_iter().map(|r| r.expect("ok")).collect();
        assert_eq!(
            got,
            [
                RtcpPacket::Fir {
                    sender: 9,
                    media: 1,
                    seq: 10
                },
                RtcpPacket::Fir {
                    sender: 9,
                    media: 2,
                    seq: 20
                },
                RtcpPacket::Pli {
                    sender: 9,
                    media: 3
                },
            ]
        );
    }

    #[test]
    fn repeated_firs_ask_once_and_others_streams_requests_are_not_ours() {
        let mut k = KeyRequests::default();
        let fir = |seq| RtcpPacket::Fir {
            sender: 1,
            media: 42,
            seq,
        };
        assert!(k.wants_key(42, &fir(1)));
        assert!(!k.wants_key(42, &fir(1)), "a repeat");
        assert!(k.wants_key(42, &fir(2)));
        assert!(k.wants_key(
            42,
            &RtcpPacket::Pli {
                sender: 1,
                media: 42
            }
        ));
        assert!(!k.wants_key(
            42,
            &RtcpPacket::Pli {
                sender: 1,
                media: 43
            }
        ));
        assert!(!k.wants_key(
            42,
            &RtcpPacket::Fir {
                sender: 1,
                media: 43,
                seq: 9
            }
        ));
    }

    #[test]
    fn hostile_compound_packets_end_the_walk_without_panicking() {
        for buf in [
            &[0x80u8][..],
            &[0x40, 200, 0, 1, 0, 0, 0, 0],
            &[0x81, PSFB, 0, 1, 0, 0, 0, 7],
            &[0x84, PSFB, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0],
            &[0x80, 200, 0xff, 0xff, 0, 0, 0, 0],
        ] {
            let got = walk(buf);
            assert!(got.last().is_some_and(|r| r.is_err()), "{buf:?}");
        }
        // A datagram of a thousand empty packets is read only so far.
        let many: Vec<u8> = (0..1000).flat_map(|_| [0x80, 203, 0, 0]).collect();
        assert_eq!(walk(&many).len(), MAX_PACKETS);
    }
}
