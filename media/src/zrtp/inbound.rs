//! What of the peer's ZRTP is handed to libbzrtp, and under which sequence number.
//!
//! libbzrtp remembers the sequence number of the last packet it accepted and refuses
//! every packet not numbered above it, without wrapping (`bzrtp_packetCheck` in its
//! `packetParser.c`). Nothing authenticates that number: one spoofed packet numbered
//! 0xFFFF that it accepts (a HelloACK needs no proof) would make it refuse every genuine
//! packet until the handshake times out. So libbzrtp never sees the peer's numbers:
//! each packet handed over carries the number after the last one it accepted, with its
//! CRC made again. Its ordering check then cannot be turned against the peer; what is a
//! repetition or out of place is judged on content by its state machine, exactly as for
//! any spoofed packet with a fresh number.
//!
//! A window on the peer's own numbers (refusing those far ahead of the last accepted)
//! would not do: anyone who saw one of the peer's packets can resend it with any number,
//! libbzrtp accepts a repetition, and each one would drag the window along.
//!
//! Three more rules keep unauthenticated packets from steering the handshake:
//! - when the peer signalled its Hello hash, nothing but a Hello is handed over until
//!   libbzrtp accepted one (it checks the hash itself), so a HelloACK or Commit spoofed
//!   before it cannot move libbzrtp on;
//! - a HelloACK is handed over only once our own Hello has gone out: before that it
//!   cannot be genuine, and it would stop our Hellos before the peer ever got one;
//! - a message libbzrtp accepted already (a retransmission, or a replay of one) is
//!   handed over at most every [`REPEAT_INTERVAL`], so replays can neither use up the
//!   16-bit numbering nor make us answer at their rate. The peer retransmits every
//!   50 ms at the fastest, and any copy of a repetition does what the original would.
//! - a Ping is handed over at most every [`REPEAT_INTERVAL`] too: libbzrtp answers each
//!   one, and nothing authenticates it.

use super::packet;
use crate::MediaError;
use std::time::{Duration, Instant};

/// A message libbzrtp accepted before is handed to it again at most this often.
pub(crate) const REPEAT_INTERVAL: Duration = Duration::from_millis(20);
/// Distinct accepted messages remembered; a handshake has fewer than ten.
const MAX_KNOWN: usize = 16;

/// A packet to hand to libbzrtp: a renumbered copy of what came.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The packet with our sequence number; libbzrtp may scribble on it.
    pub(crate) packet: Vec<u8>,
    digest: [u8; 32],
    repeat: bool,
}

impl Admitted {
    /// libbzrtp accepted this very message before.
    pub(crate) fn is_repeat(&self) -> bool {
        self.repeat
    }
}

/// The gate in front of libbzrtp for one channel.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    /// The peer signalled its Hello hash and libbzrtp has not accepted a Hello yet.
    hello_first: bool,
    /// Our own last Hello as it went out.
    own_hello: Option<Vec<u8>>,
    /// The number (ours) of the last packet libbzrtp accepted; 0 before any.
    last: u16,
    /// Digests of the messages libbzrtp accepted.
    known: Vec<[u8; 32]>,
    /// When a repetition was last handed over.
    last_repeat: Option<Instant>,
    /// When a Ping was last handed over.
    last_ping: Option<Instant>,
}

fn refused(reason: &'static str) -> MediaError {
    MediaError::Refused {
        kind: "ZRTP",
        reason,
    }
}

impl Inbound {
    /// The peer's Hello hash is known: only a Hello gets through until one is accepted.
    pub(crate) fn expect_hello_first(&mut self) {
        self.hello_first = true;
    }

    /// One of our packets is going out.
    pub(crate) fn on_sent(&mut self, packet: &[u8]) {
        if packet::message_type(packet) == b"Hello   " {
            self.own_hello = Some(packet.to_vec());
        }
    }

    /// Our last Hello as sent, if one went out.
    pub(crate) fn own_hello(&self) -> Option<&[u8]> {
        self.own_hello.as_deref()
    }

    /// Decides whether a [`packet::check`]ed packet from the peer goes to libbzrtp, and
    /// if so, numbers a copy of it.
    pub(crate) fn admit(&mut self, now: Instant, buf: &[u8]) -> Result<Admitted, MediaError> {
        let kind = packet::message_type(buf);
        if self.hello_first && kind != b"Hello   " {
            return Err(refused(
                "only the peer's Hello is taken before its Hello is accepted",
            ));
        }
        if kind == b"HelloACK" && self.own_hello.is_none() {
            return Err(refused("a HelloACK before our Hello went out"));
        }
        if kind == b"Ping    " {
            if self
                .last_ping
                .is_some_and(|t| now.saturating_duration_since(t) < REPEAT_INTERVAL)
            {
                return Err(refused("a Ping too soon after the last"));
            }
            self.last_ping = Some(now);
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, packet::message(buf)).as_ref(),
        );
        let repeat = self.known.contains(&digest);
        if repeat {
            if self
                .last_repeat
                .is_some_and(|t| now.saturating_duration_since(t) < REPEAT_INTERVAL)
            {
                return Err(refused("a repetition too soon after the last"));
            }
            self.last_repeat = Some(now);
        }
        let Some(seq) = self.last.checked_add(1) else {
            return Err(refused("the call's ZRTP numbering is used up"));
        };
        let mut copy = buf.to_vec();
        packet::renumber(&mut copy, seq);
        Ok(Admitted {
            packet: copy,
            digest,
            repeat,
        })
    }

    /// libbzrtp refused the copy as out of order: it counted a packet it did not report
    /// as accepted. Numbers the copy past it; false once the numbering is used up.
    pub(crate) fn renumber_after_refusal(&mut self, a: &mut Admitted) -> bool {
        let Some(next) = self.last.checked_add(2) else {
            return false;
        };
        self.last += 1;
        packet::renumber(&mut a.packet, next);
        true
    }

    /// libbzrtp accepted the packet.
    pub(crate) fn accepted(&mut self, a: &Admitted) {
        let kind = packet::message_type(&a.packet);
        // libbzrtp answers a Ping without recording its number (bzrtp_processMessage).
        if kind == b"Ping    " {
            return;
        }
        self.last = packet::sequence(&a.packet);
        if kind == b"Hello   " {
            self.hello_first = false;
        }
        if !a.repeat && self.known.len() < MAX_KNOWN {
            self.known.push(a.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A framed message of type `ty` with `body`, numbered `seq`.
    fn message(ty: &[u8; 8], body: &[u8], seq: u16) -> Vec<u8> {
        let mut p = vec![0x10, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(b"ZRTP\x00\x00\x00\x01\x50\x5a");
        p.extend_from_slice(&((3 + body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(ty);
        p.extend_from_slice(body);
        let crc = packet::crc32c(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        assert!(packet::check(&p).is_ok());
        p
    }

    #[test]
    fn libbzrtp_sees_our_numbers_not_the_peers() {
        let t = Instant::now();
        let mut g = Inbound::default();
        g.on_sent(&message(b"Hello   ", &[0; 8], 40));
        let ack = g
            .admit(t, &message(b"HelloACK", &[], 0xffff))
            .expect("admitted");
        assert_eq!(packet::sequence(&ack.packet), 1);
        assert!(packet::check(&ack.packet).is_ok(), "CRC made again");
        g.accepted(&ack);
        let commit = g
            .admit(t, &message(b"Commit  ", &[1; 8], 3))
            .expect("admitted");
        assert_eq!(
            packet::sequence(&commit.packet),
            2,
            "after the last accepted"
        );
        // Refused by libbzrtp: the next packet takes the same number again.
        let mut next = g
            .admit(t, &message(b"Commit  ", &[2; 8], 4))
            .expect("admitted");
        assert_eq!(packet::sequence(&next.packet), 2);
        // libbzrtp had counted the refused one after all: the copy moves past it.
        assert!(g.renumber_after_refusal(&mut next));
        assert_eq!(packet::sequence(&next.packet), 3);
        assert!(packet::check(&next.packet).is_ok());
    }

    #[test]
    fn with_a_signalled_hash_only_a_hello_passes_first() {
        let t = Instant::now();
        let mut g = Inbound::default();
        g.expect_hello_first();
        g.on_sent(&message(b"Hello   ", &[0; 8], 40));
        for ty in [b"HelloACK", b"Commit  ", b"DHPart1 ", b"Ping    "] {
            assert!(
                matches!(
                    g.admit(t, &message(ty, &[0; 8], 9)),
                    Err(MediaError::Refused { .. })
                ),
                "{ty:?}"
            );
        }
        let hello = g
            .admit(t, &message(b"Hello   ", &[7; 8], 9))
            .expect("a Hello");
        // libbzrtp refused it (hash mismatch): still only Hellos.
        assert!(g.admit(t, &message(b"HelloACK", &[], 10)).is_err());
        g.accepted(&hello);
        assert!(g.admit(t, &message(b"HelloACK", &[], 10)).is_ok());
    }

    #[test]
    fn a_helloack_before_our_hello_left_is_refused() {
        let t = Instant::now();
        let mut g = Inbound::default();
        assert!(g.admit(t, &message(b"HelloACK", &[], 1)).is_err());
        g.on_sent(&message(b"Commit  ", &[0; 8], 1));
        assert!(g.admit(t, &message(b"HelloACK", &[], 1)).is_err());
        g.on_sent(&message(b"Hello   ", &[0; 8], 2));
        assert!(g.admit(t, &message(b"HelloACK", &[], 1)).is_ok());
    }

    #[test]
    fn replays_of_an_accepted_message_are_paced_and_cannot_use_up_the_numbers() {
        let t = Instant::now();
        let mut g = Inbound::default();
        let hello = message(b"Hello   ", &[5; 8], 100);
        let first = g.admit(t, &hello).expect("first");
        g.accepted(&first);
        // A flood of copies within one interval: one gets through.
        let mut through = 0;
        for i in 0..1000u16 {
            let mut copy = hello.clone();
            packet::renumber(&mut copy, 200 + i);
            if let Ok(a) = g.admit(t + Duration::from_micros(u64::from(i)), &copy) {
                g.accepted(&a);
                through += 1;
            }
        }
        assert_eq!(through, 1);
        // A new message is never held back by the pacing.
        assert!(g.admit(t, &message(b"Commit  ", &[6; 8], 300)).is_ok());
        assert!(
            g.admit(t + REPEAT_INTERVAL + Duration::from_micros(999), &hello)
                .is_ok(),
            "a retransmission later on passes"
        );
        // Pings are answered without counting: no number is used.
        let before = g.last;
        let ping = g.admit(t, &message(b"Ping    ", &[9; 8], 1)).expect("ping");
        g.accepted(&ping);
        assert_eq!(g.last, before);
    }

    #[test]
    fn the_numbering_ends_instead_of_wrapping() {
        let t = Instant::now();
        let mut g = Inbound {
            last: u16::MAX - 1,
            ..Inbound::default()
        };
        let a = g
            .admit(t, &message(b"Commit  ", &[1; 8], 5))
            .expect("the last number");
        assert_eq!(packet::sequence(&a.packet), u16::MAX);
        g.accepted(&a);
        assert!(g.admit(t, &message(b"Commit  ", &[2; 8], 6)).is_err());
    }
}
