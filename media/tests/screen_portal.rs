//! Screen sharing through the desktop portal: the real `xdg-desktop-portal` frontend
//! and PipeWire, on a private session bus, with a portal backend whose screen paints
//! the test pattern (see `hush_harness::PortalDesktop` for why the backend is ours).
#![cfg(feature = "portal")]

use hush_harness::{PortalDesktop, ScreenMemory, TestScreen};
use hush_media::screen::{PortalOptions, ScreenSource};
use hush_media::video::{I420Frame, TestPattern, VideoSource};
use std::time::{Duration, Instant};

/// A desktop whose screen shows the pattern's pictures, the marker moving with each
/// (in RGBx with padded rows, in memfds of its own as compositors hand out: the
/// interop test shares a BGRx screen in PipeWire's memory).
fn desktop(width: u32, height: u32, memory: ScreenMemory) -> PortalDesktop {
    let pattern = TestPattern::new(width, height, 15).expect("pattern");
    PortalDesktop::start(
        TestScreen {
            width,
            height,
            fps: 15,
            rgbx: true,
            memory,
        },
        Box::new(move |n| pattern.frame(n).to_bgrx()),
    )
    .expect("portal desktop")
}

/// The screen through the portal on the session bus at `bus`, for a 640×360 call.
fn share_on(bus: &str) -> ScreenSource {
    ScreenSource::open_portal(
        &PortalOptions {
            bus: Some(bus.to_owned()),
            cursor: true,
        },
        (640, 360),
        15,
    )
    .expect("open")
}

/// The source's next picture that passes `until`, or its failure, within `limit`.
fn next(
    screen: &mut ScreenSource,
    limit: Duration,
    until: impl Fn(&I420Frame) -> bool,
) -> Result<I420Frame, String> {
    let deadline = Instant::now() + limit;
    loop {
        match screen.next_frame() {
            Ok(Some(p)) if until(&p) => return Ok(p),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        if Instant::now() > deadline {
            return Err(format!("no such picture in {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(1000 / 15));
    }
}

#[test]
fn the_portal_shares_the_granted_screen_moving_and_says_when_the_desktop_ends_it() {
    let (w, h) = (1280, 720);
    let mut desktop = desktop(w, h, ScreenMemory::Memfd);
    let started = Instant::now();
    let mut screen = share_on(desktop.bus());
    // Opening waits for nobody (on a real desktop, the user picks in a dialog first).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(screen.size(), (640, 360));
    let first = next(&mut screen, Duration::from_secs(15), |_| true)
        .unwrap_or_else(|e| panic!("{e}\n{}", desktop.logs()));
    assert!(TestPattern::shows_bars(&first, 24), "the screen's bars");
    let at = TestPattern::find_marker(&first).expect("marker");
    let moved = next(&mut screen, Duration::from_secs(5), |p| {
        TestPattern::find_marker(p).is_some_and(|m| m.abs_diff(at) > 8)
    })
    .expect("the marker moves");
    assert!(TestPattern::shows_bars(&moved, 24));
    assert!(screen.stats().captured >= 2);
    assert_eq!(desktop.starts(), 1);
    assert_eq!(
        desktop.cursor_modes(),
        vec![Some(ashpd_cursor_embedded())],
        "the cursor is asked to be drawn in"
    );
    // The user stops sharing from the desktop: the call is told, in words.
    desktop.end_screen();
    let e = next(&mut screen, Duration::from_secs(10), |_| false).expect_err("ended");
    assert!(e.contains("ended the share"), "{e}");
}

fn ashpd_cursor_embedded() -> hush_harness::CursorMode {
    hush_harness::CursorMode::Embedded
}

#[test]
fn a_share_cancelled_in_the_dialog_or_without_a_bus_or_portal_is_said() {
    let desktop = desktop(640, 360, ScreenMemory::Memfd);
    desktop.refuse_next();
    let mut screen = share_on(desktop.bus());
    let e = next(&mut screen, Duration::from_secs(15), |_| true).expect_err("cancelled");
    assert!(e.contains("cancelled in the desktop's dialog"), "{e}");
    assert_eq!(desktop.starts(), 0);

    let gone = tempfile::tempdir().expect("tempdir");
    let mut screen = share_on(&format!("unix:path={}", gone.path().join("bus").display()));
    let e = next(&mut screen, Duration::from_secs(10), |_| true).expect_err("no bus");
    assert!(e.contains("the session bus at"), "{e}");

    // A session bus without any portal on it (a bare compositor's session).
    let bare = hush_harness::SessionBus::start().expect("bus");
    let mut screen = share_on(bare.address());
    let e = next(&mut screen, Duration::from_secs(30), |_| true).expect_err("no portal");
    assert!(e.contains("no desktop portal answers"), "{e}");
}

#[test]
fn a_desktop_whose_shared_memory_is_shorter_than_it_claims_is_refused_not_read() {
    // Reading past the end of such a file would kill the whole process (SIGBUS).
    let desktop = desktop(640, 360, ScreenMemory::ShortMemfd);
    let mut screen = share_on(desktop.bus());
    let e = next(&mut screen, Duration::from_secs(15), |_| true).expect_err("refused");
    assert!(
        e.contains("cannot be read") && e.contains("shared memory of"),
        "{e}"
    );
    assert_eq!(screen.stats().captured, 0);
}
