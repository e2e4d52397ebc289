use super::*;
use crate::video::Vp8Payloader;
use hush_sim::{Conditions, Link};

/// A frame's bytes: the first byte's bit 0 says key (clear) or inter (set).
fn frame(n: u8, key: bool, len: usize) -> Vec<u8> {
    let mut f = vec![n; len];
    f[0] = if key { 0x00 } else { 0x01 } | (n << 1);
    f
}

/// Packets (seq, ts, marker, payload) for frames, numbered on from `seq`.
struct Sender {
    payloader: Vp8Payloader,
    seq: u16,
}

impl Sender {
    fn new(seq: u16) -> Sender {
        Sender {
            payloader: Vp8Payloader::new(100, 1).expect("payloader"),
            seq,
        }
    }

    fn send(&mut self, data: &[u8], ts: u32) -> Vec<(u16, u32, bool, Vec<u8>)> {
        let payloads = self.payloader.payload(data);
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let seq = self.seq;
                self.seq = self.seq.wrapping_add(1);
                (seq, ts, i + 1 == n, p)
            })
            .collect()
    }
}

fn push_all(a: &mut FrameAssembler, now: Instant, packets: &[(u16, u32, bool, Vec<u8>)]) {
    for (seq, ts, m, p) in packets {
        a.push(now, *seq, *ts, *m, p).expect("push");
    }
}

fn frames(a: &mut FrameAssembler) -> Vec<Assembled> {
    std::iter::from_fn(|| a.poll_frame()).collect()
}

#[test]
fn frames_in_order_come_out_whole_across_the_sequence_wrap() {
    let now = Instant::now();
    let mut a = FrameAssembler::new();
    let mut s = Sender::new(65_530);
    let sent: Vec<Vec<u8>> = (0..5).map(|i| frame(i, i == 0, 250)).collect();
    for (i, f) in sent.iter().enumerate() {
        push_all(&mut a, now, &s.send(f, i as u32 * 6000));
    }
    let got = frames(&mut a);
    assert_eq!(got.len(), 5);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.data, sent[i]);
        assert_eq!(g.timestamp, i as u32 * 6000);
        assert_eq!(g.key, i == 0);
        assert_eq!(g.picture_id, Some(1 + i as u16));
    }
    assert!(!a.poll_key_request(now), "nothing was lost");
    assert_eq!(a.stats().lost, 0);
}

#[test]
fn packets_overtaking_each_other_on_a_jittery_link_lose_nothing() {
    for seed in 0..10 {
        let mut link = Link::new(
            Conditions {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(30),
                ..Conditions::default()
            },
            seed,
        );
        let mut now = Instant::now();
        let mut s = Sender::new(100);
        let mut a = FrameAssembler::new();
        let sent: Vec<Vec<u8>> = (0..30).map(|i| frame(i, i == 0, 450)).collect();
        let mut got = Vec::new();
        for (i, f) in sent.iter().enumerate() {
            for p in s.send(f, i as u32 * 6000) {
                link.send(now, p);
            }
            let end = now + Duration::from_millis(66);
            while now < end {
                now += Duration::from_millis(1);
                while let Some((seq, ts, m, p)) = link.receive(now) {
                    a.push(now, seq, ts, m, &p).expect("push");
                }
                a.handle_timeout(now);
                got.extend(frames(&mut a));
            }
        }
        assert_eq!(got.len(), 30, "seed {seed}");
        assert!(
            got.iter().zip(&sent).all(|(g, s)| g.data == *s),
            "seed {seed}"
        );
        assert_eq!(a.stats().lost, 0, "seed {seed}");
    }
}

#[test]
fn a_lost_packet_costs_its_frame_holds_inter_frames_and_asks_for_a_key_frame() {
    let t0 = Instant::now();
    let mut a = FrameAssembler::new();
    let mut s = Sender::new(0);
    push_all(&mut a, t0, &s.send(&frame(0, true, 250), 0));
    assert_eq!(frames(&mut a).len(), 1);
    // Frame 1 loses its middle packet.
    let mut f1 = s.send(&frame(1, false, 250), 6000);
    f1.remove(1);
    push_all(&mut a, t0, &f1);
    let f2 = s.send(&frame(2, false, 250), 12_000);
    push_all(&mut a, t0, &f2);
    assert!(frames(&mut a).is_empty(), "frame 2 waits behind the gap");
    assert_eq!(a.poll_timeout(), Some(t0 + GAP_WAIT));
    assert!(!a.poll_key_request(t0));
    // The gap is given up; frame 2 is complete, but an inter frame after a loss
    // is held back.
    let t1 = t0 + GAP_WAIT;
    a.handle_timeout(t1);
    assert!(frames(&mut a).is_empty());
    assert!(a.poll_key_request(t1));
    assert!(!a.poll_key_request(t1), "asked once");
    assert_eq!(a.poll_timeout(), Some(t1 + KEY_RETRY));
    assert!(
        a.poll_key_request(t1 + KEY_RETRY),
        "and again when none came"
    );
    // The key frame repairs the stream; inter frames flow again.
    push_all(&mut a, t1, &s.send(&frame(3, true, 250), 18_000));
    push_all(&mut a, t1, &s.send(&frame(4, false, 250), 24_000));
    let got = frames(&mut a);
    assert_eq!(got.iter().map(|g| g.data[1]).collect::<Vec<_>>(), [3, 4]);
    assert!(!a.poll_key_request(t1 + KEY_RETRY * 3));
    assert_eq!(a.stats().lost, 2);
    assert_eq!(a.stats().key_requests, 2);
}

#[test]
fn a_stream_joined_without_its_key_frame_asks_for_one() {
    let now = Instant::now();
    let mut a = FrameAssembler::new();
    let mut s = Sender::new(7);
    push_all(&mut a, now, &s.send(&frame(5, false, 50), 0));
    assert!(frames(&mut a).is_empty());
    assert!(a.poll_key_request(now));
}

#[test]
fn hostile_packets_are_bounded_and_refused() {
    let now = Instant::now();
    let mut a = FrameAssembler::new();
    // Garbage descriptors.
    assert!(a.push(now, 1, 0, false, &[]).is_err());
    assert!(a.push(now, 2, 0, false, &[0x80]).is_err());
    // A frame that never ends: what is held stays bounded (by bytes first: 4096
    // packets of 1.2 KB would be more).
    let mut peak = 0;
    for i in 0..5000u32 {
        let mut p = vec![0x90, 0x80, 0x80, 0x01];
        p.extend_from_slice(&[0u8; 1200]);
        a.push(now, i as u16, 0, false, &p).expect("push");
        assert!(a.parts.len() <= MAX_PACKETS);
        assert!(a.bytes <= MAX_BYTES);
        peak = peak.max(a.bytes);
    }
    assert!(
        peak > MAX_BYTES - 1300,
        "the byte bound was reached: {peak}"
    );
    // A duplicate is refused.
    let refused = a.stats().refused;
    let mut s = Sender::new(5001);
    let packets = s.send(&frame(0, true, 50), 1);
    push_all(&mut a, now, &packets);
    push_all(&mut a, now, &packets);
    assert!(a.stats().refused > refused);
}

#[test]
fn a_large_frame_arriving_slowly_is_waited_for_not_given_up() {
    let t0 = Instant::now();
    let mut a = FrameAssembler::new();
    let mut s = Sender::new(10);
    // A 1.5 KB-per-packet link: the key frame's 16 packets take 320 ms to come.
    let packets = s.send(&frame(0, true, 1500), 0);
    assert!(packets.len() >= 15);
    for (i, (seq, ts, m, p)) in packets.iter().enumerate() {
        let at = t0 + Duration::from_millis(20 * i as u64);
        a.handle_timeout(at);
        a.push(at, *seq, *ts, *m, p).expect("push");
        assert!(a.poll_timeout().is_none(), "no gap, no clock");
    }
    let got = frames(&mut a);
    assert_eq!(got.len(), 1);
    assert!(got[0].key);
    assert_eq!(a.stats().lost, 0);
    assert!(!a.poll_key_request(t0 + Duration::from_secs(1)));
}

#[test]
fn a_sender_that_starts_over_below_or_above_is_followed() {
    let now = Instant::now();
    for restart_at in [20_000u16, 5, 60_000] {
        let mut a = FrameAssembler::new();
        let mut s = Sender::new(40_000);
        for i in 0..3u8 {
            push_all(&mut a, now, &s.send(&frame(i, i == 0, 250), u32::from(i)));
        }
        assert_eq!(frames(&mut a).len(), 3);
        // The sender restarts elsewhere in the sequence space, with a key frame.
        let mut s = Sender::new(restart_at);
        push_all(&mut a, now, &s.send(&frame(9, true, 250), 9));
        push_all(&mut a, now, &s.send(&frame(10, false, 250), 10));
        let got = frames(&mut a);
        assert_eq!(got.len(), 2, "restart at {restart_at}");
        assert!(got[0].key);
    }
}

#[test]
fn frames_not_taken_in_time_cost_the_newest_not_the_decodable_ones() {
    let now = Instant::now();
    let mut a = FrameAssembler::new();
    let mut s = Sender::new(0);
    for i in 0..(MAX_READY as u8 + 2) {
        push_all(&mut a, now, &s.send(&frame(i, i == 0, 50), u32::from(i)));
    }
    let got = frames(&mut a);
    assert_eq!(
        got.iter().map(|g| g.data[1]).collect::<Vec<_>>(),
        (0..MAX_READY as u8).collect::<Vec<_>>(),
        "the first ones, in order"
    );
    assert!(a.poll_key_request(now), "what follows needs a key frame");
}
