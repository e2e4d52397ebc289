//! The part of RTCP (RFC 3550 §6.4) that gives the user call statistics: sender and
//! receiver reports with one report block, reception accounting (§A.3) and interarrival
//! jitter (§A.8), and round-trip time from LSR/DLSR.

use crate::MediaError;

/// Reception statistics for one remote source.
#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    started: bool,
    base_seq: u16,
    max_seq: u16,
    cycles: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in timestamp units (scaled by 16 as in RFC 3550 A.8).
    jitter_q4: u64,
    /// Arrival minus RTP timestamp of the previous packet, modulo 2^32.
    last_transit: Option<u32>,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived (our clock, 1/65536 s).
    last_sr: Option<(u32, u32)>,
}

impl ReceptionStats {
    /// Accounts one received packet. `arrival_ts` is the arrival time in RTP clock units.
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival_ts: u32) {
        if !self.started {
            self.started = true;
            self.base_seq = seq;
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles += 1;
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;
        // RFC 3550 A.8: both clocks wrap, so the transit time and its change are taken
        // modulo 2^32 and the change read as signed; a timestamp wrap is then no jump.
        let transit = arrival_ts.wrapping_sub(rtp_ts);
        if let Some(last) = self.last_transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J += (|D| - J) / 16, kept scaled by 16.
            self.jitter_q4 = self.jitter_q4 + d - (self.jitter_q4 + 8) / 16;
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let extended_max = (u64::from(self.cycles) << 16) + u64::from(self.max_seq);
        extended_max - u64::from(self.base_seq) + 1
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost (never negative; duplicates can make it so in theory).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 / 16).min(u64::from(u32::MAX)) as u32
    }

    /// Records a sender report from the peer (for LSR/DLSR in our next report).
    pub fn on_sender_report(&mut self, ntp_middle: u32, now_q16: u32) {
        self.last_sr = Some((ntp_middle, now_q16));
    }

    /// The report block about this source, updating the "since last report" counters.
    pub fn report_block(&mut self, ssrc: u32, now_q16: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.received - self.received_prior.min(self.received);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, now_q16.wrapping_sub(at)),
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().min(0x7f_ffff) as u32,
            highest_seq: (self.cycles << 16) | u32::from(self.max_seq),
            jitter: self.jitter(),
            lsr,
            dlsr,
        }
    }
}

/// One report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, /256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24 bits).
    pub cumulative_lost: u32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, RTP timestamp units.
    pub jitter: u32,
    /// Middle bits of the last SR's NTP time.
    pub lsr: u32,
    /// Delay since that SR, 1/65536 s.
    pub dlsr: u32,
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// NTP timestamp (our clock, 32.32 fixed point).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// Our clock as RTCP writes it: seconds since `epoch` in 1/65536 s (the middle 32 bits
/// of an NTP-style timestamp).
pub fn clock_q16(epoch: std::time::Instant, now: std::time::Instant) -> u32 {
    let d = now.saturating_duration_since(epoch);
    ((d.as_secs() << 16) + (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000) as u32
}

/// The round trip a report block about our stream shows (RFC 3550 §6.4.1: now less
/// its LSR and DLSR), if it has one and it is under ten seconds.
pub fn round_trip_ms(block: &ReportBlock, now_q16: u32) -> Option<u32> {
    if block.lsr == 0 {
        return None;
    }
    let rtt_q16 = now_q16.wrapping_sub(block.lsr).wrapping_sub(block.dlsr);
    (rtt_q16 < 10 * 65536).then(|| (u64::from(rtt_q16) * 1000 / 65536) as u32)
}

/// A parsed SR or RR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Who sent it.
    pub ssrc: u32,
    /// Present for an SR.
    pub sender: Option<SenderInfo>,
    /// The first report block, if any.
    pub block: Option<ReportBlock>,
}

/// Builds an SR (when `sender` is given) or RR with at most one report block into `out`.
pub fn build_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let count = u8::from(block.is_some());
    let words = 1 + if sender.is_some() { 5 } else { 0 } + if block.is_some() { 6 } else { 0 };
    out.push(0x80 | count);
    out.push(if sender.is_some() { 200 } else { 201 });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_ts.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = b.cumulative_lost.min(0x7f_ffff);
        out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.lsr.to_be_bytes());
        out.extend_from_slice(&b.dlsr.to_be_bytes());
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the first packet of a (decrypted) compound RTCP packet if it is an SR or RR.
pub fn parse_report(buf: &[u8]) -> Result<Report, MediaError> {
    let bad = |reason| MediaError::Malformed {
        kind: "RTCP",
        reason,
    };
    if buf.len() < 8 || buf[0] >> 6 != 2 {
        return Err(bad("too short or not version 2"));
    }
    let count = usize::from(buf[0] & 0x1f);
    let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
    if len > buf.len() {
        return Err(bad("length field exceeds the packet"));
    }
    if len < 8 {
        return Err(bad("length field shorter than the header"));
    }
    let pkt = &buf[..len];
    let ssrc = be32(pkt, 4);
    let (sender, blocks_at) = match buf[1] {
        200 => {
            if pkt.len() < 28 {
                return Err(bad("truncated sender report"));
            }
            let ntp = (u64::from(be32(pkt, 8)) << 32) | u64::from(be32(pkt, 12));
            (
                Some(SenderInfo {
                    ntp,
                    rtp_ts: be32(pkt, 16),
                    packets: be32(pkt, 20),
                    octets: be32(pkt, 24),
                }),
                28,
            )
        }
        201 => (None, 8),
        _ => return Err(bad("not a sender or receiver report")),
    };
    let block = if count > 0 {
        if pkt.len() < blocks_at + 24 {
            return Err(bad("truncated report block"));
        }
        let b = &pkt[blocks_at..];
        let lost_word = be32(b, 4);
        Some(ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: (lost_word >> 24) as u8,
            cumulative_lost: lost_word & 0xff_ffff,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        })
    } else {
        None
    };
    Ok(Report {
        ssrc,
        sender,
        block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_jitter_accounting() {
        let mut s = ReceptionStats::default();
        // 10 packets, seq 3 and 7 lost, perfectly timed.
        for seq in (0u16..10).filter(|s| *s != 3 && *s != 7) {
            s.on_packet(
                65530u16.wrapping_add(seq),
                u32::from(seq) * 160,
                u32::from(seq) * 160 + 1000,
            );
        }
        assert_eq!(s.expected(), 10, "wraps across 65535");
        assert_eq!(s.received(), 8);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.jitter(), 0);
        let b = s.report_block(9, 0);
        assert_eq!(b.cumulative_lost, 2);
        assert_eq!(b.fraction_lost, (2 * 256 / 10) as u8);
        // A packet 80 units late raises jitter by 80/16.
        s.on_packet(65530u16.wrapping_add(10), 1600, 1600 + 1000 + 80);
        assert_eq!(s.jitter(), 5);
    }

    #[test]
    fn a_timestamp_wrap_is_not_jitter() {
        let mut s = ReceptionStats::default();
        // Perfectly timed packets whose RTP timestamp wraps past 2^32 halfway.
        let start = u32::MAX - 5 * 160 + 1;
        for i in 0u32..10 {
            s.on_packet(i as u16, start.wrapping_add(i * 160), 1000 + i * 160);
        }
        assert_eq!(s.jitter(), 0);
        // The arrival clock wrapping is no jump either.
        let mut s = ReceptionStats::default();
        for i in 0u32..10 {
            s.on_packet(i as u16, i * 160, (u32::MAX - 400).wrapping_add(i * 160));
        }
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn hostile_timestamps_keep_jitter_bounded() {
        let mut s = ReceptionStats::default();
        for i in 0u32..1000 {
            let ts = if i % 2 == 0 { 0 } else { 0x8000_0000 };
            s.on_packet(i as u16, ts, i);
        }
        // |D| is at most 2^31 per packet, so J stays below it.
        assert!(
            s.jitter() <= 0x8000_0000 && s.jitter() > 0x7000_0000,
            "{}",
            s.jitter()
        );
    }

    #[test]
    fn report_roundtrip_and_hostile_lengths() {
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 3,
            cumulative_lost: 99,
            highest_seq: 70000,
            jitter: 12,
            lsr: 5,
            dlsr: 6,
        };
        let sender = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_ts: 160,
            packets: 50,
            octets: 8000,
        };
        let mut out = Vec::new();
        build_report(1, Some(sender), Some(block), &mut out);
        assert_eq!(
            parse_report(&out).expect("sr"),
            Report {
                ssrc: 1,
                sender: Some(sender),
                block: Some(block)
            }
        );
        build_report(2, None, Some(block), &mut out);
        assert_eq!(
            parse_report(&out).expect("rr"),
            Report {
                ssrc: 2,
                sender: None,
                block: Some(block)
            }
        );
        out[3] = 200; // length now far beyond the buffer
        assert!(parse_report(&out).is_err());
        assert!(
            parse_report(&[0x81, 201, 0, 1, 0, 0, 0, 1]).is_err(),
            "block announced, not present"
        );
        assert!(
            parse_report(&[0x80, 202, 0, 1, 0, 0, 0, 1]).is_err(),
            "SDES is not a report"
        );
    }
}
