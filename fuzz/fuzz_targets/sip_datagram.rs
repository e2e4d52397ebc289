//! Any bytes as a SIP datagram from the network: rsipstack's parser, then what we do
//! with what it accepts — request classification, the SDP offer/answer, digest
//! challenges against the account-realm policy, end reasons. Must never panic, and the
//! password must never answer a realm that is not the account's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hush_signaling::sip::fuzz::sip_datagram(data);
});
