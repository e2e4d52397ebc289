//! Screen capture on a real X server (Xvfb, started here on a display of its own): a
//! known picture (the test pattern) is drawn on the screen, captured through MIT-SHM
//! and through the socket, and checked by content; DAMAGE keeps a still screen cheap.

use hush_harness::Xvfb;
use hush_media::screen::{ScreenSource, X11Capture, X11Options, bgrx_to_i420};
use hush_media::video::{I420Frame, TestPattern, VideoSource};

/// Covers the screen with the pattern's `index`th picture.
fn draw(x: &Xvfb, width: u32, height: u32, index: u64) {
    let picture = TestPattern::new(width, height, 15)
        .expect("pattern")
        .frame(index);
    x.draw(&picture.to_bgrx()).expect("draw");
}

fn options(display: &str) -> X11Options {
    X11Options {
        display: Some(display.to_owned()),
        damage: true,
        ..X11Options::default()
    }
}

/// The next picture the source has (bounded: its thread captures within a frame or
/// two of a change).
fn next_picture(screen: &mut ScreenSource, until: impl Fn(&I420Frame) -> bool) -> I420Frame {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(p) = screen.next_frame().expect("capture")
            && until(&p)
        {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such picture in 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn the_shared_screen_shows_what_is_drawn_and_a_still_screen_costs_nothing() {
    let (w, h) = (1280, 720);
    let x = Xvfb::start(w, h).expect("Xvfb");
    draw(&x, w, h, 10);
    let mut screen = ScreenSource::open(&options(x.display()), (640, 480), 15).expect("open");
    assert!(screen.shared_memory(), "Xvfb offers MIT-SHM");
    assert_eq!(screen.size(), (640, 360));
    let first = next_picture(&mut screen, |_| true);
    assert!(TestPattern::shows_bars(&first, 24));
    let at = TestPattern::find_marker(&first).expect("marker");
    assert!(
        at.abs_diff(TestPattern::marker_x(640, 360, 10)) <= 4,
        "{at}"
    );
    // Nothing changes for a second, asked for a picture 15 times in it (as the media
    // thread does): the capture thread looks but captures nothing more, and the still
    // picture is sent again twice.
    let mut pictures = 0;
    for _ in 0..15 {
        std::thread::sleep(std::time::Duration::from_millis(1000 / 15));
        pictures += usize::from(screen.next_frame().expect("poll").is_some());
    }
    assert_eq!(pictures, 2, "a still screen is sent twice a second");
    let stats = screen.stats();
    assert_eq!(stats.captured, 1, "{stats:?}");
    assert!(stats.unchanged >= 8, "{stats:?}");
    // Nobody asks for a second (camera off, hold): the screen is not even looked at.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let idle = screen.stats();
    assert!(
        idle.unchanged - stats.unchanged <= 10,
        "looked at while nobody asked: {stats:?} then {idle:?}"
    );
    // Drawn again, moved: a picture shows it.
    draw(&x, w, h, 40);
    let want = TestPattern::marker_x(640, 360, 40);
    let moved = next_picture(&mut screen, |p| {
        TestPattern::find_marker(p).is_some_and(|m| m.abs_diff(want) <= 4)
    });
    assert!(TestPattern::shows_bars(&moved, 24));
    assert!(screen.stats().captured >= 2);
}

#[test]
fn capture_through_the_socket_and_one_monitor_show_the_same_picture() {
    let (w, h) = (800, 600);
    let x = Xvfb::start(w, h).expect("Xvfb");
    draw(&x, w, h, 5);
    for no_shm in [false, true] {
        let mut c = X11Capture::open(&X11Options {
            no_shm,
            monitor: Some(0),
            ..options(x.display())
        })
        .expect("open");
        assert_eq!(c.shared_memory(), !no_shm);
        assert_eq!(c.size(), (800, 600));
        let pixels = c.capture().expect("capture");
        let mut frame = I420Frame::black(800, 600).expect("frame");
        bgrx_to_i420(&pixels, &mut frame).expect("convert");
        assert!(TestPattern::shows_bars(&frame, 24), "no_shm {no_shm}");
    }
    let missing = X11Capture::open(&X11Options {
        monitor: Some(3),
        ..options(x.display())
    });
    assert!(
        matches!(&missing, Err(e) if e.to_string().contains("no monitor 3")),
        "{:?}",
        missing.err()
    );
}

#[test]
fn the_cursor_is_drawn_in_where_the_pointer_is() {
    let (w, h) = (640, 480);
    let x = Xvfb::start(w, h).expect("Xvfb");
    draw(&x, w, h, 0);
    // The pointer over the black bar (the last eighth), in the middle of the bars.
    let (px, py) = (w * 15 / 16, h / 3);
    x.point_at(px as i16, py as i16).expect("pointer");
    let brightness = |cursor: bool| {
        let mut c = X11Capture::open(&X11Options {
            cursor,
            ..options(x.display())
        })
        .expect("open");
        let pixels = c.capture().expect("capture");
        let mut frame = I420Frame::black(w, h).expect("frame");
        bgrx_to_i420(&pixels, &mut frame).expect("convert");
        frame.mean(px - 8, py - 8, 16, 16).expect("mean").0
    };
    let (without, with) = (brightness(false), brightness(true));
    assert!(without < 24, "the black bar: {without}");
    assert!(with > without + 8, "the cursor shows: {without} -> {with}");
}

#[test]
fn no_display_is_a_clear_error() {
    let e = X11Capture::open(&X11Options {
        display: Some(":4711".into()),
        ..X11Options::default()
    })
    .err()
    .expect("no such display");
    assert!(e.to_string().contains("no X11 display"), "{e}");
}
