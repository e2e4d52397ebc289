//! The VP8 RTP payload (RFC 7741): each packet starts with a payload descriptor; a
//! frame is split over packets sharing one timestamp, the first marked "start of
//! partition", the last carrying the RTP marker bit. We always send a 15-bit
//! PictureID (as Linphone does), so a receiver can tell frames apart across losses.

use crate::MediaError;

/// Bytes of the descriptor we write: X|S, I, and the two PictureID bytes.
const OUR_DESCRIPTOR: usize = 4;

/// What a received packet's descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// First packet of a VP8 partition.
    pub start: bool,
    /// Which partition (0: the frame's first).
    pub partition: u8,
    /// The frame's PictureID, if sent (7 or 15 bits).
    pub picture_id: Option<u16>,
    /// Descriptor length: the VP8 data starts after it.
    pub len: usize,
}

impl Vp8Descriptor {
    /// Reads the descriptor at the start of an RTP payload.
    pub fn parse(payload: &[u8]) -> Result<Vp8Descriptor, MediaError> {
        let byte = |i: usize| {
            payload.get(i).copied().ok_or(MediaError::Malformed {
                kind: "VP8 RTP",
                reason: "payload descriptor cut short",
            })
        };
        let first = byte(0)?;
        let mut at = 1;
        let start = first & 0x10 != 0;
        let partition = first & 0x07;
        let mut picture_id = None;
        if first & 0x80 != 0 {
            let ext = byte(at)?;
            at += 1;
            if ext & 0x80 != 0 {
                let b = byte(at)?;
                at += 1;
                picture_id = Some(if b & 0x80 != 0 {
                    at += 1;
                    (u16::from(b & 0x7f) << 8) | u16::from(byte(at - 1)?)
                } else {
                    u16::from(b)
                });
            }
            // TL0PICIDX; then TID/KEYIDX.
            at += usize::from(ext & 0x40 != 0) + usize::from(ext & 0x30 != 0);
        }
        if at >= payload.len() {
            return Err(MediaError::Malformed {
                kind: "VP8 RTP",
                reason: "packet without VP8 data",
            });
        }
        Ok(Vp8Descriptor {
            start,
            partition,
            picture_id,
            len: at,
        })
    }
}

/// Splits coded frames into RTP payloads.
#[derive(Debug, Clone)]
pub struct Vp8Payloader {
    /// Largest payload (descriptor included).
    max_payload: usize,
    /// The next frame's PictureID (15 bits).
    picture_id: u16,
}

impl Vp8Payloader {
    /// A payloader whose payloads are at most `max_payload` bytes (the path MTU minus
    /// IP, UDP, RTP and SRTP overheads), starting at PictureID `first_picture_id`.
    pub fn new(max_payload: usize, first_picture_id: u16) -> Result<Vp8Payloader, MediaError> {
        if max_payload <= OUR_DESCRIPTOR {
            return Err(MediaError::InvalidInput(format!(
                "a VP8 payload of {max_payload} bytes leaves no room for the picture"
            )));
        }
        Ok(Vp8Payloader {
            max_payload,
            picture_id: first_picture_id & 0x7fff,
        })
    }

    /// The payloads of one frame, in order (the last gets the RTP marker bit).
    pub fn payload(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let id = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let room = self.max_payload - OUR_DESCRIPTOR;
        frame
            .chunks(room)
            .enumerate()
            .map(|(i, chunk)| {
                let mut p = Vec::with_capacity(OUR_DESCRIPTOR + chunk.len());
                p.push(if i == 0 { 0x90 } else { 0x80 });
                p.push(0x80);
                p.push(0x80 | (id >> 8) as u8);
                p.push(id as u8);
                p.extend_from_slice(chunk);
                p
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_and_their_descriptors_read_back() {
        let mut p = Vp8Payloader::new(100, 0x7ffe).expect("payloader");
        let frame: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let packets = p.payload(&frame);
        assert_eq!(packets.len(), 3);
        assert!(packets.iter().all(|x| x.len() <= 100));
        let mut joined = Vec::new();
        for (i, pkt) in packets.iter().enumerate() {
            let d = Vp8Descriptor::parse(pkt).expect("descriptor");
            assert_eq!(d.start, i == 0);
            assert_eq!(d.partition, 0);
            assert_eq!(d.picture_id, Some(0x7ffe));
            joined.extend_from_slice(&pkt[d.len..]);
        }
        assert_eq!(joined, frame);
        // The PictureID wraps within 15 bits.
        let next = p.payload(&[1]);
        assert_eq!(
            Vp8Descriptor::parse(&next[0]).expect("d").picture_id,
            Some(0x7fff)
        );
        let wrapped = p.payload(&[1]);
        assert_eq!(
            Vp8Descriptor::parse(&wrapped[0]).expect("d").picture_id,
            Some(0)
        );
    }

    #[test]
    fn descriptors_of_other_senders_are_read() {
        // No extension at all.
        let d = Vp8Descriptor::parse(&[0x10, 0xaa]).expect("plain");
        assert_eq!((d.start, d.picture_id, d.len), (true, None, 1));
        // 7-bit PictureID, TL0PICIDX and TID/KEYIDX.
        let d = Vp8Descriptor::parse(&[0x90, 0xf0, 0x05, 0x11, 0x22, 0xaa]).expect("full");
        assert_eq!((d.picture_id, d.len), (Some(5), 5));
    }

    #[test]
    fn cut_descriptors_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[0x80],
            &[0x80, 0x80],
            &[0x80, 0x80, 0x80],
            &[0x80, 0x80, 0x80, 0x01],
            &[0x80, 0x40],
            &[0x80, 0x30],
            &[0x10],
        ] {
            assert!(Vp8Descriptor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
