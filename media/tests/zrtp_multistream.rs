//! A call's second stream (video) keyed by ZRTP in multistream mode, with real
//! libbzrtp on both ends over simulated links: started once the first stream is
//! secure, it gets keys of its own derived from the first stream's exchange.

use hush_media::MediaError;
use hush_media::zrtp::{
    KeyAgreement, Secured, ZrtpConfig, ZrtpEvent, ZrtpFailure, ZrtpSession, ZrtpState,
};
use hush_sim::{Conditions, Link};
use std::time::{Duration, Instant};

const AUDIO: [u32; 2] = [0x1111_0000, 0x2222_0000];
const VIDEO: [u32; 2] = [0x1111_0001, 0x2222_0001];

/// Two ends, each with its audio and video channel; what each sends travels on its
/// link tagged with the stream it belongs to (as the two media ports would carry it).
struct Call {
    sides: [ZrtpSession; 2],
    links: [Link<(usize, Vec<u8>)>; 2],
    now: Instant,
    secured: [[Option<Box<Secured>>; 2]; 2],
    failed: [[Option<ZrtpFailure>; 2]; 2],
}

impl Call {
    fn new(seed: u64) -> Call {
        let now = Instant::now();
        let cfg = ZrtpConfig::default();
        let conditions = Conditions {
            latency: Duration::from_millis(30),
            loss_per_mille: 50,
            ..Conditions::default()
        };
        let mut sides = [
            ZrtpSession::new(&cfg, AUDIO[0], now).expect("a"),
            ZrtpSession::new(&cfg, AUDIO[1], now).expect("b"),
        ];
        for (i, s) in sides.iter_mut().enumerate() {
            s.add_channel(VIDEO[i]).expect("video channel");
        }
        Call {
            sides,
            links: [Link::new(conditions, seed), Link::new(conditions, seed + 1)],
            now,
            secured: Default::default(),
            failed: Default::default(),
        }
    }

    fn collect(&mut self) {
        for (i, video) in VIDEO.into_iter().enumerate() {
            while let Some(p) = self.sides[i].poll_transmit() {
                self.links[i].send(self.now, (0, p));
            }
            while let Some(p) = self.sides[i].poll_channel_transmit(video) {
                self.links[i].send(self.now, (1, p));
            }
            let mut events = Vec::new();
            while let Some(e) = self.sides[i].poll_event() {
                events.push((0, e));
            }
            while let Some(e) = self.sides[i].poll_channel_event(video) {
                events.push((1, e));
            }
            for (stream, e) in events {
                match e {
                    ZrtpEvent::Secure(s) => self.secured[i][stream] = Some(s),
                    ZrtpEvent::Failed(f) => self.failed[i][stream] = Some(f),
                }
            }
        }
    }

    /// Runs until `done`, bounded.
    fn drive_until(&mut self, done: impl Fn(&Call) -> bool) {
        for _ in 0..100_000 {
            self.collect();
            if done(self) {
                return;
            }
            let next = self
                .links
                .iter()
                .filter_map(Link::next_arrival)
                .chain(self.sides.iter().filter_map(ZrtpSession::poll_timeout))
                .min()
                .expect("something pending");
            self.now = self.now.max(next);
            for from in 0..2 {
                let to = 1 - from;
                while let Some((stream, p)) = self.links[from].receive(self.now) {
                    let r = match stream {
                        0 => self.sides[to].handle_packet(self.now, &p),
                        _ => self.sides[to].handle_channel_packet(VIDEO[to], self.now, &p, true),
                    };
                    // A repetition may be refused (rate-limited); nothing is malformed.
                    if let Err(e) = r {
                        assert!(matches!(e, MediaError::Refused { .. }), "{e}");
                    }
                }
            }
            for s in &mut self.sides {
                s.handle_timeout(self.now);
            }
        }
        panic!("no outcome");
    }
}

#[test]
fn the_video_stream_is_keyed_in_multistream_mode_once_audio_is_secure() {
    for seed in 0..5 {
        let mut call = Call::new(seed);
        // Each m-line gets its own hash, known before anything is sent.
        let hashes: Vec<String> = (0..2)
            .map(|i| call.sides[i].channel_hello_hash(VIDEO[i]).expect("hash"))
            .collect();
        assert_ne!(hashes[0], call.sides[0].hello_hash().expect("audio hash"));
        for (i, video) in VIDEO.into_iter().enumerate() {
            call.sides[i]
                .set_channel_peer_hello_hash(video, &hashes[1 - i])
                .expect("peer video hash");
        }
        // Video cannot start before audio is secure.
        assert!(call.sides[0].start_channel(VIDEO[0], call.now).is_err());
        let now = call.now;
        for s in &mut call.sides {
            s.start(now).expect("start");
        }
        call.drive_until(|c| c.secured.iter().all(|s| s[0].is_some()));
        let now = call.now;
        for (i, s) in call.sides.iter_mut().enumerate() {
            s.start_channel(VIDEO[i], now).expect("start video");
        }
        call.drive_until(|c| c.secured.iter().all(|s| s[1].is_some()));
        assert_eq!(call.failed, [[None, None], [None, None]]);
        let [a, b] = &call.secured;
        let (a_audio, a_video) = (a[0].as_deref().expect("a"), a[1].as_deref().expect("a"));
        let (b_audio, b_video) = (b[0].as_deref().expect("b"), b[1].as_deref().expect("b"));
        assert_eq!(
            a_video.algorithms.key_agreement,
            KeyAgreement::Mult,
            "seed {seed}"
        );
        assert_eq!(b_video.algorithms.key_agreement, KeyAgreement::Mult);
        assert_ne!(a_audio.algorithms.key_agreement, KeyAgreement::Mult);
        // Video keys pair up across the ends, and differ from audio's.
        assert_eq!(*a_video.keys.local_key, *b_video.keys.remote_key);
        assert_eq!(*b_video.keys.local_key, *a_video.keys.remote_key);
        assert_eq!(*a_video.keys.local_salt, *b_video.keys.remote_salt);
        assert_ne!(*a_video.keys.local_key, *a_audio.keys.local_key);
        assert_ne!(*a_video.keys.remote_key, *a_audio.keys.remote_key);
        // The SAS the users compare is the audio stream's, the same on both ends.
        assert_eq!(a_audio.sas, b_audio.sas);
        for (i, s) in call.sides.iter().enumerate() {
            assert_eq!(s.channel_state(VIDEO[i]), Some(&ZrtpState::Secure));
        }
        assert_eq!(call.sides[0].poll_timeout(), None, "nothing left to do");
    }
}

#[test]
fn a_video_hash_that_does_not_match_fails_the_video_stream_alone() {
    let mut call = Call::new(9);
    let wrong = call.sides[0].hello_hash().expect("audio hash");
    call.sides[0]
        .set_channel_peer_hello_hash(VIDEO[0], &wrong)
        .expect("set");
    let now = call.now;
    for s in &mut call.sides {
        s.start(now).expect("start");
    }
    call.drive_until(|c| c.secured.iter().all(|s| s[0].is_some()));
    let now = call.now;
    for (i, s) in call.sides.iter_mut().enumerate() {
        s.start_channel(VIDEO[i], now).expect("start video");
    }
    // Side 0's video fails (the peer's video Hello is not the one signalled);
    // audio stays secure.
    call.drive_until(|c| c.failed[0][1].is_some());
    assert_eq!(call.failed[0][1], Some(ZrtpFailure::HelloHashMismatch));
    assert_eq!(call.failed[0][0], None);
    assert!(matches!(
        call.sides[0].channel_state(VIDEO[0]),
        Some(ZrtpState::Failed(_))
    ));
    assert_eq!(call.sides[0].state(), &ZrtpState::Secure);
}

#[test]
fn channels_are_bounded_and_unknown_ones_refused() {
    let now = Instant::now();
    let mut s = ZrtpSession::new(&ZrtpConfig::default(), 1, now).expect("session");
    assert!(s.add_channel(1).is_err(), "the first channel's SSRC");
    s.add_channel(2).expect("one video channel");
    assert!(s.add_channel(2).is_err(), "twice");
    assert!(s.channel_hello_hash(3).is_err());
    assert!(s.handle_channel_packet(3, now, &[0; 20], true).is_err());
    assert!(s.poll_channel_transmit(3).is_none());
    // Debian's libbzrtp 5.1 keys two streams per call (audio and one video): a third
    // channel is refused, by libbzrtp, before our own limit.
    assert!(s.add_channel(3).is_err());
    assert!(
        s.channel_hello_hash(3).is_err(),
        "a refused channel is not kept"
    );
    // A removed channel frees its place (in libbzrtp too).
    s.remove_channel(2).expect("remove");
    assert!(s.channel_hello_hash(2).is_err());
    assert!(s.remove_channel(2).is_err(), "once");
    s.add_channel(3)
        .expect("another video channel in its place");
    assert!(s.channel_hello_hash(3).is_ok());
}

#[test]
fn a_video_channel_answered_by_a_full_key_exchange_is_never_secure() {
    // The peer's "video" is another ZRTP endpoint altogether (its own context, its own
    // ZID, Diffie-Hellman): as if someone on the video port ran a key exchange of its
    // own, whose SAS nobody compares.
    let mut now = Instant::now();
    let cfg = ZrtpConfig::default();
    let mut a = ZrtpSession::new(&cfg, AUDIO[0], now).expect("a");
    a.add_channel(VIDEO[0]).expect("video");
    let mut b = ZrtpSession::new(&cfg, AUDIO[1], now).expect("b");
    let mut intruder = ZrtpSession::new(&cfg, VIDEO[1], now).expect("intruder");
    a.start(now).expect("start");
    b.start(now).expect("start");
    let mut video_started = false;
    let (mut video_failed, mut refused) = (None, 0);
    for _ in 0..5000 {
        now += Duration::from_millis(10);
        while let Some(p) = a.poll_transmit() {
            let _ = b.handle_packet(now, &p);
        }
        while let Some(p) = b.poll_transmit() {
            let _ = a.handle_packet(now, &p);
        }
        if !video_started && a.state() == &ZrtpState::Secure {
            a.start_channel(VIDEO[0], now).expect("start video");
            intruder.start(now).expect("intruder starts");
            video_started = true;
        }
        while let Some(p) = a.poll_channel_transmit(VIDEO[0]) {
            let _ = intruder.handle_packet(now, &p);
        }
        while let Some(p) = intruder.poll_transmit() {
            if a.handle_channel_packet(VIDEO[0], now, &p, true).is_err() {
                refused += 1;
            }
        }
        while let Some(e) = a.poll_channel_event(VIDEO[0]) {
            match e {
                ZrtpEvent::Secure(s) => panic!("video keyed by {}", s.algorithms.key_agreement),
                ZrtpEvent::Failed(f) => video_failed = Some(f),
            }
        }
        while a.poll_event().is_some() {}
        if video_failed.is_some() {
            break;
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        intruder.handle_timeout(now);
    }
    assert!(video_started, "audio went secure");
    assert!(video_failed.is_some(), "the video channel gave up");
    assert!(
        refused > 0,
        "the intruder's Hellos were refused before libbzrtp"
    );
    assert_eq!(a.state(), &ZrtpState::Secure);
    // The user confirms the audio SAS: the cache takes it (nothing was freed under it).
    a.set_sas_verified(true);
}
