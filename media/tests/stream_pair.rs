//! Two audio streams (real libbzrtp, SRTP, codecs, jitter buffers) talking over a
//! simulated network (hush-sim's seeded links) with simulated time: the tone sent by one side is heard by the
//! other at the right pitch and level, only after ZRTP is secure under "mandatory".
//! Each side has an address; a datagram reaches whoever is at its destination, and
//! strangers can inject datagrams from addresses of their own.

use hush_media::analysis::{dominant_frequency, rms, tone, tone_purity};
use hush_media::codec::CodecKind;
use hush_media::rtp::{Kind, RtpHeader, classify, write};
use hush_media::stream::{
    AudioStream, CLEARTEXT_MEDIA_TIMEOUT, MediaSecurity, PEER_SILENT_TIMEOUT, Policy, StreamConfig,
    StreamEvent,
};
use hush_media::zrtp::{ZrtpConfig, ZrtpSession, crc32c};
use hush_sim::{Conditions, Link};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(20);

/// An attacker on the path: sees (from side, datagram), may rewrite it or drop it (false).
type Mitm = Box<dyn FnMut(usize, &mut Vec<u8>) -> bool>;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Where side 0 and side 1 really are.
const ADDRS: [&str; 2] = ["192.0.2.10:4000", "192.0.2.20:6000"];
/// A stranger on the network.
const STRANGER: &str = "203.0.113.66:5555";

/// A side's setup: its stream config and whether it runs ZRTP (with which handshake
/// timeout).
struct Side {
    cfg: StreamConfig,
    zrtp: Option<Duration>,
}

/// Side `i` (0 or 1) with the other side's real address as the negotiated one.
fn config(i: usize, codec: CodecKind, policy: Policy, zrtp: bool) -> Side {
    let cfg = StreamConfig {
        local_ssrc: i as u32 + 1,
        codec,
        payload_type: codec.static_payload_type().unwrap_or(111),
        telephone_event_pt: Some(101),
        policy,
        peer_hello_hash: None,
        remote: addr(ADDRS[1 - i]),
    };
    Side {
        cfg,
        zrtp: zrtp.then_some(Duration::from_secs(4)),
    }
}

fn zrtp_session(ssrc: u32, handshake_timeout: Duration, now: Instant) -> ZrtpSession {
    let c = ZrtpConfig {
        handshake_timeout,
        ..ZrtpConfig::default()
    };
    ZrtpSession::new(&c, ssrc, now).expect("zrtp")
}

/// Per side: what it heard, its events, and datagrams it put on the wire by kind.
#[derive(Default)]
struct Log {
    heard: Vec<i16>,
    events: Vec<StreamEvent>,
    rtp_sent_before_secure: usize,
    rtp_sent: usize,
    zrtp_sent: usize,
    /// RTP or RTCP datagrams addressed to the stranger.
    media_to_stranger: usize,
}

struct Call {
    sides: [AudioStream; 2],
    /// Where each side really sends from and receives at.
    addrs: [SocketAddr; 2],
    logs: [Log; 2],
    now: Instant,
    /// In flight: (from, to, datagram), delayed (and, if asked, lost, reordered or
    /// duplicated) by the link's seeded conditions.
    wire: Link<(SocketAddr, SocketAddr, Vec<u8>)>,
    tones: [Option<f64>; 2],
    sample: [u64; 2],
    frame_samples: [usize; 2],
    /// Optional attacker on the path: may rewrite or drop (return false).
    mitm: Option<Mitm>,
}

impl Call {
    /// Two sides that tell each other their real Hello hashes in the "SDP".
    fn new(a: Side, b: Side) -> Call {
        let mut call = Call::unstarted(a, b, true);
        call.start(0);
        call.start(1);
        call
    }

    /// Two sides, not started; `signal_hashes` puts each one's Hello hash into the
    /// other's config, as the SDP exchange does.
    fn unstarted(mut a: Side, mut b: Side, signal_hashes: bool) -> Call {
        let now = Instant::now();
        let za = a.zrtp.map(|t| zrtp_session(a.cfg.local_ssrc, t, now));
        let zb = b.zrtp.map(|t| zrtp_session(b.cfg.local_ssrc, t, now));
        if signal_hashes {
            if let Some(z) = &za {
                b.cfg.peer_hello_hash = Some(z.hello_hash().expect("hash a"));
            }
            if let Some(z) = &zb {
                a.cfg.peer_hello_hash = Some(z.hello_hash().expect("hash b"));
            }
        }
        let frame_samples = [a.cfg.codec.frame_samples(), b.cfg.codec.frame_samples()];
        let sides = [
            AudioStream::new(a.cfg, za, now).expect("stream a"),
            AudioStream::new(b.cfg, zb, now).expect("stream b"),
        ];
        Call {
            sides,
            addrs: [addr(ADDRS[0]), addr(ADDRS[1])],
            logs: [Log::default(), Log::default()],
            now,
            wire: Link::new(Conditions::latency(Duration::from_millis(30)), 1),
            tones: [Some(440.0), Some(880.0)],
            sample: [0, 0],
            frame_samples,
            mitm: None,
        }
    }

    fn start(&mut self, i: usize) {
        self.sides[i].start(self.now).expect("start");
    }

    /// A datagram from `from` arriving at side `to` now.
    fn inject(&mut self, to: usize, from: SocketAddr, d: &[u8]) {
        self.sides[to].handle_datagram(self.now, from, d);
    }

    fn flush(&mut self) {
        for i in 0..2 {
            while let Some(t) = self.sides[i].poll_transmit() {
                let (dest, mut d) = (t.to, t.data);
                if classify(&d) == Kind::Zrtp {
                    self.logs[i].zrtp_sent += 1;
                }
                if classify(&d) != Kind::Zrtp && dest == addr(STRANGER) {
                    self.logs[i].media_to_stranger += 1;
                }
                if classify(&d) == Kind::Rtp {
                    self.logs[i].rtp_sent += 1;
                    if *self.sides[i].security() != MediaSecurity::Secure {
                        self.logs[i].rtp_sent_before_secure += 1;
                    }
                }
                if let Some(m) = &mut self.mitm
                    && !m(i, &mut d)
                {
                    continue;
                }
                self.wire.send(self.now, (self.addrs[i], dest, d));
            }
            while let Some(e) = self.sides[i].poll_event() {
                self.logs[i].events.push(e);
            }
        }
    }

    /// Runs `d` of simulated time: a frame every 20 ms on both sides, packets and timers in between.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut next_frame = self.now + FRAME;
        while self.now < end {
            self.flush();
            let next_packet = self.wire.next_arrival();
            let next_timer = self.sides.iter().filter_map(|s| s.poll_timeout()).min();
            let next = [Some(next_frame), next_packet, next_timer]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            self.now = next.min(end).max(self.now);
            while let Some((from, to, d)) = self.wire.receive(self.now) {
                // Nobody at that address (e.g. a private address behind NAT): lost.
                if let Some(j) = self.addrs.iter().position(|a| *a == to) {
                    self.sides[j].handle_datagram(self.now, from, &d);
                }
            }
            for s in &mut self.sides {
                s.handle_timeout(self.now);
            }
            if self.now >= next_frame {
                next_frame += FRAME;
                self.frame_tick();
            }
        }
        self.flush();
    }

    fn frame_tick(&mut self) {
        for i in 0..2 {
            let n = self.frame_samples[i];
            let rate = (n * 50) as u32;
            let pcm: Vec<i16> = match self.tones[i] {
                Some(f) => tone(f, rate, self.sample[i], n, 8000.0).collect(),
                None => vec![0; n],
            };
            self.sample[i] += n as u64;
            self.sides[i].send_frame(&pcm);
            let mut out = vec![0i16; n];
            self.sides[i].receive_frame(&mut out);
            self.logs[i].heard.extend_from_slice(&out);
        }
    }
}

fn secure_sas(log: &Log) -> Option<&str> {
    log.events.iter().find_map(|e| match e {
        StreamEvent::Secure { sas, .. } => Some(sas.as_str()),
        _ => None,
    })
}

/// The last `secs` seconds of what a side heard.
fn tail(log: &Log, rate: usize, secs: usize) -> &[i16] {
    &log.heard[log.heard.len().saturating_sub(rate * secs)..]
}

#[test]
fn tone_crosses_a_secure_call_both_ways_with_each_codec() {
    for codec in [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus] {
        let mut call = Call::new(
            config(0, codec, Policy::Mandatory, true),
            config(1, codec, Policy::Mandatory, true),
        );
        call.run(Duration::from_secs(3));
        let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
        assert!(
            a.is_some() && a == b,
            "{codec:?}: equal SAS on both ends: {a:?} {b:?}"
        );
        let rate = codec.clock_rate() as usize;
        let heard_by_b = tail(&call.logs[1], rate, 1);
        let heard_by_a = tail(&call.logs[0], rate, 1);
        assert_eq!(
            dominant_frequency(heard_by_b, rate as u32),
            440.0,
            "{codec:?}: b hears a's 440 Hz"
        );
        assert_eq!(
            dominant_frequency(heard_by_a, rate as u32),
            880.0,
            "{codec:?}: a hears b's 880 Hz"
        );
        assert!(
            tone_purity(heard_by_b, rate as u32, 440.0) > 0.8,
            "{codec:?}: clean tone"
        );
        let level = rms(heard_by_b) / (8000.0 / 2f64.sqrt());
        assert!(
            (0.7..1.3).contains(&level),
            "{codec:?}: level ratio {level}"
        );
        for (i, log) in call.logs.iter().enumerate() {
            assert_eq!(
                log.rtp_sent_before_secure, 0,
                "{codec:?}: side {i} sent RTP before secure"
            );
            assert!(log.rtp_sent > 100, "{codec:?}: media flowed");
        }
        let st = call.sides[1].stats();
        assert!(st.received_packets > 100 && st.lost_packets == 0, "{st:?}");
        assert!(
            st.withheld_frames > 0,
            "frames before secure were withheld, not sent"
        );
    }
}

#[test]
fn a_call_keys_itself_and_carries_the_tone_over_a_lossy_reordering_network() {
    // 5 % loss, 1 % duplicates, 20-60 ms one way (packets overtake each other): ZRTP
    // retransmits until both ends agree, and the jitter buffer hides the rest.
    for seed in 0..4 {
        let mut call = Call::new(
            config(0, CodecKind::Opus, Policy::Mandatory, true),
            config(1, CodecKind::Opus, Policy::Mandatory, true),
        );
        call.wire = Link::new(
            Conditions {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(40),
                loss_per_mille: 50,
                duplicate_per_mille: 10,
            },
            seed,
        );
        call.run(Duration::from_secs(6));
        let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
        assert!(a.is_some() && a == b, "seed {seed}: equal SAS: {a:?} {b:?}");
        assert!(
            call.wire.lost > 0 && call.wire.duplicated > 0,
            "seed {seed}: the network misbehaved"
        );
        for (i, log) in call.logs.iter().enumerate() {
            assert_eq!(log.rtp_sent_before_secure, 0, "seed {seed}: side {i}");
        }
        let heard = tail(&call.logs[1], 48000, 1);
        assert_eq!(dominant_frequency(heard, 48000), 440.0, "seed {seed}");
        let st = call.sides[1].stats();
        assert!(st.lost_packets > 0, "seed {seed}: losses counted: {st:?}");
    }
}

#[test]
fn rtcp_measures_round_trip_time() {
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
    );
    call.wire = Link::new(Conditions::latency(Duration::from_millis(40)), 2);
    call.run(Duration::from_secs(12));
    let rtt = call.sides[0]
        .stats()
        .rtt_ms
        .expect("RTT measured from SR/RR");
    assert!((75..=85).contains(&rtt), "rtt {rtt} ms for 2 x 40 ms");
}

#[test]
fn dtmf_is_delivered_as_telephone_events() {
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
    );
    call.run(Duration::from_secs(1));
    for k in ['1', '#', '9'] {
        call.sides[0].send_dtmf(k).expect("dtmf");
    }
    assert!(call.sides[0].send_dtmf('x').is_err());
    call.run(Duration::from_secs(2));
    let keys: Vec<char> = call.logs[1]
        .events
        .iter()
        .filter_map(|e| {
            if let StreamEvent::Dtmf(k) = e {
                Some(*k)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(keys, vec!['1', '#', '9']);
}

#[test]
fn mandatory_policy_against_a_peer_without_zrtp_sends_nothing_and_fails() {
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::BestEffort, false),
    );
    call.run(Duration::from_secs(6));
    assert_eq!(call.logs[0].rtp_sent, 0, "no RTP may leave under mandatory");
    assert!(
        call.logs[0]
            .events
            .contains(&StreamEvent::Failed("peer does not support ZRTP".into())),
        "{:?}",
        call.logs[0].events
    );
    assert!(
        rms(&call.logs[0].heard) == 0.0,
        "cleartext from the peer is never played"
    );
    assert!(call.sides[0].stats().refused_datagrams > 0);
}

#[test]
fn best_effort_falls_back_to_cleartext_and_says_so() {
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::BestEffort, true),
        config(1, CodecKind::Pcmu, Policy::BestEffort, false),
    );
    // The peer's cleartext arrives from the first frames on; one packet is no proof
    // that it does not do ZRTP, a second of them without any ZRTP is.
    call.run(CLEARTEXT_MEDIA_TIMEOUT / 2);
    assert_eq!(*call.sides[0].security(), MediaSecurity::Negotiating);
    assert!(call.logs[0].events.is_empty(), "{:?}", call.logs[0].events);
    call.run(Duration::from_secs(3) - CLEARTEXT_MEDIA_TIMEOUT / 2);
    assert!(
        matches!(call.logs[0].events.first(), Some(StreamEvent::Cleartext(_))),
        "{:?}",
        call.logs[0].events
    );
    assert_eq!(*call.sides[0].security(), MediaSecurity::Cleartext);
    assert_eq!(
        dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
        880.0
    );
    assert_eq!(
        dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
        440.0
    );
}

#[test]
fn attacker_on_the_path_cannot_inject_or_replay_media() {
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
    );
    call.run(Duration::from_secs(1));
    assert!(secure_sas(&call.logs[1]).is_some());
    // The attacker records every media packet from a to b, and makes a forged copy.
    let seen: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Default::default();
    let tap = seen.clone();
    call.mitm = Some(Box::new(move |from, d| {
        if from == 0 && classify(d) == Kind::Rtp {
            tap.borrow_mut().push(d.clone());
        }
        true
    }));
    call.run(Duration::from_secs(2));
    let recorded = seen.borrow().clone();
    assert!(recorded.len() > 50);
    let before = call.sides[1].stats().refused_datagrams;
    for d in &recorded {
        let from = call.addrs[0];
        call.inject(1, from, d); // replay
        let mut forged = d.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        forged[2] ^= 0x40; // fresh sequence number, so only authentication can catch it
        call.inject(1, from, &forged);
    }
    call.inject(1, call.addrs[0], &[0x80, 0, 0, 0]);
    call.inject(1, call.addrs[0], &[0u8; 2000]);
    let refused = call.sides[1].stats().refused_datagrams - before;
    assert!(
        refused >= 2 * recorded.len() as u64,
        "every replayed and forged packet refused ({refused})"
    );
    call.mitm = None;
    call.run(Duration::from_secs(1));
    assert_eq!(
        dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
        440.0,
        "audio unaffected"
    );
}

/// Genuine ZRTP packets of another call, as an eavesdropper recorded them: (Hello, Commit).
/// The first Hello of a fresh ZRTP endpoint.
fn fresh_hello(ssrc: u32) -> Vec<u8> {
    let now = Instant::now();
    let mut z = zrtp_session(ssrc, Duration::from_secs(4), now);
    z.start(now).expect("start");
    z.handle_timeout(now + Duration::from_millis(50));
    z.poll_transmit().expect("a Hello")
}

/// A best-effort call with a peer that does no ZRTP has gone to cleartext, said so, and
/// runs; our ZRTP keeps listening beside it. Two different Hellos from the peer's address
/// later (anyone on the path can send them) must not end that call when the handshake
/// time runs out: there is no protection left to take away.
#[test]
fn a_best_effort_call_in_cleartext_is_not_ended_by_conflicting_hellos() {
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::BestEffort, true),
        config(1, CodecKind::Pcmu, Policy::BestEffort, false),
    );
    call.run(Duration::from_secs(2));
    assert_eq!(*call.sides[0].security(), MediaSecurity::Cleartext);
    let peer = call.addrs[1];
    call.inject(0, peer, &fresh_hello(0x0bad_0001));
    call.inject(0, peer, &fresh_hello(0x0bad_0002));
    call.run(Duration::from_secs(6));
    assert!(
        !call.logs[0]
            .events
            .iter()
            .any(|e| matches!(e, StreamEvent::Failed(_))),
        "{:?}",
        call.logs[0].events
    );
    assert_eq!(*call.sides[0].security(), MediaSecurity::Cleartext);
    assert_eq!(
        dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
        880.0,
        "the call still runs"
    );
}

fn foreign_zrtp() -> (Vec<u8>, Vec<u8>) {
    let mut other = Call::new(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
    );
    let seen: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Default::default();
    let tap = seen.clone();
    other.mitm = Some(Box::new(move |_, d| {
        if classify(d) == Kind::Zrtp {
            tap.borrow_mut().push(d.clone());
        }
        true
    }));
    other.run(Duration::from_secs(1));
    assert!(
        secure_sas(&other.logs[0]).is_some(),
        "the other call went secure"
    );
    let seen = seen.borrow();
    let of_type = |t: &[u8; 8]| {
        seen.iter()
            .find(|d| d.len() > 24 && &d[16..24] == t)
            .cloned()
            .expect("recorded")
    };
    (of_type(b"Hello   "), of_type(b"Commit  "))
}

/// A plain RTP packet (PCMU, 20 ms) with these numbers.
fn rtp_packet(seq: u16, timestamp: u32, ssrc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let h = RtpHeader {
        payload_type: 0,
        marker: false,
        sequence: seq,
        timestamp,
        ssrc,
    };
    write(&h, &[0xff; 160], &mut out);
    out
}

fn failures(log: &Log) -> Vec<&StreamEvent> {
    log.events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Failed(_) | StreamEvent::Cleartext(_)))
        .collect()
}

#[test]
fn strangers_spraying_captured_zrtp_and_junk_neither_end_nor_weaken_a_call() {
    let (hello, commit) = foreign_zrtp();
    let mut call = Call::new(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
    );
    let stranger = addr(STRANGER);
    let junk = [
        hello,
        commit,
        rtp_packet(1, 160, 0x0bad_cafe),
        vec![0x80, 201, 0, 1, 0x0b, 0xad, 0xca, 0xfe],
    ];
    let mut per_side = 0u64;
    // From the very start, every frame, at both sides: 3 s.
    for _ in 0..150 {
        for side in 0..2 {
            for d in &junk {
                call.inject(side, stranger, d);
            }
        }
        per_side += junk.len() as u64;
        call.run(FRAME);
    }
    let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
    assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
    for i in 0..2 {
        assert!(
            failures(&call.logs[i]).is_empty(),
            "{:?}",
            call.logs[i].events
        );
        assert_eq!(*call.sides[i].security(), MediaSecurity::Secure);
        assert_eq!(
            call.sides[i].remote(),
            call.addrs[1 - i],
            "media stays with the peer"
        );
        let refused = call.sides[i].stats().refused_datagrams;
        assert!(refused >= per_side, "side {i}: {refused} < {per_side}");
    }
    assert_eq!(
        dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
        440.0
    );
    assert_eq!(
        dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
        880.0
    );
}

#[test]
fn a_peer_behind_nat_is_heard_after_its_signalled_hello_and_followed_after_its_srtp() {
    let (foreign_hello, _) = foreign_zrtp();
    let mut b = config(1, CodecKind::Pcmu, Policy::Mandatory, true);
    // A's SDP names its private address; its packets come from its NAT's public one.
    let private = addr("10.0.0.5:4000");
    b.cfg.remote = private;
    let mut call = Call::unstarted(config(0, CodecKind::Pcmu, Policy::Mandatory, true), b, true);
    call.start(1);
    call.run(Duration::from_millis(100));
    assert_eq!(call.sides[1].remote(), private);
    // From the NAT address, a Hello that is not the one A signalled, and cleartext:
    // dropped, neither fatal nor followed.
    let nat = call.addrs[0];
    call.inject(1, nat, &foreign_hello);
    call.inject(1, nat, &rtp_packet(1, 160, 1));
    assert_eq!(call.sides[1].stats().refused_datagrams, 2);
    assert_eq!(*call.sides[1].security(), MediaSecurity::Negotiating);
    assert_eq!(call.sides[1].remote(), private);
    call.start(0);
    // A's signalled Hello has come from the NAT address: B hears A's ZRTP there and
    // answers there, but its media does not move for a Hello anyone could copy.
    call.run(Duration::from_millis(100));
    assert!(call.logs[1].zrtp_sent > 0);
    assert_eq!(*call.sides[1].security(), MediaSecurity::Negotiating);
    assert_eq!(call.sides[1].remote(), private);
    call.run(Duration::from_secs(3));
    assert!(
        failures(&call.logs[1]).is_empty(),
        "{:?}",
        call.logs[1].events
    );
    let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
    assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
    assert_eq!(
        call.sides[1].remote(),
        nat,
        "B's media follows A's source once A's SRTP from there authenticates"
    );
    assert_eq!(
        dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
        440.0
    );
    assert_eq!(
        dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
        880.0
    );
}

/// The ZRTP message type of a datagram, if it is ZRTP.
fn zrtp_type(d: &[u8]) -> Option<&[u8]> {
    (classify(d) == Kind::Zrtp && d.len() >= 24).then(|| &d[16..24])
}

/// The NAT call again, with the ZRTP roles fixed: the side that is to respond never
/// gets a HelloACK through (lost on the way), so it never sends a Commit and takes the
/// other's (a Commit stands for the HelloACK); no Commit contention decides by chance. As responder, B is secure the moment it
/// sends Conf2ACK: that Conf2ACK, and the answers to A's repeated Confirm2 from its NAT
/// address, must still reach A there, or A never goes secure and nobody hears anything.
#[test]
fn a_peer_behind_nat_goes_secure_and_is_heard_whichever_side_is_the_zrtp_responder() {
    for responder in [1usize, 0] {
        let mut b = config(1, CodecKind::Pcmu, Policy::Mandatory, true);
        let private = addr("10.0.0.5:4000");
        b.cfg.remote = private;
        let mut call =
            Call::unstarted(config(0, CodecKind::Pcmu, Policy::Mandatory, true), b, true);
        let commits = std::rc::Rc::new(std::cell::Cell::new([0u32; 2]));
        let counted = commits.clone();
        call.mitm = Some(Box::new(move |from, d| {
            let ty = zrtp_type(d);
            if ty == Some(b"Commit  ") {
                let mut c = counted.get();
                c[from] += 1;
                counted.set(c);
            }
            !(from != responder && ty == Some(b"HelloACK"))
        }));
        call.start(1);
        call.run(Duration::from_millis(100));
        call.start(0);
        call.run(Duration::from_secs(3));
        let c = commits.get();
        assert!(
            c[responder] == 0 && c[1 - responder] > 0,
            "responder {responder}: Commits sent {c:?}"
        );
        for i in 0..2 {
            assert!(
                failures(&call.logs[i]).is_empty(),
                "responder {responder}, side {i}: {:?}",
                call.logs[i].events
            );
            assert_eq!(*call.sides[i].security(), MediaSecurity::Secure);
        }
        let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
        assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
        assert_eq!(call.sides[1].remote(), call.addrs[0], "B's media follows A");
        assert_eq!(
            dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
            440.0,
            "responder {responder}: B hears A"
        );
        assert_eq!(
            dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
            880.0,
            "responder {responder}: A hears B"
        );
    }
}

#[test]
fn a_peer_that_moves_is_followed_only_after_an_authentic_srtp_packet() {
    // No a=zrtp-hash signalled: only SRTP can vouch for a new address.
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        false,
    );
    call.start(0);
    call.start(1);
    let recorded: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Default::default();
    let tap = recorded.clone();
    call.mitm = Some(Box::new(move |from, d| {
        if from == 0 && classify(d) == Kind::Rtp {
            tap.borrow_mut().push(d.clone());
        }
        true
    }));
    call.run(Duration::from_secs(1));
    assert!(secure_sas(&call.logs[1]).is_some());
    call.mitm = None;
    let old = call.addrs[0];
    // A's NAT mapping changes: A now sends from `moved`; what goes to `old` is lost.
    let moved = addr("198.51.100.4:7000");
    call.addrs[0] = moved;
    let before = call.sides[1].stats().refused_datagrams;
    // A packet B has received already (the last few are still in flight).
    let srtp = {
        let r = recorded.borrow();
        r[r.len() - 10].clone()
    };
    let mut forged = srtp.clone();
    forged[2] ^= 0x40;
    call.inject(1, moved, &srtp); // a replay, even of a genuine packet
    call.inject(1, moved, &forged);
    call.inject(1, moved, &rtp_packet(7, 7, 1));
    call.inject(1, moved, &[0x80, 201, 0, 1, 0, 0, 0, 1]);
    assert_eq!(call.sides[1].stats().refused_datagrams - before, 4);
    assert_eq!(
        call.sides[1].remote(),
        old,
        "nothing authentic came from there yet"
    );
    call.run(Duration::from_secs(2));
    assert_eq!(
        call.sides[1].remote(),
        moved,
        "followed after A's next SRTP packet"
    );
    assert_eq!(
        dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
        880.0
    );
    assert_eq!(
        dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
        440.0
    ); // A's media comes from its signalled address again: B's follows it back.
    call.addrs[0] = old;
    call.run(Duration::from_secs(2));
    assert_eq!(call.sides[1].remote(), old);
    assert_eq!(
        dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
        880.0
    );
}

#[test]
fn a_mismatching_hello_from_the_negotiated_address_ends_the_call_as_tampering() {
    // Under best effort too: one spoofed Hello must never turn the call into cleartext.
    for policy in [Policy::Mandatory, Policy::BestEffort] {
        let (foreign_hello, _) = foreign_zrtp();
        let mut call = Call::unstarted(
            config(0, CodecKind::Pcmu, policy, true),
            config(1, CodecKind::Pcmu, policy, true),
            true,
        );
        call.start(1);
        let peer = call.addrs[0];
        call.inject(1, peer, &foreign_hello);
        call.start(0);
        call.run(Duration::from_secs(1));
        let tampering = hush_media::zrtp::ZrtpFailure::HelloHashMismatch.to_string();
        assert!(tampering.contains("tampering"), "{tampering}");
        assert_eq!(
            call.logs[1].events,
            vec![StreamEvent::Failed(tampering)],
            "{policy:?}: the signalled hash and the Hello from the peer's address disagree"
        );
        assert_eq!(*call.sides[1].security(), MediaSecurity::Failed);
        call.run(Duration::from_secs(1));
        assert_eq!(
            call.logs[1].rtp_sent, 0,
            "{policy:?}: nothing sent in the clear"
        );
    }
}

/// No `a=zrtp-hash` signalled: libbzrtp takes the first Hello that comes from the peer's
/// address, a foreign one sent just before the peer starts, and then refuses the
/// peer's own as a repetition that differs. The handshake cannot finish; when it times
/// out, the call ends as possible tampering, never in cleartext. (The peer itself saw
/// only its partner's Commit repeated: nothing in the protocol tells it apart from a
/// lossy path, and the call's end reaches it by SIP.)
#[test]
fn one_foreign_hello_before_the_peers_without_a_signalled_hash_cannot_downgrade() {
    let (foreign_hello, _) = foreign_zrtp();
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::BestEffort, true),
        config(1, CodecKind::Pcmu, Policy::BestEffort, true),
        false,
    );
    call.start(0);
    let peer = call.addrs[1];
    call.inject(0, peer, &foreign_hello);
    call.run(Duration::from_millis(50));
    call.start(1);
    call.run(Duration::from_secs(6));
    let tampering = hush_media::zrtp::ZrtpFailure::ConflictingPeers.to_string();
    assert!(tampering.contains("tampering"), "{tampering}");
    assert_eq!(
        call.logs[0].events,
        vec![StreamEvent::Failed(tampering)],
        "the handshake with two different Hellos from the peer's address ends the call"
    );
    assert_eq!(call.logs[0].rtp_sent, 0, "nothing sent in the clear");
}

#[test]
fn best_effort_is_not_downgraded_by_one_rtp_packet() {
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::BestEffort, true),
        config(1, CodecKind::Pcmu, Policy::BestEffort, true),
        true,
    );
    call.start(1);
    // Before the peer's first ZRTP packet, one cleartext packet "from" it.
    let peer = call.addrs[0];
    call.inject(1, peer, &rtp_packet(1, 160, 1));
    call.run(Duration::from_millis(200));
    assert_eq!(*call.sides[1].security(), MediaSecurity::Negotiating);
    call.start(0);
    call.run(Duration::from_secs(2));
    assert!(
        failures(&call.logs[1]).is_empty(),
        "{:?}",
        call.logs[1].events
    );
    let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
    assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
}

/// A peer whose SDP carried no `a=zrtp-hash` (side 0 runs no ZRTP, so none is signalled).
#[test]
fn a_silent_peer_is_given_up_after_the_silence_timeout_not_the_handshake_timeout() {
    for (policy, expected) in [
        (
            Policy::BestEffort,
            StreamEvent::Cleartext("peer does not support ZRTP".into()),
        ),
        (
            Policy::Mandatory,
            StreamEvent::Failed("peer does not support ZRTP".into()),
        ),
    ] {
        let mut b = config(1, CodecKind::Pcmu, policy, true);
        b.zrtp = Some(Duration::from_secs(30));
        let mut call = Call::unstarted(
            config(0, CodecKind::Pcmu, Policy::BestEffort, false),
            b,
            true,
        );
        call.start(1); // the peer never starts: nothing comes from it
        call.run(PEER_SILENT_TIMEOUT - Duration::from_millis(50));
        assert_eq!(*call.sides[1].security(), MediaSecurity::Negotiating);
        assert!(call.logs[1].events.is_empty(), "{:?}", call.logs[1].events);
        call.run(Duration::from_millis(100));
        assert_eq!(call.logs[1].events, vec![expected.clone()], "{policy:?}");
        let hellos = call.logs[1].zrtp_sent;
        assert!(hellos > 5, "{policy:?}: Hellos were sent ({hellos})");
        call.run(Duration::from_secs(1));
        assert_eq!(
            call.logs[1].zrtp_sent, hellos,
            "{policy:?}: and then no more"
        );
    }
}

#[test]
fn a_peer_heard_only_from_an_unproven_address_is_named_as_such() {
    // A's SDP names an address it does not send from, and carries no a=zrtp-hash: its
    // Hellos cannot prove the address it sends from. Under best effort, cleartext would
    // be a call that is silent both ways (media only to and from the signalled address):
    // it fails instead, and says why.
    for policy in [Policy::Mandatory, Policy::BestEffort] {
        let mut b = config(1, CodecKind::Pcmu, policy, true);
        b.cfg.remote = addr("10.0.0.5:4000");
        b.zrtp = Some(ZrtpConfig::default().handshake_timeout);
        let mut call = Call::unstarted(config(0, CodecKind::Pcmu, policy, true), b, false);
        call.start(0);
        call.start(1);
        call.run(PEER_SILENT_TIMEOUT + Duration::from_millis(100));
        match (policy, call.logs[1].events.as_slice()) {
            (Policy::Mandatory, [StreamEvent::Failed(reason)]) => {
                assert!(reason.contains("address the peer signalled"), "{reason}")
            }
            (Policy::BestEffort, [StreamEvent::Failed(reason)]) => assert_eq!(
                reason,
                "the peer's media comes from an address it did not signal; without \
                 encryption it cannot be told apart from an attacker"
            ),
            (_, other) => panic!("{policy:?}: {other:?}"),
        }
        assert_eq!(*call.sides[1].security(), MediaSecurity::Failed);
        assert!(call.sides[1].stats().refused_datagrams > 0);
        assert_eq!(
            call.sides[1].remote(),
            addr("10.0.0.5:4000"),
            "never followed"
        );
        call.run(Duration::from_secs(1));
        assert_eq!(call.logs[1].rtp_sent, 0, "{policy:?}: nothing sent");
    }
}

/// Records every datagram of `kind` side `side` puts on the wire from now on.
fn tap(call: &mut Call, side: usize, kind: Kind) -> std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> {
    let seen: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Default::default();
    let sink = seen.clone();
    call.mitm = Some(Box::new(move |from, d| {
        if from == side && classify(d) == kind {
            sink.borrow_mut().push(d.clone());
        }
        true
    }));
    seen
}

/// `packet` (ZRTP) with another sequence number and source id, and its CRC made again:
/// what anyone can forge from a packet they saw.
fn respoof(packet: &[u8], seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = packet.to_vec();
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let n = p.len() - 4;
    let crc = crc32c(&p[..n]);
    p[n..].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A HelloACK: it carries nothing but its type, so anyone can make one.
fn hello_ack(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![
        0x10, 0, 0, 0, b'Z', b'R', b'T', b'P', 0, 0, 0, 0, 0x50, 0x5a, 0, 3,
    ];
    p.extend_from_slice(b"HelloACK");
    p.extend_from_slice(&[0; 4]);
    respoof(&p, seq, ssrc)
}

#[test]
fn the_peers_own_hello_replayed_from_a_stranger_draws_neither_zrtp_nor_media_away() {
    for policy in [Policy::BestEffort, Policy::Mandatory] {
        let mut call = Call::unstarted(
            config(0, CodecKind::Pcmu, policy, true),
            config(1, CodecKind::Pcmu, policy, true),
            true,
        );
        // An eavesdropper records B's Hello of this very call, sent in the clear ...
        let seen = tap(&mut call, 1, Kind::Zrtp);
        call.start(1);
        call.run(Duration::from_millis(60));
        call.mitm = None;
        let hello = seen
            .borrow()
            .iter()
            .find(|d| &d[16..24] == b"Hello   ")
            .cloned()
            .expect("B's Hello");
        // ... and sends it to A from its own address, before A starts and all along
        // while A negotiates: its hash matches what B signalled.
        let stranger = addr(STRANGER);
        call.inject(0, stranger, &hello);
        call.start(0);
        for _ in 0..25 {
            call.inject(0, stranger, &hello);
            call.run(FRAME);
            assert_eq!(
                call.sides[0].remote(),
                call.addrs[1],
                "{policy:?}: A's media destination stays B's address"
            );
        }
        call.run(Duration::from_secs(5));
        let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
        assert!(
            a.is_some() && a == b,
            "{policy:?}: equal SAS on both ends: {a:?} {b:?}"
        );
        for i in 0..2 {
            assert!(
                failures(&call.logs[i]).is_empty(),
                "{policy:?}: {:?}",
                call.logs[i].events
            );
            assert_eq!(*call.sides[i].security(), MediaSecurity::Secure);
        }
        assert_eq!(call.sides[0].remote(), call.addrs[1]);
        assert_eq!(
            call.logs[0].media_to_stranger, 0,
            "{policy:?}: no RTP or RTCP ever went to the stranger"
        );
        assert_eq!(
            dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
            440.0
        );
        assert_eq!(
            dominant_frequency(tail(&call.logs[0], 8000, 1), 8000),
            880.0
        );
    }
}

#[test]
fn spoofed_zrtp_numbered_far_ahead_cannot_wedge_the_handshake() {
    let (_, foreign_commit) = foreign_zrtp();
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        true,
    );
    // From each side's negotiated address, with the source id the real peer uses: a
    // HelloACK numbered 0xFFFF, and a Commit (of another call) numbered far ahead.
    let spoofs = |to: usize| {
        let ssrc = (1 - to) as u32 + 1;
        [
            hello_ack(0xffff, ssrc),
            respoof(&foreign_commit, 0xfff0, ssrc),
        ]
    };
    call.start(0);
    // Before A heard anything from B ...
    for d in spoofs(0) {
        call.inject(0, call.addrs[1], &d);
    }
    call.run(Duration::from_millis(50));
    call.start(1);
    // ... and every 10 ms into both sides while the handshake runs.
    for _ in 0..100 {
        for to in 0..2 {
            for d in spoofs(to) {
                call.inject(to, call.addrs[1 - to], &d);
            }
        }
        call.run(Duration::from_millis(10));
    }
    call.run(Duration::from_secs(2));
    let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
    assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
    for i in 0..2 {
        assert!(
            failures(&call.logs[i]).is_empty(),
            "{:?}",
            call.logs[i].events
        );
        assert_eq!(*call.sides[i].security(), MediaSecurity::Secure);
    }
    assert_eq!(
        dominant_frequency(tail(&call.logs[1], 8000, 1), 8000),
        440.0
    );
}

#[test]
fn a_spoofed_helloack_that_stops_our_hellos_before_the_peer_had_one_does_not_stall() {
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        true,
    );
    // A's Hellos are lost on the way; B's reach A.
    call.mitm = Some(Box::new(|from, d| from != 0 || classify(d) != Kind::Zrtp));
    call.start(0);
    call.start(1);
    call.run(Duration::from_millis(200));
    // A HelloACK "from" B, though B never had A's Hello, with an unremarkable number:
    // libbzrtp stops sending A's Hello and commits, which B cannot take without it.
    let ack = hello_ack(0x0100, 2);
    call.inject(0, call.addrs[1], &ack);
    call.mitm = None;
    call.run(Duration::from_secs(3));
    let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
    assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
    for i in 0..2 {
        assert!(
            failures(&call.logs[i]).is_empty(),
            "{:?}",
            call.logs[i].events
        );
    }
}

#[test]
fn a_burst_of_spoofed_cleartext_does_not_downgrade_a_peer_that_signalled_zrtp() {
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::BestEffort, true),
        config(1, CodecKind::Pcmu, Policy::BestEffort, true),
        true,
    );
    call.start(0);
    // B's answer is slow; meanwhile cleartext "from" B keeps coming, longer and more of
    // it than a peer without a signalled hash would need to be taken for cleartext.
    let peer = call.addrs[1];
    for i in 0..100u16 {
        call.inject(0, peer, &rtp_packet(i, u32::from(i) * 160, 0x5eed));
        call.run(FRAME);
    }
    assert!(100 * FRAME >= 2 * CLEARTEXT_MEDIA_TIMEOUT);
    assert_eq!(*call.sides[0].security(), MediaSecurity::Negotiating);
    assert!(call.logs[0].events.is_empty(), "{:?}", call.logs[0].events);
    assert_eq!(call.logs[0].rtp_sent, 0);
    call.start(1);
    call.run(Duration::from_secs(2));
    for i in 0..2 {
        assert!(
            failures(&call.logs[i]).is_empty(),
            "{:?}",
            call.logs[i].events
        );
    }
    let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
    assert!(a.is_some() && a == b, "equal SAS on both ends: {a:?} {b:?}");
    assert_eq!(call.logs[0].rtp_sent_before_secure, 0);
}

#[test]
fn a_peer_that_signalled_zrtp_and_answers_late_still_goes_secure() {
    for policy in [Policy::BestEffort, Policy::Mandatory] {
        let mut a = config(0, CodecKind::Pcmu, policy, true);
        a.zrtp = Some(Duration::from_secs(10));
        let mut call = Call::unstarted(a, config(1, CodecKind::Pcmu, policy, true), true);
        // A, the callee, starts its media with its 200 OK; the caller B starts when the
        // 200 reaches it, which takes long (lost and retransmitted).
        call.start(0);
        call.run(PEER_SILENT_TIMEOUT + Duration::from_secs(2));
        assert_eq!(*call.sides[0].security(), MediaSecurity::Negotiating);
        assert!(
            call.logs[0].events.is_empty(),
            "{policy:?}: {:?}",
            call.logs[0].events
        );
        call.start(1);
        call.run(Duration::from_secs(2));
        for i in 0..2 {
            assert!(
                failures(&call.logs[i]).is_empty(),
                "{policy:?}: {:?}",
                call.logs[i].events
            );
        }
        let (a, b) = (secure_sas(&call.logs[0]), secure_sas(&call.logs[1]));
        assert!(
            a.is_some() && a == b,
            "{policy:?}: equal SAS on both ends: {a:?} {b:?}"
        );
    }
}

#[test]
fn a_peer_that_signalled_zrtp_but_none_of_whose_zrtp_arrives_is_not_said_to_lack_it() {
    let words = "the peer announced ZRTP but none of its ZRTP packets reached us";
    for (policy, expected) in [
        (Policy::BestEffort, StreamEvent::Cleartext(words.into())),
        (Policy::Mandatory, StreamEvent::Failed(words.into())),
    ] {
        let timeout = Duration::from_secs(10);
        let mut a = config(0, CodecKind::Pcmu, policy, true);
        a.zrtp = Some(timeout);
        let mut call = Call::unstarted(a, config(1, CodecKind::Pcmu, policy, true), true);
        call.start(0); // B signalled its hash but never starts: nothing of it arrives
        call.run(timeout - Duration::from_millis(50));
        assert_eq!(*call.sides[0].security(), MediaSecurity::Negotiating);
        assert!(
            call.logs[0].events.is_empty(),
            "{policy:?}: given up before the handshake timeout: {:?}",
            call.logs[0].events
        );
        call.run(Duration::from_millis(100));
        assert_eq!(call.logs[0].events, vec![expected], "{policy:?}");
    }
}

/// A best-effort stream without ZRTP (cleartext at once) that takes media from side 0.
fn cleartext_stream(now: Instant) -> AudioStream {
    let Side { cfg, .. } = config(1, CodecKind::Pcmu, Policy::BestEffort, false);
    let mut s = AudioStream::new(cfg, None, now).expect("stream");
    s.start(now).expect("start");
    assert_eq!(*s.security(), MediaSecurity::Cleartext);
    s
}

#[test]
fn a_timestamp_wrap_is_not_jitter_in_the_statistics() {
    let now = Instant::now();
    let mut s = cleartext_stream(now);
    let peer = addr(ADDRS[0]);
    let first = u32::MAX - 50 * 160 + 1;
    for i in 0u16..100 {
        let at = now + FRAME * u32::from(i);
        let ts = first.wrapping_add(u32::from(i) * 160);
        s.handle_datagram(at, peer, &rtp_packet(i, ts, 1));
    }
    let st = s.stats();
    assert_eq!(st.received_packets, 100);
    assert!(st.jitter_ms <= 1, "perfectly timed packets: {st:?}");
}

#[test]
fn huge_jitter_does_not_panic_the_statistics() {
    let now = Instant::now();
    let mut s = cleartext_stream(now);
    let peer = addr(ADDRS[0]);
    for i in 0u16..200 {
        let ts = if i % 2 == 0 { 0 } else { 0x8000_0000 };
        s.handle_datagram(now + FRAME * u32::from(i), peer, &rtp_packet(i, ts, 1));
    }
    let st = s.stats();
    // About 2^31 timestamp units at 8 kHz.
    assert!(st.jitter_ms > 100_000_000, "{st:?}");
}

/// A ZRTP Ping (RFC 6189 §5.15): anyone can make one.
fn ping(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![
        0x10, 0, 0, 0, b'Z', b'R', b'T', b'P', 0, 0, 0, 0, 0x50, 0x5a, 0, 6,
    ];
    p.extend_from_slice(b"Ping    ");
    p.extend_from_slice(b"1.10");
    p.extend_from_slice(&[0x11; 8]);
    p.extend_from_slice(&[0; 4]);
    respoof(&p, seq, ssrc)
}

#[test]
fn spoofed_pings_are_answered_rarely_and_only_to_the_peer() {
    let mut call = Call::unstarted(
        config(0, CodecKind::Pcmu, Policy::Mandatory, true),
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        true,
    );
    // Only B's Hellos reach A: A takes B's Hello and keeps negotiating.
    let seen = tap(&mut call, 1, Kind::Zrtp);
    call.mitm = None;
    let sink = seen.clone();
    call.mitm = Some(Box::new(move |from, d| {
        if from == 1 && classify(d) == Kind::Zrtp {
            sink.borrow_mut().push(d.clone());
        }
        from == 0 || (d.len() > 24 && &d[16..24] == b"Hello   ")
    }));
    call.start(0);
    call.start(1);
    call.run(Duration::from_millis(200));
    let hello = seen
        .borrow()
        .iter()
        .find(|d| &d[16..24] == b"Hello   ")
        .cloned()
        .expect("B's Hello");
    // B's Hello replayed from four victims' addresses: four ZRTP candidates at A.
    let victims: Vec<SocketAddr> = (1..=4u16)
        .map(|i| SocketAddr::from(([198, 51, 100, 9], i)))
        .collect();
    for v in &victims {
        call.inject(0, *v, &hello);
    }
    while call.sides[0].poll_transmit().is_some() {}
    assert_eq!(*call.sides[0].security(), MediaSecurity::Negotiating);
    // A thousand Pings within 20 ms, from the victims and from B's address.
    let mut out = Vec::new();
    for i in 0..1000u16 {
        let from = if i % 5 == 4 {
            call.addrs[1]
        } else {
            victims[usize::from(i % 5)]
        };
        call.inject(0, from, &ping(i, 2));
        call.now += Duration::from_micros(20);
        while let Some(t) = call.sides[0].poll_transmit() {
            out.push(t);
        }
    }
    let acks: Vec<_> = out
        .iter()
        .filter(|t| t.data.len() > 24 && &t.data[16..24] == b"PingACK ")
        .collect();
    assert!(!acks.is_empty(), "a Ping is answered");
    assert!(acks.len() <= 2, "{} PingACKs", acks.len());
    assert!(
        acks.iter().all(|t| t.to == call.addrs[1]),
        "PingACKs go to the peer's address only"
    );
    assert!(out.len() <= 12, "{} datagrams for 1000 Pings", out.len());
    // Once secure, the candidates are forgotten: nothing of theirs is heard, and no
    // ZRTP of ours goes to them.
    call.mitm = None;
    call.run(Duration::from_secs(3));
    assert_eq!(*call.sides[0].security(), MediaSecurity::Secure);
    let refused = call.sides[0].stats().refused_datagrams;
    for (i, v) in victims.iter().enumerate() {
        call.inject(0, *v, &ping(2000 + i as u16, 2));
    }
    assert_eq!(call.sides[0].stats().refused_datagrams, refused + 4);
    while let Some(t) = call.sides[0].poll_transmit() {
        assert!(!victims.contains(&t.to), "{t:?}");
    }
}
