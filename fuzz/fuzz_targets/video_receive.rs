//! Any datagrams into a call's video stream (best effort, gone to cleartext, so every
//! packet reaches the parsers that SRTP would otherwise guard), from the peer's RTP or
//! RTCP address or a stranger's: RTP with a VP8 payload descriptor (on demand wrapped
//! in a well-formed RTP header of the negotiated payload type, so the fuzzer reaches
//! the frame assembler and libvpx at once), RTCP with reports and RFC 4585/5104
//! feedback, ZRTP. Time moves on between datagrams. Nothing may panic or abort; every
//! picture that comes out has a size we handle; the stranger never becomes the
//! destination of anything.
#![no_main]

use hush_media::stream::Policy;
use hush_media::video::{EncoderConfig, MAX_HEIGHT, MAX_WIDTH, VideoConfig, VideoStream};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PT: u8 = 103;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let rtp: SocketAddr = ([192, 0, 2, 1], 4000).into();
    let rtcp: SocketAddr = ([192, 0, 2, 1], 4001).into();
    let stranger: SocketAddr = ([203, 0, 113, 9], 4000).into();
    let Ok(mut stream) = VideoStream::new(
        VideoConfig {
            local_ssrc: 0x1111,
            payload_type: PT,
            policy: Policy::BestEffort,
            remote: rtp,
            remote_rtcp: rtcp,
            encoder: EncoderConfig {
                width: 64,
                height: 48,
                fps: 15,
                bitrate_kbps: 100,
                screen: false,
            },
        },
        start,
    ) else {
        return;
    };
    stream.cleartext(start, "fuzzing".into());
    let mut now = start;
    let mut seq: u16 = 0;
    let mut rest = data;
    // Each record: a flags byte, a length byte, then that many bytes.
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(flags >> 5) * 20);
        let from = match flags & 0b11 {
            0 | 1 => rtp,
            2 => rtcp,
            _ => stranger,
        };
        let packet = if flags & 0b100 != 0 {
            // A well-formed RTP header around the body: the peer's SSRC, the next
            // sequence number, the marker on request.
            seq = seq.wrapping_add(1);
            let marker = if flags & 0b1000 != 0 { 0x80 } else { 0 };
            let ts = u32::from(seq / 4) * 6000;
            let mut p = vec![0x80, marker | PT];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&0x2222u32.to_be_bytes());
            p.extend_from_slice(body);
            p
        } else {
            body.to_vec()
        };
        stream.handle_datagram(now, from, &packet);
        if flags & 0b1_0000 != 0 {
            stream.handle_timeout(now);
        }
        while let Some(t) = stream.poll_transmit() {
            assert_ne!(t.to, stranger, "something was sent to a stranger");
        }
        while let Some(p) = stream.poll_picture() {
            assert!(p.width() <= MAX_WIDTH && p.height() <= MAX_HEIGHT);
        }
        while stream.poll_event().is_some() {}
        while stream.poll_zrtp_in().is_some() {}
        let _ = stream.stats();
    }
    if let Some(t) = stream.poll_timeout() {
        stream.handle_timeout(t.max(now));
    }
    while stream.poll_transmit().is_some() {}
});
