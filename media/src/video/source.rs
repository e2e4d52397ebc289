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
    /// The next picture; `None` when the source has ended (a file without looping).
    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError>;
}
