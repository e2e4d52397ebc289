//! The screen through the desktop portal (`org.freedesktop.portal.ScreenCast`), the way
//! a Wayland desktop (GNOME, KDE, wlroots) lets a program see the screen: the desktop
//! asks the user what to share, then hands over a PipeWire connection that carries
//! only that. Everything here runs on the capture thread: the user may take their time
//! in the desktop's dialog, and a misbehaving portal or compositor must never hold up
//! (or take down) the call.

use super::Latest;
use crate::MediaError;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Where the portal is reached.
#[derive(Debug, Clone, Default)]
pub struct PortalOptions {
    /// The session bus's address; `None`: the user's (`$DBUS_SESSION_BUS_ADDRESS`).
    pub bus: Option<String>,
    /// Ask the desktop to draw the cursor in.
    pub cursor: bool,
}

/// Whether this build can share through the portal (the `portal` feature).
pub fn available() -> bool {
    cfg!(feature = "portal")
}

/// Asks the portal for a screen, then passes its pictures on (converted to I420 at
/// `size`, only while they are asked for) until `stop`; what went wrong is left in
/// `latest` for the call to say.
pub(super) fn run(
    options: &PortalOptions,
    size: (u32, u32),
    fps: u32,
    latest: &Arc<Mutex<Latest>>,
    stop: &Arc<AtomicBool>,
) {
    // The portal crate asserts things about the portal's answers: a panic there is
    // the portal's failure, said like any other.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        imp::share(options, size, fps, latest, stop)
    }))
    .unwrap_or_else(|_| Err(failed("the desktop portal gave an answer it should not")));
    if let Err(e) = result
        && let Ok(mut l) = latest.lock()
    {
        l.error.get_or_insert(e.to_string());
    }
}

fn failed(what: impl std::fmt::Display) -> MediaError {
    MediaError::InvalidInput(format!("screen sharing through the desktop portal: {what}"))
}

#[cfg(not(feature = "portal"))]
mod imp {
    use super::*;

    pub(super) fn share(
        _: &PortalOptions,
        _: (u32, u32),
        _: u32,
        _: &Arc<Mutex<Latest>>,
        _: &Arc<AtomicBool>,
    ) -> Result<(), MediaError> {
        Err(failed(
            "this build of Hushphone has no portal support (built without the `portal` feature)",
        ))
    }
}

#[cfg(feature = "portal")]
mod imp {
    use super::*;
    use crate::screen::{Bgrx, BgrxConverter, fit};
    use crate::video::I420Frame;
    use ashpd::desktop::PersistMode;
    use ashpd::desktop::screencast::{
        CursorMode, Screencast, SelectSourcesOptions, SourceType, StartCastOptions,
    };
    use pipewire as pw;
    use pw::spa;
    use std::cell::RefCell;
    use std::os::fd::OwnedFd;
    use std::rc::Rc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// How long the user may take in the desktop's dialog.
    const CHOOSE_WAIT: Duration = Duration::from_secs(120);
    /// How long closing the portal's session may take at the end.
    const CLOSE_WAIT: Duration = Duration::from_secs(2);
    /// How often the capture thread looks whether it should stop.
    const STOP_POLL: Duration = Duration::from_millis(100);
    /// The largest screen taken (as the X11 capture).
    const MAX_SIDE: u32 = 8192;
    /// Pictures in a row that cannot be read before the share is given up.
    const BAD_IN_A_ROW: u32 = 30;

    /// What the portal granted.
    struct Granted {
        session: ashpd::desktop::Session<Screencast>,
        fd: OwnedFd,
        node: u32,
    }

    pub(super) fn share(
        options: &PortalOptions,
        size: (u32, u32),
        fps: u32,
        latest: &Arc<Mutex<Latest>>,
        stop: &Arc<AtomicBool>,
    ) -> Result<(), MediaError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let granted = runtime.block_on(async {
            tokio::select! {
                granted = tokio::time::timeout(CHOOSE_WAIT, handshake(options)) => granted
                    .map_err(|_| failed("nothing was chosen in the desktop's dialog within two minutes"))?,
                () = stopped(stop) => Err(failed("stopped before the desktop answered")),
            }
        })?;
        tracing::info!(node = granted.node, "the desktop portal granted a screen");
        let result = receive(granted.fd, granted.node, size, fps, latest, stop);
        runtime.block_on(async {
            let _ = tokio::time::timeout(CLOSE_WAIT, granted.session.close()).await;
        });
        result
    }

    async fn stopped(stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    fn said(e: ashpd::Error) -> MediaError {
        match e {
            ashpd::Error::Response(ashpd::desktop::ResponseError::Cancelled) => {
                failed("the share was cancelled in the desktop's dialog")
            }
            e => failed(e),
        }
    }

    /// The portal's dance: a session, what may be chosen, the user's choice, and a
    /// PipeWire connection limited to it.
    async fn handshake(options: &PortalOptions) -> Result<Granted, MediaError> {
        let connection = match &options.bus {
            Some(address) => ashpd::zbus::connection::Builder::address(address.as_str())
                .map_err(failed)?
                .build()
                .await
                .map_err(|e| failed(format!("the session bus at {address}: {e}")))?,
            None => ashpd::zbus::Connection::session()
                .await
                .map_err(|e| failed(format!("no session bus: {e}")))?,
        };
        let no_portal = |e: ashpd::Error| {
            failed(format!(
                "no desktop portal answers on the session bus ({e}): sharing a Wayland \
                 screen needs xdg-desktop-portal and the desktop's backend \
                 (xdg-desktop-portal-gnome, -kde or -wlr)"
            ))
        };
        let portal = Screencast::with_connection(connection)
            .await
            .map_err(no_portal)?;
        let offered = portal.available_source_types().await.map_err(no_portal)?;
        // Monitors only: a window's stream carries a crop region (its frame inside
        // a larger buffer) that is not read yet, so the other side would see padding.
        let sources = offered & SourceType::Monitor;
        if sources.is_empty() {
            return Err(failed("the desktop offers no screen to share"));
        }
        let cursors = portal.available_cursor_modes().await.unwrap_or_default();
        let cursor = if options.cursor {
            CursorMode::Embedded
        } else {
            CursorMode::Hidden
        };
        let session = portal
            .create_session(Default::default())
            .await
            .map_err(said)?;
        portal
            .select_sources(
                &session,
                SelectSourcesOptions::default()
                    .set_sources(sources)
                    .set_multiple(false)
                    .set_cursor_mode(cursors.contains(cursor).then_some(cursor))
                    .set_persist_mode(PersistMode::DoNot),
            )
            .await
            .and_then(|r| r.response())
            .map_err(said)?;
        let streams = portal
            .start(&session, None, StartCastOptions::default())
            .await
            .and_then(|r| r.response())
            .map_err(said)?;
        let stream = streams
            .streams()
            .first()
            .ok_or_else(|| failed("the desktop granted nothing to share"))?;
        // Monitors were asked for; a window (whose crop is not read) is refused.
        if let Some(kind) = stream.source_type()
            && kind != SourceType::Monitor
        {
            return Err(failed(format!(
                "the desktop granted a {kind:?}, not a screen"
            )));
        }
        let node = stream.pipe_wire_node_id();
        let fd = portal
            .open_pipe_wire_remote(&session, Default::default())
            .await
            .map_err(said)?;
        Ok(Granted { session, fd, node })
    }

    /// What the PipeWire callbacks share.
    struct Receiving {
        latest: Arc<Mutex<Latest>>,
        size: (u32, u32),
        /// The negotiated format: red and blue swapped against BGRx, and the size.
        format: Option<(bool, u32, u32)>,
        converter: BgrxConverter,
        /// The picture copied out of the buffer the desktop shares with us.
        pixels: Vec<u8>,
        bad_in_a_row: u32,
        ended: Option<String>,
    }

    impl Receiving {
        /// One buffer from the desktop: checked, copied out row by row (packed),
        /// converted, handed over. Everything about the buffer comes from the
        /// compositor and is checked before a byte is read.
        /// Whether it held a picture (an empty or corrupted one is neither good nor
        /// bad).
        fn take(&mut self, data: &spa::buffer::Data) -> Result<bool, String> {
            let Some((swap, w, h)) = self.format else {
                return Err("a picture before its format".into());
            };
            let raw = data.as_raw();
            if raw.chunk.is_null() || raw.data.is_null() {
                return Err("a picture in memory that cannot be read (not shared memory)".into());
            }
            // SAFETY: non-null (checked), and PipeWire points it at this buffer's
            // chunk while the buffer is dequeued. The desktop may write it at any
            // time: it is read once, by value, and never referenced.
            let chunk = unsafe { std::ptr::read_volatile(raw.chunk) };
            if chunk.flags & spa::sys::SPA_CHUNK_FLAG_CORRUPTED as i32 != 0 || chunk.size == 0 {
                return Ok(false);
            }
            let row = w as usize * 4;
            let stride = match chunk.stride {
                0 => row,
                s if s > 0 => s as usize,
                _ => return Err("a picture stored bottom-up".into()),
            };
            // Padding is fine; a stride far beyond the row is not a screen's.
            if stride < row || stride > 2 * row.max(4096) {
                return Err(format!("rows of {stride} bytes for {w} pixels"));
            }
            let offset = chunk.offset as usize;
            let needed = stride * (h as usize - 1) + row;
            if needed > chunk.size as usize
                || offset
                    .checked_add(needed)
                    .is_none_or(|end| end > raw.maxsize as usize)
            {
                return Err(format!(
                    "a {w}x{h} picture with rows of {stride} does not fit its buffer \
                     ({} bytes at {offset} of {})",
                    chunk.size, raw.maxsize
                ));
            }
            if raw.type_ == spa::sys::SPA_DATA_MemFd {
                // Memory smaller than the mapping would kill the process (SIGBUS)
                // when read past its end. A compositor that shrinks it between this
                // check and the copy still could: it is trusted that far (it already
                // sees and draws everything on the screen), and unsealed memory is
                // what xdg-desktop-portal-wlr hands out.
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: fstat writes a `stat` into the buffer it is given; it is read
                // only when fstat said it did.
                let size = if unsafe { libc::fstat(raw.fd as i32, st.as_mut_ptr()) } == 0 {
                    unsafe { st.assume_init() }.st_size
                } else {
                    0
                };
                let mapped = raw.mapoffset as i64 + raw.maxsize as i64;
                if size < mapped {
                    return Err(format!(
                        "shared memory of {size} bytes where {mapped} are mapped"
                    ));
                }
            }
            let packed = row * h as usize;
            self.pixels.clear();
            self.pixels
                .try_reserve(packed)
                .map_err(|_| format!("no memory for a {w}x{h} picture"))?;
            let base = raw.data.cast::<u8>().cast_const();
            for y in 0..h as usize {
                // SAFETY: row `y` lies at `offset + y * stride .. + row`, inside the
                // `maxsize` bytes PipeWire mapped at `raw.data` for this dequeued
                // buffer (checked above: `offset + needed <= maxsize`); `pixels` has
                // room for `packed` bytes, of which `y * row` are filled. The desktop
                // may write the memory under the copy: they are plain bytes, copied
                // without ever forming a reference to the shared memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        base.add(offset + y * stride),
                        self.pixels.as_mut_ptr().add(y * row),
                        row,
                    );
                }
            }
            // SAFETY: all `packed` bytes were written by the loop above.
            unsafe { self.pixels.set_len(packed) };
            if swap {
                for px in self.pixels.chunks_exact_mut(4) {
                    px.swap(0, 2);
                }
            }
            let (fw, fh) = fit(w, h, self.size);
            let mut frame = I420Frame::black(fw, fh).map_err(|e| e.to_string())?;
            self.converter
                .convert(
                    &Bgrx {
                        data: &self.pixels,
                        width: w,
                        height: h,
                        stride: row,
                    },
                    &mut frame,
                )
                .map_err(|e| e.to_string())?;
            // Black around it only when its shape differs from the call's.
            if (fw, fh) != self.size {
                frame = frame
                    .fitted_into(self.size.0, self.size.1)
                    .map_err(|e| e.to_string())?;
            }
            let mut l = self.latest.lock().map_err(|_| "poisoned".to_string())?;
            l.picture = Some(frame);
            l.stats.captured += 1;
            Ok(true)
        }
    }

    /// Runs a PipeWire callback's body: a panic there would cross into C and abort
    /// the process, so it ends the share with words instead.
    fn guarded(end: &Rc<dyn Fn(String)>, body: impl FnOnce()) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
            end("reading the shared screen failed unexpectedly".into());
        }
    }

    /// The formats asked for: four bytes a pixel, any size, up to `fps`.
    fn enum_format(fps: u32) -> Result<Vec<u8>, MediaError> {
        use spa::param::format::{FormatProperties, MediaSubtype, MediaType};
        use spa::param::video::VideoFormat;
        use spa::utils::{Fraction, Rectangle};
        let object = spa::pod::object!(
            spa::utils::SpaTypes::ObjectParamFormat,
            spa::param::ParamType::EnumFormat,
            spa::pod::property!(FormatProperties::MediaType, Id, MediaType::Video),
            spa::pod::property!(FormatProperties::MediaSubtype, Id, MediaSubtype::Raw),
            spa::pod::property!(
                FormatProperties::VideoFormat,
                Choice,
                Enum,
                Id,
                VideoFormat::BGRx,
                VideoFormat::BGRx,
                VideoFormat::BGRA,
                VideoFormat::RGBx,
                VideoFormat::RGBA
            ),
            spa::pod::property!(
                FormatProperties::VideoSize,
                Choice,
                Range,
                Rectangle,
                Rectangle {
                    width: 1280,
                    height: 720
                },
                Rectangle {
                    width: 1,
                    height: 1
                },
                Rectangle {
                    width: MAX_SIDE,
                    height: MAX_SIDE
                }
            ),
            spa::pod::property!(
                FormatProperties::VideoFramerate,
                Choice,
                Range,
                Fraction,
                Fraction { num: fps, denom: 1 },
                Fraction { num: 0, denom: 1 },
                Fraction { num: fps, denom: 1 }
            ),
            spa::pod::property!(
                FormatProperties::VideoMaxFramerate,
                Choice,
                Range,
                Fraction,
                Fraction { num: fps, denom: 1 },
                Fraction { num: 1, denom: 1 },
                Fraction { num: fps, denom: 1 }
            ),
        );
        let (cursor, _) = spa::pod::serialize::PodSerializer::serialize(
            std::io::Cursor::new(Vec::new()),
            &spa::pod::Value::Object(object),
        )
        .map_err(|e| failed(format!("the format asked for: {e:?}")))?;
        Ok(cursor.into_inner())
    }

    /// What a negotiated format means for us: red and blue swapped, and the size.
    fn accepted(param: &spa::pod::Pod) -> Result<(bool, u32, u32), String> {
        use spa::param::video::{VideoFormat, VideoInfoRaw};
        let mut info = VideoInfoRaw::default();
        info.parse(param)
            .map_err(|e| format!("an unreadable format: {e}"))?;
        let swap = match info.format() {
            VideoFormat::BGRx | VideoFormat::BGRA => false,
            VideoFormat::RGBx | VideoFormat::RGBA => true,
            other => return Err(format!("a pixel format not asked for ({other:?})")),
        };
        let size = info.size();
        if !(1..=MAX_SIDE).contains(&size.width) || !(1..=MAX_SIDE).contains(&size.height) {
            return Err(format!("a {}x{} screen", size.width, size.height));
        }
        Ok((swap, size.width, size.height))
    }

    /// Reads the granted stream until `stop`, the desktop ends it, or it fails.
    fn receive(
        fd: OwnedFd,
        node: u32,
        size: (u32, u32),
        fps: u32,
        latest: &Arc<Mutex<Latest>>,
        stop: &Arc<AtomicBool>,
    ) -> Result<(), MediaError> {
        pw::init();
        let pipewire = |e: pw::Error| failed(format!("PipeWire: {e}"));
        let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(pipewire)?;
        let context = pw::context::ContextRc::new(&mainloop, None).map_err(pipewire)?;
        let core = context.connect_fd_rc(fd, None).map_err(pipewire)?;
        let state = Rc::new(RefCell::new(Receiving {
            latest: latest.clone(),
            size,
            format: None,
            converter: BgrxConverter::default(),
            pixels: Vec::new(),
            bad_in_a_row: 0,
            ended: None,
        }));
        let end: Rc<dyn Fn(String)> = {
            let (state, mainloop) = (state.clone(), mainloop.downgrade());
            Rc::new(move |why: String| {
                // Never a second borrow (a panic here would be outside any guard).
                if let Ok(mut s) = state.try_borrow_mut() {
                    s.ended.get_or_insert(why);
                }
                if let Some(m) = mainloop.upgrade() {
                    m.quit();
                }
            })
        };
        let _core_listener = core
            .add_listener_local()
            .error({
                let end = end.clone();
                move |id, _, res, message| {
                    guarded(&end, || {
                        if id == pw::core::PW_ID_CORE {
                            end(format!(
                                "the desktop's PipeWire connection failed ({res}: {message})"
                            ));
                        }
                    })
                }
            })
            .register();
        // The desktop ending the share (its indicator's Stop) removes the screen's node.
        let registry = core.get_registry_rc().map_err(pipewire)?;
        let _registry_listener = registry
            .add_listener_local()
            .global_remove({
                let end = end.clone();
                move |id| {
                    guarded(&end, || {
                        if id == node {
                            end("the desktop ended the share".into());
                        }
                    })
                }
            })
            .register();
        let stream = pw::stream::StreamBox::new(
            &core,
            "hushphone-screen",
            // Only the granted node (`connect` names it): never another video source
            // in its place.
            pw::properties::properties! {
                *pw::keys::MEDIA_TYPE => "Video",
                *pw::keys::MEDIA_CATEGORY => "Capture",
                *pw::keys::MEDIA_ROLE => "Screen",
                *pw::keys::NODE_DONT_RECONNECT => "true",
                "node.dont-fallback" => "true",
            },
        )
        .map_err(pipewire)?;
        let started = Rc::new(RefCell::new(false));
        let _listener = stream
            .add_local_listener_with_user_data(())
            .state_changed({
                let (end, started) = (end.clone(), started.clone());
                move |_, _, _, new| {
                    guarded(&end, || match new {
                        pw::stream::StreamState::Error(e) => {
                            end(format!("the shared screen's stream failed: {e}"))
                        }
                        pw::stream::StreamState::Streaming => *started.borrow_mut() = true,
                        pw::stream::StreamState::Unconnected if *started.borrow() => {
                            end("the desktop ended the share".into())
                        }
                        _ => {}
                    })
                }
            })
            .param_changed({
                let (state, end) = (state.clone(), end.clone());
                move |_, _, id, param| {
                    guarded(&end, || {
                        let Some(param) = param else { return };
                        if id != spa::param::ParamType::Format.as_raw() {
                            return;
                        }
                        match accepted(param) {
                            Ok(format) => {
                                tracing::debug!(?format, "the shared screen's format");
                                state.borrow_mut().format = Some(format);
                            }
                            Err(e) => end(format!("the desktop sends {e}")),
                        }
                    })
                }
            })
            .process({
                let (state, end) = (state.clone(), end.clone());
                move |stream, _| {
                    guarded(&end, || {
                        // Only the newest picture matters: older ones go straight back.
                        let mut newest = None;
                        while let Some(buffer) = stream.dequeue_buffer() {
                            newest = Some(buffer);
                        }
                        let Some(mut buffer) = newest else { return };
                        let mut s = state.borrow_mut();
                        if !super::super::wanted(&s.latest) {
                            return;
                        }
                        let Some(data) = buffer.datas_mut().first() else {
                            return;
                        };
                        match s.take(data) {
                            Ok(true) => s.bad_in_a_row = 0,
                            Ok(false) => {}
                            Err(e) => {
                                s.bad_in_a_row += 1;
                                tracing::debug!("a shared screen picture skipped: {e}");
                                if s.bad_in_a_row >= BAD_IN_A_ROW {
                                    drop(s);
                                    end(format!("the desktop's pictures cannot be read: {e}"));
                                }
                            }
                        }
                    })
                }
            })
            .register()
            .map_err(pipewire)?;
        let format = enum_format(fps)?;
        let pod = spa::pod::Pod::from_bytes(&format)
            .ok_or_else(|| failed("the format asked for does not read back"))?;
        stream
            .connect(
                spa::utils::Direction::Input,
                Some(node),
                pw::stream::StreamFlags::AUTOCONNECT
                    | pw::stream::StreamFlags::MAP_BUFFERS
                    | pw::stream::StreamFlags::DONT_RECONNECT,
                &mut [pod],
            )
            .map_err(pipewire)?;
        let first_by = Instant::now() + Duration::from_secs(10);
        let timer = mainloop.loop_().add_timer({
            let (end, state, mainloop) = (end.clone(), state.clone(), mainloop.downgrade());
            let stop = stop.clone();
            move |_| {
                guarded(&end, || {
                    if stop.load(Ordering::Relaxed) {
                        if let Some(m) = mainloop.upgrade() {
                            m.quit();
                        }
                    } else if state.try_borrow().is_ok_and(|s| s.format.is_none())
                        && Instant::now() > first_by
                    {
                        end(
                            "the desktop and Hushphone agreed on no picture format within 10 s"
                                .into(),
                        );
                    }
                })
            }
        });
        timer
            .update_timer(Some(STOP_POLL), Some(STOP_POLL))
            .into_result()
            .map_err(|e| failed(format!("PipeWire timer: {e}")))?;
        mainloop.run();
        let _ = stream.disconnect();
        match state.borrow_mut().ended.take() {
            Some(why) if !stop.load(Ordering::Relaxed) => Err(failed(why)),
            _ => Ok(()),
        }
    }
}
