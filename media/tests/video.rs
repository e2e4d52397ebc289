//! VP8 over libvpx and the RTP side of video, end to end without a network: the test
//! pattern through the real encoder and decoder, checked by content; hostile frames;
//! and a stream over a simulated lossy link recovering through key frame requests.

use hush_media::MediaError;
use hush_media::video::{
    EncoderConfig, FrameAssembler, I420Frame, TestPattern, VideoSource, Vp8Decoder, Vp8Descriptor,
    Vp8Encoder, Vp8Payloader,
};
use hush_sim::{Conditions, Link, Rng};
use std::time::{Duration, Instant};

fn encoder(width: u32, height: u32) -> Vp8Encoder {
    Vp8Encoder::new(EncoderConfig {
        width,
        height,
        fps: 15,
        bitrate_kbps: 800,
        screen: false,
    })
    .expect("encoder")
}

fn marker_near(frame: &I420Frame, index: u64) -> bool {
    let want = TestPattern::marker_x(frame.width(), frame.height(), index);
    TestPattern::find_marker(frame).is_some_and(|x| x.abs_diff(want) <= 4)
}

#[test]
fn the_pattern_survives_a_vp8_round_trip_by_content() {
    for (w, h) in [(320, 240), (322, 242), (175, 97)] {
        let mut pattern = TestPattern::new(w, h, 15).expect("pattern");
        let mut enc = encoder(w, h);
        let mut dec = Vp8Decoder::new().expect("decoder");
        for i in 0..12u64 {
            let picture = pattern.next_frame().expect("frame").expect("some");
            let coded = enc.encode(&picture, false).expect("encode");
            assert_eq!(coded.len(), 1, "{w}x{h} frame {i}: one coded frame");
            assert_eq!(
                coded[0].key,
                i == 0,
                "{w}x{h} frame {i}: only the first is key"
            );
            let out = dec
                .decode(&coded[0].data)
                .expect("decode")
                .expect("a picture");
            assert_eq!((out.width(), out.height()), (w, h));
            assert!(TestPattern::shows_bars(&out, 24), "{w}x{h} frame {i}: bars");
            assert!(marker_near(&out, i), "{w}x{h} frame {i}: marker");
        }
    }
}

#[test]
fn a_key_frame_comes_when_asked_and_the_rate_can_change() {
    let pattern = TestPattern::new(320, 240, 15).expect("pattern");
    let mut enc = encoder(320, 240);
    let keys: Vec<bool> = (0..8u64)
        .map(|i| {
            let ask = i == 5;
            enc.encode(&pattern.frame(i), ask).expect("encode")[0].key
        })
        .collect();
    assert_eq!(keys, [true, false, false, false, false, true, false, false]);
    enc.set_bitrate(200).expect("bit rate");
    enc.set_fps(30).expect("fps");
    assert!(enc.set_bitrate(0).is_err());
    assert_eq!(enc.config().bitrate_kbps, 200);
    assert!(
        !enc.encode(&pattern.frame(8), false)
            .expect("encode")
            .is_empty()
    );
    // A picture of another size is refused, not coded wrongly.
    let other = I420Frame::black(64, 64).expect("frame");
    assert!(enc.encode(&other, false).is_err());
}

#[test]
fn the_decoder_refuses_hostile_frames_without_panicking() {
    let pattern = TestPattern::new(160, 120, 15).expect("pattern");
    let mut enc = encoder(160, 120);
    let key = enc.encode(&pattern.frame(0), false).expect("encode")[0]
        .data
        .clone();
    let inter = enc.encode(&pattern.frame(1), false).expect("encode")[0]
        .data
        .clone();
    let mut dec = Vp8Decoder::new().expect("decoder");
    assert!(dec.decode(&[]).is_err());
    assert!(
        dec.decode(&inter).is_err(),
        "an inter frame before any key frame"
    );
    // A key frame declaring 16383x16383 never reaches libvpx.
    let mut huge = key.clone();
    huge[6..10].copy_from_slice(&[0xff, 0x3f, 0xff, 0x3f]);
    assert!(
        matches!(dec.decode(&huge), Err(MediaError::Refused { .. })),
        "refused by our check, not by libvpx"
    );
    assert!(dec.decode(&key[..8]).is_err(), "a cut key frame header");
    // Random bytes and mangled frames: errors or pictures, never a panic.
    let mut rng = Rng::new(11);
    for _ in 0..300 {
        let mut f = if rng.chance(500) {
            key.clone()
        } else {
            inter.clone()
        };
        let n = 1 + (rng.next_u64() % 8) as usize;
        for _ in 0..n {
            let at = (rng.next_u64() as usize) % f.len();
            f[at] = rng.next_u64() as u8;
        }
        f.truncate(1 + (rng.next_u64() as usize) % f.len());
        let _ = dec.decode(&f);
    }
    // And the same decoder still works for the real stream afterwards.
    let out = dec.decode(&key).expect("decode").expect("picture");
    assert!(TestPattern::shows_bars(&out, 24));
    let next = dec.decode(&inter).expect("decode").expect("picture");
    assert!(TestPattern::shows_bars(&next, 24));
}

/// An RTP packet on the simulated link: (sequence, timestamp, marker, payload).
type Packet = (u16, u32, bool, Vec<u8>);

#[test]
fn five_percent_loss_recovers_through_key_frame_requests() {
    for seed in 0..4 {
        let conditions = Conditions {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(10),
            loss_per_mille: 50,
            ..Conditions::default()
        };
        let mut media: Link<Packet> = Link::new(conditions, seed);
        // Key frame requests (PLI) travel back over the same kind of path.
        let mut feedback: Link<()> = Link::new(conditions, seed + 100);
        let (w, h, fps) = (320u32, 240u32, 15u32);
        let mut pattern = TestPattern::new(w, h, fps).expect("pattern");
        let mut enc = encoder(w, h);
        let mut payloader = Vp8Payloader::new(1100, 0).expect("payloader");
        let mut assembler = FrameAssembler::new();
        let mut dec = Vp8Decoder::new().expect("decoder");
        let (mut seq, mut now) = (0u16, Instant::now());
        let (mut key_asked, mut decoded, mut keys_sent) = (false, Vec::new(), 0);
        let frame_time = Duration::from_millis(1000 / u64::from(fps));
        for index in 0..(fps as u64 * 20) {
            // The sender: a key frame if a request arrived since the last frame.
            let picture = pattern.next_frame().expect("frame").expect("some");
            let ts = (index as u32).wrapping_mul(90_000 / fps);
            for coded in enc
                .encode(&picture, std::mem::take(&mut key_asked))
                .expect("encode")
            {
                keys_sent += usize::from(coded.key);
                let payloads = payloader.payload(&coded.data);
                let n = payloads.len();
                for (i, p) in payloads.into_iter().enumerate() {
                    media.send(now, (seq, ts, i + 1 == n, p));
                    seq = seq.wrapping_add(1);
                }
            }
            // A frame time passes, millisecond by millisecond.
            let end = now + frame_time;
            while now < end {
                now += Duration::from_millis(1);
                while let Some((s, t, m, p)) = media.receive(now) {
                    assert!(Vp8Descriptor::parse(&p).is_ok());
                    assembler.push(now, s, t, m, &p).expect("push");
                }
                assembler.handle_timeout(now);
                while let Some(f) = assembler.poll_frame() {
                    match dec.decode(&f.data) {
                        Ok(Some(p)) => decoded.push((f.timestamp, p)),
                        Ok(None) => {}
                        Err(_) => assembler.decode_failed(),
                    }
                }
                if assembler.poll_key_request(now) {
                    feedback.send(now, ());
                }
                while feedback.receive(now).is_some() {
                    key_asked = true;
                }
            }
        }
        let stats = assembler.stats();
        assert!(stats.lost > 0, "seed {seed}: 5 % loss cost frames");
        assert!(
            stats.key_requests > 0,
            "seed {seed}: key frames were asked for"
        );
        assert!(keys_sent > 1, "seed {seed}: and sent");
        // Every picture shown is whole: the bars, and the marker where the frame's
        // timestamp says it must be (no smeared or stale picture is passed off).
        for (ts, p) in &decoded {
            let index = u64::from(*ts / (90_000 / fps));
            assert!(TestPattern::shows_bars(p, 24), "seed {seed}: bars at {ts}");
            assert!(marker_near(p, index), "seed {seed}: marker at {ts}");
        }
        // Most of the stream is seen, and it is seen to the end.
        let total = fps as usize * 20;
        assert!(
            decoded.len() * 2 > total,
            "seed {seed}: {} of {total} shown",
            decoded.len()
        );
        let last = decoded
            .last()
            .map(|(ts, _)| *ts / (90_000 / fps))
            .unwrap_or(0);
        assert!(
            last + 15 >= total as u32,
            "seed {seed}: the stream recovered (last {last})"
        );
    }
}
