//! Any datagrams into the media port of a call that is negotiating ZRTP (real libbzrtp)
//! under the mandatory policy, then after a fallback to cleartext, from the peer's
//! negotiated address or from a stranger: the demux, the source rule, RTP/RTCP parsers
//! and statistics, the ZRTP framing check and libbzrtp must never panic, nothing may be
//! sent unencrypted under the mandatory policy, and a stranger never becomes the
//! destination.
#![no_main]

use hush_media::codec::CodecKind;
use hush_media::rtp::{Kind, classify};
use hush_media::stream::{AudioStream, Policy, StreamConfig};
use hush_media::zrtp::{ZrtpConfig, ZrtpSession};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let peer: SocketAddr = ([192, 0, 2, 1], 4000).into();
    let stranger: SocketAddr = ([203, 0, 113, 9], 4000).into();
    for policy in [Policy::Mandatory, Policy::BestEffort] {
        let cfg = StreamConfig {
            local_ssrc: 7,
            codec: CodecKind::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            policy,
            peer_hello_hash: None,
            remote: peer,
        };
        let zrtp = ZrtpSession::new(&ZrtpConfig::default(), 7, now).expect("zrtp");
        let mut s = AudioStream::new(cfg, Some(zrtp), now).expect("stream");
        s.start(now).expect("start");
        // The input is a sequence of datagrams: [len u16][bytes]...; the top bit of the
        // length says the datagram comes from a stranger rather than the peer.
        let mut rest = data;
        let mut t = now;
        while rest.len() >= 2 {
            let word = u16::from_le_bytes([rest[0], rest[1]]);
            let from = if word & 0x8000 != 0 { stranger } else { peer };
            let n = usize::from(word & 0x7fff).min(rest.len() - 2);
            let (d, tail) = rest[2..].split_at(n);
            rest = tail;
            t += Duration::from_millis(7);
            s.handle_datagram(t, from, d);
            s.handle_timeout(t);
            s.send_frame(&[0i16; 160]);
            let mut out = [0i16; 160];
            s.receive_frame(&mut out);
            while let Some(p) = s.poll_transmit() {
                assert_eq!(
                    p.to, peer,
                    "only an authenticated source can move our media"
                );
                if policy == Policy::Mandatory {
                    assert_ne!(
                        classify(&p.data),
                        Kind::Rtp,
                        "cleartext RTP under the mandatory policy"
                    );
                }
            }
            while s.poll_event().is_some() {}
            let _ = s.stats();
        }
    }
});
