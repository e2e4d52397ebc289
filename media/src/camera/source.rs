//! The camera on a thread of its own, as a call's video source. Opening, starting,
//! stopping and closing a USB camera are control transfers that can take from tens of
//! milliseconds to seconds; none of them may hold up the call layer or the media
//! thread, which also carries the call's sound. So opening returns at once with the
//! size the call sends; the thread opens the camera, waits for its pictures, converts
//! the newest (fitted into that size if the camera gives another) and leaves it for the
//! media thread to take. A camera that cannot be opened fails the stream, with words.

use super::{Camera, CameraOptions};
use crate::MediaError;
use crate::video::{CaptureStats, I420Frame, VideoSource, frame::i420_size};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a camera may take to open (2 s of it may go to waiting for a camera this
/// program was using a moment ago) before the stream fails with words.
const OPEN_WAIT: Duration = Duration::from_secs(8);

/// What the thread hands over.
#[derive(Default)]
struct Latest {
    picture: Option<I420Frame>,
    captured: u64,
    error: Option<String>,
    /// The driver's name for the camera, once open.
    name: Option<String>,
    /// Counts the pause and resume orders given: a picture the thread took before it
    /// saw the latest order is not kept (never a picture from before a pause after it).
    orders_given: u64,
}

/// The thread's orders (none: it goes on; the sender gone: it stops and closes the
/// camera).
enum Control {
    /// Paused or not, and which order this is.
    Pause(bool, u64),
}

/// A camera streaming on its own thread.
pub struct CameraSource {
    latest: Arc<Mutex<Latest>>,
    control: mpsc::Sender<Control>,
    size: (u32, u32),
    fps: u32,
    path: std::path::PathBuf,
    started: Instant,
    /// Set when the source is dropped: an open still under way stops before the camera
    /// starts streaming.
    dropped: Arc<AtomicBool>,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("size", &self.size)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

impl CameraSource {
    /// Starts opening the camera on a thread of its own and returns at once. Its
    /// pictures come at `options.size` (rounded down to even numbers) and
    /// `options.fps`, the camera's own fitted in when it gives another size.
    pub fn open(options: &CameraOptions) -> Result<CameraSource, MediaError> {
        let size = ((options.size.0 & !1).max(2), (options.size.1 & !1).max(2));
        i420_size(size.0, size.1)?;
        let latest = Arc::new(Mutex::new(Latest::default()));
        let (control, orders) = mpsc::channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let (l, o, d) = (latest.clone(), options.clone(), dropped.clone());
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || match Camera::open_unless(&o, &d) {
                Err(e) => {
                    if let Ok(mut l) = l.lock() {
                        l.error = Some(e.to_string());
                    }
                }
                Ok(camera) => {
                    if let Ok(mut latest) = l.lock() {
                        latest.name = Some(camera.name().to_string());
                    }
                    run(camera, &orders, &l, size);
                }
            })
            .map_err(|e| MediaError::Camera(format!("camera thread: {e}")))?;
        Ok(CameraSource {
            latest,
            control,
            size,
            fps: options.fps.clamp(1, 60),
            path: options.path.clone(),
            started: Instant::now(),
            dropped,
        })
    }

    /// What went wrong, if the thread said.
    fn error(&self) -> Option<MediaError> {
        let l = self.latest.lock().ok()?;
        l.error.clone().map(MediaError::Camera)
    }

    /// The driver's name for it, once it is open.
    pub fn name(&self) -> Option<String> {
        self.latest.lock().ok().and_then(|l| l.name.clone())
    }
}

/// The thread: follows the orders, waits for pictures, keeps the newest converted.
fn run(mut camera: Camera, orders: &Receiver<Control>, latest: &Mutex<Latest>, size: (u32, u32)) {
    let fail = |e: MediaError| {
        if let Ok(mut l) = latest.lock() {
            l.error = Some(e.to_string());
        }
    };
    let mut paused = false;
    // The last order seen: pictures are kept only while it is the latest given.
    let mut seen = 0;
    loop {
        let order = if paused {
            // Nothing to capture: sleep until told otherwise.
            match orders.recv() {
                Ok(o) => Some(o),
                Err(_) => return,
            }
        } else {
            match orders.try_recv() {
                Ok(o) => Some(o),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        if let Some(Control::Pause(p, n)) = order {
            if let Err(e) = camera.pause(p) {
                return fail(e);
            }
            paused = p;
            seen = n;
            continue;
        }
        camera.wait(Duration::from_millis(100));
        let picture = camera
            .next_frame()
            .and_then(|p| p.map(|p| p.fitted_into(size.0, size.1)).transpose());
        match picture {
            Ok(Some(picture)) => {
                if let Ok(mut l) = latest.lock()
                    && l.orders_given == seen
                {
                    l.picture = Some(picture);
                    l.captured += 1;
                }
            }
            Ok(None) => {}
            Err(e) => return fail(e),
        }
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Relaxed);
    }
}

impl VideoSource for CameraSource {
    fn fps(&self) -> u32 {
        self.fps
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    /// The newest picture since the last call; `None` when none came since.
    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let mut l = self
            .latest
            .lock()
            .map_err(|_| MediaError::Camera("the camera thread failed".into()))?;
        if let Some(e) = &l.error {
            return Err(MediaError::Camera(e.clone()));
        }
        if l.name.is_none() && self.started.elapsed() > OPEN_WAIT {
            return Err(MediaError::Camera(format!(
                "{} did not answer within {} seconds",
                self.path.display(),
                OPEN_WAIT.as_secs()
            )));
        }
        Ok(l.picture.take())
    }

    fn pause(&mut self, paused: bool) -> Result<(), MediaError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let order = match self.latest.lock() {
            Ok(mut l) => {
                // A picture from before the pause is never sent after it.
                l.picture = None;
                l.orders_given += 1;
                l.orders_given
            }
            Err(_) => return Err(MediaError::Camera("the camera thread failed".into())),
        };
        self.control
            .send(Control::Pause(paused, order))
            .map_err(|_| {
                // The thread ended: with the reason it left, if it left one.
                self.error()
                    .unwrap_or_else(|| MediaError::Camera("the camera thread has stopped".into()))
            })
    }

    fn capture_stats(&self) -> Option<CaptureStats> {
        let captured = self.latest.lock().map(|l| l.captured).unwrap_or(0);
        Some(CaptureStats {
            captured,
            unchanged: 0,
        })
    }
}
