//! What sharing the screen costs. On an Xvfb of the benchmark's own, the pipeline a call
//! runs (look at the screen, capture it, convert BGRX to I420, encode VP8 in
//! screen-content mode) is timed per picture at 1280×720 and 1920×1080, and its CPU is
//! measured over 10 s at 15 pictures a second while the screen stands still and while
//! it plays motion. The same pipeline with plain GetImage and no DAMAGE (what a capture
//! through the socket that captures every frame costs, as `xcap` does on X11) runs in
//! the same process as the reference: the ratio is what MIT-SHM and DAMAGE buy.
//!
//! `cargo run --release --manifest-path benches/Cargo.toml --bin screen_share`

use hush_harness::Xvfb;
use hush_media::screen::{BgrxConverter, X11Capture, X11Options};
use hush_media::video::{EncoderConfig, I420Frame, TestPattern, Vp8Encoder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FRAMES: u32 = 60;
const MEASURED: Duration = Duration::from_secs(10);
const FPS: u32 = 15;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn options(display: &str, shm: bool) -> X11Options {
    X11Options {
        display: Some(display.to_owned()),
        monitor: None,
        no_shm: !shm,
        damage: shm,
        cursor: true,
    }
}

fn encoder(w: u32, h: u32) -> Vp8Encoder {
    Vp8Encoder::new(EncoderConfig {
        width: w,
        height: h,
        fps: FPS,
        bitrate_kbps: 1500,
        screen: true,
    })
    .expect("encoder")
}

/// Mean ms per picture of capture, conversion and encoding (every picture captured).
fn per_picture(display: &str, (w, h): (u32, u32), shm: bool) -> (f64, f64, f64) {
    let mut cap = X11Capture::open(&options(display, shm)).expect("capture");
    assert_eq!(cap.shared_memory(), shm);
    let mut enc = encoder(w, h);
    let mut frame = I420Frame::black(w, h).expect("frame");
    let mut converter = BgrxConverter::default();
    let (mut grab, mut convert, mut encode) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..FRAMES {
        let t0 = Instant::now();
        let pixels = cap.capture().expect("capture");
        let t1 = Instant::now();
        converter.convert(&pixels, &mut frame).expect("convert");
        let t2 = Instant::now();
        std::hint::black_box(enc.encode(&frame, false).expect("encode"));
        let t3 = Instant::now();
        grab += t1 - t0;
        convert += t2 - t1;
        encode += t3 - t2;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(FRAMES);
    (ms(grab), ms(convert), ms(encode))
}

/// CPU share of one core, and pictures encoded, of the sharing pipeline over
/// [`MEASURED`] at [`FPS`] (a still screen is sent again twice a second, as in calls).
fn pipeline_cpu(display: &str, (w, h): (u32, u32), shm: bool) -> (f64, u32) {
    let mut cap = X11Capture::open(&options(display, shm)).expect("capture");
    let mut enc = encoder(w, h);
    let mut frame = I420Frame::black(w, h).expect("frame");
    let mut converter = BgrxConverter::default();
    let interval = Duration::from_micros(1_000_000 / u64::from(FPS));
    let (start, cpu0) = (Instant::now(), thread_cpu());
    let mut next = start;
    let (mut coded, mut since) = (0, 0);
    while start.elapsed() < MEASURED {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += interval;
        since += 1;
        if cap.changed().expect("look") {
            let pixels = cap.capture().expect("capture");
            converter.convert(&pixels, &mut frame).expect("convert");
        } else if since < FPS / 2 {
            continue;
        }
        since = 0;
        std::hint::black_box(enc.encode(&frame, false).expect("encode"));
        coded += 1;
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64() / start.elapsed().as_secs_f64();
    (cpu * 100.0, coded)
}

/// Plays the pattern's motion on the screen (from another thread, not measured) until
/// told to stop.
fn play(x: Arc<Xvfb>, (w, h): (u32, u32), stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let pattern = TestPattern::new(w, h, FPS).expect("pattern");
    let pictures: Vec<Vec<u8>> = (0..30).map(|i| pattern.frame(i * 4).to_bgrx()).collect();
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            x.draw(&pictures[i % pictures.len()]).expect("draw");
            i += 1;
            std::thread::sleep(Duration::from_millis(1000 / u64::from(FPS)));
        }
    })
}

/// An Xvfb of `size` showing the test pattern.
fn showing_the_pattern((w, h): (u32, u32)) -> Xvfb {
    let x = Xvfb::start(w, h).expect("Xvfb");
    let picture = TestPattern::new(w, h, FPS).expect("pattern").frame(0);
    x.draw(&picture.to_bgrx()).expect("draw");
    x
}

fn main() {
    println!("| screen | capture | capture ms | convert ms | encode ms | total ms/picture |");
    println!("|---|---|---|---|---|---|");
    // Each screen sent at its own size, and a 1080p one scaled to 720p (the default).
    for (size, out) in [
        ((1280, 720), (1280, 720)),
        ((1920, 1080), (1920, 1080)),
        ((1920, 1080), (1280, 720)),
    ] {
        let x = showing_the_pattern(size);
        for shm in [true, false] {
            let (g, c, e) = per_picture(x.display(), out, shm);
            let sent = if out == size {
                String::new()
            } else {
                format!(" sent at {}x{}", out.0, out.1)
            };
            println!(
                "| {}x{}{sent} | {} | {g:.2} | {c:.2} | {e:.2} | {:.2} |",
                size.0,
                size.1,
                if shm { "MIT-SHM" } else { "GetImage" },
                g + c + e
            );
        }
    }
    println!();
    println!("| 1920x1080 screen, {FPS} fps | capture | CPU (one core = 100 %) | pictures coded |");
    println!("|---|---|---|---|");
    let size = (1920, 1080);
    let x = Arc::new(showing_the_pattern(size));
    // Sent at 1280x720, as calls do by default.
    let out = (1280, 720);
    for shm in [true, false] {
        let (cpu, n) = pipeline_cpu(x.display(), out, shm);
        let how = if shm {
            "MIT-SHM + DAMAGE"
        } else {
            "GetImage, every frame"
        };
        println!("| still | {how} | {cpu:.1} % | {n} |");
    }
    for shm in [true, false] {
        let stop = Arc::new(AtomicBool::new(false));
        let player = play(x.clone(), size, stop.clone());
        let (cpu, n) = pipeline_cpu(x.display(), out, shm);
        stop.store(true, Ordering::Relaxed);
        let _ = player.join();
        let how = if shm {
            "MIT-SHM + DAMAGE"
        } else {
            "GetImage, every frame"
        };
        println!("| motion | {how} | {cpu:.1} % | {n} |");
    }
}
