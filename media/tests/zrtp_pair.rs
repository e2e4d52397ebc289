//! Two real libbzrtp endpoints behind our sans-IO wrapper, wired through hush-sim's
//! simulated links with simulated time (latency, seeded loss, tampering):
//! deterministic, no sockets, no sleeps.

use hush_media::zrtp::{
    AuthTag, Cipher, KeyAgreement, SasType, Zid, ZidCache, ZidStore, ZrtpConfig, ZrtpEvent,
    ZrtpFailure, ZrtpSession, ZrtpState, crc32c,
};
use hush_sim::{Conditions, Link};
use std::time::{Duration, Instant};

type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>) -> bool>;

/// Both directions of the network, each a seeded link, and who tampers with it.
struct Net {
    /// `links[i]` carries what side `i` sends.
    links: [Link<Vec<u8>>; 2],
    /// Called per packet with (from side, bytes); return false to drop it.
    tamper: Option<Tamper>,
}

impl Net {
    fn new(latency_ms: u64, loss: f64, seed: u64) -> Net {
        let conditions = Conditions {
            latency: Duration::from_millis(latency_ms),
            loss_per_mille: (loss * 1000.0) as u32,
            ..Conditions::default()
        };
        Net {
            links: [
                Link::new(conditions, seed),
                Link::new(conditions, seed ^ 0x5555_5555),
            ],
            tamper: None,
        }
    }
}

struct Pair {
    sides: [ZrtpSession; 2],
    now: Instant,
    net: Net,
    secured: [Option<Box<hush_media::zrtp::Secured>>; 2],
    failed: [Option<ZrtpFailure>; 2],
}

impl Pair {
    fn new(configs: [&ZrtpConfig; 2], net: Net) -> Pair {
        let now = Instant::now();
        let a = ZrtpSession::new(configs[0], 0x1111_0000, now).expect("session a");
        let b = ZrtpSession::new(configs[1], 0x2222_0000, now).expect("session b");
        Pair {
            sides: [a, b],
            now,
            net,
            secured: [None, None],
            failed: [None, None],
        }
    }

    fn start(&mut self) {
        for s in &mut self.sides {
            s.start(self.now).expect("start");
        }
    }

    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(mut p) = self.sides[i].poll_transmit() {
                if let Some(t) = &mut self.net.tamper
                    && !t(i, &mut p)
                {
                    continue;
                }
                self.net.links[i].send(self.now, p);
            }
            while let Some(ev) = self.sides[i].poll_event() {
                match ev {
                    ZrtpEvent::Secure(s) => self.secured[i] = Some(s),
                    ZrtpEvent::Failed(f) => self.failed[i] = Some(f),
                }
            }
        }
    }

    /// Advances to the next packet arrival or timer; false when nothing is pending.
    fn step(&mut self) -> bool {
        self.collect();
        let next_packet = self.net.links.iter().filter_map(Link::next_arrival).min();
        let next_timer = self.sides.iter().filter_map(|s| s.poll_timeout()).min();
        let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        for from in 0..2 {
            while let Some(p) = self.net.links[from].receive(self.now) {
                let to = 1 - from;
                if let Err(e) = self.sides[to].handle_packet(self.now, &p) {
                    eprintln!("side {to} dropped a packet: {e}");
                }
            }
        }
        for s in &mut self.sides {
            s.handle_timeout(self.now);
        }
        self.collect();
        true
    }

    /// Runs until both sides are done, or gives up after `max` steps (a livelock fails).
    fn drive(&mut self, max: usize) {
        for _ in 0..max {
            let done = self
                .sides
                .iter()
                .all(|s| matches!(s.state(), ZrtpState::Secure | ZrtpState::Failed(_)));
            if done || !self.step() {
                return;
            }
        }
        panic!("no outcome after {max} steps");
    }

    fn assert_secure_and_matching(
        &self,
    ) -> (&hush_media::zrtp::Secured, &hush_media::zrtp::Secured) {
        let a = self.secured[0]
            .as_deref()
            .unwrap_or_else(|| panic!("a not secure: {:?}", self.failed[0]));
        let b = self.secured[1]
            .as_deref()
            .unwrap_or_else(|| panic!("b not secure: {:?}", self.failed[1]));
        assert_eq!(a.sas, b.sas, "both ends show the same SAS");
        assert_eq!(a.algorithms, b.algorithms);
        assert_eq!(
            *a.keys.local_key, *b.keys.remote_key,
            "a's sending key is b's receiving key"
        );
        assert_eq!(*a.keys.local_salt, *b.keys.remote_salt);
        assert_eq!(*b.keys.local_key, *a.keys.remote_key);
        assert_eq!(*b.keys.local_salt, *a.keys.remote_salt);
        assert_ne!(
            *a.keys.local_key, *a.keys.remote_key,
            "each direction has its own key"
        );
        assert_eq!(a.keys.local_key.len(), a.keys.profile.key_len());
        (a, b)
    }
}

fn only(ka: KeyAgreement, sas: SasType, cipher: Cipher, tag: AuthTag) -> ZrtpConfig {
    ZrtpConfig {
        key_agreements: vec![ka],
        sas_types: vec![sas],
        ciphers: vec![cipher],
        auth_tags: vec![tag],
        ..ZrtpConfig::default()
    }
}

#[test]
fn every_suite_reaches_secure_with_equal_sas_and_matching_keys() {
    let kas = [
        KeyAgreement::X255,
        KeyAgreement::X448,
        KeyAgreement::Dh3k,
        KeyAgreement::Dh2k,
    ];
    let mut combos = 0;
    for (i, ka) in kas.into_iter().enumerate() {
        for sas in [SasType::B32, SasType::B256] {
            // Vary cipher and tag with the key agreement to cover every value.
            let cipher = if i % 2 == 0 {
                Cipher::Aes1
            } else {
                Cipher::Aes3
            };
            let tag = if (i / 2) % 2 == 0 {
                AuthTag::Hs80
            } else {
                AuthTag::Hs32
            };
            let cfg = only(ka, sas, cipher, tag);
            let mut pair = Pair::new([&cfg, &cfg], Net::new(20, 0.0, 1));
            pair.start();
            pair.drive(10_000);
            let (a, _) = pair.assert_secure_and_matching();
            assert_eq!(a.algorithms.key_agreement, ka);
            assert_eq!(a.algorithms.sas, sas);
            assert_eq!(a.algorithms.cipher, cipher);
            assert_eq!(a.algorithms.auth_tag, tag);
            match sas {
                SasType::B32 => assert_eq!(a.sas.chars().count(), 4, "{}", a.sas),
                SasType::B256 => assert!(
                    a.sas.contains(':') || a.sas.contains(' '),
                    "two PGP words: {}",
                    a.sas
                ),
            }
            assert!(!a.verified && !a.cache_mismatch);
            combos += 1;
        }
    }
    assert_eq!(combos, 8);
}

#[test]
fn hello_hashes_from_sdp_are_checked() {
    let cfg = ZrtpConfig::default();
    let mut pair = Pair::new([&cfg, &cfg], Net::new(10, 0.0, 2));
    let hash_b = pair.sides[1].hello_hash().expect("hash");
    assert!(
        hash_b.starts_with("1.10 ") && hash_b.len() == 69,
        "{hash_b}"
    );
    let hash_a = pair.sides[0].hello_hash().expect("hash");
    pair.sides[0].set_peer_hello_hash(&hash_b).expect("set");
    pair.sides[1].set_peer_hello_hash(&hash_a).expect("set");
    pair.start();
    pair.drive(10_000);
    pair.assert_secure_and_matching();

    // A hash that is not the peer's Hello (as if the SDP were altered in transit).
    let mut pair = Pair::new([&cfg, &cfg], Net::new(10, 0.0, 3));
    let mut wrong = pair.sides[1].hello_hash().expect("hash");
    let last = wrong.pop().expect("non-empty");
    wrong.push(if last == '0' { '1' } else { '0' });
    pair.sides[0].set_peer_hello_hash(&wrong).expect("set");
    pair.start();
    pair.drive(10_000);
    assert_eq!(pair.failed[0], Some(ZrtpFailure::HelloHashMismatch));
    assert!(
        pair.secured.iter().all(Option::is_none),
        "no side may go secure"
    );
    assert!(
        pair.sides[0]
            .set_peer_hello_hash("not hex at all!")
            .is_err()
    );
}

#[test]
fn corrupted_crc_never_goes_secure() {
    let cfg = ZrtpConfig {
        handshake_timeout: Duration::from_secs(5),
        ..ZrtpConfig::default()
    };
    let mut pair = Pair::new([&cfg, &cfg], Net::new(10, 0.0, 4));
    pair.net.tamper = Some(Box::new(|from, p| {
        if from == 0 {
            let last = p.len() - 1;
            p[last] ^= 0x5a;
        }
        true
    }));
    pair.start();
    pair.drive(100_000);
    assert!(pair.secured.iter().all(Option::is_none));
    assert!(
        pair.failed[0].is_some() && pair.failed[1].is_some(),
        "{:?}",
        pair.failed
    );
    // b never saw a valid ZRTP packet.
    assert_eq!(pair.failed[1], Some(ZrtpFailure::PeerDoesNotSupportZrtp));
}

#[test]
fn one_corrupted_packet_is_recovered_by_retransmission() {
    let cfg = ZrtpConfig::default();
    let mut pair = Pair::new([&cfg, &cfg], Net::new(10, 0.0, 5));
    let mut corrupted = 0;
    pair.net.tamper = Some(Box::new(move |from, p| {
        if from == 1 && corrupted == 0 {
            corrupted += 1;
            p[20] ^= 0xff;
            // Keep the CRC valid so that libbzrtp itself must reject the message.
            let n = p.len() - 4;
            let crc = crc32c(&p[..n]);
            p[n..].copy_from_slice(&crc.to_le_bytes());
        }
        true
    }));
    pair.start();
    pair.drive(10_000);
    pair.assert_secure_and_matching();
}

#[test]
fn lossy_network_still_agrees() {
    let cfg = ZrtpConfig::default();
    for seed in 10..14 {
        let mut pair = Pair::new([&cfg, &cfg], Net::new(40, 0.25, seed));
        pair.start();
        pair.drive(50_000);
        pair.assert_secure_and_matching();
        let lost: u64 = pair.net.links.iter().map(|l| l.lost).sum();
        assert!(lost > 0, "seed {seed}: the network lost nothing");
    }
}

#[test]
fn silent_peer_is_reported_as_not_supporting_zrtp() {
    let cfg = ZrtpConfig {
        handshake_timeout: Duration::from_secs(3),
        ..ZrtpConfig::default()
    };
    let mut pair = Pair::new([&cfg, &cfg], Net::new(10, 0.0, 6));
    pair.net.tamper = Some(Box::new(|from, _| from == 0)); // b's packets never arrive
    pair.sides[0].start(pair.now).expect("start");
    let started = pair.now;
    pair.drive(100_000);
    assert_eq!(pair.failed[0], Some(ZrtpFailure::PeerDoesNotSupportZrtp));
    assert!(pair.now.duration_since(started) >= Duration::from_secs(3));
    assert!(
        pair.now.duration_since(started) < Duration::from_secs(4),
        "gives up at the deadline"
    );
}

#[test]
fn garbage_is_refused_before_the_engine() {
    let t0 = Instant::now();
    let mut s = ZrtpSession::new(&ZrtpConfig::default(), 1, t0).expect("session");
    s.start(t0).expect("start");
    let mut hello = loop {
        if let Some(p) = s.poll_transmit() {
            break p;
        }
        let now = s.poll_timeout().expect("a timer while negotiating");
        s.handle_timeout(now);
        assert!(
            now - t0 < Duration::from_secs(1),
            "no Hello within a second"
        );
    };
    hush_media::zrtp::check_packet(&hello).expect("our own Hello passes the framing check");
    for bad in [
        &b""[..],
        &[0x10; 11][..],
        &[0u8; 100][..],
        &vec![0x10; 5000][..],
    ] {
        assert!(s.handle_packet(Instant::now(), bad).is_err());
    }
    // A valid-looking header with a length field that lies.
    hello[15] = hello[15].wrapping_add(3);
    assert!(s.handle_packet(Instant::now(), &hello).is_err());
    assert_eq!(*s.state(), ZrtpState::Negotiating);
}

/// A device: its own ZID cache, under its own address.
struct Device {
    store: ZidStore,
    uri: &'static str,
}

impl Device {
    fn new(uri: &'static str) -> Device {
        Device {
            store: ZidStore::open(None).expect("store"),
            uri,
        }
    }

    /// The same device after a restart: its cache comes back from the sealed image.
    fn restarted(&self) -> Device {
        let image = self.store.image().expect("image");
        Device {
            store: ZidStore::open(Some(&image)).expect("reopen"),
            uri: self.uri,
        }
    }

    /// This device's config for a call with `peer`, who claims the address `peer_uri`.
    fn calling(&self, peer_uri: &str) -> ZrtpConfig {
        ZrtpConfig {
            cache: Some(ZidCache {
                store: self.store.clone(),
                self_uri: self.uri.into(),
                peer_uri: peer_uri.into(),
            }),
            ..ZrtpConfig::default()
        }
    }
}

const ALICE: &str = "alice@x";
const BOB: &str = "bob@x";

/// What one side of a finished call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    verified: bool,
    new_key: bool,
    mismatch: bool,
}

/// A call between `a` (who believes it talks to `a_peer`) and `b` (who believes it talks
/// to `b_peer`); each side confirms the SAS afterwards if told to.
fn call_as(
    a: &Device,
    a_peer: &str,
    b: &Device,
    b_peer: &str,
    seed: u64,
    confirm: [Option<bool>; 2],
) -> ([Seen; 2], String, [Option<Zid>; 2]) {
    let (ca, cb) = (a.calling(a_peer), b.calling(b_peer));
    let mut pair = Pair::new([&ca, &cb], Net::new(10, 0.0, seed));
    pair.start();
    pair.drive(10_000);
    let (x, y) = pair.assert_secure_and_matching();
    let seen = |s: &hush_media::zrtp::Secured| Seen {
        verified: s.verified,
        new_key: s.new_key,
        mismatch: s.cache_mismatch,
    };
    let out = ([seen(x), seen(y)], x.sas.clone(), [x.peer_zid, y.peer_zid]);
    for (side, c) in confirm.into_iter().enumerate() {
        if let Some(v) = c {
            pair.sides[side].set_sas_verified(v);
        }
    }
    out
}

/// Alice calls Bob; each confirms the SAS afterwards if told to.
fn call(alice: &Device, bob: &Device, seed: u64, confirm: [Option<bool>; 2]) -> [Seen; 2] {
    call_as(alice, BOB, bob, ALICE, seed, confirm).0
}

const PLAIN: Seen = Seen {
    verified: false,
    new_key: false,
    mismatch: false,
};
const VERIFIED: Seen = Seen {
    verified: true,
    new_key: false,
    mismatch: false,
};
const NEW_KEY: Seen = Seen {
    verified: false,
    new_key: true,
    mismatch: false,
};

#[test]
fn zid_cache_gives_continuity_and_remembers_verification() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    assert_eq!(
        call(&alice, &bob, 20, [Some(true); 2]),
        [PLAIN; 2],
        "first call: nothing known"
    );
    assert_eq!(
        call(&alice, &bob, 21, [None; 2]),
        [VERIFIED; 2],
        "verified flag persisted"
    );
    assert_eq!(call(&alice, &bob, 22, [Some(false); 2]), [VERIFIED; 2]);
    assert_eq!(
        call(&alice, &bob, 23, [None; 2]),
        [PLAIN; 2],
        "verification withdrawn"
    );

    // Bob loses his retained secrets but keeps his ZID: Alice's cache no longer matches.
    let image = bob.store.image().expect("image");
    let mut db = rusqlite::Connection::open_in_memory().expect("db");
    db.deserialize_read_exact(rusqlite::MAIN_DB, &image[..], image.len(), false)
        .expect("load bob's cache");
    db.execute("DELETE FROM zrtp", []).expect("forget secrets");
    let forgetful = Device {
        store: ZidStore::open(Some(&db.serialize(rusqlite::MAIN_DB).expect("image")[..]))
            .expect("store"),
        uri: BOB,
    };
    let [a, b] = call(&alice, &forgetful, 24, [None; 2]);
    assert!(
        a.mismatch || b.mismatch,
        "a lost shared secret is reported as a cache mismatch"
    );
}

#[test]
fn the_sealed_image_carries_continuity_and_verification_across_a_restart() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    call(&alice, &bob, 30, [Some(true); 2]);
    let before = alice.store.generation();
    assert!(
        before > 0,
        "the handshake and the verification were changes"
    );
    let (alice, bob) = (alice.restarted(), bob.restarted());
    assert_eq!(alice.store.generation(), 0);
    assert_eq!(
        call(&alice, &bob, 31, [None; 2]),
        [VERIFIED; 2],
        "same retained secret (no mismatch) and still verified"
    );
    assert!(
        alice.store.generation() > 0,
        "rs1 rotated: a change to seal"
    );
}

#[test]
fn the_peer_zid_is_the_one_the_peer_presents_and_the_cache_records() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    let (_, _, [bob_zid, alice_zid]) = call_as(&alice, BOB, &bob, ALICE, 40, [None; 2]);
    let (bob_zid, alice_zid) = (bob_zid.expect("bob's zid"), alice_zid.expect("alice's zid"));
    assert_ne!(bob_zid, alice_zid);
    let keys = alice.store.keys_of(BOB).expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].zid, bob_zid);
    assert!(keys[0].last_seen && !keys[0].verified);
    assert_eq!(bob.store.keys_of(ALICE).expect("keys")[0].zid, alice_zid);
    // The same devices keep their ZIDs on the next call.
    let (_, _, [again, _]) = call_as(&alice, BOB, &bob, ALICE, 41, [None; 2]);
    assert_eq!(again, Some(bob_zid));
}

/// Mallory sits in the middle of a later call: two ZRTP sessions back to back, each with
/// a fresh ZID, so neither Alice's nor Bob's cache has a secret to mismatch.
#[test]
fn a_relay_with_fresh_zids_after_a_verified_call_is_a_new_key_until_verified_again() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    call(&alice, &bob, 50, [Some(true); 2]);
    assert_eq!(call(&alice, &bob, 51, [None; 2]), [VERIFIED; 2]);

    let (mallory_as_bob, mallory_as_alice) = (Device::new(BOB), Device::new(ALICE));
    let (to_alice, sas_alice, [fake_bob, _]) =
        call_as(&alice, BOB, &mallory_as_bob, ALICE, 52, [None; 2]);
    let (to_bob, sas_bob, _) = call_as(&mallory_as_alice, BOB, &bob, ALICE, 53, [None; 2]);
    assert_eq!(
        to_alice[0], NEW_KEY,
        "Alice is warned: Bob's address, a new key"
    );
    assert_eq!(to_bob[1], NEW_KEY, "so is Bob");
    assert_ne!(
        sas_alice, sas_bob,
        "comparing the codes aloud exposes the relay"
    );
    let fake_bob = fake_bob.expect("zid");
    let keys = alice.store.keys_of(BOB).expect("keys");
    assert_eq!(keys.len(), 2);
    assert!(keys[0].last_seen && keys[0].zid == fake_bob && !keys[0].verified);
    assert!(keys[1].verified, "Bob's real key stays verified");

    // Had it been Bob on a new device, Alice compares, confirms, and the warning is gone
    // for that key (the device confirms too, as a real peer would).
    let (again, _, _) = call_as(&alice, BOB, &mallory_as_bob, ALICE, 54, [Some(true); 2]);
    assert_eq!(again[0], NEW_KEY);
    assert_eq!(
        call_as(&alice, BOB, &mallory_as_bob, ALICE, 55, [None; 2]).0[0],
        VERIFIED
    );
    assert_eq!(
        call(&alice, &bob, 56, [None; 2]),
        [VERIFIED; 2],
        "the first key is still verified"
    );
}

#[test]
fn verifying_the_real_peer_does_not_verify_an_earlier_impostor() {
    let (alice, bob, mallory) = (Device::new(ALICE), Device::new(BOB), Device::new(BOB));
    // Mallory called first, as bob (anyone can write a From header), and confirmed
    // everything a peer can confirm. Alice did not verify.
    let (first, _, [mallory_zid, _]) =
        call_as(&alice, BOB, &mallory, ALICE, 60, [None, Some(true)]);
    assert_eq!(first[0], PLAIN);
    // Then the real Bob. Alice verifies later, outside the call, the key last seen for
    // bob's address (shown to her first); Bob confirmed during the call.
    let (_, _, [bob_zid, _]) = call_as(&alice, BOB, &bob, ALICE, 61, [None, Some(true)]);
    let keys = alice.store.keys_of(BOB).expect("keys");
    let last = keys.iter().find(|k| k.last_seen).expect("a last seen key");
    assert_eq!(Some(last.zid), bob_zid);
    assert_eq!(
        alice
            .store
            .set_verified(BOB, &last.zid, true)
            .expect("verify"),
        1,
        "exactly Bob's entry"
    );
    let mallory_zid = mallory_zid.expect("zid");
    let status = alice.store.key_status(BOB, &mallory_zid).expect("status");
    assert!(!status.this_key_verified && status.other_key_verified);

    // Mallory calls again: not verified, and flagged as a new key for bob's address.
    let (again, _, _) = call_as(&alice, BOB, &mallory, ALICE, 62, [None; 2]);
    assert_eq!(again[0], NEW_KEY);
    assert_eq!(call(&alice, &bob, 63, [None; 2])[0], VERIFIED);
    // Withdrawing names one key too.
    assert_eq!(
        alice.store.set_verified(BOB, &mallory_zid, false).ok(),
        Some(1)
    );
    assert!(
        alice
            .store
            .keys_of(BOB)
            .expect("keys")
            .iter()
            .any(|k| k.verified),
        "Bob's key is untouched"
    );
}

/// A device that presents `zid` (copied from someone's cleartext Hello) as its own, with
/// no retained secret for anyone.
fn impostor(zid: Zid, uri: &'static str) -> Device {
    let db = rusqlite::Connection::open_in_memory().expect("db");
    db.execute_batch(
        "CREATE TABLE ziduri (zuid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
         zid BLOB NOT NULL DEFAULT '000000000000', selfuri TEXT NOT NULL DEFAULT 'unset', \
         peeruri TEXT NOT NULL DEFAULT 'unset', active INTEGER DEFAULT 0);",
    )
    .expect("schema");
    db.execute(
        "INSERT INTO ziduri (zid, selfuri, peeruri) VALUES (?1, ?2, 'self')",
        rusqlite::params![&zid.0[..], uri],
    )
    .expect("copied zid");
    let mut db = db;
    let image = db.serialize(rusqlite::MAIN_DB).expect("image").to_vec();
    Device {
        store: ZidStore::open(Some(&image)).expect("store"),
        uri,
    }
}

/// Mallory calls Alice as bob, presenting Bob's ZID without his retained secret, and
/// is cut off before Confirm: libbzrtp has already cleared its "verified" flag for
/// Bob's entry when the retained-secret check failed on her DHPart. The user's verdict
/// is kept apart from that flag: Bob stays verified, and a relay with a fresh key is
/// still flagged as a new key.
#[test]
fn an_unfinished_handshake_with_a_copied_zid_erases_no_verdict() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    let (_, _, [bob_zid, _]) = call_as(&alice, BOB, &bob, ALICE, 90, [Some(true); 2]);
    let bob_zid = bob_zid.expect("bob's zid");
    assert_eq!(call(&alice, &bob, 91, [None; 2]), [VERIFIED; 2]);

    let mallory = impostor(bob_zid, BOB);
    let (ca, cm) = (alice.calling(BOB), mallory.calling(ALICE));
    let mut pair = Pair::new([&ca, &cm], Net::new(10, 0.0, 92));
    let cut_off = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = cut_off.clone();
    // Whichever role Alice takes, she has processed Mallory's DHPart (1 or 2) by the
    // time Mallory would send a Confirm: that and everything after it is dropped.
    pair.net.tamper = Some(Box::new(move |from, p| {
        let confirm = p.len() > 24 && (&p[16..24] == b"Confirm1" || &p[16..24] == b"Confirm2");
        if from == 1 && confirm {
            seen.set(true);
        }
        !(from == 1 && seen.get())
    }));
    pair.start();
    pair.drive(100_000);
    assert!(cut_off.get(), "Mallory got as far as a Confirm");
    assert!(pair.secured[0].is_none(), "Alice never went secure");
    assert!(pair.failed[0].is_some(), "Alice gave up");
    drop(pair);

    let keys = alice.store.keys_of(BOB).expect("keys");
    assert!(
        keys.iter().any(|k| k.zid == bob_zid && k.verified),
        "Bob's key is still listed as verified: {keys:?}"
    );
    assert_eq!(
        call(&alice, &bob, 93, [None; 2])[0],
        VERIFIED,
        "Bob's real call still shows verified"
    );
    let relay = Device::new(BOB);
    assert_eq!(
        call_as(&alice, BOB, &relay, ALICE, 94, [None; 2]).0[0],
        NEW_KEY,
        "a relay with a fresh key calling as bob is still a new key"
    );
}

/// A relay that copies the victims' ZIDs has no retained secret for them: both ends see
/// a cache mismatch, as before.
#[test]
fn a_relay_with_copied_zids_is_a_cache_mismatch_on_both_ends() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    let (_, _, [bob_zid, alice_zid]) = call_as(&alice, BOB, &bob, ALICE, 70, [Some(true); 2]);
    let mallory_as_bob = impostor(bob_zid.expect("zid"), BOB);
    let mallory_as_alice = impostor(alice_zid.expect("zid"), ALICE);
    let (to_alice, _, [presented, _]) = call_as(&alice, BOB, &mallory_as_bob, ALICE, 71, [None; 2]);
    assert_eq!(presented, bob_zid, "the relay presents Bob's ZID");
    let (to_bob, _, _) = call_as(&mallory_as_alice, BOB, &bob, ALICE, 72, [None; 2]);
    assert!(to_alice[0].mismatch && !to_alice[0].verified && !to_alice[0].new_key);
    assert!(to_bob[1].mismatch && !to_bob[1].verified && !to_bob[1].new_key);
}

#[test]
fn a_peer_named_self_is_refused() {
    let device = Device::new(ALICE);
    assert!(ZrtpSession::new(&device.calling("self"), 1, Instant::now()).is_err());
}

/// Several calls at once share one cache (one connection, one lock): each finds its own
/// peer's entry, and every change is announced, whichever thread made it.
#[test]
fn concurrent_calls_share_one_store() {
    let alice = Device::new(ALICE);
    let told = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = told.clone();
    alice.store.on_change(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    const PEERS: [&str; 4] = ["p0@x", "p1@x", "p2@x", "p3@x"];
    let threads: Vec<_> = PEERS
        .iter()
        .enumerate()
        .map(|(i, peer)| {
            let me = Device {
                store: alice.store.clone(),
                uri: ALICE,
            };
            std::thread::spawn(move || {
                let them = Device::new(peer);
                for round in 0..3 {
                    let confirm = if round == 0 { Some(true) } else { None };
                    let seen = call_as(
                        &me,
                        peer,
                        &them,
                        ALICE,
                        80 + i as u64 * 10 + round,
                        [confirm, confirm],
                    )
                    .0;
                    let expect = if round == 0 { PLAIN } else { VERIFIED };
                    assert_eq!(seen, [expect; 2], "peer {peer}, round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a call thread panicked");
    }
    for peer in PEERS {
        let keys = alice.store.keys_of(peer).expect("keys");
        assert_eq!(keys.len(), 1, "{peer}: one key, no duplicate entries");
        assert!(keys[0].verified);
    }
    let n = told.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        n > 0 && n == alice.store.generation(),
        "{n} changes announced"
    );
    assert_eq!(
        alice.store.verified_keys().expect("list").len(),
        PEERS.len()
    );
}

/// A verdict is on a key, continuity on a secret shared with one of our own addresses.
/// Alice verified Bob on one account; her other account (or a direct line, whose address
/// changes with the network) shares the cache but keeps no secret with Bob. Mallory,
/// who copied Bob's ZID from a cleartext Hello and calls that account as bob, gets no
/// cache mismatch there (nothing to mismatch): she must not be shown as verified.
#[test]
fn a_verified_key_is_a_new_key_on_another_of_our_addresses_until_compared_there() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    let (_, _, [bob_zid, _]) = call_as(&alice, BOB, &bob, ALICE, 100, [Some(true); 2]);
    let bob_zid = bob_zid.expect("bob's zid");
    assert_eq!(call(&alice, &bob, 101, [None; 2]), [VERIFIED; 2]);
    let other_line = |uri: &'static str| Device {
        store: alice.store.clone(),
        uri,
    };

    let mallory = impostor(bob_zid, BOB);
    let (seen, _, [presented, _]) = call_as(
        &other_line("alice@lan"),
        BOB,
        &mallory,
        "alice@lan",
        102,
        [None; 2],
    );
    assert_eq!(presented, Some(bob_zid), "Mallory presents Bob's ZID");
    assert_eq!(seen[0], NEW_KEY, "not verified: no continuity on that line");
    // Her second call there matches the secret her first one left: continuity, but
    // with her, and nobody compared a code on that line.
    let again = call_as(
        &other_line("alice@lan"),
        BOB,
        &mallory,
        "alice@lan",
        106,
        [None; 2],
    );
    assert_eq!(again.0[0], NEW_KEY, "a second call is not verified either");
    // Nor after the user rejected her on that line.
    call_as(
        &other_line("alice@lan"),
        BOB,
        &mallory,
        "alice@lan",
        107,
        [Some(false), None],
    );
    assert_eq!(
        call_as(
            &other_line("alice@lan"),
            BOB,
            &mallory,
            "alice@lan",
            108,
            [None; 2]
        )
        .0[0],
        NEW_KEY
    );

    // The real Bob on another of Alice's lines is a new key too until she compares
    // there; then it is verified on that line as well.
    let second = other_line("alice@work");
    let (first, _, _) = call_as(&second, BOB, &bob, "alice@work", 103, [Some(true), None]);
    assert_eq!(first[0], NEW_KEY);
    assert_eq!(
        call_as(&second, BOB, &bob, "alice@work", 104, [None; 2]).0[0],
        VERIFIED
    );
    assert_eq!(
        call(&alice, &bob, 105, [None; 2])[0],
        VERIFIED,
        "the first line keeps its continuity"
    );
}

/// Declaring a SAS mismatch (or withdrawing) on a call that has no continuity with the
/// verified key rejects that call's peer, not the key it copied.
#[test]
fn rejecting_an_impostor_with_a_copied_zid_keeps_the_verdict_on_the_real_key() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    let (_, _, [bob_zid, _]) = call_as(&alice, BOB, &bob, ALICE, 110, [Some(true); 2]);
    let bob_zid = bob_zid.expect("bob's zid");

    // A cache mismatch: the user presses "SAS mismatch".
    let mallory = impostor(bob_zid, BOB);
    let (seen, _, _) = call_as(&alice, BOB, &mallory, ALICE, 111, [Some(false), None]);
    assert!(seen[0].mismatch);
    // No continuity on another line: the user rejects there too.
    let lan = Device {
        store: alice.store.clone(),
        uri: "alice@lan",
    };
    let (seen, _, _) = call_as(
        &lan,
        BOB,
        &impostor(bob_zid, BOB),
        "alice@lan",
        112,
        [Some(false), None],
    );
    assert_eq!(seen[0], NEW_KEY);

    let keys = alice.store.keys_of(BOB).expect("keys");
    assert!(
        keys.iter().any(|k| k.zid == bob_zid && k.verified),
        "Bob's key is still verified: {keys:?}"
    );
    let relay = Device::new(BOB);
    assert_eq!(
        call_as(&alice, BOB, &relay, ALICE, 113, [None; 2]).0[0],
        NEW_KEY,
        "a relay with a fresh key is still flagged"
    );
}

/// A caller inventing a fresh key for each of many calls as bob cannot push Bob's key
/// out of Alice's cache, and with it the secret that exposes a copy of his ZID.
#[test]
fn many_fresh_keys_as_a_contact_do_not_erase_its_key_continuity() {
    let (alice, bob) = (Device::new(ALICE), Device::new(BOB));
    let (_, _, [bob_zid, _]) = call_as(&alice, BOB, &bob, ALICE, 120, [None; 2]);
    let bob_zid = bob_zid.expect("bob's zid");
    for seed in 0..=hush_media::zrtp::MAX_KEYS_PER_PEER as u64 {
        let fresh = Device::new(BOB);
        call_as(&alice, BOB, &fresh, ALICE, 200 + seed, [None; 2]);
    }
    let alice = alice.restarted();
    assert!(
        alice
            .store
            .keys_of(BOB)
            .expect("keys")
            .iter()
            .any(|k| k.zid == bob_zid),
        "Bob's key is still in the cache"
    );
    let mallory = impostor(bob_zid, BOB);
    let (seen, _, _) = call_as(&alice, BOB, &mallory, ALICE, 121, [None; 2]);
    assert!(
        seen[0].mismatch,
        "a copy of Bob's ZID is still caught: {:?}",
        seen[0]
    );
}
