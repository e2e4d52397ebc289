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
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}'s recording: {e}"));
    let mut y4m = Y4mReader::new(file, false).expect("y4m");
    let mut markers = std::collections::BTreeSet::new();
    let mut frames = 0;
    while let Some(p) = y4m.next_frame().expect("frame") {
        assert_eq!((p.width(), p.height()), (640, 480), "{who}");
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
