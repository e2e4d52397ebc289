//! Two audio streams (real libbzrtp, SRTP, codecs, jitter buffers) talking over a
//! simulated network with simulated time: the tone sent by one side is heard by the
//! other at the right pitch and level, only after ZRTP is secure under "mandatory".

use hush_media::analysis::{dominant_frequency, rms, tone, tone_purity};
use hush_media::codec::CodecKind;
use hush_media::rtp::{Kind, classify};
use hush_media::stream::{AudioStream, MediaSecurity, Policy, StreamConfig, StreamEvent};
use hush_media::zrtp::{ZrtpConfig, ZrtpSession};
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(20);

/// An attacker on the path: sees (from side, datagram), may rewrite it or drop it (false).
type Mitm = Box<dyn FnMut(usize, &mut Vec<u8>) -> bool>;

fn config(ssrc: u32, codec: CodecKind, policy: Policy, zrtp: bool) -> (StreamConfig, bool) {
    let cfg = StreamConfig {
        local_ssrc: ssrc,
        codec,
        payload_type: codec.static_payload_type().unwrap_or(111),
        telephone_event_pt: Some(101),
        policy,
        peer_hello_hash: None,
    };
    (cfg, zrtp)
}

fn stream((cfg, zrtp): (StreamConfig, bool), now: Instant) -> AudioStream {
    let z = zrtp.then(|| {
        let c = ZrtpConfig {
            handshake_timeout: Duration::from_secs(4),
            ..ZrtpConfig::default()
        };
        ZrtpSession::new(&c, cfg.local_ssrc, now).expect("zrtp")
    });
    AudioStream::new(cfg, z, now).expect("stream")
}

/// Per side: what it heard, its events, and datagrams it put on the wire by kind.
#[derive(Default)]
struct Log {
    heard: Vec<i16>,
    events: Vec<StreamEvent>,
    rtp_sent_before_secure: usize,
    rtp_sent: usize,
}

struct Call {
    sides: [AudioStream; 2],
    logs: [Log; 2],
    now: Instant,
    wire: Vec<(Instant, usize, Vec<u8>)>,
    latency: Duration,
    tones: [Option<f64>; 2],
    sample: [u64; 2],
    frame_samples: [usize; 2],
    /// Optional attacker on the path: may rewrite or drop (return false).
    mitm: Option<Mitm>,
}

impl Call {
    fn new(a: (StreamConfig, bool), b: (StreamConfig, bool)) -> Call {
        let now = Instant::now();
        let frame_samples = [a.0.codec.frame_samples(), b.0.codec.frame_samples()];
        let mut sides = [stream(a, now), stream(b, now)];
        for s in &mut sides {
            s.start(now).expect("start");
        }
        Call {
            sides,
            logs: [Log::default(), Log::default()],
            now,
            wire: Vec::new(),
            latency: Duration::from_millis(30),
            tones: [Some(440.0), Some(880.0)],
            sample: [0, 0],
            frame_samples,
            mitm: None,
        }
    }

    fn flush(&mut self) {
        for i in 0..2 {
            while let Some(mut d) = self.sides[i].poll_transmit() {
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
                self.wire.push((self.now + self.latency, 1 - i, d));
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
            let next_packet = self.wire.iter().map(|(t, _, _)| *t).min();
            let next_timer = self.sides.iter().filter_map(|s| s.poll_timeout()).min();
            let next = [Some(next_frame), next_packet, next_timer]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            self.now = next.min(end).max(self.now);
            let (due, later): (Vec<_>, Vec<_>) =
                self.wire.drain(..).partition(|(t, _, _)| *t <= self.now);
            self.wire = later;
            for (_, to, d) in due {
                self.sides[to].handle_datagram(self.now, &d);
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
            config(1, codec, Policy::Mandatory, true),
            config(2, codec, Policy::Mandatory, true),
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
fn rtcp_measures_round_trip_time() {
    let mut call = Call::new(
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        config(2, CodecKind::Pcmu, Policy::Mandatory, true),
    );
    call.latency = Duration::from_millis(40);
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
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        config(2, CodecKind::Pcmu, Policy::Mandatory, true),
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
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        config(2, CodecKind::Pcmu, Policy::BestEffort, false),
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
        config(1, CodecKind::Pcmu, Policy::BestEffort, true),
        config(2, CodecKind::Pcmu, Policy::BestEffort, false),
    );
    call.run(Duration::from_secs(3));
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
        config(1, CodecKind::Pcmu, Policy::Mandatory, true),
        config(2, CodecKind::Pcmu, Policy::Mandatory, true),
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
        call.sides[1].handle_datagram(call.now, d); // replay
        let mut forged = d.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        forged[2] ^= 0x40; // fresh sequence number, so only authentication can catch it
        call.sides[1].handle_datagram(call.now, &forged);
    }
    call.sides[1].handle_datagram(call.now, &[0x80, 0, 0, 0]);
    call.sides[1].handle_datagram(call.now, &[0u8; 2000]);
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
