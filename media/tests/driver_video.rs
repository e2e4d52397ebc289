//! Two media threads with audio and video over real UDP sockets on loopback, real
//! libbzrtp keying the video stream in multistream mode from the audio one, separate
//! RTCP ports for video: the test pattern sent by one side is recorded by the other
//! and checked by content.

use hush_media::audio::{SinkSpec, SourceSpec};
use hush_media::codec::CodecKind;
use hush_media::driver::{
    MediaCall, MediaCommand, MediaReport, PreparedMedia, PreparedVideo, VideoSetup, Viewer,
};
use hush_media::stream::{Policy, StreamConfig, StreamEvent};
use hush_media::video::{
    EncoderConfig, TestPattern, VideoConfig, VideoSource, Y4mReader, Y4mWriter,
};
use hush_media::zrtp::{ZrtpConfig, ZrtpSession};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const FPS: u32 = 15;

fn ip() -> IpAddr {
    "127.0.0.1".parse().expect("ip")
}

/// One end before the call: its ports and its ZRTP session with a video channel.
struct End {
    audio: PreparedMedia,
    video: PreparedVideo,
    zrtp: ZrtpSession,
    ssrc: u32,
}

impl End {
    fn new(ssrc: u32) -> End {
        let mut zrtp =
            ZrtpSession::new(&ZrtpConfig::default(), ssrc, Instant::now()).expect("zrtp");
        zrtp.add_channel(ssrc + 1).expect("video channel");
        End {
            audio: PreparedMedia::bind(ip()).expect("audio port"),
            video: PreparedVideo::bind(ip()).expect("video ports"),
            zrtp,
            ssrc,
        }
    }

    /// (audio, video RTP, video RTCP, audio hash, video hash): what its SDP says.
    fn sdp(&self) -> (SocketAddr, SocketAddr, SocketAddr, String, String) {
        (
            self.audio.local_addr(),
            self.video.local_addr().expect("rtp"),
            self.video.local_rtcp_addr().expect("rtcp"),
            self.zrtp.hello_hash().expect("hash"),
            self.zrtp
                .channel_hello_hash(self.ssrc + 1)
                .expect("video hash"),
        )
    }
}

struct Running {
    call: Option<MediaCall>,
    /// Video to add once the call runs.
    late_video: Option<VideoSetup>,
    reports: mpsc::Receiver<MediaReport>,
    seen: Vec<MediaReport>,
}

impl Running {
    fn wait_for(&mut self, what: &str, f: impl Fn(&MediaReport) -> bool) -> MediaReport {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(r) => {
                    self.seen.push(r.clone());
                    if f(&r) {
                        return r;
                    }
                }
                Err(_) => panic!("no {what} within 20 s: {:?}", self.seen),
            }
        }
    }
}

fn start(
    end: End,
    peer: &(SocketAddr, SocketAddr, SocketAddr, String, String),
    record: Option<std::path::PathBuf>,
    viewer: Option<Viewer>,
    late: bool,
) -> Running {
    let audio = StreamConfig {
        local_ssrc: end.ssrc,
        codec: CodecKind::Pcmu,
        payload_type: 0,
        telephone_event_pt: None,
        policy: Policy::Mandatory,
        peer_hello_hash: Some(peer.3.clone()),
        remote: peer.0,
    };
    let video = VideoSetup {
        ports: end.video,
        config: VideoConfig {
            local_ssrc: end.ssrc + 1,
            payload_type: 100,
            policy: Policy::Mandatory,
            remote: peer.1,
            remote_rtcp: peer.2,
            encoder: EncoderConfig {
                width: 320,
                height: 240,
                fps: FPS,
                bitrate_kbps: 500,
                screen: false,
            },
        },
        peer_hello_hash: Some(peer.4.clone()),
        source: Box::new(TestPattern::new(320, 240, FPS).expect("pattern")),
        viewer,
        self_view: None,
        record: record.map(|p| {
            Y4mWriter::new(
                std::io::BufWriter::new(std::fs::File::create(p).expect("file")),
                FPS,
            )
        }),
        sending: true,
    };
    // Late: the call starts with audio alone, and video is added to it (as after a
    // re-INVITE that adds it).
    let (early, added) = if late {
        (None, Some(video))
    } else {
        (Some(video), None)
    };
    let (tx, reports) = mpsc::channel();
    let call = end
        .audio
        .start_with_video(
            audio,
            Some(end.zrtp),
            SourceSpec::Tone(440.0),
            SinkSpec::Null,
            early,
            move |r| {
                let _ = tx.send(r);
            },
        )
        .expect("media thread");
    Running {
        late_video: added,
        call: Some(call),
        reports,
        seen: Vec::new(),
    }
}

#[test]
fn video_both_ways_keyed_by_zrtp_multistream_over_loopback_one_side_adding_it_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("seen-by-b.y4m");
    let (a, b) = (End::new(0x10), End::new(0x20));
    let (sdp_a, sdp_b) = (a.sdp(), b.sdp());
    assert_ne!(sdp_a.1, sdp_a.2, "video RTCP has its own port");
    let viewer: Viewer = Arc::new(Mutex::new(None));
    // a adds its video once the call runs; b has it from the start.
    let mut run_a = start(a, &sdp_b, None, Some(viewer.clone()), true);
    let mut run_b = start(b, &sdp_a, Some(recording.clone()), None, false);
    let sas = |r: &MediaReport| match r {
        MediaReport::Event(StreamEvent::Secure { sas, .. }) => Some(sas.clone()),
        _ => None,
    };
    let sas_a = sas(&run_a.wait_for("audio secure", |r| sas(r).is_some()));
    let sas_b = sas(&run_b.wait_for("audio secure", |r| sas(r).is_some()));
    assert_eq!(sas_a, sas_b);
    // a adds its video now that the call is secure.
    if let (Some(c), Some(v)) = (&run_a.call, run_a.late_video.take()) {
        c.command(MediaCommand::AddVideo(Box::new(v)));
    }
    for run in [&mut run_a, &mut run_b] {
        let video = |r: &MediaReport| match r {
            MediaReport::VideoEvent(StreamEvent::Secure { sas, .. }) => Some(sas.clone()),
            _ => None,
        };
        let sas = video(&run.wait_for("video secure", |r| video(r).is_some()));
        assert_eq!(sas, sas_a, "video carries the call's SAS");
        run.wait_for(
            "pictures",
            |r| matches!(r, MediaReport::VideoStats(s) if s.frames_decoded >= 30),
        );
    }
    // Camera off on a: no more pictures leave (its count stays put over a report).
    let sent = |r: &MediaReport| match r {
        MediaReport::VideoStats(s) => Some(s.frames_sent),
        _ => None,
    };
    if let Some(c) = &run_a.call {
        c.command(MediaCommand::Camera(false));
        c.barrier()
            .recv_timeout(Duration::from_secs(5))
            .expect("the command applied");
    }
    // Reports made before the camera went off are set aside.
    while let Ok(r) = run_a.reports.try_recv() {
        run_a.seen.push(r);
    }
    let first = sent(&run_a.wait_for("stats", |r| sent(r).is_some()));
    let second = sent(&run_a.wait_for("stats", |r| sent(r).is_some()));
    assert_eq!(first, second, "the camera is off");
    for run in [&mut run_a, &mut run_b] {
        if let Some(c) = run.call.take() {
            c.stop();
        }
    }
    for run in [&mut run_a, &mut run_b] {
        run.wait_for("the end", |r| matches!(r, MediaReport::Ended(_)));
        let setbacks: Vec<_> = run
            .seen
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    MediaReport::VideoEvent(StreamEvent::Failed(_) | StreamEvent::Cleartext(_))
                        | MediaReport::Event(StreamEvent::Failed(_) | StreamEvent::Cleartext(_))
                )
            })
            .collect();
        assert!(setbacks.is_empty(), "{setbacks:?}");
        let last = run.seen.iter().rev().find_map(|r| match r {
            MediaReport::VideoStats(s) => Some(*s),
            _ => None,
        });
        let s = last.expect("video stats");
        assert_eq!((s.width, s.height), (320, 240));
        assert_eq!(s.refused, 0, "{s:?}");
        assert!(s.rtt_ms.is_some(), "reports crossed the RTCP ports: {s:?}");
    }
    // What b recorded is a's pattern, whole, and moving.
    let mut file =
        Y4mReader::new(std::fs::File::open(&recording).expect("recording"), false).expect("y4m");
    let mut markers = std::collections::BTreeSet::new();
    let mut frames = 0;
    while let Some(p) = file.next_frame().expect("frame") {
        assert!(TestPattern::shows_bars(&p, 24), "frame {frames}");
        markers.insert(TestPattern::find_marker(&p).expect("marker"));
        frames += 1;
    }
    assert!(frames >= 25, "{frames} frames recorded");
    assert!(markers.len() >= 10, "the marker moved: {markers:?}");
    // And a's window had b's pattern to show.
    let shown = viewer.lock().expect("viewer").take().expect("a picture");
    assert!(TestPattern::shows_bars(&shown, 24));
}
