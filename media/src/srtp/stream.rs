//! What every SRTP profile shares (RFC 3711 §3.3): the RTP header's length, the packet
//! index from the rollover counter, the 128-packet replay window, and bounded
//! per-source state that only authentic packets create. The profile's transform does
//! the cryptography.

use crate::MediaError;

/// Distinct sources one direction keeps rollover and replay state for.
const MAX_SOURCES: usize = 4;

/// One profile's packet cryptography, given where the payload starts and the packet's
/// source, rollover counter and sequence number.
pub(crate) trait Transform {
    /// Bytes added to each packet (the tag).
    fn overhead(&self) -> usize;
    /// Encrypts `packet[header..]` in place and appends the tag.
    fn seal(
        &self,
        packet: &mut Vec<u8>,
        header: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<(), MediaError>;
    /// Checks the tag of `packet` (tag included) and returns the plaintext packet
    /// without it; `Err` if it does not authenticate.
    fn open(
        &self,
        packet: &[u8],
        header: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<Vec<u8>, MediaError>;
}

/// Length of the RTP header (fixed part, CSRCs, extension), or `None` if malformed.
fn header_len(p: &[u8]) -> Option<usize> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(n + 2..n + 4)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (n <= p.len()).then_some(n)
}

fn ssrc_seq(p: &[u8]) -> (u32, u16) {
    (
        u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        u16::from_be_bytes([p[2], p[3]]),
    )
}

/// Rollover and replay state of one source.
#[derive(Clone, Copy)]
struct Source {
    ssrc: u32,
    roc: u32,
    /// Highest sequence number seen (s_l).
    seq: u16,
    /// Bit i: index (highest - i) was received.
    window: u128,
}

impl Source {
    fn new(ssrc: u32, seq: u16) -> Source {
        Source {
            ssrc,
            roc: 0,
            seq,
            window: 1,
        }
    }

    fn index(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.seq)
    }

    /// RFC 3711 Appendix A: the rollover counter this sequence number belongs to.
    fn guess_roc(&self, seq: u16) -> Option<u32> {
        let (s_l, roc) = (self.seq, self.roc);
        if s_l < 32768 {
            if i32::from(seq) - i32::from(s_l) > 32768 {
                roc.checked_sub(1)
            } else {
                Some(roc)
            }
        } else if i32::from(s_l) - 32768 > i32::from(seq) {
            roc.checked_add(1)
        } else {
            Some(roc)
        }
    }
}

/// One direction of SRTP with profile `T`.
pub(crate) struct SrtpStream<T> {
    transform: T,
    sources: Vec<Source>,
}

fn bad(reason: &'static str) -> MediaError {
    MediaError::Malformed {
        kind: "SRTP",
        reason,
    }
}

impl<T: Transform> SrtpStream<T> {
    pub(crate) fn new(transform: T) -> SrtpStream<T> {
        SrtpStream {
            transform,
            sources: Vec::with_capacity(MAX_SOURCES),
        }
    }

    fn remember(&mut self, source: Source) {
        if self.sources.len() >= MAX_SOURCES {
            self.sources.remove(0);
        }
        self.sources.push(source);
    }

    /// Protects an RTP packet we send.
    pub(crate) fn protect(&mut self, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
        let h = header_len(packet).ok_or(MediaError::Malformed {
            kind: "RTP",
            reason: "bad header",
        })?;
        let (ssrc, seq) = ssrc_seq(packet);
        let roc = match self.sources.iter_mut().find(|s| s.ssrc == ssrc) {
            Some(s) => {
                // Our own sequence numbers only move forward: a big step back is a wrap.
                if seq < s.seq && s.seq - seq > 32768 {
                    s.roc = s.roc.wrapping_add(1);
                    s.seq = seq;
                } else if seq > s.seq && seq - s.seq < 32768 {
                    s.seq = seq;
                }
                s.roc
            }
            None => {
                self.remember(Source::new(ssrc, seq));
                0
            }
        };
        let mut out = Vec::with_capacity(packet.len() + self.transform.overhead());
        out.extend_from_slice(packet);
        self.transform.seal(&mut out, h, ssrc, roc, seq)?;
        Ok(out)
    }

    /// Authenticates, replay-checks and decrypts an RTP packet we received. Nothing
    /// changes unless the packet authenticates.
    pub(crate) fn unprotect(&mut self, packet: &[u8]) -> Result<Vec<u8>, MediaError> {
        let tag_len = self.transform.overhead();
        if packet.len() < 12 + tag_len {
            return Err(bad("too short"));
        }
        let body = &packet[..packet.len() - tag_len];
        let h = header_len(body).ok_or(bad("bad header"))?;
        let (ssrc, seq) = ssrc_seq(body);
        let known = self.sources.iter().position(|s| s.ssrc == ssrc);
        let roc = match known {
            Some(i) => {
                let s = self.sources[i];
                let roc = s
                    .guess_roc(seq)
                    .ok_or(bad("rollover counter out of range"))?;
                let index = (u64::from(roc) << 16) | u64::from(seq);
                let highest = s.index();
                if index <= highest {
                    let age = highest - index;
                    if age >= 128 || s.window & (1u128 << age) != 0 {
                        return Err(bad("replayed or too old"));
                    }
                }
                roc
            }
            None => 0,
        };
        let plain = self.transform.open(packet, h, ssrc, roc, seq)?;
        let index = (u64::from(roc) << 16) | u64::from(seq);
        match known {
            Some(i) => {
                let s = &mut self.sources[i];
                let highest = s.index();
                if index > highest {
                    let shift = index - highest;
                    s.window = if shift >= 128 { 0 } else { s.window << shift };
                    s.window |= 1;
                    s.roc = roc;
                    s.seq = seq;
                } else {
                    s.window |= 1u128 << (highest - index);
                }
            }
            None => self.remember(Source::new(ssrc, seq)),
        }
        Ok(plain)
    }
}
