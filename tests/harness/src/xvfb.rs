//! A virtual X11 screen of its own (Xvfb on a display number it picks itself), to
//! draw known pictures on and share them.

use crate::process::ServerProcess;
use crate::{HarnessError, Result, io};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

/// A running Xvfb, stopped and reaped on drop.
pub struct Xvfb {
    _process: ServerProcess,
    _dir: tempfile::TempDir,
    display: String,
    size: (u32, u32),
}

impl Xvfb {
    /// Starts a `width`×`height` 24-bit screen on a display number of its own, never
    /// `:0` (where programs without `$DISPLAY`, like linphonec's video window, go).
    /// `-noreset` keeps what was drawn when the drawing client disconnects.
    pub fn start(width: u32, height: u32) -> Result<Xvfb> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = 20 + std::process::id() % 400;
        let mut last = None;
        for _ in 0..20 {
            let n = base + NEXT.fetch_add(1, Ordering::Relaxed);
            if Path::new(&format!("/tmp/.X{n}-lock")).exists() {
                continue;
            }
            match Self::start_on(n, width, height) {
                Ok(x) => return Ok(x),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Tool("no free X display number".into())))
    }

    fn start_on(n: u32, width: u32, height: u32) -> Result<Xvfb> {
        let dir = tempfile::tempdir().map_err(io("temp dir"))?;
        let log = dir.path().join("xvfb.log");
        let mut cmd = std::process::Command::new("Xvfb");
        cmd.arg(format!(":{n}"))
            .args(["-noreset", "-nolisten", "tcp", "-screen", "0"])
            .arg(format!("{width}x{height}x24"));
        let mut process = ServerProcess::spawn("Xvfb", cmd, &log)?;
        let pid = process.pid().unwrap_or(0).to_string();
        // Ours once its lock names it and its socket is there (another server that
        // holds the number makes ours exit: the next number is tried).
        let lock = format!("/tmp/.X{n}-lock");
        let socket = format!("/tmp/.X11-unix/X{n}");
        process.wait_ready(Duration::from_secs(10), || {
            std::fs::read_to_string(&lock).is_ok_and(|l| l.trim() == pid)
                && Path::new(&socket).exists()
        })?;
        Ok(Xvfb {
            _process: process,
            _dir: dir,
            display: format!(":{n}"),
            size: (width, height),
        })
    }

    /// A connection of its own, and the screen's root window.
    fn connect(&self) -> std::result::Result<(RustConnection, Window), String> {
        let (conn, screen) = x11rb::connect(Some(&self.display)).map_err(|e| e.to_string())?;
        let root = conn.setup().roots.get(screen).ok_or("no such screen")?.root;
        Ok((conn, root))
    }

    /// Its display name (`:N`).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Covers the whole screen with `bgrx` (its size, 4 bytes a pixel), and returns
    /// once the server has drawn it.
    pub fn draw(&self, bgrx: &[u8]) -> Result<()> {
        let x11 = |e: &dyn std::fmt::Display| HarnessError::Tool(format!("Xvfb draw: {e}"));
        let (w, h) = self.size;
        let row = w as usize * 4;
        if bgrx.len() != row * h as usize {
            return Err(HarnessError::Tool(format!(
                "{} bytes for a {w}x{h} screen",
                bgrx.len()
            )));
        }
        let (conn, root) = self.connect().map_err(|e| x11(&e))?;
        let gc = conn.generate_id().map_err(|e| x11(&e))?;
        conn.create_gc(gc, root, &Default::default())
            .map_err(|e| x11(&e))?;
        // In strips: one request may not carry a whole screen.
        const ROWS: usize = 32;
        for (i, strip) in bgrx.chunks(row * ROWS).enumerate() {
            conn.put_image(
                ImageFormat::Z_PIXMAP,
                root,
                gc,
                w as u16,
                (strip.len() / row) as u16,
                0,
                (i * ROWS) as i16,
                0,
                24,
                strip,
            )
            .map_err(|e| x11(&e))?
            .check()
            .map_err(|e| x11(&e))?;
        }
        conn.free_gc(gc).map_err(|e| x11(&e))?;
        sync(&conn).map_err(|e| x11(&e))
    }

    /// Moves the pointer to (`x`, `y`).
    pub fn point_at(&self, x: i16, y: i16) -> Result<()> {
        let x11 = |e: &dyn std::fmt::Display| HarnessError::Tool(format!("Xvfb pointer: {e}"));
        let (conn, root) = self.connect().map_err(|e| x11(&e))?;
        conn.warp_pointer(x11rb::NONE, root, 0, 0, 0, 0, x, y)
            .map_err(|e| x11(&e))?;
        sync(&conn).map_err(|e| x11(&e))
    }
}

/// Returns once the server has handled everything sent before.
fn sync(conn: &RustConnection) -> std::result::Result<(), String> {
    conn.get_input_focus()
        .map_err(|e| e.to_string())?
        .reply()
        .map(|_| ())
        .map_err(|e| e.to_string())
}
