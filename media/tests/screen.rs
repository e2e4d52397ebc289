//! Screen capture on a real X server (Xvfb, started here on a display of its own): a
//! known picture (the test pattern) is drawn on the screen, captured through MIT-SHM
//! and through the socket, and checked by content; DAMAGE keeps a still screen cheap.

use hush_media::screen::{ScreenSource, X11Capture, X11Options, bgrx_to_i420};
use hush_media::video::{I420Frame, TestPattern, VideoSource};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat};
use x11rb::rust_connection::RustConnection;

/// An Xvfb of its own, killed and reaped on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(width: u32, height: u32) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-noreset",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
            ])
            .arg(format!("{width}x{height}x24"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (apt install xvfb)");
        // It writes its display number once it accepts connections; -noreset keeps
        // what was drawn when the drawing client disconnects.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("display");
        let n: u32 = line.trim().parse().expect("a display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// I420 to BGRX, as a screen shows a picture.
fn to_bgrx(frame: &I420Frame) -> Vec<u8> {
    let (w, h) = (frame.width(), frame.height());
    let mut out = Vec::with_capacity(w as usize * h as usize * 4);
    for y in 0..h {
        for x in 0..w {
            let (yy, u, v) = frame.pixel(x, y).expect("pixel");
            let c = 298 * (i32::from(yy) - 16);
            let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
            let r = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
            let g = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
            let b = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
            out.extend_from_slice(&[b, g, r, 0]);
        }
    }
    out
}

/// Draws the pattern's `index`th picture over the whole screen (in strips: one
/// request may not carry a whole screen).
fn draw(display: &str, width: u32, height: u32, index: u64) {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connect");
    let root = conn.setup().roots[screen].root;
    let gc = conn.generate_id().expect("id");
    conn.create_gc(gc, root, &Default::default()).expect("gc");
    let pixels = to_bgrx(
        &TestPattern::new(width, height, 15)
            .expect("pattern")
            .frame(index),
    );
    let row = width as usize * 4;
    for (i, strip) in pixels.chunks(row * 32).enumerate() {
        let rows = (strip.len() / row) as u16;
        conn.put_image(
            ImageFormat::Z_PIXMAP,
            root,
            gc,
            width as u16,
            rows,
            0,
            (i * 32) as i16,
            0,
            24,
            strip,
        )
        .expect("put image")
        .check()
        .expect("drawn");
    }
    conn.free_gc(gc).expect("free gc");
    conn.sync().expect("sync");
}

trait Sync {
    fn sync(&self) -> Result<(), x11rb::errors::ReplyError>;
}

impl Sync for RustConnection {
    fn sync(&self) -> Result<(), x11rb::errors::ReplyError> {
        self.get_input_focus()?.reply().map(|_| ())
    }
}

fn options(display: &str) -> X11Options {
    X11Options {
        display: Some(display.to_owned()),
        damage: true,
        ..X11Options::default()
    }
}

#[test]
fn the_shared_screen_shows_what_is_drawn_and_a_still_screen_costs_nothing() {
    let (w, h) = (1280, 720);
    let x = Xvfb::start(w, h);
    draw(&x.display, w, h, 10);
    let mut screen = ScreenSource::open(&options(&x.display), (640, 480), 15).expect("open");
    assert!(screen.shared_memory(), "Xvfb offers MIT-SHM");
    assert_eq!(screen.size(), (640, 360));
    let first = screen.next_frame().expect("capture").expect("a picture");
    assert!(TestPattern::shows_bars(&first, 24));
    let at = TestPattern::find_marker(&first).expect("marker");
    assert!(
        at.abs_diff(TestPattern::marker_x(640, 360, 10)) <= 4,
        "{at}"
    );
    // Nothing changes: nothing is captured, bar the refresh twice a second.
    let mut pictures = 0;
    for _ in 0..15 {
        pictures += usize::from(screen.next_frame().expect("poll").is_some());
    }
    assert_eq!(pictures, 2, "a still screen is sent twice a second");
    assert_eq!(screen.stats().captured, 1);
    // Drawn again, moved: the next picture shows it.
    draw(&x.display, w, h, 40);
    let moved = (0..5)
        .find_map(|_| screen.next_frame().expect("capture"))
        .expect("a picture after the change");
    let now = TestPattern::find_marker(&moved).expect("marker");
    assert!(
        now.abs_diff(TestPattern::marker_x(640, 360, 40)) <= 4,
        "{now}"
    );
    assert_ne!(now, at, "the marker moved");
    assert_eq!(screen.stats().captured, 2);
}

#[test]
fn capture_through_the_socket_and_one_monitor_show_the_same_picture() {
    let (w, h) = (800, 600);
    let x = Xvfb::start(w, h);
    draw(&x.display, w, h, 5);
    for no_shm in [false, true] {
        let mut c = X11Capture::open(&X11Options {
            no_shm,
            monitor: Some(0),
            ..options(&x.display)
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
        ..options(&x.display)
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
    let x = Xvfb::start(w, h);
    draw(&x.display, w, h, 0);
    // The pointer over the black bar (the last eighth), in the middle of the bars.
    let (px, py) = (w * 15 / 16, h / 3);
    {
        let (conn, screen) = x11rb::connect(Some(&x.display)).expect("connect");
        let root = conn.setup().roots[screen].root;
        conn.warp_pointer(x11rb::NONE, root, 0, 0, 0, 0, px as i16, py as i16)
            .expect("warp");
        conn.sync().expect("sync");
    }
    let brightness = |cursor: bool| {
        let mut c = X11Capture::open(&X11Options {
            cursor,
            ..options(&x.display)
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
