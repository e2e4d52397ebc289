//! RFC 4733 telephone-events for DTMF: building the packets of one key press and
//! recognising the start of a key press in received ones.

/// Frames (20 ms) a key press lasts before its end packets.
pub(crate) const PRESS_FRAMES: u16 = 5;
/// The end packet is sent this many times (RFC 4733 §2.5.1.4).
pub(crate) const END_REPEATS: u16 = 3;

/// Event code of a DTMF key, or `None` for anything else.
pub fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        'a'..='d' => Some(key as u8 - b'a' + 12),
        _ => None,
    }
}

/// The key for an event code.
pub fn key_for(code: u8) -> Option<char> {
    match code {
        0..=9 => Some((b'0' + code) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + code - 12) as char),
        _ => None,
    }
}

/// The 4-byte event payload.
pub(crate) fn payload(code: u8, end: bool, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    // Volume 10 (-10 dBm0) is a common, audible level.
    [code, (u8::from(end) << 7) | 10, d[0], d[1]]
}

/// A parsed event payload: (code, end flag).
pub(crate) fn parse(payload: &[u8]) -> Option<(u8, bool)> {
    if payload.len() < 4 {
        return None;
    }
    Some((payload[0], payload[1] & 0x80 != 0))
}

/// A key press being sent, one packet per frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Press {
    pub(crate) code: u8,
    /// RTP timestamp of the event start (all its packets carry it).
    pub(crate) timestamp: u32,
    /// Packets sent so far.
    pub(crate) sent: u16,
}

impl Press {
    /// The next packet's (marker, payload), or `None` when the press is complete.
    pub(crate) fn next(&mut self, frame_samples: u16) -> Option<(bool, [u8; 4])> {
        if self.sent >= PRESS_FRAMES + END_REPEATS {
            return None;
        }
        self.sent += 1;
        let end = self.sent > PRESS_FRAMES;
        let frames = self.sent.min(PRESS_FRAMES);
        let duration = frames.saturating_mul(frame_samples);
        Some((self.sent == 1, payload(self.code, end, duration)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_press_has_end_packets() {
        for k in "0123456789*#ABCD".chars() {
            assert_eq!(key_for(event_code(k).expect("code")), Some(k));
        }
        assert_eq!(event_code('x'), None);
        let mut p = Press {
            code: 5,
            timestamp: 0,
            sent: 0,
        };
        let packets: Vec<_> = std::iter::from_fn(|| p.next(160)).collect();
        assert_eq!(packets.len(), usize::from(PRESS_FRAMES + END_REPEATS));
        assert!(
            packets[0].0 && !packets[1].0,
            "marker on the first packet only"
        );
        assert_eq!(parse(&packets[0].1), Some((5, false)));
        assert_eq!(parse(&packets[7].1), Some((5, true)));
        assert_eq!(u16::from_be_bytes([packets[7].1[2], packets[7].1[3]]), 800);
    }
}
