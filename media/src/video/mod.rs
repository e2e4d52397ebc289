//! Video for calls: I420 frames, the VP8 codec over libvpx, frame sources (a moving
//! test pattern, Y4M files), the RTP side of VP8 (RFC 7741 payload descriptor and a
//! frame assembler) and the sans-IO video stream of a call. Everything here is sans-IO
//! except the sources, which read files.

pub mod assembler;
pub mod frame;
pub mod pattern;
pub mod payload;
pub mod source;
pub mod stream;
pub mod vp8;
pub mod y4m;

pub use assembler::{Assembled, FrameAssembler};
pub use frame::I420Frame;
pub use pattern::TestPattern;
pub use payload::{Vp8Descriptor, Vp8Payloader};
pub use source::{CaptureStats, VideoSource};
pub use stream::{VideoConfig, VideoEvent, VideoStats, VideoStream};
pub use vp8::{EncodedFrame, EncoderConfig, Vp8Decoder, Vp8Encoder};
pub use y4m::{Y4mReader, Y4mWriter};

/// Widest picture we encode, decode or read (4K UHD): a peer or a file claiming more
/// is refused before anything is allocated for it.
pub const MAX_WIDTH: u32 = 3840;
/// Tallest picture, as [`MAX_WIDTH`].
pub const MAX_HEIGHT: u32 = 2160;
