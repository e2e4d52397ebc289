//! The screen as a call's video source (screen sharing): X11 capture, converted to
//! I420 at the size the call sends, only when something changed.

pub mod convert;
pub mod x11;

use crate::MediaError;
use crate::video::{I420Frame, VideoSource};
pub use convert::{Bgrx, bgrx_to_i420, fit};
pub use x11::{X11Capture, X11Options};

/// A still screen is sent again this often (pictures a second), so a viewer who lost
/// a picture, or joined late, sees it.
const STILL_FPS: u32 = 2;

/// What a screen source has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScreenStats {
    /// Pictures captured.
    pub captured: u64,
    /// Pictures not captured: nothing had changed.
    pub unchanged: u64,
}

/// The screen, at up to `fps` pictures a second, scaled to fit a maximum size.
pub struct ScreenSource {
    capture: X11Capture,
    fps: u32,
    size: (u32, u32),
    last: Option<I420Frame>,
    /// Asks since the last picture sent.
    since_sent: u32,
    stats: ScreenStats,
}

impl ScreenSource {
    /// Shares what `options` names, scaled to fit `max`, at up to `fps`.
    pub fn open(options: &X11Options, max: (u32, u32), fps: u32) -> Result<Self, MediaError> {
        let capture = X11Capture::open(options)?;
        let (w, h) = capture.size();
        Ok(ScreenSource {
            capture,
            fps: fps.clamp(1, 30),
            size: fit(w, h, max),
            last: None,
            since_sent: 0,
            stats: ScreenStats::default(),
        })
    }

    /// What it has done so far.
    pub fn stats(&self) -> ScreenStats {
        self.stats
    }

    /// Whether the capture shares memory with the X server.
    pub fn shared_memory(&self) -> bool {
        self.capture.shared_memory()
    }
}

impl VideoSource for ScreenSource {
    fn fps(&self) -> u32 {
        self.fps
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    /// `None` while nothing changed (a still screen is sent again [`STILL_FPS`] times a
    /// second).
    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        self.since_sent += 1;
        if !self.capture.changed()? {
            self.stats.unchanged += 1;
            if self.since_sent < (self.fps / STILL_FPS).max(1) {
                return Ok(None);
            }
            if let Some(last) = &self.last {
                self.since_sent = 0;
                return Ok(Some(last.clone()));
            }
        }
        let mut frame = match self.last.take() {
            Some(f) => f,
            None => I420Frame::black(self.size.0, self.size.1)?,
        };
        let pixels = self.capture.capture()?;
        bgrx_to_i420(&pixels, &mut frame)?;
        self.stats.captured += 1;
        self.since_sent = 0;
        self.last = Some(frame.clone());
        Ok(Some(frame))
    }
}
