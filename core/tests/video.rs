//! Video calls through the phone core, as the CLI and the window place them: a direct
//! call between two phones on loopback, each sending the moving test pattern and
//! recording the other's, every stream keyed by ZRTP (video in multistream mode).

use hush_core::command::{MediaChoice, SinkSpec, SourceSpec, VideoChoice, VideoSourceSpec};
use hush_core::model::EncryptionPolicy;
use hush_core::snapshot::{CallId, CallState, StreamKind};
use hush_core::{CallSecurity, Command, Phone, Profile, Reply};
use hush_media::video::{TestPattern, VideoSource, Y4mReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn phone(dir: &Path) -> Phone {
    Phone::start(Profile::open(dir).expect("profile")).expect("phone")
}

fn with_video(record: PathBuf) -> MediaChoice {
    MediaChoice {
        source: SourceSpec::Tone(440.0),
        sink: SinkSpec::Null,
        video: Some(VideoChoice {
            source: VideoSourceSpec::Pattern,
            record: Some(record),
        }),
    }
}

/// Polls the snapshot (bounded) until `f` holds for the call (`None`: no such call,
/// or no longer listed).
fn until(
    phone: &Phone,
    call: CallId,
    what: &str,
    f: impl Fn(Option<&hush_core::snapshot::CallView>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rx = phone.events();
    loop {
        let snap = phone.snapshot();
        if f(snap.calls.iter().find(|c| c.id == call)) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} within 20 s: {:?}", snap.calls);
        // Any event may change the snapshot: wait for the next one (bounded).
        let _ = phone.next_event(&mut rx, left.min(Duration::from_millis(500)));
    }
}

/// Every picture of a recording shows the pattern, and the marker moved.
fn check_recording(path: &Path, who: &str) -> usize {
    check_recording_of(path, who, (640, 480))
}

fn check_recording_of(path: &Path, who: &str, size: (u32, u32)) -> usize {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}'s recording: {e}"));
    let mut y4m = Y4mReader::new(file, false).expect("y4m");
    let mut markers = std::collections::BTreeSet::new();
    let mut frames = 0;
    while let Some(p) = y4m.next_frame().expect("frame") {
        assert_eq!((p.width(), p.height()), size, "{who}");
        assert!(TestPattern::shows_bars(&p, 24), "{who}: frame {frames}");
        markers.insert(TestPattern::find_marker(&p).expect("marker"));
        frames += 1;
    }
    assert!(markers.len() >= 5, "{who}: the marker moved ({markers:?})");
    frames
}

#[test]
fn a_direct_video_call_sends_and_records_pictures_both_ways_all_keyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_rec, b_rec) = (dir.path().join("a.y4m"), dir.path().join("b.y4m"));
    let callee = phone(&dir.path().join("b"));
    let Reply::Listening(addr) = callee
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(with_video(b_rec.clone())),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected Listening")
    };
    let caller = phone(&dir.path().join("a"));
    let Reply::Call(call) = caller
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{addr}"),
            audio: with_video(a_rec.clone()),
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    // Both streams run, each secure, with one SAS: the call's.
    until(&caller, call, "secure audio and video", |c| {
        let Some(c) = c else { return false };
        c.state == CallState::Connected
            && c.streams.len() == 2
            && c.streams
                .iter()
                .all(|s| matches!(s.security, CallSecurity::Secure { .. }))
    });
    let snap = caller.snapshot();
    let view = snap.calls.iter().find(|c| c.id == call).expect("call");
    let kinds: Vec<StreamKind> = view.streams.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StreamKind::Audio, StreamKind::Video]);
    assert_eq!(view.streams[1].codec.as_deref(), Some("VP8"));
    let sas: Vec<_> = view
        .streams
        .iter()
        .map(|s| match &s.security {
            CallSecurity::Secure { sas, .. } => sas.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sas[0], sas[1]);
    assert!(matches!(view.security, CallSecurity::Secure { .. }));
    // Pictures flow: the video stream's packets are counted both ways.
    until(&caller, call, "video packets", |c| {
        c.and_then(|c| c.streams.get(1))
            .and_then(|s| s.stats)
            .is_some_and(|s| s.packets_received > 100 && s.packets_sent > 100 && s.refused == 0)
    });
    let answered = callee
        .snapshot()
        .calls
        .first()
        .expect("the callee's call")
        .id;
    caller
        .execute_blocking(Command::Hangup { call })
        .expect("hang up");
    // The recordings are complete once each side's media thread has ended.
    let ended = |c: Option<&hush_core::snapshot::CallView>| {
        c.is_none_or(|c| matches!(c.state, CallState::Ended(_)))
    };
    until(&caller, call, "the end", ended);
    until(&callee, answered, "the end at the callee", ended);
    let a_frames = check_recording(&a_rec, "the caller");
    let b_frames = check_recording(&b_rec, "the callee");
    assert!(
        a_frames >= 20 && b_frames >= 20,
        "{a_frames} and {b_frames} pictures"
    );
}

fn audio_only() -> MediaChoice {
    MediaChoice {
        source: SourceSpec::Tone(440.0),
        sink: SinkSpec::Null,
        video: None,
    }
}

/// The call's video stream view, once it runs.
fn video_of(
    c: Option<&hush_core::snapshot::CallView>,
) -> Option<&hush_core::snapshot::MediaStreamView> {
    c?.streams
        .iter()
        .find(|s| matches!(s.kind, StreamKind::Video | StreamKind::Screen))
}

fn keyed(c: Option<&hush_core::snapshot::CallView>) -> bool {
    c.is_some_and(|c| {
        c.streams.len() == 2
            && c.streams
                .iter()
                .all(|s| matches!(s.security, CallSecurity::Secure { .. }))
    })
}

/// The newest picture `phone` shows of the peer shows the pattern (bounded wait).
fn shows_pattern(phone: &Phone, call: CallId, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rx = phone.events();
    loop {
        let picture = phone
            .pictures(call)
            .and_then(|p| p.theirs.lock().ok().and_then(|s| s.clone()));
        if let Some(p) = picture
            && TestPattern::shows_bars(&p, 24)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} shows no pattern within 20 s"
        );
        let _ = phone.next_event(&mut rx, Duration::from_millis(200));
    }
}

#[test]
fn video_is_added_to_an_audio_call_removed_and_added_again_by_re_invite_all_keyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("seen.y4m");
    let callee = phone(&dir.path().join("b"));
    let Reply::Listening(addr) = callee
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: None,
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected Listening")
    };
    // Subscribed before the call is placed, so its ringing cannot be missed.
    let mut rx = callee.events();
    let caller = phone(&dir.path().join("a"));
    let Reply::Call(call) = caller
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{addr}"),
            audio: audio_only(),
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    // The callee answers the voice call, ready for video (a camera chosen, and a
    // recording of what it is shown).
    let theirs = loop {
        match callee.next_event(&mut rx, Duration::from_secs(20)) {
            Some(hush_core::Event::CallIncoming { call, .. }) => break call,
            Some(_) => {}
            None => panic!("no incoming call"),
        }
    };
    callee
        .execute_blocking(Command::Answer {
            call: theirs,
            audio: with_video(seen.clone()),
        })
        .expect("answer");
    until(&caller, call, "a secure audio call", |c| {
        c.is_some_and(|c| matches!(c.security, CallSecurity::Secure { .. }) && c.streams.len() == 1)
    });
    for round in 0..2 {
        // Added by the caller: keyed in multistream from the call's exchange, with
        // its SAS; the callee watches, its camera off until it turns it on.
        caller
            .execute_blocking(Command::Video {
                call,
                on: true,
                camera: None,
            })
            .expect("add video");
        until(&caller, call, "keyed video", keyed);
        until(&callee, theirs, "keyed video at the callee", keyed);
        until(&callee, theirs, "pictures at the callee", |c| {
            video_of(c)
                .and_then(|v| v.stats)
                .is_some_and(|s| s.packets_received > 30)
        });
        shows_pattern(&callee, theirs, "the callee");
        let snap = callee.snapshot();
        let v = video_of(snap.calls.iter().find(|c| c.id == theirs)).expect("video");
        assert!(!v.sending, "round {round}: the callee's camera stays off");
        assert_eq!(v.stats.map(|s| s.packets_sent), Some(0), "round {round}");
        let sas: Vec<Option<String>> = snap.calls[0]
            .streams
            .iter()
            .map(|s| s.security.sas().map(str::to_owned))
            .collect();
        assert_eq!(sas[0], sas[1]);
        // Removed: both sides back to audio, still secure.
        caller
            .execute_blocking(Command::Video {
                call,
                on: false,
                camera: None,
            })
            .expect("remove video");
        until(&callee, theirs, "audio alone at the callee", |c| {
            c.is_some_and(|c| c.streams.len() == 1 && c.security.is_encrypted())
        });
        until(&caller, call, "audio alone", |c| {
            c.is_some_and(|c| c.streams.len() == 1)
        });
    }
    // The callee turns its camera on in the video the caller added: its pictures flow.
    caller
        .execute_blocking(Command::Video {
            call,
            on: true,
            camera: None,
        })
        .expect("add video");
    until(&callee, theirs, "keyed video at the callee", keyed);
    callee
        .execute_blocking(Command::Camera {
            call: theirs,
            on: true,
        })
        .expect("camera on");
    shows_pattern(&caller, call, "the caller");
    caller
        .execute_blocking(Command::Hangup { call })
        .expect("hang up");
    until(&callee, theirs, "the end at the callee", |c| {
        c.is_none_or(|c| matches!(c.state, CallState::Ended(_)))
    });
    // Each video stream recorded to a file of its own: none overwrote another.
    for name in ["seen.y4m", "seen-2.y4m", "seen-3.y4m"] {
        let file = std::fs::File::open(dir.path().join(name)).expect(name);
        let mut y4m = Y4mReader::new(file, false).expect("y4m");
        let mut frames = 0;
        while let Some(p) = y4m.next_frame().expect("frame") {
            assert!(TestPattern::shows_bars(&p, 24), "{name}: frame {frames}");
            frames += 1;
        }
        assert!(frames >= 1, "{name}: no pictures");
    }
}

/// The whole of `x`'s screen, sent at most 640×480.
/// Stops sharing the screen in `call`.
fn stop_sharing(phone: &Phone, call: CallId) {
    phone
        .execute_blocking(Command::ShareScreen {
            call,
            on: false,
            screen: None,
        })
        .expect("stop sharing");
}

fn screen_of(x: &hush_harness::Xvfb) -> hush_core::command::ScreenSpec {
    hush_core::command::ScreenSpec {
        display: Some(x.display().to_owned()),
        max_size: (640, 480),
        ..hush_core::command::ScreenSpec::default()
    }
}

#[test]
fn a_shared_screen_reaches_the_other_phone_keyed_scaled_and_moving() {
    let (w, h) = (1280, 720);
    let x = hush_harness::Xvfb::start(w, h).expect("Xvfb");
    let pattern = TestPattern::new(w, h, 15).expect("pattern");
    x.draw(&pattern.frame(0).to_bgrx()).expect("draw");
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("seen.y4m");
    let callee = phone(&dir.path().join("b"));
    let Reply::Listening(addr) = callee
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(with_video(seen.clone())),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected Listening")
    };
    let caller = phone(&dir.path().join("a"));
    let share = MediaChoice {
        video: Some(VideoChoice {
            source: VideoSourceSpec::Screen(screen_of(&x)),
            record: None,
        }),
        ..audio_only()
    };
    let Reply::Call(call) = caller
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{addr}"),
            audio: share,
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    until(&caller, call, "a keyed screen share", keyed);
    let theirs = callee
        .snapshot()
        .calls
        .first()
        .expect("the callee's call")
        .id;
    until(&callee, theirs, "the screen shown as a screen", |c| {
        keyed(c) && c.is_some_and(|c| c.streams[1].kind == StreamKind::Screen)
    });
    // The screen changes while shared: the marker moves across it.
    for i in 1..=12 {
        x.draw(&pattern.frame(i * 8).to_bgrx()).expect("draw");
        std::thread::sleep(Duration::from_millis(150));
    }
    until(&callee, theirs, "pictures of the screen", |c| {
        video_of(c)
            .and_then(|v| v.stats)
            .and_then(|s| s.video)
            .is_some_and(|v| v.frames_decoded >= 8)
    });
    caller
        .execute_blocking(Command::Hangup { call })
        .expect("hang up");
    let ended = |c: Option<&hush_core::snapshot::CallView>| {
        c.is_none_or(|c| matches!(c.state, CallState::Ended(_)))
    };
    until(&callee, theirs, "the end at the callee", ended);
    // 1280x720 scaled to fit 640x480: 640x360, every picture the bars.
    let frames = check_recording_of(&seen, "the viewer", (640, 360));
    assert!(frames >= 8, "{frames} pictures");
}

/// The size of the newest picture `phone` shows of the peer, once it is `size` and
/// shows the bars (bounded wait).
fn shows_pattern_at(phone: &Phone, call: CallId, size: (u32, u32), who: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rx = phone.events();
    loop {
        let picture = phone
            .pictures(call)
            .and_then(|p| p.theirs.lock().ok().and_then(|s| s.clone()));
        if let Some(p) = &picture
            && (p.width(), p.height()) == size
            && TestPattern::shows_bars(p, 24)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} shows no {size:?} pattern within 20 s (last {:?})",
            picture.map(|p| (p.width(), p.height()))
        );
        let _ = phone.next_event(&mut rx, Duration::from_millis(200));
    }
}

#[test]
fn a_video_call_switches_camera_to_screen_and_back_by_re_invite() {
    let x = hush_harness::Xvfb::start(1280, 720).expect("Xvfb");
    let pattern = TestPattern::new(1280, 720, 15).expect("pattern");
    x.draw(&pattern.frame(0).to_bgrx()).expect("draw");
    let dir = tempfile::tempdir().expect("tempdir");
    let callee = phone(&dir.path().join("b"));
    let Reply::Listening(addr) = callee
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(with_video(dir.path().join("b.y4m"))),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected Listening")
    };
    let caller = phone(&dir.path().join("a"));
    let Reply::Call(call) = caller
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{addr}"),
            audio: with_video(dir.path().join("a.y4m")),
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    until(&caller, call, "a keyed video call", keyed);
    let theirs = callee
        .snapshot()
        .calls
        .first()
        .expect("the callee's call")
        .id;
    // The camera (the 640x480 pattern) first.
    shows_pattern_at(&callee, theirs, (640, 480), "the callee");
    caller
        .execute_blocking(Command::ShareScreen {
            call,
            on: true,
            screen: Some(screen_of(&x)),
        })
        .expect("share the screen");
    // The screen (1280x720, scaled to 640x360), shown as a screen, still keyed.
    shows_pattern_at(&callee, theirs, (640, 360), "the callee");
    until(&callee, theirs, "the stream labelled a screen", |c| {
        keyed(c) && video_of(c).is_some_and(|v| v.kind == StreamKind::Screen)
    });
    until(&caller, call, "our sharing shown", |c| {
        c.is_some_and(|c| c.sharing_screen)
    });
    // And back to the camera.
    stop_sharing(&caller, call);
    shows_pattern_at(&callee, theirs, (640, 480), "the callee");
    until(&callee, theirs, "the stream labelled video again", |c| {
        keyed(c) && video_of(c).is_some_and(|v| v.kind == StreamKind::Video)
    });
    assert!(caller.snapshot().calls.iter().all(|c| !c.sharing_screen));
    // Shared again, then the video stopped: sharing ends with it. Shared in the voice
    // call that is left, then stopped: the video goes (there was none before), and
    // the screen never comes back as "the camera".
    let share = Command::ShareScreen {
        call,
        on: true,
        screen: Some(screen_of(&x)),
    };
    caller.execute_blocking(share.clone()).expect("share again");
    let share_again = share.clone();
    shows_pattern_at(&callee, theirs, (640, 360), "the callee");
    caller
        .execute_blocking(Command::Video {
            call,
            on: false,
            camera: None,
        })
        .expect("stop video");
    until(&caller, call, "no video, no sharing", |c| {
        c.is_some_and(|c| c.streams.len() == 1 && !c.sharing_screen)
    });
    until(&callee, theirs, "no video at the callee", |c| {
        c.is_some_and(|c| c.streams.len() == 1)
    });
    caller
        .execute_blocking(share)
        .expect("share in a voice call");
    until(&callee, theirs, "a keyed screen at the callee", |c| {
        keyed(c) && video_of(c).is_some_and(|v| v.kind == StreamKind::Screen)
    });
    until(&caller, call, "our sharing shown", |c| {
        c.is_some_and(|c| c.sharing_screen)
    });
    stop_sharing(&caller, call);
    until(&callee, theirs, "a voice call again at the callee", |c| {
        c.is_some_and(|c| c.streams.len() == 1)
    });
    until(&caller, call, "a voice call again", |c| {
        c.is_some_and(|c| c.streams.len() == 1 && !c.sharing_screen)
    });
    // Video started again with another camera (a 320x240 file, not the call's
    // 640x480 pattern): sent, and what sharing goes back to.
    let other = dir.path().join("other-camera.y4m");
    let mut file =
        hush_media::video::Y4mWriter::new(std::fs::File::create(&other).expect("camera file"), 15);
    let small = TestPattern::new(320, 240, 15).expect("pattern");
    for i in 0..15 {
        file.write(&small.frame(i)).expect("write");
    }
    file.finish().expect("finish");
    caller
        .execute_blocking(Command::Video {
            call,
            on: true,
            camera: Some(VideoSourceSpec::File(other)),
        })
        .expect("start video with another camera");
    shows_pattern_at(&callee, theirs, (320, 240), "the callee");
    caller
        .execute_blocking(share_again)
        .expect("share once more");
    shows_pattern_at(&callee, theirs, (640, 360), "the callee");
    stop_sharing(&caller, call);
    shows_pattern_at(&callee, theirs, (320, 240), "the callee");
    // A screen is no camera.
    assert!(
        caller
            .execute_blocking(Command::Video {
                call,
                on: true,
                camera: Some(VideoSourceSpec::Screen(screen_of(&x))),
            })
            .is_err()
    );
    caller
        .execute_blocking(Command::Hangup { call })
        .expect("hang up");
}
