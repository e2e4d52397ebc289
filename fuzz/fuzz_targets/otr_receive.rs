//! Any sequence of message bodies from several senders, and from several OTR instances
//! of each, into the OTR wrapper (real libotr), with a key, a policy that answers every
//! offer, and small limits so that inputs reach them. Must never panic or abort, never
//! show a raw OTR protocol message as text, never mark anything encrypted, and keep
//! libotr's state within its limits after every body.
//!
//! Input: newline-separated lines. A line's first character picks the sender (one of
//! [`SENDERS`]); the rest is the body, except that a rest starting with `|` is sent as
//! an OTR v3 fragment from the instance the next character picks:
//! `?OTR|{instance}|00000000,` followed by what is left.
#![no_main]

use hush_signaling::otr::{OtrEngine, OtrLimits, OtrPolicy};
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

const ME: &str = "me@example.org";
/// Senders an input can pick from: more than the limit keeps.
const SENDERS: u32 = 8;
/// Instance tags an input can pick from, per sender.
const INSTANCES: u32 = 16;
/// Instances libotr keeps for a buddy whatever the limit: the one the conversation uses
/// and those libotr's master points at as most recent.
const ALWAYS_KEPT: usize = 4;

fn limits() -> OtrLimits {
    OtrLimits {
        peers: 3,
        instances: 2,
        fingerprints: 2,
        fragment_bytes: 4 * 1024,
        fragment_total: 12 * 1024,
    }
}

/// One engine for the whole run: key generation is too slow per input.
static ENGINE: Mutex<Option<OtrEngine>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let engine = guard.get_or_insert_with(|| {
        let mut e = OtrEngine::new().expect("libotr starts");
        e.generate_key(ME).expect("key");
        e.set_default_policy(ME, OtrPolicy::Opportunistic);
        e.set_limits(limits());
        e
    });
    let l = limits();
    // Bodies are separated by newlines (an XMPP body could hold one, but the
    // interesting inputs are sequences: fragments, AKE steps).
    for line in String::from_utf8_lossy(data).split('\n') {
        let mut chars = line.chars();
        let Some(first) = chars.next() else { continue };
        let sender = format!("peer{}@example.org", u32::from(first) % SENDERS);
        let rest = chars.as_str();
        let body = match rest.strip_prefix('|') {
            Some(r) => {
                let mut r = r.chars();
                let instance = 0x100 + r.next().map_or(0, |c| u32::from(c) % INSTANCES);
                format!("?OTR|{instance:08x}|00000000,{}", r.as_str())
            }
            None => rest.to_owned(),
        };
        // A raw OTR protocol message is never handed to the user as if it were text
        // (a plaintext that merely spells "?OTR:" once a whitespace tag is cut is fine).
        if let Some(shown) = engine.receive(ME, &sender, &body) {
            assert!(
                !(body.starts_with("?OTR:") && shown.text == body),
                "protocol message shown to the user"
            );
            // Nothing decrypts without a private conversation, which needs our key's
            // signature from the other side: a fuzzer cannot forge that. (A line is
            // marked encrypted only if libotr decrypted it in the session the
            // conversation is pinned to, or in another session whose key the user
            // verified — there is none here — so this holds whatever instances send.)
            assert!(!shown.encrypted, "marked encrypted without a session");
        }
        // Whatever arrives, libotr's state stays within the limits: nobody here is a
        // buddy the user knows, so nothing is exempt.
        assert!(
            engine.peer_count() <= l.peers,
            "{} buddies",
            engine.peer_count()
        );
        assert!(
            engine.context_count() <= l.peers * (1 + l.instances.max(ALWAYS_KEPT)),
            "{} contexts",
            engine.context_count()
        );
        assert!(
            engine.fragment_bytes() <= l.fragment_total,
            "{} bytes of fragments",
            engine.fragment_bytes()
        );
        while engine.poll_transmit().is_some() {}
        while engine.poll_event().is_some() {}
    }
});
