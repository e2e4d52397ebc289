//! A call's video as the driver sets it up: the camera (a test pattern or a Y4M file
//! for now), the recording of what the peer sends, and the stream's settings from the
//! negotiation. The stream itself runs in the call's media thread, beside the audio,
//! whose ZRTP session keys it.

use super::machine::StreamStart;
use super::policy_of;
use crate::command::{MediaChoice, VideoChoice, VideoSourceSpec};
use crate::error::{CoreError, Result};
use crate::snapshot::CallId;
use hush_media::camera::{CameraOptions, CameraSource};
use hush_media::driver::{PreparedVideo, VideoSetup, Viewer};
use hush_media::screen::{PortalOptions, ScreenSource, X11Options, portal};
use hush_media::video::{
    EncoderConfig, TestPattern, VideoConfig, VideoSource, Y4mReader, Y4mWriter,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};

/// The newest pictures of a video call, for a window to show: the peer's, and ours
/// (the self-view). The media thread writes them; whoever shows them takes them.
#[derive(Clone, Default)]
pub struct CallPictures {
    /// The peer's.
    pub theirs: Viewer,
    /// Ours.
    pub ours: Viewer,
}

/// The pictures of every video call, by call (shared by the core and the phone's
/// handle).
pub(crate) type Pictures = Arc<Mutex<BTreeMap<CallId, CallPictures>>>;

/// The size and rate of the test pattern: what a webcam commonly sends.
const PATTERN: (u32, u32, u32) = (640, 480, 15);
/// The bit rate a stream starts from (and its ceiling): enough for 640×480 at 15 fps.
const START_KBPS: u32 = 800;
/// A shared screen's: text stays readable at 1280×720.
const SCREEN_KBPS: u32 = 1500;

/// `call.y4m` for the first stream, `call-2.y4m` for the second, and so on.
fn numbered(path: &std::path::Path, nth: u32) -> std::path::PathBuf {
    if nth == 0 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{}.{}", nth + 1, ext.to_string_lossy()),
        None => format!("{stem}-{}", nth + 1),
    };
    path.with_file_name(name)
}

/// Whether the call's video is our screen.
pub(super) fn shares_screen(choice: &MediaChoice) -> bool {
    matches!(
        choice.video.as_ref().map(|v| &v.source),
        Some(VideoSourceSpec::Screen(_))
    )
}

/// Opens the source a video call sends.
pub(super) fn open_source(spec: &VideoSourceSpec) -> Result<Box<dyn VideoSource>> {
    Ok(match spec {
        VideoSourceSpec::Pattern => {
            let (w, h, fps) = PATTERN;
            Box::new(TestPattern::new(w, h, fps)?)
        }
        VideoSourceSpec::File(path) => {
            let file = File::open(path).map_err(|e| {
                CoreError::InvalidInput(format!("the video file {}: {e}", path.display()))
            })?;
            Box::new(Y4mReader::new(BufReader::new(file), true)?)
        }
        VideoSourceSpec::Camera(path) => {
            let (w, h, fps) = PATTERN;
            Box::new(CameraSource::open(&CameraOptions {
                path: path.clone(),
                size: (w, h),
                fps,
                layout: None,
            })?)
        }
        VideoSourceSpec::Screen(s) if s.portal || (s.display.is_none() && portal_by_default()) => {
            Box::new(ScreenSource::open_portal(
                &PortalOptions {
                    bus: None,
                    cursor: true,
                },
                s.max_size,
                s.fps,
            )?)
        }
        VideoSourceSpec::Screen(s) => Box::new(ScreenSource::open(
            &X11Options {
                display: s.display.clone(),
                monitor: s.monitor,
                no_shm: false,
                damage: true,
                cursor: true,
            },
            s.max_size,
            s.fps,
        )?),
    })
}

/// In a Wayland session the screen is the portal's (`$DISPLAY` there is XWayland,
/// which shows only X11 programs' windows), when this build has it.
fn portal_by_default() -> bool {
    portal::available() && std::env::var_os("WAYLAND_DISPLAY").is_some_and(|w| !w.is_empty())
}

/// Everything the media thread needs to start a call's video stream.
pub(super) fn setup(
    choice: &VideoChoice,
    ports: PreparedVideo,
    ssrc: u32,
    start: &StreamStart,
    pictures: &CallPictures,
    nth: u32,
) -> Result<VideoSetup> {
    let source = open_source(&choice.source)?;
    let screen = matches!(choice.source, VideoSourceSpec::Screen(_));
    let (width, height) = source.size();
    let fps = source.fps();
    let record = match &choice.record {
        Some(path) => {
            // The call's first video stream records where the user said; a later one
            // (video added again) to a file of its own beside it, never over a
            // recording already made. Only the user may read what the other side showed.
            let file = if nth == 0 {
                Some(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(path)
                        .map_err(|e| {
                            CoreError::InvalidInput(format!(
                                "the video recording {}: {e}",
                                path.display()
                            ))
                        })?,
                )
            } else {
                // The next name not taken (a file left by another call stays); none
                // free: this stream is not recorded, and the video still goes.
                let free = (nth..nth + 100).find_map(|n| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(numbered(path, n))
                        .ok()
                });
                if free.is_none() {
                    tracing::warn!("no free file name to record this video stream");
                }
                free
            };
            file.map(|f| Y4mWriter::new(BufWriter::new(f), fps))
        }
        None => None,
    };
    Ok(VideoSetup {
        ports,
        config: VideoConfig {
            local_ssrc: ssrc,
            payload_type: start.codec.payload_type,
            policy: policy_of(start.policy),
            remote: start.remote,
            remote_rtcp: start.remote_rtcp,
            encoder: EncoderConfig {
                width,
                height,
                fps,
                bitrate_kbps: if screen { SCREEN_KBPS } else { START_KBPS },
                screen,
            },
        },
        peer_hello_hash: start.peer_hash.clone(),
        source,
        viewer: Some(pictures.theirs.clone()),
        self_view: Some(pictures.ours.clone()),
        record,
        sending: start.sending,
    })
}
