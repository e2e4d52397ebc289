//! Video calls with linphonec 5.1 (mediastreamer2's VP8, bzrtp's multistream): the
//! pictures cross both ways, checked by content where the sender is ours, and every
//! stream is keyed by ZRTP.

use hush_harness::{Linphonec, ZrtpSuites};
use hush_media::video::{VideoSource, Y4mReader};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test pattern's bars as RGB, left to right (white, yellow, cyan, green, magenta,
/// red, blue, black).
const BARS_RGB: [(u8, u8, u8); 8] = [
    (235, 235, 235),
    (235, 235, 16),
    (16, 235, 235),
    (16, 235, 16),
    (235, 16, 235),
    (235, 16, 16),
    (16, 16, 235),
    (16, 16, 16),
];

fn video_peer() -> Linphonec {
    let suites = ZrtpSuites {
        video: true,
        ..ZrtpSuites::default()
    };
    Linphonec::start("bob", true, suites).expect("linphonec")
}

/// linphonec's snapshot of what it decodes shows our bars.
fn shows_our_bars(jpeg: &std::path::Path) -> Result<(), String> {
    let img = image::open(jpeg).map_err(|e| e.to_string())?.to_rgb8();
    let (w, h) = img.dimensions();
    for (i, want) in BARS_RGB.iter().enumerate() {
        let x = (2 * i as u32 + 1) * w / 16;
        let p = img.get_pixel(x, h * 3 / 8);
        let close = |a: u8, b: u8| a.abs_diff(b) <= 48;
        if !(close(p[0], want.0) && close(p[1], want.1) && close(p[2], want.2)) {
            return Err(format!("bar {i} at x={x}: {p:?}, want {want:?} ({w}x{h})"));
        }
    }
    Ok(())
}

/// Asks linphonec for a snapshot of the picture it decodes until it has written one
/// (bounded: it decodes 15 pictures a second once our video runs).
fn snapshot(bob: &mut Linphonec) -> std::path::PathBuf {
    let snapshot = bob.file("seen-by-linphonec.jpg");
    let deadline = Instant::now() + Duration::from_secs(6);
    while !snapshot.exists() {
        assert!(Instant::now() < deadline, "no snapshot: {}", bob.output());
        bob.send(&format!("snapshot {}", snapshot.display()))
            .expect("snapshot");
        std::thread::sleep(Duration::from_millis(500));
    }
    snapshot
}

/// Our recording of linphonec's camera (a still 572x468 image, which it sends at one
/// picture a second here): its pictures.
fn pictures_from_linphonec(path: &std::path::Path) -> usize {
    let file = std::fs::File::open(path).expect("our recording");
    let mut y4m = Y4mReader::new(file, false).expect("y4m");
    let mut frames = 0;
    while let Some(p) = y4m.next_frame().expect("frame") {
        assert_eq!((p.width(), p.height()), (572, 468));
        frames += 1;
    }
    frames
}

/// linphonec's log says its video stream was keyed by ZRTP (multistream).
fn assert_all_streams_keyed(bob: &Linphonec) {
    let log = bob.log();
    for line in [
        "Trying to start ZRTP encryption on video stream",
        "All streams are encrypted, key exchanged using ZRTP",
    ] {
        assert!(log.contains(line), "linphonec's log lacks {line:?}");
    }
}

/// The stats lines name their stream, and the video's count linphonec's pictures.
fn assert_video_stats(records: &[Value]) {
    let video = records
        .iter()
        .rfind(|r| r["type"] == "stats" && r["stream"] == "video")
        .unwrap_or_else(|| panic!("no video stats line: {records:?}"));
    assert_eq!(video["size"], "572x468", "{video}");
    assert!(video["frames_decoded"].as_u64() >= Some(2), "{video}");
    assert!(video["frames_sent"].as_u64() >= Some(30), "{video}");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "stats" && r["stream"] == "audio"),
        "{records:?}"
    );
}

/// The call's secure line, with the SAS linphonec shows too.
fn assert_same_sas(records: &[Value], theirs: &str) {
    let secure = records
        .iter()
        .find(|r| r["type"] == "security" && r["state"] == "secure")
        .expect("secure line");
    assert_eq!(secure["sas"], theirs);
}

/// Runs `hushphone call` to linphonec with `args` (after the tone) and `envs`, and
/// returns the SAS linphonec showed, a snapshot of what it decoded, and our JSON lines
/// once the call has ended successfully.
fn call_linphonec(
    profile: &std::path::Path,
    bob: &mut Linphonec,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> (String, std::path::PathBuf, Vec<Value>) {
    let child = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .envs(envs.iter().copied())
        .arg("--profile")
        .arg(profile)
        .arg("--json")
        .args(["call", &bob.address(), "--tone", "440"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hushphone");
    let their_sas = bob.sas(Duration::from_secs(15)).expect("linphonec secure");
    let snapshot = snapshot(bob);
    let out = child.wait_with_output().expect("hushphone ends");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        out.status.success(),
        "{}\n{records:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    (their_sas, snapshot, records)
}

#[test]
fn hushphone_calls_linphonec_with_video_both_ways_keyed_by_zrtp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bob = video_peer();
    let ours = dir.path().join("from-linphonec.y4m");
    let args = ["--video", "--video-record"].map(std::ffi::OsStr::new);
    let duration = ["--duration", "8"].map(std::ffi::OsStr::new);
    let all: Vec<&std::ffi::OsStr> = args
        .into_iter()
        .chain([ours.as_os_str()])
        .chain(duration)
        .collect();
    let (their_sas, snapshot, records) =
        call_linphonec(&dir.path().join("profile"), &mut bob, &all, &[]);
    // The snapshot file may be written in pieces: read once the call is over.
    shows_our_bars(&snapshot).unwrap_or_else(|e| panic!("linphonec's picture: {e}"));
    assert_all_streams_keyed(&bob);
    assert_same_sas(&records, &their_sas);
    assert_video_stats(&records);
    let frames = pictures_from_linphonec(&ours);
    assert!(frames >= 4, "{frames} pictures from linphonec");
}

#[test]
fn linphonec_calls_hushphone_with_video_both_ways_keyed_by_zrtp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = hush_harness::free_port();
    let ours = dir.path().join("from-linphonec.y4m");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(dir.path().join("profile"))
        .args(["--json", "answer", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--auto", "--tone", "440", "--video", "--duration", "8"])
        .arg("--video-record")
        .arg(&ours)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("answer");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let listening = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listening line");
    assert_eq!(listening["type"], "listening");
    let mut bob = video_peer();
    bob.send(&format!("call sip:hushphone@127.0.0.1:{port}"))
        .expect("call");
    let their_sas = bob.sas(Duration::from_secs(15)).expect("linphonec secure");
    let snapshot = snapshot(&mut bob);
    let status = child.wait().expect("answer exits after the call");
    let records: Vec<Value> = rx.try_iter().collect();
    assert!(status.success(), "{records:?}");
    shows_our_bars(&snapshot).unwrap_or_else(|e| panic!("linphonec's picture: {e}"));
    assert_all_streams_keyed(&bob);
    assert_same_sas(&records, &their_sas);
    assert_video_stats(&records);
    let frames = pictures_from_linphonec(&ours);
    assert!(frames >= 4, "{frames} pictures from linphonec");
}

/// Polls a phone's snapshot (bounded) until `f` holds for its first call.
fn until_call(
    phone: &hush_core::Phone,
    what: &str,
    f: impl Fn(&hush_core::snapshot::CallView) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rx = phone.events();
    loop {
        let snap = phone.snapshot();
        if snap.calls.first().is_some_and(&f) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} within 20 s: {:?}", snap.calls);
        let _ = phone.next_event(&mut rx, left.min(Duration::from_millis(500)));
    }
}

#[test]
fn video_added_to_a_voice_call_with_linphonec_is_keyed_and_shown_then_removed() {
    use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
    use hush_core::snapshot::StreamKind;
    use hush_core::{CallSecurity, Command as Do, Phone, Profile, Reply};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bob = video_peer();
    let phone =
        Phone::start(Profile::open(&dir.path().join("profile")).expect("profile")).expect("phone");
    let Reply::Call(call) = phone
        .execute_blocking(Do::PlaceCall {
            account: None,
            target: bob.address(),
            audio: MediaChoice {
                source: SourceSpec::Tone(440.0),
                sink: SinkSpec::Null,
                video: None,
            },
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected a call")
    };
    let their_sas = bob.sas(Duration::from_secs(15)).expect("linphonec secure");
    until_call(&phone, "a secure voice call", |c| {
        c.streams.len() == 1 && c.security.sas() == Some(their_sas.as_str())
    });
    // Video added by re-INVITE: linphonec takes it, keys it in multistream mode from
    // the call's exchange, and shows our pictures.
    phone
        .execute_blocking(Do::Video {
            call,
            on: true,
            camera: None,
        })
        .expect("add video");
    until_call(&phone, "keyed video", |c| {
        c.streams.len() == 2
            && c.streams[1].kind == StreamKind::Video
            && c.streams.iter().all(
                |s| matches!(&s.security, CallSecurity::Secure { sas, .. } if *sas == their_sas),
            )
    });
    let snapshot = snapshot(&mut bob);
    // Its log: the added video is a multistream channel of the call's exchange, keyed
    // before its first picture is shown.
    let log = bob.log();
    let added = log
        .find("Initializing multistream ZRTP context")
        .unwrap_or_else(|| panic!("linphonec made no multistream channel"));
    let after = &log[added..];
    for line in [
        "MSVideo_stream_iterate",
        "All streams are encrypted, key exchanged using ZRTP",
        "First video frame decoded successfully",
    ] {
        assert!(
            after.contains(line),
            "linphonec's log lacks {line:?} after the re-INVITE"
        );
    }
    // linphonec's still camera sends too: its pictures reach us.
    until_call(&phone, "linphonec's pictures decoded", |c| {
        c.streams
            .get(1)
            .and_then(|s| s.stats)
            .and_then(|s| s.video)
            .is_some_and(|v| v.frames_decoded >= 2 && (v.width, v.height) == (572, 468))
    });
    // Removed: the call goes on as a secure voice call.
    phone
        .execute_blocking(Do::Video {
            call,
            on: false,
            camera: None,
        })
        .expect("remove video");
    until_call(&phone, "a secure voice call again", |c| {
        c.streams.len() == 1
            && c.state == hush_core::snapshot::CallState::Connected
            && c.security.sas() == Some(their_sas.as_str())
    });
    phone
        .execute_blocking(Do::Hangup { call })
        .expect("hang up");
    shows_our_bars(&snapshot).unwrap_or_else(|e| panic!("linphonec's picture: {e}"));
}

#[test]
fn hushphone_shares_its_screen_with_linphonec_keyed_by_zrtp() {
    let (w, h) = (1280, 720);
    let x = hush_harness::Xvfb::start(w, h).expect("Xvfb");
    let pattern = hush_media::video::TestPattern::new(w, h, 15).expect("pattern");
    x.draw(&pattern.frame(0).to_bgrx()).expect("draw");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bob = video_peer();
    let args = [
        "--share-screen",
        "--screen",
        x.display(),
        "--max-size",
        "640x480",
        "--duration",
        "6",
    ]
    .map(std::ffi::OsStr::new);
    let (their_sas, snapshot, records) =
        call_linphonec(&dir.path().join("profile"), &mut bob, &args, &[]);
    // What linphonec decodes is our screen: the bars drawn on it.
    shows_our_bars(&snapshot).unwrap_or_else(|e| panic!("linphonec's picture: {e}"));
    assert_all_streams_keyed(&bob);
    assert_same_sas(&records, &their_sas);
    let screen = records
        .iter()
        .rfind(|r| r["type"] == "stats" && r["stream"] == "screen")
        .unwrap_or_else(|| panic!("no screen stats line: {records:?}"));
    assert_eq!(screen["size"], "572x468", "{screen}");
    // A still screen: captured once or so, looked at 15 times a second.
    let (captured, unchanged) = (
        screen["captured"].as_u64().expect("captured"),
        screen["unchanged"].as_u64().expect("unchanged"),
    );
    assert!(captured >= 1 && unchanged > 10 * captured, "{screen}");
}

/// A Wayland session: with no display named, the screen is the desktop portal's (the
/// real xdg-desktop-portal and PipeWire; see `hush_harness::PortalDesktop`).
#[test]
fn hushphone_shares_a_wayland_screen_through_the_portal_with_linphonec_keyed_by_zrtp() {
    let (w, h) = (1280, 720);
    let pattern = hush_media::video::TestPattern::new(w, h, 15).expect("pattern");
    let desktop = hush_harness::PortalDesktop::start(
        hush_harness::TestScreen {
            width: w,
            height: h,
            fps: 15,
            rgbx: false,
            memory: hush_harness::ScreenMemory::PipeWire,
        },
        Box::new(move |n| pattern.frame(n).to_bgrx()),
    )
    .expect("portal desktop");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bob = video_peer();
    let args =
        ["--share-screen", "--max-size", "640x360", "--duration", "6"].map(std::ffi::OsStr::new);
    let envs = [
        ("DBUS_SESSION_BUS_ADDRESS", desktop.bus()),
        ("WAYLAND_DISPLAY", "wayland-hushtest"),
        ("DISPLAY", ""),
    ];
    let (their_sas, snapshot, records) =
        call_linphonec(&dir.path().join("profile"), &mut bob, &args, &envs);
    shows_our_bars(&snapshot)
        .unwrap_or_else(|e| panic!("linphonec's picture: {e}\n{}", desktop.logs()));
    assert_all_streams_keyed(&bob);
    assert_same_sas(&records, &their_sas);
    assert_eq!(desktop.starts(), 1, "one share granted by the portal");
    let screen = records
        .iter()
        .rfind(|r| r["type"] == "stats" && r["stream"] == "screen")
        .unwrap_or_else(|| panic!("no screen stats line: {records:?}"));
    assert!(
        screen["captured"].as_u64().expect("captured") >= 10,
        "{screen}"
    );
}
