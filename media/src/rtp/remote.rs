//! Which address the peer's media may come from, and where ours goes. The address the
//! peer signalled in its SDP is trusted; any other source is ignored until it proves it
//! is the peer with an SRTP/SRTCP packet that passes its tag and replay check. Our media
//! then follows that source (symmetric RTP, for peers behind NAT).
//!
//! A ZRTP Hello matching the `a=zrtp-hash` the peer signalled proves less: the Hello is
//! sent in the clear and repeated, so anyone who saw it can send it again from their own
//! address. Such a source becomes a ZRTP candidate: its ZRTP is heard, and ours goes
//! there as well as to the signalled address (ZRTP packets carry nothing secret, and the
//! SAS protects the exchange), but media never does. A handful of candidates are kept,
//! first come. ICE will replace this with checked candidate pairs.

use crate::zrtp;
use std::net::SocketAddr;

/// Bytes of the ZRTP packet header before the message (RFC 6189 §5).
const ZRTP_HEADER: usize = 12;
/// Bytes of the CRC trailer after it.
const ZRTP_CRC: usize = 4;
/// Where the message type sits in a ZRTP packet (after preamble and length).
const ZRTP_TYPE: std::ops::Range<usize> = ZRTP_HEADER + 4..ZRTP_HEADER + 12;
/// At most this many other sources are heard for ZRTP, the first ones to send the
/// signalled Hello.
pub const MAX_ZRTP_CANDIDATES: usize = 4;

/// The peer's media address: the negotiated one, one it proved since, if any, and the
/// sources whose ZRTP is heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress {
    negotiated: SocketAddr,
    proven: Option<SocketAddr>,
    candidates: [Option<SocketAddr>; MAX_ZRTP_CANDIDATES],
}

/// Equal addresses, also when one side is written as an IPv4-mapped IPv6 address.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

impl PeerAddress {
    /// Starts from the address in the peer's SDP.
    pub fn new(negotiated: SocketAddr) -> PeerAddress {
        PeerAddress {
            negotiated,
            proven: None,
            candidates: [None; MAX_ZRTP_CANDIDATES],
        }
    }

    /// True if media from `from` may be taken without proof.
    pub fn trusts(&self, from: SocketAddr) -> bool {
        same(from, self.negotiated) || self.proven.is_some_and(|p| same(from, p))
    }

    /// True if `from` is the address the peer signalled.
    pub fn is_negotiated(&self, from: SocketAddr) -> bool {
        same(from, self.negotiated)
    }

    /// True if ZRTP from `from` is heard: a trusted source or a candidate.
    pub fn hears_zrtp_from(&self, from: SocketAddr) -> bool {
        self.trusts(from) || self.candidates.iter().flatten().any(|c| same(from, *c))
    }

    /// `from` sent the signalled Hello: hear its ZRTP and send ours there too. False if
    /// it is heard already or there is no room left.
    pub fn add_zrtp_candidate(&mut self, from: SocketAddr) -> bool {
        if self.hears_zrtp_from(from) {
            return false;
        }
        match self.candidates.iter_mut().find(|c| c.is_none()) {
            Some(slot) => {
                *slot = Some(from);
                true
            }
            None => false,
        }
    }

    /// Where our ZRTP goes besides [`PeerAddress::destination`]: every candidate.
    pub fn zrtp_candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let to = self.destination();
        self.candidates
            .iter()
            .flatten()
            .copied()
            .filter(move |c| !same(*c, to))
    }

    /// Forgets the ZRTP candidates: once keys are agreed or given up, nothing of ours
    /// goes to them and nothing of theirs is heard.
    pub fn clear_candidates(&mut self) {
        self.candidates = [None; MAX_ZRTP_CANDIDATES];
    }

    /// Where our media goes: the last proven source, else the negotiated address.
    pub fn destination(&self) -> SocketAddr {
        self.proven.unwrap_or(self.negotiated)
    }

    /// Records that `from` sent media that passed SRTP/SRTCP authentication: our media
    /// goes there from now on (back to the negotiated address if that is `from`). True
    /// if that is a change.
    pub fn prove(&mut self, from: SocketAddr) -> bool {
        let before = self.destination();
        self.proven = (!same(from, self.negotiated)).then_some(from);
        !same(before, self.destination())
    }

    /// A new SDP (re-INVITE) named `addr`. The same address keeps what was proven and
    /// the candidates; a new one starts over from it.
    pub fn renegotiate(&mut self, addr: SocketAddr) {
        if !same(addr, self.negotiated) {
            *self = PeerAddress::new(addr);
        }
    }
}

/// The peer's `a=zrtp-hash` (RFC 6189 §8.1): the SHA-256 of the Hello message it sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HelloHash([u8; 32]);

impl std::fmt::Debug for HelloHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelloHash(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl HelloHash {
    /// Reads the attribute value ("1.10 <64 hex digits>"); `None` if it is not one.
    pub fn parse(attr: &str) -> Option<HelloHash> {
        let hex = attr.split_whitespace().last()?.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(HelloHash(out))
    }

    /// True if `packet` is a well-framed ZRTP Hello whose message hashes to this value.
    pub fn matches(&self, packet: &[u8]) -> bool {
        if zrtp::check_packet(packet).is_err() || packet[ZRTP_TYPE] != *b"Hello   " {
            return false;
        }
        let message = &packet[ZRTP_HEADER..packet.len() - ZRTP_CRC];
        ring::digest::digest(&ring::digest::SHA256, message).as_ref() == self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_the_negotiated_or_a_proven_source_is_trusted() {
        let mut p = PeerAddress::new(addr("192.0.2.1:4000"));
        assert!(p.trusts(addr("192.0.2.1:4000")));
        assert!(p.trusts(addr("[::ffff:192.0.2.1]:4000")), "v4-mapped form");
        assert!(!p.trusts(addr("192.0.2.1:4002")));
        assert!(!p.trusts(addr("198.51.100.7:4000")));
        assert!(p.prove(addr("198.51.100.7:5000")), "destination moved");
        assert_eq!(p.destination(), addr("198.51.100.7:5000"));
        assert!(p.trusts(addr("198.51.100.7:5000")) && p.trusts(addr("192.0.2.1:4000")));
        assert!(!p.prove(addr("198.51.100.7:5000")));
        // Authentic media from the negotiated address again: back there.
        assert!(p.prove(addr("192.0.2.1:4000")));
        assert_eq!(p.destination(), addr("192.0.2.1:4000"));
        assert!(!p.trusts(addr("198.51.100.7:5000")));
        assert!(p.prove(addr("198.51.100.7:5000")));
        assert!(p.add_zrtp_candidate(addr("203.0.113.1:9")));
        // A re-INVITE naming the same address keeps the proven source ...
        p.renegotiate(addr("192.0.2.1:4000"));
        assert_eq!(p.destination(), addr("198.51.100.7:5000"));
        // ... a new one starts over.
        assert!(p.hears_zrtp_from(addr("203.0.113.1:9")));
        p.renegotiate(addr("192.0.2.9:4000"));
        assert_eq!(p.destination(), addr("192.0.2.9:4000"));
        assert!(!p.trusts(addr("198.51.100.7:5000")));
        assert!(!p.hears_zrtp_from(addr("203.0.113.1:9")));
    }

    #[test]
    fn a_zrtp_candidate_is_heard_but_never_gets_media() {
        let mut p = PeerAddress::new(addr("192.0.2.1:4000"));
        assert!(
            !p.add_zrtp_candidate(addr("192.0.2.1:4000")),
            "already heard"
        );
        let first: Vec<SocketAddr> = (1..=MAX_ZRTP_CANDIDATES as u16)
            .map(|i| SocketAddr::from(([198, 51, 100, 1], i)))
            .collect();
        for c in &first {
            assert!(p.add_zrtp_candidate(*c));
            assert!(!p.add_zrtp_candidate(*c), "once");
        }
        let late = addr("198.51.100.99:1");
        assert!(!p.add_zrtp_candidate(late), "first come; no room left");
        assert!(!p.hears_zrtp_from(late));
        for c in &first {
            assert!(p.hears_zrtp_from(*c));
            assert!(!p.trusts(*c), "no media from a candidate");
        }
        assert_eq!(p.destination(), addr("192.0.2.1:4000"), "media stays");
        assert_eq!(p.zrtp_candidates().collect::<Vec<_>>(), first);
        // SRTP proves one of them: media goes there, and it is not listed twice.
        assert!(p.prove(first[1]));
        assert_eq!(p.destination(), first[1]);
        assert_eq!(p.zrtp_candidates().count(), MAX_ZRTP_CANDIDATES - 1);
        p.clear_candidates();
        assert_eq!(p.zrtp_candidates().count(), 0);
        assert!(
            !p.hears_zrtp_from(first[0]) && p.trusts(first[1]),
            "proof stays"
        );
    }

    /// A framed ZRTP message of type `ty` carrying `body`.
    fn message(ty: &[u8; 8], body: &[u8; 4]) -> Vec<u8> {
        let mut p = vec![
            0x10, 0, 0, 1, b'Z', b'R', b'T', b'P', 1, 2, 3, 4, 0x50, 0x5a, 0, 4,
        ];
        p.extend_from_slice(ty);
        p.extend_from_slice(body);
        let crc = zrtp::crc32c(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        p
    }

    #[test]
    fn hello_hash_is_the_sha256_of_the_hello_message() {
        let p = message(b"Hello   ", b"1.10");
        let digest = ring::digest::digest(&ring::digest::SHA256, &p[12..p.len() - 4]);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let hash = HelloHash::parse(&format!("1.10 {hex}")).expect("parse");
        assert!(hash.matches(&p));
        assert!(
            !hash.matches(&message(b"Hello   ", b"1.11")),
            "another Hello"
        );
        let mut damaged = p.clone();
        damaged[ZRTP_HEADER + 12] ^= 1;
        assert!(!hash.matches(&damaged), "bad CRC");
        assert!(!hash.matches(&p[..20]), "truncated");
        let ack = message(b"HelloACK", b"1.10");
        let mut ack_hash = [0u8; 32];
        ack_hash.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, &ack[12..ack.len() - 4]).as_ref(),
        );
        assert!(
            !HelloHash(ack_hash).matches(&ack),
            "only a Hello proves a source"
        );
        assert!(HelloHash::parse("1.10 abcd").is_none());
        assert!(HelloHash::parse(&format!("1.10 {}", "zz".repeat(32))).is_none());
        assert!(HelloHash::parse("").is_none());
    }
}
