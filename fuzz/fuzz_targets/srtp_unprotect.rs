//! Any datagrams into an SRTP session, mixed with genuine packets from the peer: our
//! RTP transform (every profile) and SRTCP must never panic, never accept a packet the
//! peer did not send, and the peer's next genuine packet must still open afterwards.
#![no_main]

use hush_media::srtp::SrtpSession;
use hush_media::zrtp::{SrtpKeys, SrtpProfile};
use libfuzzer_sys::fuzz_target;

fn keys(profile: SrtpProfile, a: u8, b: u8) -> SrtpKeys {
    let (k, s) = (profile.key_len(), profile.salt_len());
    SrtpKeys {
        profile,
        local_key: vec![a; k].into(),
        local_salt: vec![a; s].into(),
        remote_key: vec![b; k].into(),
        remote_salt: vec![b; s].into(),
    }
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"genuine audio");
    p
}

fuzz_target!(|data: &[u8]| {
    let profile = match data.first().map(|b| b % 3) {
        Some(0) => SrtpProfile::Aes128CmHmacSha1_80,
        Some(1) => SrtpProfile::Aes128CmHmacSha1_32,
        _ => SrtpProfile::AeadAes128Gcm,
    };
    let mut us = SrtpSession::new(&keys(profile, 1, 2)).expect("us");
    let mut peer = SrtpSession::new(&keys(profile, 2, 1)).expect("peer");
    let mut seq = 100u16;
    // The input is a sequence of datagrams: [len u16][bytes]...
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 1500;
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (packet, tail) = rest.split_at(take);
        rest = tail;
        if let Ok(plain) = us.unprotect_rtp(packet) {
            // Only what the peer sealed opens; the fuzzer cannot forge a tag.
            panic!("accepted a packet the peer never sent: {plain:?}");
        }
        let _ = us.unprotect_rtcp(packet);
        seq = seq.wrapping_add(1);
        let genuine = peer.protect_rtp(&rtp(seq, 4242)).expect("protect");
        assert!(us.unprotect_rtp(&genuine).is_ok(), "genuine packet refused");
    }
});
