//! A camera as a call's video source: V4L2 capture by memory-mapped streaming, the
//! newest picture converted to I420. The device is non-blocking: the media thread asks
//! for a picture when one is due and gets the newest one the camera has finished (or
//! none yet), so a slow or stalled camera never holds up the call's audio.

pub mod convert;
mod source;
mod v4l2;

use crate::MediaError;
use crate::video::{I420Frame, MAX_HEIGHT, MAX_WIDTH, VideoSource};
pub use convert::{Captured, PixelLayout, fourcc, fourcc_text, to_i420};
pub use source::CameraSource;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Buffers asked of the driver: one being filled, one ready, one being read, a spare.
const BUFFERS: u32 = 4;
/// The most buffers we map, whatever the driver grants.
const MAX_BUFFERS: u32 = 16;
/// The largest buffer we map (a 4K picture at 4 bytes a pixel is 33 MB).
const MAX_BUFFER_BYTES: u32 = 64 << 20;
/// Pictures in a row that may fail to convert (a short or damaged one) before the
/// camera is taken to be broken: two seconds at 15 a second.
const MAX_BAD_IN_A_ROW: u32 = 30;
/// How long a streaming camera may give no picture before it is taken to have
/// stopped (a frozen picture is never shown as if live).
const STALL: std::time::Duration = std::time::Duration::from_secs(5);
/// The device major number of V4L2 nodes (`/dev/video*`).
const VIDEO_MAJOR: u32 = 81;

/// A camera the system has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Its device node (`/dev/video0`).
    pub path: PathBuf,
    /// The driver's name for it (`Integrated Camera`).
    pub name: String,
}

/// The cameras under `/dev` we can capture from: video nodes that capture by
/// streaming in a layout we read (a USB camera's second, metadata node, or an
/// MJPEG-only or infrared one, is left out), in device-number order.
pub fn list_cameras() -> Vec<CameraInfo> {
    list_cameras_in(Path::new("/dev"))
}

fn list_cameras_in(dir: &Path) -> Vec<CameraInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("video")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .take(64)
        .filter_map(|(_, path)| describe(&path).ok())
        .collect()
}

fn open_node(path: &Path) -> Result<File, MediaError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| MediaError::Camera(format!("{}: {e}", path.display())))?;
    // Only a video node is opened: opening some other devices does something (a
    // watchdog arms).
    if !meta.file_type().is_char_device() || libc::major(meta.rdev()) != VIDEO_MAJOR {
        return Err(MediaError::Camera(format!(
            "{}: not a camera device",
            path.display()
        )));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| MediaError::Camera(format!("{}: {e}", path.display())))
}

/// The camera at `path`, if it is one Hushphone can capture from (a video capture
/// node with a picture layout we read), without starting it: to say what is wrong
/// before a call rather than during it.
pub fn describe(path: &Path) -> Result<CameraInfo, MediaError> {
    let (file, name) = open_capture(path)?;
    choose_layout(&file, None)
        .map_err(|e| MediaError::Camera(format!("{} ({name}): {e}", path.display())))?;
    Ok(CameraInfo {
        path: path.to_path_buf(),
        name,
    })
}

/// The node at `path`, opened, if it captures video; with its name.
fn open_capture(path: &Path) -> Result<(File, String), MediaError> {
    let file = open_node(path)?;
    let (name, captures) = v4l2::query(&file)
        .map_err(|e| MediaError::Camera(format!("{}: not a video device ({e})", path.display())))?;
    if !captures {
        return Err(MediaError::Camera(format!(
            "{} ({name}) does not capture video",
            path.display()
        )));
    }
    Ok((file, name))
}

/// What to ask of a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraOptions {
    /// The device node.
    pub path: PathBuf,
    /// The picture size wanted; the camera gives the nearest it has.
    pub size: (u32, u32),
    /// Pictures a second wanted.
    pub fps: u32,
    /// Only this layout (tests of each conversion); `None`: the best the camera has.
    pub layout: Option<PixelLayout>,
}

impl CameraOptions {
    /// 640×480 at 15 pictures a second: what a call sends by default.
    pub fn new(path: impl Into<PathBuf>) -> CameraOptions {
        CameraOptions {
            path: path.into(),
            size: (640, 480),
            fps: 15,
            layout: None,
        }
    }
}

/// One mapped driver buffer.
struct Mapped {
    map: memmap2::Mmap,
    index: u32,
}

/// A V4L2 camera, streaming.
pub struct Camera {
    // Declared before `file`: unmapped before the device is closed.
    buffers: Vec<Mapped>,
    file: File,
    name: String,
    size: (u32, u32),
    stride: usize,
    layout: PixelLayout,
    fps: u32,
    streaming: bool,
    captured: u64,
    /// Pictures in a row that did not convert.
    bad: u32,
    /// When streaming started or the last picture came.
    last_picture: std::time::Instant,
    /// The driver's number of the last picture taken.
    sequence: Option<u32>,
}

impl std::fmt::Debug for Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Camera")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("layout", &self.layout)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

/// How a refusal because another open file holds the camera begins (it is free again
/// once that file is closed: another program's, or ours a moment ago).
const BUSY: &str = "the camera is busy";
/// How long a busy camera is tried again.
const BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(2);

fn failed(what: &str, e: std::io::Error) -> MediaError {
    if e.raw_os_error() == Some(libc::EBUSY) {
        return MediaError::Camera(format!("{BUSY} (another program may be using it): {e}"));
    }
    MediaError::Camera(format!("the camera refused {what}: {e}"))
}

/// Whether `e` says the camera is held by another open file.
fn is_busy(e: &MediaError) -> bool {
    matches!(e, MediaError::Camera(m) if m.starts_with(BUSY))
}

impl Camera {
    /// Opens the camera and starts it streaming. A camera another open file holds is
    /// tried again for up to 2 s: the one this program used a moment ago may still be
    /// being closed on its own thread.
    pub fn open(options: &CameraOptions) -> Result<Camera, MediaError> {
        Camera::open_unless(options, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`Camera::open`], given up (before the camera streams) once `cancelled` is set:
    /// the source it was for is gone.
    pub fn open_unless(
        options: &CameraOptions,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<Camera, MediaError> {
        let until = std::time::Instant::now() + BUSY_FOR;
        loop {
            match Camera::open_once(options, cancelled) {
                Err(e)
                    if is_busy(&e)
                        && std::time::Instant::now() < until
                        && !cancelled.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn open_once(
        options: &CameraOptions,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<Camera, MediaError> {
        let path = &options.path;
        let file = open_node(path)?;
        let (name, captures) = v4l2::query(&file)
            .map_err(|e| MediaError::Camera(format!("{}: {e}", path.display())))?;
        if !captures {
            return Err(MediaError::Camera(format!(
                "{} ({name}) does not capture video",
                path.display()
            )));
        }
        let layout = choose_layout(&file, options.layout)
            .map_err(|e| MediaError::Camera(format!("{} ({name}): {e}", path.display())))?;
        let (size, stride) = set_format(&file, layout, options.size)?;
        let fps = set_rate(&file, options.fps.clamp(1, 60));
        let mut camera = Camera {
            buffers: Vec::new(),
            file,
            name,
            size,
            stride,
            layout,
            fps,
            streaming: false,
            captured: 0,
            bad: 0,
            last_picture: std::time::Instant::now(),
            sequence: None,
        };
        camera.map_buffers()?;
        if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(MediaError::Camera("no longer wanted".into()));
        }
        camera.start()?;
        tracing::debug!(camera = ?camera, "camera streaming");
        Ok(camera)
    }

    /// The driver's name for it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layout it delivers.
    pub fn layout(&self) -> PixelLayout {
        self.layout
    }

    /// The driver's sequence number of the last picture taken (it starts again from 0
    /// when streaming starts).
    pub fn sequence(&self) -> Option<u32> {
        self.sequence
    }

    /// Waits up to `limit` for a picture to be ready (or an error to read).
    pub fn wait(&self, limit: std::time::Duration) -> bool {
        let mut fd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.file),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = limit.as_millis().clamp(0, 1000) as libc::c_int;
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut fd, 1, ms) > 0 }
    }

    fn map_buffers(&mut self) -> Result<(), MediaError> {
        let mut req = v4l2::RequestBuffers {
            count: BUFFERS,
            kind: v4l2::BUF_TYPE_VIDEO_CAPTURE,
            memory: v4l2::MEMORY_MMAP,
            ..v4l2::Plain::zeroed()
        };
        v4l2::ioctl(&self.file, v4l2::REQBUFS, &mut req)
            .map_err(|e| failed("memory-mapped capture", e))?;
        if req.count == 0 {
            return Err(MediaError::Camera("the camera gave no buffers".into()));
        }
        for index in 0..req.count.min(MAX_BUFFERS) {
            let mut buf = v4l2::Buffer::capture(index);
            v4l2::ioctl(&self.file, v4l2::QUERYBUF, &mut buf)
                .map_err(|e| failed("to describe a buffer", e))?;
            let needed = self
                .layout
                .picture_bytes(self.stride, self.size.1 as usize)
                .unwrap_or(usize::MAX);
            if (buf.length as usize) < needed || buf.length > MAX_BUFFER_BYTES {
                return Err(MediaError::Camera(format!(
                    "the camera offered a buffer of {} bytes",
                    buf.length
                )));
            }
            // SAFETY: a shared, read-only mapping of a buffer the driver allocated for
            // this open file; it is read only between DQBUF and QBUF, while the driver
            // does not write it (V4L2's streaming contract), and unmapped (dropped)
            // before the file is closed.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(u64::from(buf.mmap_offset()))
                    .len(buf.length as usize)
                    .map(&self.file)
            }
            .map_err(|e| failed("to map a buffer", e))?;
            self.buffers.push(Mapped { map, index });
        }
        Ok(())
    }

    /// Hands every buffer to the driver and starts streaming.
    fn start(&mut self) -> Result<(), MediaError> {
        for m in &self.buffers {
            self.queue(m.index)?;
        }
        let mut kind: libc::c_int = v4l2::BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        v4l2::ioctl(&self.file, v4l2::STREAMON, &mut kind).map_err(|e| failed("to start", e))?;
        self.streaming = true;
        self.last_picture = std::time::Instant::now();
        Ok(())
    }

    /// Stops streaming (the driver takes every buffer back).
    fn stop(&mut self) -> Result<(), MediaError> {
        let mut kind: libc::c_int = v4l2::BUF_TYPE_VIDEO_CAPTURE as libc::c_int;
        self.streaming = false;
        v4l2::ioctl(&self.file, v4l2::STREAMOFF, &mut kind).map_err(|e| failed("to stop", e))
    }

    fn queue(&self, index: u32) -> Result<(), MediaError> {
        let mut buf = v4l2::Buffer::capture(index);
        v4l2::ioctl(&self.file, v4l2::QBUF, &mut buf).map_err(|e| failed("a buffer back", e))
    }

    /// A filled buffer, if one is ready.
    fn dequeue(&self) -> Result<Option<v4l2::Buffer>, MediaError> {
        let mut buf = v4l2::Buffer::capture(0);
        match v4l2::ioctl(&self.file, v4l2::DQBUF, &mut buf) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(MediaError::Camera(format!("the camera stopped: {e}"))),
        }
    }

    /// The newest finished picture, converted; `None` when none is ready. Every
    /// buffer taken from the driver goes back to it, whatever fails.
    fn newest(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let mut newest: Option<v4l2::Buffer> = None;
        let mut failure = None;
        // Every ready buffer but the newest goes straight back to the driver.
        for _ in 0..self.buffers.len() {
            match self.dequeue() {
                Ok(Some(buf)) => {
                    if let Some(older) = newest.replace(buf)
                        && let Err(e) = self.queue(older.index)
                    {
                        failure = Some(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let buf_sequence = newest.map_or(0, |b| b.sequence);
        let picture = newest.map(|buf| {
            let picture = self.convert(&buf);
            (picture, self.queue(buf.index))
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let Some((picture, queued)) = picture else {
            if self.last_picture.elapsed() > STALL {
                return Err(MediaError::Camera(format!(
                    "{} sent no picture for {} seconds",
                    self.name,
                    STALL.as_secs()
                )));
            }
            return Ok(None);
        };
        queued?;
        match picture {
            Ok(p) => {
                self.captured += 1;
                self.bad = 0;
                self.sequence = Some(buf_sequence);
                self.last_picture = std::time::Instant::now();
                Ok(Some(p))
            }
            // A damaged or short picture is skipped; the next one will do, unless
            // none does for a while.
            Err(e) => {
                self.bad += 1;
                if self.bad >= MAX_BAD_IN_A_ROW {
                    return Err(e);
                }
                tracing::debug!(error = %e, "a camera picture skipped");
                Ok(None)
            }
        }
    }

    fn convert(&self, buf: &v4l2::Buffer) -> Result<I420Frame, MediaError> {
        if buf.flags & v4l2::BUF_FLAG_ERROR != 0 {
            return Err(MediaError::Camera("a damaged picture".into()));
        }
        let mapped = self
            .buffers
            .iter()
            .find(|m| m.index == buf.index)
            .ok_or_else(|| {
                MediaError::Camera("the camera returned a buffer it never had".into())
            })?;
        let used = (buf.bytesused as usize).min(mapped.map.len());
        to_i420(&Captured {
            data: &mapped.map[..used],
            size: self.size,
            stride: self.stride,
            layout: self.layout,
        })
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if self.streaming
            && let Err(e) = self.stop()
        {
            tracing::debug!(error = %e, "camera stop");
        }
    }
}

impl VideoSource for Camera {
    fn fps(&self) -> u32 {
        self.fps
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        if !self.streaming {
            return Ok(None);
        }
        self.newest()
    }

    fn pause(&mut self, paused: bool) -> Result<(), MediaError> {
        match (paused, self.streaming) {
            (true, true) => self.stop(),
            (false, false) => self.start(),
            _ => Ok(()),
        }
    }

    fn capture_stats(&self) -> Option<crate::video::CaptureStats> {
        Some(crate::video::CaptureStats {
            captured: self.captured,
            unchanged: 0,
        })
    }
}

/// The layout to ask for: `only` if the camera has it, else the first of ours it has.
fn choose_layout(file: &File, only: Option<PixelLayout>) -> Result<PixelLayout, MediaError> {
    let mut offered = Vec::new();
    for index in 0..64 {
        let mut desc = v4l2::FmtDesc {
            index,
            kind: v4l2::BUF_TYPE_VIDEO_CAPTURE,
            ..v4l2::Plain::zeroed()
        };
        if v4l2::ioctl(file, v4l2::ENUM_FMT, &mut desc).is_err() {
            break;
        }
        offered.push(desc.pixelformat);
    }
    let ours = |l: &PixelLayout| offered.contains(&l.fourcc());
    let chosen = match only {
        Some(l) => Some(l).filter(ours),
        None => PixelLayout::PREFERRED.into_iter().find(ours),
    };
    chosen.ok_or_else(|| {
        let names: Vec<String> = offered.iter().map(|&c| fourcc_text(c)).collect();
        MediaError::Camera(format!(
            "it offers {} and Hushphone reads {}",
            if names.is_empty() {
                "no picture format".to_string()
            } else {
                names.join(", ")
            },
            PixelLayout::PREFERRED
                .iter()
                .map(|l| fourcc_text(l.fourcc()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Asks for `layout` at about `size`; returns the size and row stride granted.
fn set_format(
    file: &File,
    layout: PixelLayout,
    size: (u32, u32),
) -> Result<((u32, u32), usize), MediaError> {
    let mut format = v4l2::Format {
        kind: v4l2::BUF_TYPE_VIDEO_CAPTURE,
        ..v4l2::Plain::zeroed()
    };
    // Even sizes: 4:2:0 and packed 4:2:2 pictures have one layout then.
    format.pix.pix = v4l2::PixFormat {
        width: (size.0 & !1).max(2),
        height: (size.1 & !1).max(2),
        pixelformat: layout.fourcc(),
        field: v4l2::FIELD_ANY,
        ..v4l2::Plain::zeroed()
    };
    v4l2::ioctl(file, v4l2::S_FMT, &mut format).map_err(|e| failed("the picture format", e))?;
    // SAFETY: for a capture buffer type the kernel fills the union's `pix` member, and
    // any bytes are a valid PixFormat (plain integers).
    let got = unsafe { format.pix.pix };
    if got.pixelformat != layout.fourcc() {
        return Err(MediaError::Camera(format!(
            "asked for {}, the camera gave {}",
            fourcc_text(layout.fourcc()),
            fourcc_text(got.pixelformat)
        )));
    }
    if got.field != v4l2::FIELD_NONE && got.field != v4l2::FIELD_ANY {
        return Err(MediaError::Camera(
            "the camera sends interlaced pictures, which Hushphone does not read".into(),
        ));
    }
    if got.width == 0
        || got.height == 0
        || got.width > MAX_WIDTH
        || got.height > MAX_HEIGHT
        || got.width % 2 != 0
        || got.height % 2 != 0
    {
        return Err(MediaError::Camera(format!(
            "the camera's pictures are {}x{} (even sizes up to {MAX_WIDTH}x{MAX_HEIGHT} are read)",
            got.width, got.height
        )));
    }
    let stride = got.bytesperline as usize;
    if stride < layout.min_stride(got.width as usize) {
        return Err(MediaError::Camera(format!(
            "the camera's rows ({stride} bytes) are too short for its width ({})",
            got.width
        )));
    }
    Ok(((got.width, got.height), stride))
}

/// Asks for `fps`; returns the rate the camera says it will keep (`fps` when it does
/// not say).
fn set_rate(file: &File, fps: u32) -> u32 {
    let mut parm = v4l2::StreamParm {
        kind: v4l2::BUF_TYPE_VIDEO_CAPTURE,
        ..v4l2::Plain::zeroed()
    };
    parm.parm.capture = v4l2::CaptureParm {
        timeperframe: v4l2::Fraction {
            numerator: 1,
            denominator: fps,
        },
        ..v4l2::Plain::zeroed()
    };
    if let Err(e) = v4l2::ioctl(file, v4l2::S_PARM, &mut parm) {
        tracing::debug!(error = %e, "the camera keeps its own frame rate");
        return fps;
    }
    // SAFETY: for a capture buffer type the kernel fills `capture`; plain integers.
    let got = unsafe { parm.parm.capture };
    let t = got.timeperframe;
    if got.capability & v4l2::CAP_TIMEPERFRAME == 0 || t.numerator == 0 || t.denominator == 0 {
        return fps;
    }
    (t.denominator.saturating_add(t.numerator / 2) / t.numerator).clamp(1, 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_no_camera_is_said_plainly() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("video0");
        std::fs::write(&file, b"not a camera").expect("write");
        let missing =
            Camera::open(&CameraOptions::new(dir.path().join("video9"))).expect_err("no such node");
        assert!(missing.to_string().contains("video9"), "{missing}");
        let plain = Camera::open(&CameraOptions::new(&file)).expect_err("a file");
        assert!(plain.to_string().contains("not a camera device"), "{plain}");
        // /dev/null is a character device, but no video device: never opened.
        let null = Camera::open(&CameraOptions::new("/dev/null")).expect_err("not video");
        assert!(null.to_string().contains("not a camera device"), "{null}");
        assert!(describe(Path::new("/dev/null")).is_err());
        // A directory of nodes that are no cameras lists none.
        assert!(list_cameras_in(dir.path()).is_empty());
    }
}
