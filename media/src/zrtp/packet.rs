//! ZRTP packet framing (RFC 6189 §5): a 12-byte header (`0x10`, a zero byte, sequence,
//! the magic cookie "ZRTP", source id), the message, and a CRC-32C trailer. Checked here
//! before anything reaches libbzrtp.

use crate::MediaError;

/// Header bytes before the message.
pub(crate) const HEADER_LEN: usize = 12;
/// Bytes of the CRC trailer.
pub(crate) const CRC_LEN: usize = 4;
/// The smallest valid packet: header, a message header (preamble, length, type) and CRC.
pub(crate) const MIN_LEN: usize = HEADER_LEN + 12 + CRC_LEN;
/// The largest packet we accept; real ZRTP messages (DH3k DHPart ~500 bytes) fit one MTU.
pub const MAX_LEN: usize = 1500;
const MAGIC: &[u8; 4] = b"ZRTP";

/// True if `buf` looks like ZRTP rather than RTP/RTCP: first byte 0x10 and the magic
/// cookie at offset 4. Used to demultiplex the shared media port.
pub fn is_zrtp(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] == 0x10 && &buf[4..8] == MAGIC
}

/// Checks framing and CRC; a packet that fails is dropped with the returned reason.
pub fn check(buf: &[u8]) -> Result<(), MediaError> {
    let bad = |reason| MediaError::Malformed {
        kind: "ZRTP",
        reason,
    };
    if buf.len() < MIN_LEN {
        return Err(bad("too short"));
    }
    if buf.len() > MAX_LEN {
        return Err(bad("too long"));
    }
    if !is_zrtp(buf) {
        return Err(bad("missing ZRTP header or magic cookie"));
    }
    if buf[HEADER_LEN] != 0x50 || buf[HEADER_LEN + 1] != 0x5a {
        return Err(bad("missing message preamble"));
    }
    // The message length field counts 32-bit words and must match the datagram.
    let words = usize::from(u16::from_be_bytes([
        buf[HEADER_LEN + 2],
        buf[HEADER_LEN + 3],
    ]));
    if HEADER_LEN + words * 4 + CRC_LEN != buf.len() {
        return Err(bad("message length does not match the datagram"));
    }
    let body = &buf[..buf.len() - CRC_LEN];
    let mut trailer = [0u8; 4];
    trailer.copy_from_slice(&buf[buf.len() - CRC_LEN..]);
    // libbzrtp writes the CRC little-endian; accept the RFC's network order as well so
    // other implementations are not cut off by this pre-check.
    let crc = crc32c(body);
    if crc != u32::from_le_bytes(trailer) && crc != u32::from_be_bytes(trailer) {
        return Err(bad("CRC mismatch"));
    }
    Ok(())
}

/// The 8-byte message type ("Hello   ", "HelloACK", "Commit  " ...) of a [`check`]ed packet.
pub(crate) fn message_type(buf: &[u8]) -> &[u8] {
    buf.get(HEADER_LEN + 4..HEADER_LEN + 12).unwrap_or_default()
}

/// The message of a [`check`]ed packet: what the peer's hash chain and libbzrtp's
/// repetition checks cover (the header with its sequence number and the CRC are not).
pub(crate) fn message(buf: &[u8]) -> &[u8] {
    buf.get(HEADER_LEN..buf.len().saturating_sub(CRC_LEN))
        .unwrap_or_default()
}

/// The sequence number in a ZRTP header.
pub(crate) fn sequence(buf: &[u8]) -> u16 {
    match buf {
        [_, _, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

/// Gives a [`check`]ed packet the sequence number `seq` and a CRC to match, in the byte
/// order its CRC had (libbzrtp's little-endian, or the RFC's network order).
pub(crate) fn renumber(buf: &mut [u8], seq: u16) {
    if buf.len() < MIN_LEN {
        return;
    }
    let end = buf.len() - CRC_LEN;
    let mut trailer = [0u8; 4];
    trailer.copy_from_slice(&buf[end..]);
    let little_endian = crc32c(&buf[..end]) == u32::from_le_bytes(trailer);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c(&buf[..end]);
    buf[end..].copy_from_slice(&if little_endian {
        crc.to_le_bytes()
    } else {
        crc.to_be_bytes()
    });
}

/// Where the sender's ZID sits in a Hello (RFC 6189 §5.2): after the message header
/// (preamble, length, type: 12 bytes), the version (4), the client id (16) and H3 (32).
const HELLO_ZID_AT: usize = HEADER_LEN + 12 + 4 + 16 + 32;

/// The sender's ZID if `buf` (already [`check`]ed) is a Hello message.
pub(crate) fn hello_zid(buf: &[u8]) -> Option<[u8; 12]> {
    if buf.get(HEADER_LEN + 4..HEADER_LEN + 12)? != b"Hello   " {
        return None;
    }
    buf.get(HELLO_ZID_AT..HELLO_ZID_AT + 12)?.try_into().ok()
}

/// Whether a Hello (already [`check`]ed) offers the key agreement `kind` (RFC 6189
/// §5.2: after the ZID, a word of flags and counts, then the hash, cipher, auth tag
/// and key agreement lists, four bytes per entry). `false` if it is cut short.
pub(crate) fn hello_offers(buf: &[u8], kind: &[u8; 4]) -> bool {
    let flags_at = HELLO_ZID_AT + 12;
    let Some(w) = buf.get(flags_at..flags_at + 4) else {
        return false;
    };
    let count = |byte: u8, high: bool| usize::from(if high { byte >> 4 } else { byte & 0x0f });
    let (hc, cc, ac, kc) = (
        count(w[1], false),
        count(w[2], true),
        count(w[2], false),
        count(w[3], true),
    );
    let at = flags_at + 4 + 4 * (hc + cc + ac);
    buf.get(at..at + 4 * kc)
        .is_some_and(|list| list.chunks_exact(4).any(|k| k == kind))
}

/// The key agreement a Commit (already [`check`]ed) chose, if `buf` is one (after H2
/// (32), the ZID (12), the hash, cipher and auth tag types (4 each)).
pub(crate) fn commit_key_agreement(buf: &[u8]) -> Option<[u8; 4]> {
    if buf.get(HEADER_LEN + 4..HEADER_LEN + 12)? != b"Commit  " {
        return None;
    }
    let at = HEADER_LEN + 12 + 32 + 12 + 12;
    buf.get(at..at + 4)?.try_into().ok()
}

/// CRC-32C (Castagnoli), as RFC 6189 §5 requires for ZRTP packets.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn renumbering_keeps_the_crc_valid_in_either_byte_order() {
        let mut p = vec![
            0x10, 0, 0xff, 0xff, b'Z', b'R', b'T', b'P', 1, 2, 3, 4, 0x50, 0x5a, 0, 3,
        ];
        p.extend_from_slice(b"HelloACK");
        let crc = crc32c(&p);
        let mut le = p.clone();
        le.extend_from_slice(&crc.to_le_bytes());
        let mut be = p;
        be.extend_from_slice(&crc.to_be_bytes());
        for (mut packet, little) in [(le, true), (be, false)] {
            assert_eq!(sequence(&packet), 0xffff);
            renumber(&mut packet, 7);
            assert_eq!(sequence(&packet), 7);
            assert!(check(&packet).is_ok());
            let n = packet.len() - CRC_LEN;
            let crc = crc32c(&packet[..n]);
            let want = if little {
                crc.to_le_bytes()
            } else {
                crc.to_be_bytes()
            };
            assert_eq!(packet[n..], want, "byte order kept");
            assert_eq!(message_type(&packet), b"HelloACK");
            assert_eq!(message(&packet), &packet[HEADER_LEN..n]);
        }
    }

    #[test]
    fn framing_is_checked() {
        assert!(check(&[]).is_err());
        assert!(check(&[0x10; 27]).is_err());
        assert!(check(&[0u8; 2000]).is_err());
        let mut p = vec![
            0x10, 0, 0, 1, b'Z', b'R', b'T', b'P', 1, 2, 3, 4, 0x50, 0x5a, 0, 3,
        ];
        p.extend_from_slice(b"HelloACK");
        let crc = crc32c(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        assert!(check(&p).is_ok());
        let last = p.len() - 1;
        p[last] ^= 0xff;
        assert!(matches!(
            check(&p),
            Err(MediaError::Malformed {
                reason: "CRC mismatch",
                ..
            })
        ));
    }
}
