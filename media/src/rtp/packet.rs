//! RTP fixed header: built into a caller's buffer, parsed without allocating, every
//! length checked against the datagram.

use crate::MediaError;

/// The fields of an RTP header we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit (start of a talk spurt, end of a DTMF event).
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// Appends header + payload to `out` (cleared first).
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80);
    out.push((u8::from(h.marker) << 7) | (h.payload_type & 0x7f));
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Parses a plain RTP packet; returns the header and the payload's byte range.
pub fn parse(buf: &[u8]) -> Result<(RtpHeader, std::ops::Range<usize>), MediaError> {
    let bad = |reason| MediaError::Malformed {
        kind: "RTP",
        reason,
    };
    if buf.len() < 12 {
        return Err(bad("shorter than the fixed header"));
    }
    if buf[0] >> 6 != 2 {
        return Err(bad("not version 2"));
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let csrcs = usize::from(buf[0] & 0x0f);
    let mut start = 12 + 4 * csrcs;
    if extension {
        if buf.len() < start + 4 {
            return Err(bad("truncated header extension"));
        }
        let words = usize::from(u16::from_be_bytes([buf[start + 2], buf[start + 3]]));
        start += 4 + 4 * words;
    }
    let mut end = buf.len();
    if start > end {
        return Err(bad("header longer than the packet"));
    }
    if padding {
        let pad = usize::from(buf[end - 1]);
        if pad == 0 || pad > end - start {
            return Err(bad("invalid padding"));
        }
        end -= pad;
    }
    let h = RtpHeader {
        payload_type: buf[1] & 0x7f,
        marker: buf[1] & 0x80 != 0,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    Ok((h, start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let h = RtpHeader {
            payload_type: 8,
            marker: true,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 42,
        };
        let mut out = Vec::new();
        write(&h, b"abc", &mut out);
        let (back, range) = parse(&out).expect("parse");
        assert_eq!(back, h);
        assert_eq!(&out[range], b"abc");
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert!(parse(&[0x80; 11]).is_err());
        // 15 CSRCs announced, none present.
        assert!(parse(&[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        // Extension header claims 65535 words.
        assert!(parse(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]).is_err());
        // Padding larger than the payload.
        assert!(parse(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 200]).is_err());
        assert!(parse(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]).is_err());
        let (_, r) =
            parse(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 2]).expect("valid padding");
        assert_eq!(r, 12..13);
    }
}
