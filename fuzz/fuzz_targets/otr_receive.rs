//! Any sequence of message bodies from a buddy into the OTR wrapper (real libotr), with
//! a key and policies that accept every version. Must never panic or abort, never show
//! a raw OTR protocol message as text, never mark anything encrypted, and keep libotr's
//! state within its limits.
#![no_main]

use hush_signaling::otr::{OtrEngine, OtrLimits, OtrPolicy};
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

/// One engine for the whole run: key generation is too slow per input.
static ENGINE: Mutex<Option<OtrEngine>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let engine = guard.get_or_insert_with(|| {
        let mut e = OtrEngine::new().expect("libotr starts");
        e.generate_key("me@example.org").expect("key");
        e.set_default_policy("me@example.org", OtrPolicy::Opportunistic);
        e
    });
    // Bodies are separated by newlines (an XMPP body could hold one, but the
    // interesting inputs are sequences: fragments, AKE steps).
    for body in String::from_utf8_lossy(data).split('\n') {
        // A raw OTR protocol message is never handed to the user as if it were text
        // (a plaintext that merely spells "?OTR:" once a whitespace tag is cut is fine).
        if let Some(shown) = engine.receive("me@example.org", "peer@example.org", body) {
            assert!(
                !(body.starts_with("?OTR:") && shown.text == body),
                "protocol message shown to the user"
            );
            // Nothing decrypts without a private conversation, which needs our key's
            // signature from the other side: a fuzzer cannot forge that.
            assert!(!shown.encrypted, "marked encrypted without a session");
        }
        // Whatever arrives, libotr's state stays within the limits.
        let limits = OtrLimits::default();
        assert!(engine.peer_count() <= limits.peers + 1);
        assert!(engine.fragment_bytes() <= limits.fragment_total + 64 * 1024);
        while engine.poll_transmit().is_some() {}
        while engine.poll_event().is_some() {}
    }
});
