//! The window's call journeys driven by a real second phone: an incoming call shows the
//! security policy and can be answered (it becomes secure with a SAS) or declined (the
//! caller is told), the start page's echo test can be reached with the keyboard, and a
//! verified address that comes back with another key gets its own warning.

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
use hush_core::model::EncryptionPolicy;
use hush_core::snapshot::CallState;
use hush_core::{CallSecurity, Command, Event, Phone, Profile, Reply};
use hush_ui::HushApp;

mod common;
use common::{has, tone, until};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn phone(dir: &std::path::Path) -> Arc<Phone> {
    Arc::new(Phone::start(Profile::open(dir).expect("profile")).expect("phone"))
}

/// Waits (bounded) for `caller`'s call to end and returns why.
fn ended(events: &mut tokio::sync::broadcast::Receiver<Event>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match events.try_recv() {
            Ok(Event::CallState {
                state: CallState::Ended(why),
                ..
            }) => return why,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("events: {e}"),
        }
    }
    panic!("the caller's call did not end within 20 s");
}

#[test]
fn an_incoming_call_shows_its_policy_and_is_answered_or_declined() {
    let dir = tempfile::tempdir().expect("tempdir");
    let caller = phone(&dir.path().join("caller"));
    let callee = phone(&dir.path().join("callee"));
    let Reply::Listening(addr) = callee
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: None,
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected an address")
    };
    let mut app = HushApp::new(callee.clone()).with_audio(tone());
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();

    let mut caller_events = caller.events();
    let place = || {
        caller
            .execute_blocking(Command::PlaceCall {
                account: None,
                target: format!("alice@{addr}"),
                audio: tone(),
                policy: None,
            })
            .expect("call")
    };
    place();
    until(&mut h, &callee, "the incoming-call prompt", |h| {
        has(h, "This call will be encrypted")
    });
    h.get_by_label("Answer").click();
    until(&mut h, &callee, "a secure call with its code", |h| {
        has(h, "Security code")
    });
    let call = callee.snapshot().calls.first().cloned().expect("the call");
    assert!(
        matches!(call.security, CallSecurity::Secure { .. }),
        "{:?}",
        call.security
    );
    h.get_by_label("Hang up").click();
    h.run_ok();
    assert_eq!(ended(&mut caller_events), "the other side hung up");

    place();
    until(&mut h, &callee, "the second prompt", |h| has(h, "Decline"));
    h.get_by_label("Decline").click();
    h.run_ok();
    assert_eq!(ended(&mut caller_events), "declined");
    until(&mut h, &callee, "the declined call shown as ended", |h| {
        !has(h, "Decline")
    });
}

#[test]
fn the_echo_test_is_reachable_with_the_keyboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut app = HushApp::new(phone.clone()).with_audio(tone());
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    // Tab moves through the widgets in order; stop on the echo-test button.
    let mut steps = 0;
    while !h.get_by_label("Try a secure echo test").is_focused() {
        steps += 1;
        assert!(steps < 40, "the echo test button is not reachable with Tab");
        h.key_press(egui::Key::Tab);
        h.run_ok();
    }
    h.key_press(egui::Key::Enter);
    until(
        &mut h,
        &phone,
        "an echo call started from the keyboard",
        |h| has(h, "Security code"),
    );
}

#[test]
fn settings_meter_the_microphone_and_play_the_test_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(&dir.path().join("p"));
    let heard = dir.path().join("speaker.wav");
    // A tone stands in for the microphone and a file for the speaker (no sound card).
    let mut app = HushApp::new(phone.clone()).with_audio(MediaChoice {
        source: SourceSpec::Tone(1000.0),
        sink: SinkSpec::Wav(heard.clone()),
        video: None,
    });
    app.open_page("settings");
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Play a test tone").click();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        h.run_ok();
        let loud = h
            .query_all_by_label_contains("Microphone level")
            .filter_map(|n| {
                let label = n.accesskit_node().label()?.to_string();
                label.split_whitespace().nth(2)?.parse::<u32>().ok()
            })
            .any(|pct| pct >= 50);
        if loud {
            break;
        }
        assert!(Instant::now() < deadline, "no level shown within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1200));
    h.get_by_label("Stop the check").click();
    h.run_ok();
    // The stop is asynchronous: wait until the WAV is finished, then listen to it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (samples, rate) = loop {
        match hush_media::audio::read_recording(&heard) {
            Ok((s, r)) if s.len() >= r as usize => break (s, r),
            _ => {
                assert!(Instant::now() < deadline, "no recording within 10 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(
        hush_media::analysis::dominant_frequency(&samples[..rate as usize / 2], rate),
        440.0,
        "the test tone reached the speaker"
    );

    // The real sound card is missing here: the check says so instead of failing silently.
    h.get_by_label("Microphone and speaker (system default)")
        .click();
    h.run_ok();
    // The sound cards are listed to choose from; here there are none, and it says so.
    until(&mut h, &phone, "the device list", |h| {
        has(h, "No sound card found") || has(h, "Speaker")
    });
    if hush_media::audio::device_names() == (Vec::new(), Vec::new()) {
        assert!(has(&h, "No sound card found"));
    }
    h.get_by_label("Check the microphone").click();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has(&h, "Audio check failed") && !has(&h, "Microphone level") {
        assert!(Instant::now() < deadline, "no outcome within 10 s");
        std::thread::sleep(Duration::from_millis(50));
        h.run_ok();
    }
    if has(&h, "Audio check failed") {
        assert!(has(&h, "no usable audio"), "the error names the problem");
    }
}

/// Starts a built-in echo peer on `phone` (it answers as `echo`).
fn echo_peer(phone: &Phone) -> std::net::SocketAddr {
    let Reply::Listening(addr) = phone
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(MediaChoice {
                source: SourceSpec::Echo,
                sink: SinkSpec::Null,
                video: None,
            }),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected an address")
    };
    addr
}

/// Opens the window on `phone`'s calls page, dials `target`, waits for `expect` on the
/// call card, picks the half of the code we heard, and hangs up once verified.
fn dial_and_confirm(phone: &Arc<Phone>, target: &str, expect: &[&str]) {
    let mut app = HushApp::new(phone.clone()).with_audio(tone());
    app.open_page("calls");
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Call address").click();
    h.run_ok();
    h.get_by_label("Call address").type_text(target);
    h.run_ok();
    h.get_by_label("Call").click();
    until(&mut h, phone, expect[0], |h| has(h, expect[0]));
    for e in expect {
        assert!(has(&h, e), "{e}");
    }
    let call = phone
        .snapshot()
        .calls
        .iter()
        .filter(|c| !c.automatic)
        .max_by_key(|c| c.id.0)
        .cloned()
        .expect("our call");
    let sas = call.security.sas().expect("a code").to_owned();
    let hear = sas
        .chars()
        .skip(sas.chars().count() / 2)
        .collect::<String>()
        .to_uppercase();
    h.get_by_label(&format!("They said {hear}")).click();
    until(&mut h, phone, "verified", |h| {
        has(h, "Encrypted and verified")
    });
    assert!(
        !has(&h, "Warning: a new key"),
        "comparing the code cleared the warning"
    );
    h.get_by_label("Hang up").click();
    until(&mut h, phone, "the call ended", |h| has(h, "Ended:"));
}

/// After the user verified an address, another key for it is its own state in the
/// window (violet, a key icon, its own words), and comparing the code clears it.
#[test]
fn a_verified_contact_on_a_new_key_gets_its_own_warning_until_compared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = phone(&dir.path().join("alice"));
    let bob = phone(&dir.path().join("bob"));
    let mallory = phone(&dir.path().join("mallory"));
    let (at_bob, at_mallory) = (echo_peer(&bob), echo_peer(&mallory));
    dial_and_confirm(
        &alice,
        &format!("echo@{at_bob}"),
        &["Compare the code with your peer"],
    );
    dial_and_confirm(
        &alice,
        &format!("echo@{at_mallory}"),
        &[
            "New key for a verified contact: compare the code aloud",
            "Warning: a new key",
            "Read this to your peer",
        ],
    );
}

#[test]
fn the_video_test_shows_both_pictures_keyed_and_the_camera_turns_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut app = HushApp::new(phone.clone()).with_audio(tone());
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    let mut events = phone.events();
    h.get_by_label("Calls").click();
    h.run_ok();
    h.get_by_label("Try a secure video test").click();
    until(&mut h, &phone, "both pictures", |h| {
        has(h, "Their video") && has(h, "Your video")
    });
    let snap = phone.snapshot();
    let call = snap
        .calls
        .iter()
        .find(|c| !c.automatic)
        .expect("the video test call");
    let kinds: Vec<_> = call.streams.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            hush_core::snapshot::StreamKind::Audio,
            hush_core::snapshot::StreamKind::Video
        ]
    );
    assert!(
        call.streams
            .iter()
            .all(|s| matches!(s.security, CallSecurity::Secure { .. })),
        "{:?}",
        call.streams
    );
    assert!(
        call.algorithms
            .as_deref()
            .is_some_and(|a| !a.starts_with("Mult")),
        "the call shows its key exchange, not the multistream one: {:?}",
        call.algorithms
    );
    let id = call.id;
    h.get_by_label("Camera off").click_accesskit();
    until(&mut h, &phone, "the camera button turned", |h| {
        has(h, "Camera on")
    });
    // No more pictures leave: the video stream's count stays put between reports
    // (the first report after the click may still count the last picture).
    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent.len() < 3 && Instant::now() < deadline {
        match events.try_recv() {
            Ok(Event::CallStats {
                call,
                kind: hush_core::snapshot::StreamKind::Video,
                stats,
            }) if call == id => sent.push(stats.video.expect("video figures").frames_sent),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("events: {e}"),
        }
    }
    assert_eq!(sent.len(), 3, "video reports came");
    assert_eq!(sent[1], sent[2], "the camera is off: {sent:?}");
    // The video ends by re-INVITE; the call goes on with audio and may add it again.
    h.run();
    h.get_by_label("Stop video").click_accesskit();
    until(&mut h, &phone, "the video ended", |h| has(h, "Start video"));
    let streams = |phone: &hush_core::Phone| {
        phone
            .snapshot()
            .calls
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.streams.len())
    };
    assert_eq!(streams(&phone), Some(1));
    h.get_by_label("Start video").click_accesskit();
    until(&mut h, &phone, "the video added again, keyed", |_| {
        phone.snapshot().calls.iter().any(|c| {
            c.id == id
                && c.streams.len() == 2
                && c.streams
                    .iter()
                    .all(|s| matches!(s.security, CallSecurity::Secure { .. }))
        })
    });
    until(&mut h, &phone, "the camera button back", |h| {
        has(h, "Camera off")
    });
}

#[test]
fn sharing_the_screen_shows_a_bar_that_cannot_be_missed_and_stops_in_one_click() {
    let x = hush_harness::Xvfb::start(1280, 720).expect("Xvfb");
    let pattern = hush_media::video::TestPattern::new(1280, 720, 15).expect("pattern");
    x.draw(&pattern.frame(0).to_bgrx()).expect("draw");
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut app = HushApp::new(phone.clone()).with_audio(tone()).with_screen(
        hush_core::command::ScreenSpec {
            display: Some(x.display().to_owned()),
            ..hush_core::command::ScreenSpec::default()
        },
    );
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Calls").click();
    h.run_ok();
    h.get_by_label("Try a secure video test").click();
    until(&mut h, &phone, "a keyed video test", |_| {
        phone.snapshot().calls.iter().any(|c| {
            !c.automatic
                && c.streams.len() == 2
                && c.streams
                    .iter()
                    .all(|s| matches!(s.security, CallSecurity::Secure { .. }))
        })
    });
    assert!(!has(&h, "You are sharing your screen"));
    h.run();
    h.get_by_label("Share screen").click_accesskit();
    until(&mut h, &phone, "the sharing bar", |h| {
        has(h, "You are sharing your screen")
    });
    let call = phone
        .snapshot()
        .calls
        .iter()
        .find(|c| !c.automatic)
        .map(|c| c.id)
        .expect("our call");
    // What the echo peer receives is now the screen (16:9), not the camera's 4:3.
    until(&mut h, &phone, "the screen received by the peer", |_| {
        phone.snapshot().calls.iter().any(|c| {
            c.automatic
                && c.streams
                    .get(1)
                    .and_then(|s| s.stats)
                    .and_then(|s| s.video)
                    .is_some_and(|v| (v.width, v.height) == (1280, 720))
        })
    });
    // The bar's button stops it; the call goes on with the camera.
    h.run();
    h.query_all_by_label("Stop sharing")
        .next()
        .expect("the bar's Stop sharing")
        .click_accesskit();
    until(&mut h, &phone, "the bar gone", |h| {
        !has(h, "You are sharing your screen")
    });
    // And the peer gets the camera's pictures again, not the screen.
    until(&mut h, &phone, "the camera received by the peer", |_| {
        phone.snapshot().calls.iter().any(|c| {
            c.automatic
                && c.streams
                    .get(1)
                    .and_then(|s| s.stats)
                    .and_then(|s| s.video)
                    .is_some_and(|v| (v.width, v.height) == (640, 480))
        })
    });
    assert!(
        phone
            .snapshot()
            .calls
            .iter()
            .any(|c| c.id == call && c.streams.len() == 2 && !c.sharing_screen)
    );
}

#[test]
fn a_screen_the_peer_shares_is_fitted_or_shown_at_100_percent() {
    let x = hush_harness::Xvfb::start(1280, 720).expect("Xvfb");
    let pattern = hush_media::video::TestPattern::new(1280, 720, 15).expect("pattern");
    x.draw(&pattern.frame(0).to_bgrx()).expect("draw");
    let dir = tempfile::tempdir().expect("tempdir");
    // The peer: a phone that answers by sharing its screen.
    let sharer = phone(&dir.path().join("sharer"));
    let Ok(hush_core::Reply::Listening(addr)) = sharer.execute_blocking(Command::Listen {
        addr: "127.0.0.1:0".parse().expect("addr"),
        auto_answer: Some(hush_core::command::MediaChoice {
            video: Some(hush_core::command::VideoChoice {
                source: hush_core::command::VideoSourceSpec::Screen(
                    hush_core::command::ScreenSpec {
                        display: Some(x.display().to_owned()),
                        ..hush_core::command::ScreenSpec::default()
                    },
                ),
                record: None,
            }),
            ..tone()
        }),
        policy: hush_core::model::EncryptionPolicy::Mandatory,
    }) else {
        panic!("listen")
    };
    let phone = phone(&dir.path().join("viewer"));
    let mut app = HushApp::new(phone.clone()).with_audio(tone());
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    phone.send(Command::PlaceCall {
        account: None,
        target: format!("sharer@{addr}"),
        audio: hush_core::command::MediaChoice {
            video: Some(hush_core::command::VideoChoice {
                source: hush_core::command::VideoSourceSpec::Pattern,
                record: None,
            }),
            ..tone()
        },
        policy: None,
    });
    h.get_by_label("Calls").click();
    until(&mut h, &phone, "their screen shown, fitted", |h| {
        has(h, "Their screen:") && has(h, "Their video")
    });
    let width = |h: &Harness<'_>| h.get_by_label("Their video").rect().width();
    assert!(width(&h) <= 481.0, "fitted: {}", width(&h));
    h.get_by_label("100 %").click_accesskit();
    until(&mut h, &phone, "their screen at 100 %", |h| {
        width(h) > 1000.0
    });
    h.get_by_label("Fit").click_accesskit();
    until(&mut h, &phone, "their screen fitted again", |h| {
        width(h) <= 481.0
    });
}
