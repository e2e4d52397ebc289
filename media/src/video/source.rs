//! Where a call's pictures come from: a camera, a file, a test pattern, the screen.

use super::I420Frame;
use crate::MediaError;

/// A source of pictures at a steady rate. The media thread asks for a frame every
/// `1/fps` seconds; a source that has nothing new may give the previous one again.
pub trait VideoSource: Send {
    /// Frames per second it is meant to deliver.
    fn fps(&self) -> u32;
    /// The size of its pictures.
    fn size(&self) -> (u32, u32);
    /// The next picture; `None` when there is none now (the source ended, or a screen
    /// did not change).
    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError>;

    /// The pictures are not wanted for a while (our camera is off), or wanted again.
    /// A camera stops streaming meanwhile (its light goes off) and resumes with fresh
    /// pictures; other sources need do nothing.
    fn pause(&mut self, _paused: bool) -> Result<(), MediaError> {
        Ok(())
    }

    /// What capturing has cost so far, for sources that skip unchanged pictures (a
    /// screen); `None` for the others.
    fn capture_stats(&self) -> Option<CaptureStats> {
        None
    }
}

/// What a capturing source has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Pictures captured.
    pub captured: u64,
    /// Looks that found nothing changed (nothing captured).
    pub unchanged: u64,
}
