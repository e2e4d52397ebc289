//! The camera against a real V4L2 driver: the kernel's `vivid` test driver, in a Debian
//! kernel booted under qemu (this machine has no camera and cannot load modules). The
//! test binary boots the machine with itself inside, and runs there as the part that
//! captures: every picture layout we read, converted, checked by content (vivid's 75 %
//! colour bars), then through VP8 and back.

use hush_harness::{Vm, shows_vivid_bars};
use hush_media::camera::{Camera, CameraOptions, CameraSource, PixelLayout, list_cameras};
use hush_media::video::{EncoderConfig, I420Frame, VideoSource, Vp8Decoder, Vp8Encoder};
use std::time::{Duration, Instant};

/// Set in the guest: this run is the part inside the machine.
const INSIDE: &str = "HUSH_CAMERA_TEST_INSIDE";

fn assert_bars(f: &I420Frame, what: &str, tolerance: i32) {
    shows_vivid_bars(f.width(), f.height(), |x, y| f.pixel(x, y), tolerance)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// The next picture a camera (on its thread or not) gives, waited for (bounded).
fn next_picture(camera: &mut impl VideoSource) -> I420Frame {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(f) = camera.next_frame().expect("the camera delivers") {
            return f;
        }
        assert!(Instant::now() < deadline, "no picture from the camera");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The part inside the machine.
fn capture_inside() {
    let cameras = list_cameras();
    println!("cameras: {cameras:?}");
    assert_eq!(cameras.len(), 1, "{cameras:?}");
    assert_eq!(cameras[0].path.to_str(), Some("/dev/video0"));
    assert!(cameras[0].name.contains("vivid"), "{cameras:?}");
    for layout in PixelLayout::PREFERRED {
        let mut options = CameraOptions::new("/dev/video0");
        options.layout = Some(layout);
        let mut camera = Camera::open(&options).expect("the camera opens");
        assert_eq!(camera.layout(), layout);
        assert_eq!(camera.size(), (640, 480), "{layout:?}");
        let picture = next_picture(&mut camera);
        assert_bars(&picture, &format!("{layout:?}"), 12);
        assert_eq!(camera.capture_stats().expect("counted").captured, 1);
    }
    // Paused (our camera off), it stops streaming: resumed, the driver numbers its
    // pictures from the start again, where a camera left running would have gone on.
    // An odd size asked for comes out even.
    let mut options = CameraOptions::new("/dev/video0");
    options.size = (641, 481);
    let mut camera = Camera::open(&options).expect("opens");
    assert_eq!(camera.size(), (640, 480));
    for _ in 0..10 {
        next_picture(&mut camera);
    }
    let before = camera.sequence().expect("numbered");
    assert!(before >= 9, "{before}");
    camera.pause(true).expect("pauses");
    camera.pause(false).expect("resumes");
    next_picture(&mut camera);
    let after = camera.sequence().expect("numbered");
    assert!(
        after < before,
        "resumed at {after}, was at {before}: not restarted"
    );
    drop(camera);
    // The camera on its own thread, as calls use it: pictures with the bars, none
    // while paused, pictures again once resumed; closed and at once opened again
    // (the old one is closed on its thread), it opens.
    let mut source = CameraSource::open(&CameraOptions::new("/dev/video0")).expect("opens");
    assert_bars(&next_picture(&mut source), "on its thread", 12);
    source.pause(true).expect("pauses");
    source.pause(false).expect("resumes");
    assert_bars(&next_picture(&mut source), "resumed", 12);
    assert!(source.capture_stats().expect("counted").captured >= 2);
    assert_eq!(source.name().as_deref(), Some("vivid"));
    drop(source);
    // A size the camera does not have (640x400: vivid gives 640x360) is what the call
    // gets, the camera's picture fitted in, black above and below.
    let mut options = CameraOptions::new("/dev/video0");
    options.size = (640, 400);
    let mut fitted = CameraSource::open(&options).expect("opens");
    assert_eq!(fitted.size(), (640, 400));
    let picture = next_picture(&mut fitted);
    assert_eq!((picture.width(), picture.height()), (640, 400));
    assert_bars(&picture, "fitted", 12);
    assert_eq!(
        picture.pixel(320, 4),
        Some((16, 128, 128)),
        "no black bar above"
    );
    drop(fitted);
    // A camera that cannot be opened says so at its first picture.
    let mut missing = CameraSource::open(&CameraOptions::new("/dev/video7")).expect("starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        match missing.next_frame() {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "no error from a missing camera"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(error.to_string().contains("/dev/video7"), "{error}");
    // Told to pause or resume, it gives the same reason, not a vaguer one.
    let again = missing.pause(true).expect_err("no camera to pause");
    assert!(again.to_string().contains("/dev/video7"), "{again}");
    let mut again = CameraSource::open(&CameraOptions::new("/dev/video0")).expect("opens again");
    next_picture(&mut again);
    drop(again);
    // Left to itself, the camera takes its best layout; its pictures go through VP8
    // and come back as the same bars.
    let mut camera = Camera::open(&CameraOptions::new("/dev/video0")).expect("opens");
    assert_eq!(camera.layout(), PixelLayout::I420);
    let (w, h) = camera.size();
    let mut encoder = Vp8Encoder::new(EncoderConfig {
        width: w,
        height: h,
        fps: camera.fps(),
        bitrate_kbps: 800,
        screen: false,
    })
    .expect("encoder");
    let mut decoder = Vp8Decoder::new().expect("decoder");
    let mut decoded = None;
    for _ in 0..3 {
        let picture = next_picture(&mut camera);
        for frame in encoder.encode(&picture, false).expect("encodes") {
            decoded = decoder.decode(&frame.data).expect("decodes").or(decoded);
        }
    }
    let decoded = decoded.expect("a decoded picture");
    assert_bars(&decoded, "through VP8", 24);
    // Closed and opened again: the driver gives its buffers back.
    drop(camera);
    let mut again = Camera::open(&CameraOptions::new("/dev/video0")).expect("opens again");
    next_picture(&mut again);
    println!("CAMERA-CHECKS-PASSED");
}

#[test]
fn a_v4l2_camera_gives_its_colour_bars_in_every_layout_we_read() {
    if std::env::var_os(INSIDE).is_some() {
        capture_inside();
        return;
    }
    let name = "a_v4l2_camera_gives_its_colour_bars_in_every_layout_we_read";
    let console = Vm::with_camera()
        .and_then(|vm| vm.run_this_test(INSIDE, name, Duration::from_secs(300)))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{console}");
    assert!(console.contains("CAMERA-CHECKS-PASSED"), "{console}");
}
