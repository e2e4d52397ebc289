//! Any datagrams into the media port of a call that is negotiating ZRTP (real libbzrtp)
//! under the mandatory and the best-effort policy, from the peer's negotiated address or
//! from a stranger's; among them, on demand, the peer's genuine Hello of this call (its
//! hash is the call's signalled `a=zrtp-hash`) with any sequence number, as an
//! eavesdropper would replay it. The demux, the source rules, RTP/RTCP parsers and
//! statistics, the ZRTP framing check, the gate in front of libbzrtp and libbzrtp itself
//! must never panic; nothing may be sent unencrypted under the mandatory policy; and the
//! stranger never becomes the media destination (its copy of the Hello earns it ZRTP at
//! most, never RTP or RTCP).
#![no_main]

use hush_media::codec::CodecKind;
use hush_media::rtp::{Kind, classify};
use hush_media::stream::{AudioStream, Policy, StreamConfig};
use hush_media::zrtp::{ZrtpConfig, ZrtpSession, crc32c};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The peer of every run: its `a=zrtp-hash` and the Hello that matches it.
struct Peer {
    hash: String,
    hello: Vec<u8>,
}

/// Made once per process by a second, real ZRTP session.
fn peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let now = Instant::now();
        let mut z = ZrtpSession::new(&ZrtpConfig::default(), 9, now).expect("peer session");
        let hash = z.hello_hash().expect("peer hash");
        z.start(now).expect("peer start");
        // The first Hello goes out at the first timer tick.
        let hello = loop {
            if let Some(p) = z.poll_transmit() {
                break p;
            }
            let at = z.poll_timeout().expect("a timer while negotiating");
            z.handle_timeout(at);
        };
        assert_eq!(&hello[16..24], b"Hello   ");
        Peer { hash, hello }
    })
}

/// The peer's Hello numbered `seq`, CRC made again.
fn hello_numbered(seq: u16) -> Vec<u8> {
    let mut p = peer().hello.clone();
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    let n = p.len() - 4;
    let crc = crc32c(&p[..n]);
    p[n..].copy_from_slice(&crc.to_le_bytes());
    p
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let negotiated: SocketAddr = ([192, 0, 2, 1], 4000).into();
    let stranger: SocketAddr = ([203, 0, 113, 9], 4000).into();
    for policy in [Policy::Mandatory, Policy::BestEffort] {
        let cfg = StreamConfig {
            local_ssrc: 7,
            codec: CodecKind::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            policy,
            peer_hello_hash: Some(peer().hash.clone()),
            remote: negotiated,
        };
        let zrtp = ZrtpSession::new(&ZrtpConfig::default(), 7, now).expect("zrtp");
        let mut s = AudioStream::new(cfg, Some(zrtp), now).expect("stream");
        s.start(now).expect("start");
        // The input is a sequence of datagrams, each a 16-bit word and what it says: the
        // top bit says the datagram comes from the stranger rather than the negotiated
        // address; the next bit says it is the peer's genuine Hello, numbered with the
        // word's low 14 bits; otherwise the low 14 bits are the length of the bytes that
        // follow.
        let mut rest = data;
        let mut t = now;
        while rest.len() >= 2 {
            let word = u16::from_le_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
            let from = if word & 0x8000 != 0 {
                stranger
            } else {
                negotiated
            };
            let hello;
            let d: &[u8] = if word & 0x4000 != 0 {
                hello = hello_numbered(word & 0x3fff);
                &hello
            } else {
                let n = usize::from(word & 0x3fff).min(rest.len());
                let (d, tail) = rest.split_at(n);
                rest = tail;
                d
            };
            t += Duration::from_millis(7);
            s.handle_datagram(t, from, d);
            s.handle_timeout(t);
            s.send_frame(&[0i16; 160]);
            let mut out = [0i16; 160];
            s.receive_frame(&mut out);
            assert_eq!(
                s.remote(),
                negotiated,
                "only authenticated SRTP can move our media"
            );
            while let Some(p) = s.poll_transmit() {
                let kind = classify(&p.data);
                if kind != Kind::Zrtp {
                    assert_eq!(p.to, negotiated, "media sent to the stranger");
                }
                assert!(p.to == negotiated || p.to == stranger, "sent to {}", p.to);
                if policy == Policy::Mandatory {
                    assert_ne!(kind, Kind::Rtp, "cleartext RTP under the mandatory policy");
                }
            }
            while s.poll_event().is_some() {}
            let _ = s.stats();
        }
    }
});
