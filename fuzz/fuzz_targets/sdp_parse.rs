//! Any bytes as an SDP body: parse, negotiate, write an answer. Must never panic.
#![no_main]

use hush_signaling::sdp::{self, Codec, Codecs, LocalMedia};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = sdp::parse(data) else { return };
    let all = [Codec::Opus, Codec::Pcmu, Codec::Pcma];
    if let Ok(n) = sdp::negotiate(&offer, &all) {
        let local = LocalMedia {
            session_id: 1,
            version: 1,
            addr: offer.addr,
            port: offer.port,
            direction: offer.direction.reversed(),
            zrtp_hash: offer.zrtp_hash.clone(),
        };
        let answer = sdp::write(&local, Codecs::Answer(&n));
        let back = sdp::parse(answer.as_bytes()).expect("our own answer parses");
        assert_eq!(back.direction, local.direction);
    }
});
