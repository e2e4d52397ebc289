//! The screen as a call's video source (screen sharing): X11 capture, or the desktop
//! portal on Wayland, converted to I420 at the size the call sends, only when
//! something changed. Capture runs on a thread of its own: an X server that stalls (a
//! grab, a hang) or a desktop waiting for the user must never hold up the call's media
//! thread, which only takes the newest picture.

pub mod convert;
pub mod portal;
pub mod x11;

use crate::MediaError;
use crate::video::{CaptureStats, I420Frame, VideoSource};
pub use convert::{Bgrx, BgrxConverter, bgrx_to_i420, fit};
pub use portal::PortalOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
pub use x11::{X11Capture, X11Options};

/// A still screen is sent again this often (pictures a second), so a viewer who lost
/// a picture, or joined late, sees it.
const STILL_FPS: u32 = 2;

/// How long opening the display may take.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// What the capture thread hands over.
#[derive(Default)]
struct Latest {
    picture: Option<I420Frame>,
    stats: CaptureStats,
    error: Option<String>,
    /// When pictures were last asked for: with nobody asking (camera off, hold, a
    /// peer that takes no pictures), the screen is not captured at all.
    asked: Option<Instant>,
}

/// How long after the last ask the thread goes on capturing.
const ASKED_WITHIN: Duration = Duration::from_millis(500);

/// Whether pictures were asked for lately (capturing or converting is worth it).
fn wanted(latest: &Mutex<Latest>) -> bool {
    latest
        .lock()
        .map(|l| l.asked.is_some_and(|t| t.elapsed() < ASKED_WITHIN))
        .unwrap_or(false)
}

/// The screen, at up to `fps` pictures a second, scaled to fit a maximum size.
pub struct ScreenSource {
    latest: Arc<Mutex<Latest>>,
    stop: Arc<AtomicBool>,
    fps: u32,
    size: (u32, u32),
    shared_memory: bool,
    last: Option<I420Frame>,
    /// Asks since the last picture sent.
    since_sent: u32,
}

impl ScreenSource {
    /// Shares what `options` names, scaled to fit `max`, at up to `fps`.
    pub fn open(options: &X11Options, max: (u32, u32), fps: u32) -> Result<Self, MediaError> {
        let fps = fps.clamp(1, 30);
        let (opened, wait) = mpsc::channel();
        let o = options.clone();
        let (latest, stop) = spawn("screen-capture", move |l, s| match X11Capture::open(&o) {
            Err(e) => {
                let _ = opened.send(Err(e));
            }
            Ok(capture) => {
                let (w, h) = capture.size();
                let size = fit(w, h, max);
                if opened.send(Ok((size, capture.shared_memory()))).is_ok() {
                    run(capture, size, fps, &l, &s);
                }
            }
        })?;
        let (size, shared_memory) = match wait.recv_timeout(OPEN_WAIT) {
            Ok(r) => r?,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                return Err(MediaError::InvalidInput(
                    "screen capture: the X display did not answer".into(),
                ));
            }
        };
        Ok(ScreenSource::new(latest, stop, fps, size, shared_memory))
    }

    /// Shares what the user picks in the desktop's dialog (the portal), fitted into
    /// `max` with black around it, at up to `fps`. Returns at once: the user may take
    /// their time, and a refusal or failure is said at the next picture.
    pub fn open_portal(
        options: &PortalOptions,
        max: (u32, u32),
        fps: u32,
    ) -> Result<Self, MediaError> {
        if !portal::available() {
            return Err(MediaError::InvalidInput(
                "screen sharing on Wayland needs the desktop portal, and this build of \
                 Hushphone has none (built without the `portal` feature)"
                    .into(),
            ));
        }
        let fps = fps.clamp(1, 30);
        // The screen's size is known only once the user chose: the call sends `max`.
        let size = fit(max.0, max.1, max);
        let o = options.clone();
        let (latest, stop) = spawn("screen-portal", move |l, s| {
            portal::run(&o, size, fps, &l, &s);
        })?;
        Ok(ScreenSource::new(latest, stop, fps, size, true))
    }

    fn new(
        latest: Arc<Mutex<Latest>>,
        stop: Arc<AtomicBool>,
        fps: u32,
        size: (u32, u32),
        shared_memory: bool,
    ) -> Self {
        ScreenSource {
            latest,
            stop,
            fps,
            size,
            shared_memory,
            last: None,
            since_sent: 0,
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> CaptureStats {
        self.latest.lock().map(|l| l.stats).unwrap_or_default()
    }

    /// Whether the pictures come through memory shared with the X server (MIT-SHM) or
    /// the desktop (PipeWire), not copied through a socket.
    pub fn shared_memory(&self) -> bool {
        self.shared_memory
    }
}

/// Starts a capture thread with what it shares with the source.
fn spawn(
    name: &str,
    body: impl FnOnce(Arc<Mutex<Latest>>, Arc<AtomicBool>) + Send + 'static,
) -> Result<(Arc<Mutex<Latest>>, Arc<AtomicBool>), MediaError> {
    let latest = Arc::new(Mutex::new(Latest::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (l, s) = (latest.clone(), stop.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(l, s))
        .map_err(|e| MediaError::InvalidInput(format!("screen capture thread: {e}")))?;
    Ok((latest, stop))
}

/// The capture thread: looks at the screen `fps` times a second, and captures and
/// converts only what changed, until told to stop.
fn run(
    mut capture: X11Capture,
    size: (u32, u32),
    fps: u32,
    latest: &Mutex<Latest>,
    stop: &AtomicBool,
) {
    let interval = Duration::from_micros(1_000_000 / u64::from(fps));
    let mut next = Instant::now();
    let mut converter = BgrxConverter::default();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += interval;
        if Instant::now() > next + 10 * interval {
            next = Instant::now() + interval;
        }
        if !wanted(latest) {
            continue;
        }
        let looked = capture.changed().and_then(|changed| {
            if !changed {
                return Ok(None);
            }
            let mut frame = I420Frame::black(size.0, size.1)?;
            converter.convert(&capture.capture()?, &mut frame)?;
            Ok(Some(frame))
        });
        let Ok(mut l) = latest.lock() else { return };
        match looked {
            Ok(Some(frame)) => {
                l.picture = Some(frame);
                l.stats.captured += 1;
            }
            Ok(None) => l.stats.unchanged += 1,
            Err(e) => {
                l.error = Some(e.to_string());
                return;
            }
        }
    }
}

impl Drop for ScreenSource {
    fn drop(&mut self) {
        // The thread sees it at its next look (one stuck in the X server ends with
        // the connection).
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl VideoSource for ScreenSource {
    fn fps(&self) -> u32 {
        self.fps
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn capture_stats(&self) -> Option<CaptureStats> {
        Some(self.stats())
    }

    /// The newest picture captured since the last call; `None` while nothing changed
    /// (a still screen is sent again [`STILL_FPS`] times a second).
    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let fresh = {
            let mut l = self
                .latest
                .lock()
                .map_err(|_| MediaError::InvalidInput("screen capture failed".into()))?;
            if let Some(e) = &l.error {
                return Err(MediaError::InvalidInput(format!("screen capture: {e}")));
            }
            l.asked = Some(Instant::now());
            l.picture.take()
        };
        if let Some(picture) = fresh {
            self.last = Some(picture.clone());
            self.since_sent = 0;
            return Ok(Some(picture));
        }
        self.since_sent += 1;
        if self.since_sent >= (self.fps / STILL_FPS).max(1)
            && let Some(last) = &self.last
        {
            self.since_sent = 0;
            return Ok(Some(last.clone()));
        }
        Ok(None)
    }
}
