//! Two sans-IO video streams over simulated links (hush-sim), with the real VP8 codec
//! and SRTP: nothing leaves before the keys under "mandatory", pictures arrive whole
//! and are checked by content, loss is repaired by key frame requests, FIR is
//! answered once per request, and strangers are refused.

use hush_media::rtp::feedback;
use hush_media::stream::{MediaSecurity, Policy};
use hush_media::video::{
    EncoderConfig, I420Frame, TestPattern, VideoConfig, VideoEvent, VideoSource, VideoStream,
};
use hush_media::zrtp::{SrtpKeys, SrtpProfile};
use hush_sim::{Conditions, Link};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const FPS: u32 = 15;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// One end: its stream, its camera, and its addresses (RTP, RTCP).
struct Side {
    stream: VideoStream,
    camera: TestPattern,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    next_frame: Instant,
    shown: Vec<I420Frame>,
}

fn config(policy: Policy, peer: (SocketAddr, SocketAddr), ssrc: u32) -> VideoConfig {
    VideoConfig {
        local_ssrc: ssrc,
        payload_type: 103,
        policy,
        remote: peer.0,
        remote_rtcp: peer.1,
        encoder: EncoderConfig {
            width: 320,
            height: 240,
            fps: FPS,
            bitrate_kbps: 600,
            screen: false,
        },
    }
}

fn keys(flip: bool) -> SrtpKeys {
    let (a, b) = ([7u8; 16], [9u8; 16]);
    let (sa, sb) = ([1u8; 14], [2u8; 14]);
    let (lk, ls, rk, rs) = if flip { (b, sb, a, sa) } else { (a, sa, b, sb) };
    SrtpKeys {
        profile: SrtpProfile::Aes128CmHmacSha1_80,
        local_key: Zeroizing::new(lk.to_vec()),
        local_salt: Zeroizing::new(ls.to_vec()),
        remote_key: Zeroizing::new(rk.to_vec()),
        remote_salt: Zeroizing::new(rs.to_vec()),
    }
}

struct Call {
    sides: [Side; 2],
    /// `links[i]` carries what side `i` sends, with its source address.
    links: [Link<(SocketAddr, Vec<u8>)>; 2],
    now: Instant,
}

impl Call {
    fn new(policy: Policy, mux: bool, conditions: Conditions, seed: u64) -> Call {
        let now = Instant::now();
        let ends = [
            (addr("10.0.0.1:5000"), addr("10.0.0.1:5001")),
            (addr("10.0.0.2:6000"), addr("10.0.0.2:6001")),
        ];
        let ends = ends.map(|(rtp, rtcp)| (rtp, if mux { rtp } else { rtcp }));
        let side = |i: usize| Side {
            stream: VideoStream::new(config(policy, ends[1 - i], 0x100 + i as u32), now)
                .expect("stream"),
            camera: TestPattern::new(320, 240, FPS).expect("pattern"),
            rtp: ends[i].0,
            rtcp: ends[i].1,
            next_frame: now,
            shown: Vec::new(),
        };
        Call {
            sides: [side(0), side(1)],
            links: [Link::new(conditions, seed), Link::new(conditions, seed + 1)],
            now,
        }
    }

    fn key_both(&mut self) {
        let now = self.now;
        for (i, s) in self.sides.iter_mut().enumerate() {
            s.stream.keyed(now, &keys(i == 1)).expect("keys");
        }
    }

    /// Runs `d` of simulated time in 1 ms steps: cameras deliver at their rate,
    /// datagrams cross the links, timers fire, pictures are taken.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            let now = self.now;
            for s in &mut self.sides {
                if now >= s.next_frame {
                    s.next_frame = now + Duration::from_millis(1000 / u64::from(FPS));
                    let picture = s.camera.next_frame().expect("frame").expect("some");
                    s.stream.send_frame(now, &picture).expect("send");
                }
            }
            for i in 0..2 {
                while let Some(t) = self.sides[i].stream.poll_transmit() {
                    let other = &self.sides[1 - i];
                    assert!(t.to == other.rtp || t.to == other.rtcp, "sent to {}", t.to);
                    let from = if t.to == other.rtcp && other.rtcp != other.rtp {
                        self.sides[i].rtcp
                    } else {
                        self.sides[i].rtp
                    };
                    self.links[i].send(now, (from, t.data));
                }
            }
            for from in 0..2 {
                while let Some((source, data)) = self.links[from].receive(now) {
                    self.sides[1 - from]
                        .stream
                        .handle_datagram(now, source, &data);
                }
            }
            for s in &mut self.sides {
                if s.stream.poll_timeout().is_some_and(|t| t <= now) {
                    s.stream.handle_timeout(now);
                }
                if let Some(p) = s.stream.poll_picture() {
                    s.shown.push(p);
                }
            }
        }
    }
}

/// Every picture shows the bars and the marker, and the marker moved.
fn whole_and_moving(shown: &[I420Frame]) -> bool {
    let markers: std::collections::BTreeSet<u32> =
        shown.iter().filter_map(TestPattern::find_marker).collect();
    shown.iter().all(|p| TestPattern::shows_bars(p, 24))
        && shown.iter().all(|p| TestPattern::find_marker(p).is_some())
        && markers.len() > 5
}

#[test]
fn under_mandatory_nothing_leaves_before_the_keys_then_pictures_arrive_whole() {
    for mux in [true, false] {
        let mut call = Call::new(
            Policy::Mandatory,
            mux,
            Conditions::latency(Duration::from_millis(30)),
            1,
        );
        call.run(Duration::from_secs(1));
        for s in &mut call.sides {
            assert!(
                s.stream.poll_transmit().is_none(),
                "nothing before the keys"
            );
            assert!(s.stream.stats().withheld_frames >= 14);
            assert_eq!(s.stream.stats().packets_sent, 0);
            assert!(s.shown.is_empty());
        }
        call.key_both();
        call.run(Duration::from_secs(5));
        for s in &mut call.sides {
            assert_eq!(s.stream.poll_event(), Some(VideoEvent::Secure));
            let st = s.stream.stats();
            assert_eq!((st.width, st.height), (320, 240), "mux {mux}");
            assert!((13..=16).contains(&st.fps), "mux {mux}: {} fps", st.fps);
            assert!(st.frames_decoded >= 70, "mux {mux}: {st:?}");
            assert!(st.rtt_ms.is_some_and(|r| (50..=80).contains(&r)), "{st:?}");
            assert_eq!(st.refused, 0, "mux {mux}: {st:?}");
            assert!(whole_and_moving(&s.shown), "mux {mux}");
        }
    }
}

#[test]
fn five_percent_loss_is_repaired_by_key_frame_requests() {
    for seed in 0..3 {
        let mut call = Call::new(
            Policy::Mandatory,
            true,
            Conditions {
                latency: Duration::from_millis(40),
                jitter: Duration::from_millis(10),
                loss_per_mille: 50,
                ..Conditions::default()
            },
            seed,
        );
        call.key_both();
        call.run(Duration::from_secs(20));
        let [a, b] = &call.sides;
        let (sa, sb) = (a.stream.stats(), b.stream.stats());
        assert!(sb.key_frames_asked > 0, "seed {seed}: {sb:?}");
        assert!(sa.key_frames_requested > 0, "seed {seed}: {sa:?}");
        assert!(sa.key_frames_sent > 1, "seed {seed}: {sa:?}");
        assert!(sb.packets_lost > 0);
        assert!(sb.frames_decoded > 150, "seed {seed}: {sb:?}");
        assert!(whole_and_moving(&b.shown), "seed {seed}");
        // The loss reports brought the rate down from its start.
        assert!(sa.bitrate_kbps < 600, "seed {seed}: {sa:?}");
    }
}

#[test]
fn a_fir_is_answered_once_per_request_number() {
    let mut call = Call::new(
        Policy::BestEffort,
        true,
        Conditions::latency(Duration::from_millis(10)),
        3,
    );
    let now = call.now;
    for s in &mut call.sides {
        s.stream.cleartext(now, "the peer does no ZRTP".into());
    }
    call.run(Duration::from_secs(1));
    let before = call.sides[0].stream.stats();
    assert_eq!(before.key_frames_sent, 1, "the first picture only");
    // Side 1 asks with a FIR; the same request repeated (same number) counts once.
    let (from, to) = (call.sides[1].rtp, call.sides[0].rtp);
    let mut fir = Vec::new();
    feedback::build_fir(0x101, 0x100, 7, &mut fir);
    for _ in 0..3 {
        call.sides[0].stream.handle_datagram(call.now, from, &fir);
    }
    call.run(Duration::from_millis(200));
    let after = call.sides[0].stream.stats();
    assert_eq!(after.key_frames_requested, 1);
    assert_eq!(after.key_frames_sent, 2);
    // Through the stream's own call: a new number each time.
    call.sides[1].stream.request_full_intra(call.now);
    call.run(Duration::from_millis(200));
    assert_eq!(call.sides[0].stream.stats().key_frames_sent, 3);
    assert_eq!(to, call.sides[0].rtp);
    for s in &mut call.sides {
        assert!(matches!(
            s.stream.poll_event(),
            Some(VideoEvent::Cleartext(_))
        ));
        assert_eq!(s.stream.security(), &MediaSecurity::Cleartext);
    }
}

#[test]
fn strangers_other_payload_types_and_early_media_are_refused() {
    let mut call = Call::new(
        Policy::Mandatory,
        true,
        Conditions::latency(Duration::from_millis(10)),
        4,
    );
    // Mandatory without keys: cleartext is not an option.
    let now = call.now;
    call.sides[0].stream.cleartext(now, "no ZRTP".into());
    assert!(matches!(
        call.sides[0].stream.poll_event(),
        Some(VideoEvent::Failed(_))
    ));
    let mut call = Call::new(
        Policy::Mandatory,
        true,
        Conditions::latency(Duration::from_millis(10)),
        5,
    );
    call.key_both();
    call.run(Duration::from_millis(500));
    let s = &mut call.sides[0].stream;
    let refused = s.stats().refused;
    // A stranger's datagrams, of every kind.
    let stranger = addr("10.6.6.6:6000");
    let rtp = [
        0x80u8, 103, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0x90, 0x80, 0x80, 0x01, 0,
    ];
    s.handle_datagram(call.now, stranger, &rtp);
    s.handle_datagram(call.now, stranger, &[0x80, 200, 0, 1, 0, 0, 0, 1]);
    // From the peer's address but not SRTP (cleartext RTP in a keyed stream).
    let peer = call.sides[1].rtp;
    let s = &mut call.sides[0].stream;
    s.handle_datagram(call.now, peer, &rtp);
    s.handle_datagram(call.now, peer, &[1, 2, 3]);
    assert_eq!(s.stats().refused, refused + 4);
    // A ZRTP datagram from the peer is handed on for the session; from a stranger, not.
    let mut zrtp = vec![0x10, 0, 0, 1, b'Z', b'R', b'T', b'P', 0, 0, 0, 0];
    zrtp.extend_from_slice(&[0u8; 16]);
    s.handle_datagram(call.now, stranger, &zrtp);
    assert!(s.poll_zrtp_in().is_none());
    s.handle_datagram(call.now, peer, &zrtp);
    assert_eq!(s.poll_zrtp_in(), Some(zrtp));
}

#[test]
fn a_picture_of_another_size_restarts_the_encoder_with_a_key_frame() {
    let mut call = Call::new(
        Policy::Mandatory,
        true,
        Conditions::latency(Duration::from_millis(10)),
        6,
    );
    call.key_both();
    call.run(Duration::from_millis(500));
    let keys_before = call.sides[0].stream.stats().key_frames_sent;
    call.sides[0].camera = TestPattern::new(160, 120, FPS).expect("pattern");
    call.run(Duration::from_millis(500));
    assert_eq!(
        call.sides[0].stream.stats().key_frames_sent,
        keys_before + 1
    );
    let st = call.sides[1].stream.stats();
    assert_eq!((st.width, st.height), (160, 120));
    assert!(call.sides[1].shown.last().is_some_and(|p| p.width() == 160));
}

#[test]
fn a_peer_that_moves_by_re_invite_is_followed_and_its_old_address_refused() {
    let mut call = Call::new(
        Policy::Mandatory,
        false,
        Conditions::latency(Duration::from_millis(10)),
        8,
    );
    call.key_both();
    call.run(Duration::from_millis(500));
    // Genuine SRTP packets of side 1, taken off the wire.
    let now = call.now + Duration::from_millis(70);
    for k in 0..2 {
        let picture = call.sides[1]
            .camera
            .next_frame()
            .expect("frame")
            .expect("some");
        let at = now + Duration::from_millis(66 * k);
        call.sides[1].stream.send_frame(at, &picture).expect("send");
    }
    let packets: Vec<Vec<u8>> = std::iter::from_fn(|| call.sides[1].stream.poll_transmit())
        .map(|t| t.data)
        .collect();
    assert!(packets.len() >= 2);
    // Side 1 moves (RTP and RTCP to new ports); side 0 is told by the re-INVITE.
    let (moved, moved_rtcp) = (addr("10.0.0.3:6500"), addr("10.0.0.3:6501"));
    call.sides[0].stream.set_remote(moved, moved_rtcp);
    let before = call.sides[0].stream.stats();
    let old = call.sides[1].rtp;
    call.sides[0].stream.handle_datagram(now, old, &packets[0]);
    let after_old = call.sides[0].stream.stats();
    assert_eq!(after_old.refused, before.refused + 1, "the old address");
    assert_eq!(after_old.packets_received, before.packets_received);
    call.sides[0]
        .stream
        .handle_datagram(now, moved, &packets[1]);
    assert_eq!(
        call.sides[0].stream.stats().packets_received,
        before.packets_received + 1,
        "the new one"
    );
    // Our pictures and reports follow, each to its own port.
    let picture = call.sides[0]
        .camera
        .next_frame()
        .expect("frame")
        .expect("some");
    call.sides[0]
        .stream
        .send_frame(now, &picture)
        .expect("send");
    let later = now + Duration::from_secs(2);
    call.sides[0].stream.handle_timeout(later);
    let sent: Vec<SocketAddr> = std::iter::from_fn(|| call.sides[0].stream.poll_transmit())
        .map(|t| t.to)
        .collect();
    assert!(sent.contains(&moved), "{sent:?}");
    assert!(sent.contains(&moved_rtcp), "{sent:?}");
    assert!(
        sent.iter().all(|a| *a == moved || *a == moved_rtcp),
        "{sent:?}"
    );
}
