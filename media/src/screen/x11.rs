//! Capturing an X11 screen: MIT-SHM (the server writes the pixels straight into memory
//! we share with it, no copy through the socket) when the server offers it, plain
//! GetImage otherwise; DAMAGE tells which captures are worth making; XFixes gives the
//! cursor, which GetImage leaves out; RandR names the monitors.

use super::convert::{Bgrx, draw_cursor};
use crate::MediaError;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use x11rb::connection::{Connection, RequestConnection as _};
use x11rb::protocol::Event;
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xfixes::ConnectionExt as _;
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::rust_connection::RustConnection;

/// The largest area captured (a hostile or odd server may claim 65535×65535; what a
/// call sends is at most 4K anyway).
const MAX_AREA: (u16, u16) = (8192, 8192);

/// Copies `size` bytes out of memory the X server shares with us into `out`.
fn copy_out(map: &memmap2::MmapMut, size: usize, out: &mut Vec<u8>) -> Result<(), MediaError> {
    if size > map.len() {
        return Err(x11(
            "MIT-SHM",
            "the picture is larger than the shared memory",
        ));
    }
    out.clear();
    out.reserve(size);
    // SAFETY: `size` bytes are inside the mapping (checked above, and the memfd is
    // sealed against shrinking); `out` has room for them and does not overlap it. The
    // bytes may change under the copy (another writer): they are plain pixels, copied
    // without ever forming a reference to the shared memory.
    unsafe {
        std::ptr::copy_nonoverlapping(map.as_ptr(), out.as_mut_ptr(), size);
        out.set_len(size);
    }
    Ok(())
}

fn x11(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::InvalidInput(format!("screen capture ({what}): {e}"))
}

/// Memory shared with the X server: an anonymous file both map.
struct Shared {
    seg: shm::Seg,
    map: memmap2::MmapMut,
}

/// Refuses the default display in a Wayland session: there `$DISPLAY` (XWayland)
/// shows only the windows of X11 programs, so the other side would see a black
/// screen with a few windows, not what the user sees. Naming a display shares it.
fn session_check(display: Option<&str>, wayland: Option<&str>) -> Result<(), MediaError> {
    match (display, wayland) {
        (None, Some(w)) if !w.is_empty() => Err(MediaError::InvalidInput(
            "this is a Wayland session, and Hushphone shares the screen through X11 only \
             (the desktop portal is not in this build): the other side would see only the \
             windows of X11 programs. Share from an X11 session, or name an X display \
             (--screen :N) to share that one."
                .into(),
        )),
        _ => Ok(()),
    }
}

/// What part of the screen, and how it is read.
pub struct X11Capture {
    conn: RustConnection,
    root: xproto::Window,
    /// The captured area, in root coordinates.
    area: (i16, i16, u16, u16),
    shared: Option<Shared>,
    damage: Option<damage::Damage>,
    /// Something changed since the last capture (always true without DAMAGE).
    dirty: bool,
    /// Where the pointer was at the last look (its moves are changes too: DAMAGE does
    /// not see the cursor).
    pointer: Option<(i16, i16)>,
    cursor: bool,
    /// The last capture's pixels (plain GetImage, or the cursor drawn over a copy).
    pixels: Vec<u8>,
}

/// How to capture.
#[derive(Debug, Clone, Default)]
pub struct X11Options {
    /// The display (`:1`); `None`: `$DISPLAY`.
    pub display: Option<String>,
    /// One monitor (RandR's order); `None`: the whole screen.
    pub monitor: Option<usize>,
    /// Plain GetImage even when MIT-SHM is there (for comparison).
    pub no_shm: bool,
    /// Only capture what DAMAGE says changed.
    pub damage: bool,
    /// Draw the cursor in.
    pub cursor: bool,
}

impl X11Capture {
    /// Connects to the display and prepares the capture of the chosen area.
    pub fn open(options: &X11Options) -> Result<X11Capture, MediaError> {
        session_check(
            options.display.as_deref(),
            std::env::var("WAYLAND_DISPLAY").ok().as_deref(),
        )?;
        let (conn, screen) = x11rb::connect(options.display.as_deref()).map_err(|e| {
            MediaError::InvalidInput(format!(
                "no X11 display to share ({}): {e}",
                options.display.as_deref().unwrap_or("$DISPLAY")
            ))
        })?;
        let setup = conn.setup();
        let s = setup
            .roots
            .get(screen)
            .ok_or_else(|| x11("screen", "the display has no such screen"))?;
        let root = s.root;
        let depth = s.root_depth;
        let bpp = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel);
        if !(depth == 24 || depth == 32)
            || bpp != Some(32)
            || setup.image_byte_order != xproto::ImageOrder::LSB_FIRST
        {
            return Err(x11(
                "format",
                format!("a {depth}-bit screen at {bpp:?} bits per pixel is not supported"),
            ));
        }
        let whole = (0, 0, s.width_in_pixels, s.height_in_pixels);
        let area = match options.monitor {
            None => whole,
            Some(n) => {
                let monitors = conn
                    .randr_get_monitors(root, true)
                    .map_err(|e| x11("RandR", e))?
                    .reply()
                    .map_err(|e| x11("RandR", e))?
                    .monitors;
                let m = monitors.get(n).ok_or_else(|| {
                    MediaError::InvalidInput(format!(
                        "no monitor {n}: the display has {}",
                        monitors.len()
                    ))
                })?;
                (m.x, m.y, m.width, m.height)
            }
        };
        if area.2 == 0 || area.3 == 0 {
            return Err(x11("area", "the monitor has no pixels"));
        }
        if area.2 > MAX_AREA.0 || area.3 > MAX_AREA.1 {
            return Err(x11(
                "area",
                format!(
                    "a {}x{} screen is larger than Hushphone shares",
                    area.2, area.3
                ),
            ));
        }
        let mut capture = X11Capture {
            conn,
            root,
            area,
            shared: None,
            damage: None,
            dirty: true,
            pointer: None,
            cursor: options.cursor,
            pixels: Vec::new(),
        };
        if !options.no_shm {
            capture.shared = capture.attach_shared().unwrap_or_else(|e| {
                tracing::info!(error = %e, "no MIT-SHM: capturing through the socket");
                None
            });
        }
        if options.damage {
            capture.damage = capture.watch_damage().unwrap_or_else(|e| {
                tracing::info!(error = %e, "no DAMAGE: capturing every frame");
                None
            });
        }
        if capture.cursor
            && let Err(e) = capture
                .conn
                .xfixes_query_version(4, 0)
                .map_err(|e| x11("XFixes", e))
                .and_then(|c| c.reply().map_err(|e| x11("XFixes", e)))
        {
            tracing::info!(error = %e, "no XFixes: the cursor is not shown");
            capture.cursor = false;
        }
        Ok(capture)
    }

    fn attach_shared(&self) -> Result<Option<Shared>, MediaError> {
        if self
            .conn
            .extension_information(shm::X11_EXTENSION_NAME)
            .map_err(|e| x11("MIT-SHM", e))?
            .is_none()
        {
            return Ok(None);
        }
        let version = self
            .conn
            .shm_query_version()
            .map_err(|e| x11("MIT-SHM", e))?
            .reply()
            .map_err(|e| x11("MIT-SHM", e))?;
        // File descriptors are passed from 1.2.
        if (version.major_version, version.minor_version) < (1, 2) {
            return Ok(None);
        }
        let size = usize::from(self.area.2) * usize::from(self.area.3) * 4;
        // SAFETY: a plain system call with a NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::memfd_create(
                c"hushphone-screen".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(x11("memfd", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(size as u64).map_err(|e| x11("memfd", e))?;
        // Its size is fixed before anyone else holds it: nobody can shrink it under
        // our mapping (which would fault on read).
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own; the result is checked.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(x11("memfd seals", std::io::Error::last_os_error()));
        }
        // SAFETY: the file is anonymous and sealed against shrinking, so the mapping
        // stays backed. The X server (or, through the segment's id, another client)
        // may write it at any time, so it is never read as a Rust slice: pictures
        // are copied out with a raw copy (`copy_out`).
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| x11("mmap", e))?;
        let seg = self.conn.generate_id().map_err(|e| x11("MIT-SHM", e))?;
        let theirs: OwnedFd = file.try_clone().map_err(|e| x11("memfd", e))?.into();
        self.conn
            .shm_attach_fd(seg, theirs, false)
            .map_err(|e| x11("MIT-SHM", e))?
            .check()
            .map_err(|e| x11("MIT-SHM", e))?;
        Ok(Some(Shared { seg, map }))
    }

    fn watch_damage(&self) -> Result<Option<damage::Damage>, MediaError> {
        if self
            .conn
            .extension_information(damage::X11_EXTENSION_NAME)
            .map_err(|e| x11("DAMAGE", e))?
            .is_none()
        {
            return Ok(None);
        }
        self.conn
            .damage_query_version(1, 1)
            .map_err(|e| x11("DAMAGE", e))?
            .reply()
            .map_err(|e| x11("DAMAGE", e))?;
        let id = self.conn.generate_id().map_err(|e| x11("DAMAGE", e))?;
        self.conn
            .damage_create(id, self.root, damage::ReportLevel::BOUNDING_BOX)
            .map_err(|e| x11("DAMAGE", e))?
            .check()
            .map_err(|e| x11("DAMAGE", e))?;
        Ok(Some(id))
    }

    /// The captured area's size.
    pub fn size(&self) -> (u32, u32) {
        (u32::from(self.area.2), u32::from(self.area.3))
    }

    /// Whether MIT-SHM is used.
    pub fn shared_memory(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether anything changed since the last capture (reads DAMAGE's news).
    pub fn changed(&mut self) -> Result<bool, MediaError> {
        let (x, y, w, h) = self.area;
        let inside = |rx: i32, ry: i32, rw: i32, rh: i32| {
            let (ax, ay) = (i32::from(x), i32::from(y));
            rx < ax + i32::from(w) && ax < rx + rw && ry < ay + i32::from(h) && ay < ry + rh
        };
        let mut notified = false;
        while let Some(ev) = self.conn.poll_for_event().map_err(|e| x11("events", e))? {
            if let Event::DamageNotify(n) = ev {
                notified = true;
                // Only what changed within the shared area counts (a video playing
                // on another monitor does not).
                let a = n.area;
                if inside(
                    i32::from(a.x),
                    i32::from(a.y),
                    i32::from(a.width),
                    i32::from(a.height),
                ) {
                    self.dirty = true;
                }
            }
        }
        if notified
            && !self.dirty
            && let Some(d) = self.damage
        {
            // Emptied, so its box does not grow over the shared area unnoticed.
            self.conn
                .damage_subtract(d, x11rb::NONE, x11rb::NONE)
                .map_err(|e| x11("DAMAGE", e))?;
            self.conn.flush().map_err(|e| x11("DAMAGE", e))?;
        }
        if self.cursor && self.damage.is_some() {
            let p = self
                .conn
                .query_pointer(self.root)
                .map_err(|e| x11("pointer", e))?
                .reply()
                .map_err(|e| x11("pointer", e))?;
            let at = (p.root_x, p.root_y);
            if self.pointer.is_some_and(|was| was != at)
                && inside(i32::from(at.0) - 32, i32::from(at.1) - 32, 64, 64)
            {
                self.dirty = true;
            }
            self.pointer = Some(at);
        }
        Ok(self.dirty || self.damage.is_none())
    }

    /// Captures the area now.
    pub fn capture(&mut self) -> Result<Bgrx<'_>, MediaError> {
        if let Some(d) = self.damage {
            // Re-armed before reading, so a change during the capture is not lost.
            self.conn
                .damage_subtract(d, x11rb::NONE, x11rb::NONE)
                .map_err(|e| x11("DAMAGE", e))?;
            self.dirty = false;
        }
        let (x, y, w, h) = self.area;
        let size = usize::from(w) * usize::from(h) * 4;
        match &self.shared {
            Some(s) => {
                self.conn
                    .shm_get_image(
                        self.root,
                        x,
                        y,
                        w,
                        h,
                        !0,
                        ImageFormat::Z_PIXMAP.into(),
                        s.seg,
                        0,
                    )
                    .map_err(|e| x11("GetImage", e))?
                    .reply()
                    .map_err(|e| x11("GetImage", e))?;
                copy_out(&s.map, size, &mut self.pixels)?;
            }
            None => {
                let reply = self
                    .conn
                    .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, w, h, !0)
                    .map_err(|e| x11("GetImage", e))?
                    .reply()
                    .map_err(|e| x11("GetImage", e))?;
                if reply.data.len() < size {
                    return Err(x11("GetImage", "a short image"));
                }
                self.pixels = reply.data;
            }
        }
        if self.cursor {
            self.draw_cursor()?;
        }
        Ok(Bgrx {
            data: &self.pixels[..size],
            width: u32::from(w),
            height: u32::from(h),
            stride: usize::from(w) * 4,
        })
    }

    fn draw_cursor(&mut self) -> Result<(), MediaError> {
        let c = self
            .conn
            .xfixes_get_cursor_image()
            .map_err(|e| x11("cursor", e))?
            .reply()
            .map_err(|e| x11("cursor", e))?;
        let (x, y, w, h) = self.area;
        let at = (
            i32::from(c.x) - i32::from(c.xhot) - i32::from(x),
            i32::from(c.y) - i32::from(c.yhot) - i32::from(y),
        );
        draw_cursor(
            &mut self.pixels,
            u32::from(w),
            u32::from(h),
            usize::from(w) * 4,
            &c.cursor_image,
            (u32::from(c.width), u32::from(c.height)),
            at,
        );
        Ok(())
    }
}

impl Drop for X11Capture {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            let _ = self.conn.shm_detach(s.seg);
        }
        if let Some(d) = self.damage {
            let _ = self.conn.damage_destroy(d);
        }
        let _ = self.conn.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::session_check;

    #[test]
    fn a_wayland_session_is_refused_unless_a_display_is_named() {
        let refused = session_check(None, Some("wayland-0")).expect_err("Wayland session");
        assert!(refused.to_string().contains("Wayland session"), "{refused}");
        assert!(refused.to_string().contains("--screen :N"), "{refused}");
        assert!(session_check(Some(":1"), Some("wayland-0")).is_ok());
        assert!(session_check(None, None).is_ok());
        assert!(session_check(None, Some("")).is_ok());
    }
}
