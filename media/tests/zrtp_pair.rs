//! Two real libbzrtp endpoints behind our sans-IO wrapper, wired through a simulated
//! network with simulated time (latency, seeded loss, tampering): deterministic, no
//! sockets, no sleeps.

use hush_media::zrtp::{
    AuthTag, Cipher, KeyAgreement, SasType, ZidCache, ZrtpConfig, ZrtpEvent, ZrtpFailure,
    ZrtpSession, ZrtpState, crc32c,
};
use std::time::{Duration, Instant};

type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>) -> bool>;

struct Net {
    latency: Duration,
    loss: f64,
    rng: u64,
    /// Called per packet with (from side, bytes); return false to drop it.
    tamper: Option<Tamper>,
    in_flight: Vec<(Instant, usize, Vec<u8>)>,
}

impl Net {
    fn new(latency_ms: u64, loss: f64, seed: u64) -> Net {
        Net {
            latency: Duration::from_millis(latency_ms),
            loss,
            rng: seed,
            tamper: None,
            in_flight: Vec::new(),
        }
    }

    fn chance(&mut self) -> f64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
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
                if self.net.chance() < self.net.loss {
                    continue;
                }
                if let Some(t) = &mut self.net.tamper
                    && !t(i, &mut p)
                {
                    continue;
                }
                self.net
                    .in_flight
                    .push((self.now + self.net.latency, 1 - i, p));
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
        let next_packet = self.net.in_flight.iter().map(|(t, _, _)| *t).min();
        let next_timer = self.sides.iter().filter_map(|s| s.poll_timeout()).min();
        let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        let (due, later): (Vec<_>, Vec<_>) = self
            .net
            .in_flight
            .drain(..)
            .partition(|(t, _, _)| *t <= self.now);
        self.net.in_flight = later;
        for (_, to, p) in due {
            if let Err(e) = self.sides[to].handle_packet(self.now, &p) {
                eprintln!("side {to} dropped a packet: {e}");
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

fn cached(dir: &std::path::Path, me: &str, peer: &str) -> ZrtpConfig {
    ZrtpConfig {
        cache: Some(ZidCache {
            path: dir.join(format!("{me}.db")),
            self_uri: format!("sip:{me}@x"),
            peer_uri: format!("sip:{peer}@x"),
        }),
        ..ZrtpConfig::default()
    }
}

fn call(dir: &std::path::Path, seed: u64, verify: Option<bool>) -> (bool, bool, bool) {
    let (ca, cb) = (cached(dir, "alice", "bob"), cached(dir, "bob", "alice"));
    let mut pair = Pair::new([&ca, &cb], Net::new(10, 0.0, seed));
    pair.start();
    pair.drive(10_000);
    let (a, b) = pair.assert_secure_and_matching();
    let out = (a.verified, b.verified, a.cache_mismatch || b.cache_mismatch);
    if let Some(v) = verify {
        for s in &mut pair.sides {
            s.set_sas_verified(v);
        }
    }
    out
}

#[test]
fn zid_cache_gives_continuity_and_remembers_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        call(dir.path(), 20, Some(true)),
        (false, false, false),
        "first call: nothing known"
    );
    assert_eq!(
        call(dir.path(), 21, None),
        (true, true, false),
        "verified flag persisted"
    );
    assert_eq!(call(dir.path(), 22, Some(false)), (true, true, false));
    assert_eq!(
        call(dir.path(), 23, None),
        (false, false, false),
        "verification withdrawn"
    );

    // Bob loses his retained secrets but keeps his ZID: Alice's cache no longer matches.
    let conn = rusqlite::Connection::open(dir.path().join("bob.db")).expect("open bob's cache");
    conn.execute("DELETE FROM zrtp", [])
        .expect("forget secrets");
    drop(conn);
    let (_, _, mismatch) = call(dir.path(), 24, None);
    assert!(
        mismatch,
        "a lost shared secret is reported as a cache mismatch"
    );
}
