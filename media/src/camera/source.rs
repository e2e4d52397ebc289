//! The camera on a thread of its own, as a call's video source. Opening, starting,
//! stopping and closing a USB camera are control transfers that can take from tens of
//! milliseconds to seconds; none of them may hold up the media thread, which also
//! carries the call's sound. The thread waits for the camera's pictures, converts the
//! newest and leaves it for the media thread to take.

use super::{Camera, CameraOptions};
use crate::MediaError;
use crate::video::{CaptureStats, I420Frame, VideoSource};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long opening may take (the camera's own open, and waiting for a camera this
/// program was using a moment ago to be closed).
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// What the thread hands over.
#[derive(Default)]
struct Latest {
    picture: Option<I420Frame>,
    captured: u64,
    error: Option<String>,
}

/// The thread's orders (none: it goes on; the sender gone: it stops and closes the
/// camera).
enum Control {
    Pause(bool),
}

/// A camera streaming on its own thread.
pub struct CameraSource {
    latest: Arc<Mutex<Latest>>,
    control: mpsc::Sender<Control>,
    size: (u32, u32),
    fps: u32,
    name: String,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

impl CameraSource {
    /// Opens the camera on a new thread and starts it streaming.
    pub fn open(options: &CameraOptions) -> Result<CameraSource, MediaError> {
        let latest = Arc::new(Mutex::new(Latest::default()));
        let (control, orders) = mpsc::channel();
        let (opened, wait) = mpsc::channel();
        let (l, o) = (latest.clone(), options.clone());
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || match Camera::open(&o) {
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
                Ok(camera) => {
                    let facts = (camera.size(), camera.fps(), camera.name().to_string());
                    if opened.send(Ok(facts)).is_ok() {
                        run(camera, &orders, &l);
                    }
                }
            })
            .map_err(|e| MediaError::Camera(format!("camera thread: {e}")))?;
        let (size, fps, name) = match wait.recv_timeout(OPEN_WAIT) {
            Ok(r) => r?,
            Err(_) => {
                return Err(MediaError::Camera(format!(
                    "{} did not answer",
                    options.path.display()
                )));
            }
        };
        Ok(CameraSource {
            latest,
            control,
            size,
            fps,
            name,
        })
    }

    /// The driver's name for it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The thread: follows the orders, waits for pictures, keeps the newest converted.
fn run(mut camera: Camera, orders: &Receiver<Control>, latest: &Mutex<Latest>) {
    let fail = |e: MediaError| {
        if let Ok(mut l) = latest.lock() {
            l.error = Some(e.to_string());
        }
    };
    let mut paused = false;
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
        if let Some(Control::Pause(p)) = order {
            if let Err(e) = camera.pause(p) {
                return fail(e);
            }
            paused = p;
            continue;
        }
        camera.wait(Duration::from_millis(100));
        match camera.next_frame() {
            Ok(Some(picture)) => {
                if let Ok(mut l) = latest.lock() {
                    l.picture = Some(picture);
                    l.captured += 1;
                }
            }
            Ok(None) => {}
            Err(e) => return fail(e),
        }
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
        Ok(l.picture.take())
    }

    fn pause(&mut self, paused: bool) -> Result<(), MediaError> {
        if let Ok(mut l) = self.latest.lock() {
            // A picture from before the pause is never sent after it.
            l.picture = None;
        }
        self.control
            .send(Control::Pause(paused))
            .map_err(|_| MediaError::Camera("the camera thread has stopped".into()))
    }

    fn capture_stats(&self) -> Option<CaptureStats> {
        let captured = self.latest.lock().map(|l| l.captured).unwrap_or(0);
        Some(CaptureStats {
            captured,
            unchanged: 0,
        })
    }
}
