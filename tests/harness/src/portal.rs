//! A desktop's screen-sharing portal of its own: a private session bus, PipeWire and
//! WirePlumber, the real `xdg-desktop-portal` frontend, and behind it a portal backend
//! whose "screen" is a PipeWire video source painting pictures the test chooses.
//!
//! Why a backend of our own: the one real backend that needs no user at a dialog,
//! xdg-desktop-portal-wlr (0.7), insists on a DMA-BUF format from the compositor,
//! which needs a GPU render node this machine does not have; GNOME's and KDE's always
//! ask the user in a dialog. Everything the sharing program talks to (the portal
//! frontend on D-Bus, the PipeWire remote it hands out, the stream's negotiation and
//! shared-memory buffers) is the real thing.

use crate::process::ServerProcess;
use crate::{HarnessError, Result, io};
use ashpd::backend::request::RequestImpl;
use ashpd::backend::screencast::{ScreencastImpl, SelectSourcesResponse};
use ashpd::backend::session::{CreateSessionResponse, SessionImpl};
use ashpd::desktop::screencast::{
    CursorMode, SelectSourcesOptions, SourceType, StartCastOptions, StreamBuilder, Streams,
    StreamsBuilder,
};
use ashpd::desktop::{CreateSessionOptions, HandleToken};
use ashpd::enumflags2::BitFlags;
use ashpd::{MaybeAppID, PortalError, WindowIdentifierType};
use pipewire as pw;
use pw::spa;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The backend's well-known name and the desktop name that selects it.
const BACKEND: &str = "org.freedesktop.impl.portal.desktop.hushtest";
const DESKTOP: &str = "hushtest";

/// Paints the `n`th picture of the screen: BGRx, its size, rows packed.
pub type Painter = Box<dyn FnMut(u64) -> Vec<u8> + Send>;

/// The desktop's screen: its size and rate, and how its pixels are laid out in the
/// buffers it shares. Rows are always padded and start past the buffer's beginning,
/// as compositors' often do, so a reader must honour stride and offset.
#[derive(Debug, Clone, Copy)]
pub struct TestScreen {
    /// Pixels across.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Pictures a second.
    pub fps: u32,
    /// Red first (RGBx) instead of blue first (BGRx).
    pub rgbx: bool,
    /// Whose memory the pictures are in.
    pub memory: ScreenMemory,
}

/// Whose memory a test screen's pictures are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenMemory {
    /// PipeWire's own pool (a reader sees MemPtr).
    PipeWire,
    /// A memfd of the screen's own per buffer, as mutter, KWin and
    /// xdg-desktop-portal-wlr hand out (a reader sees MemFd).
    Memfd,
    /// Like `Memfd`, but each file holds half of what the buffer claims: reading the
    /// rest of the mapping would raise SIGBUS. Nothing is painted.
    ShortMemfd,
}

/// Padding after each row (not a multiple of 4: rows need not be pixel-aligned) and
/// bytes before the first, in the screen's buffers.
const ROW_PADDING: u32 = 70;
const FIRST_ROW_AT: u32 = 256;

/// What the backend was asked, and how it answers.
#[derive(Debug, Default)]
struct Asked {
    /// Cursor modes asked for in SelectSources.
    cursor_modes: Vec<Option<CursorMode>>,
    /// Answer the next Start as a user who cancels the dialog.
    refuse: bool,
    /// Start calls answered.
    starts: u32,
}

/// A session bus of its own (`dbus-daemon`), with nothing on it at first; stopped and
/// reaped on drop.
pub struct SessionBus {
    _process: ServerProcess,
    address: String,
    dir: tempfile::TempDir,
}

impl SessionBus {
    /// Starts it and returns once it listens.
    pub fn start() -> Result<SessionBus> {
        let dir = tempfile::tempdir().map_err(io("temp dir"))?;
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        // A configuration of its own: no service directories, so nothing on the
        // machine (a real portal, a document store) is ever started on it.
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>{address}</listen>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n"
            ),
        )
        .map_err(io("bus config"))?;
        let mut cmd = Command::new("dbus-daemon");
        cmd.args(["--nofork", "--nopidfile"])
            .arg(format!("--config-file={}", config.display()));
        let mut process = ServerProcess::spawn("dbus-daemon", cmd, &dir.path().join("bus.log"))?;
        process.wait_ready(Duration::from_secs(10), || socket.exists())?;
        Ok(SessionBus {
            _process: process,
            address,
            dir,
        })
    }

    /// Its address (`DBUS_SESSION_BUS_ADDRESS` for a program).
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// A running desktop portal with one screen; everything stops and is reaped on drop.
pub struct PortalDesktop {
    // Dropped first to last: the frontend, the backend's screen, then the servers.
    _frontend: ServerProcess,
    painter: ScreenThread,
    backend_stop: Option<tokio::sync::oneshot::Sender<()>>,
    backend: Option<std::thread::JoinHandle<()>>,
    _wireplumber: ServerProcess,
    _pipewire: ServerProcess,
    bus: SessionBus,
    asked: Arc<Mutex<Asked>>,
    address: String,
    dir: tempfile::TempDir,
}

fn tool(what: impl std::fmt::Display) -> HarnessError {
    HarnessError::Tool(format!("portal desktop: {what}"))
}

impl PortalDesktop {
    /// Starts it all with `screen` showing `paint`'s pictures, and returns once the
    /// portal answers on the bus.
    pub fn start(screen: TestScreen, paint: Painter) -> Result<PortalDesktop> {
        let dir = tempfile::tempdir().map_err(io("temp dir"))?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run).map_err(io("runtime dir"))?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home).map_err(io("home dir"))?;
        let bus = SessionBus::start()?;
        let address = bus.address.clone();

        let env = |cmd: &mut Command| {
            // Nothing of the user's: not their configuration, state or runtime dir.
            cmd.env("DBUS_SESSION_BUS_ADDRESS", &address)
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join(".config"))
                .env("XDG_STATE_HOME", home.join(".local/state"))
                .env("XDG_DATA_HOME", home.join(".local/share"))
                .env("XDG_RUNTIME_DIR", &run)
                .env("PIPEWIRE_RUNTIME_DIR", &run)
                .env_remove("PIPEWIRE_REMOTE")
                .env("XDG_CURRENT_DESKTOP", DESKTOP);
        };
        let mut cmd = Command::new("pipewire");
        env(&mut cmd);
        let mut pipewire = ServerProcess::spawn("pipewire", cmd, &dir.path().join("pw.log"))?;
        let pw_socket = run.join("pipewire-0");
        pipewire.wait_ready(Duration::from_secs(10), || pw_socket.exists())?;
        let mut cmd = Command::new("wireplumber");
        env(&mut cmd);
        let wireplumber = ServerProcess::spawn("wireplumber", cmd, &dir.path().join("wp.log"))?;

        // The screen: a PipeWire video source of our own.
        let stop = Arc::new(AtomicBool::new(false));
        let (node_tx, node_rx) = mpsc::channel();
        let painting = {
            let (stop, socket) = (stop.clone(), pw_socket.clone());
            std::thread::Builder::new()
                .name("portal-screen".into())
                .spawn(move || {
                    if let Err(e) = paint_screen(&socket, &screen, paint, &node_tx, &stop) {
                        let _ = node_tx.send(Err(e));
                    }
                })
                .map_err(io("screen thread"))?
        };
        // Stopped and joined however `start` ends from here on.
        let painter = ScreenThread {
            stop,
            thread: Some(painting),
        };
        let node = node_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| tool("the test screen did not appear in PipeWire"))??;

        // The backend, on the private bus.
        let asked = Arc::new(Mutex::new(Asked::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let backend = {
            let (address, asked) = (address.clone(), asked.clone());
            std::thread::Builder::new()
                .name("portal-backend".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(tool(e)));
                            return;
                        }
                    };
                    // Serving lasts until the connection closes: stopped by the
                    // desktop's drop, or failed with words.
                    runtime.block_on(async move {
                        let imp = TestScreencast {
                            node,
                            size: (screen.width, screen.height),
                            asked,
                        };
                        tokio::select! {
                            served = serve(&address, imp) => {
                                let _ = ready_tx.send(served);
                            }
                            _ = stop_rx => {}
                        }
                    });
                })
                .map_err(io("backend thread"))?
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !has_owner(&address, BACKEND) {
            if let Ok(failed) = ready_rx.try_recv() {
                failed?;
            }
            if std::time::Instant::now() > deadline {
                return Err(tool("the backend did not come up"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }

        // The real frontend, told to use our backend.
        let portals = dir.path().join("portals");
        std::fs::create_dir(&portals).map_err(io("portals dir"))?;
        std::fs::write(
            portals.join("hushtest.portal"),
            format!(
                "[portal]\nDBusName={BACKEND}\nInterfaces=org.freedesktop.impl.portal.ScreenCast;\nUseIn={DESKTOP}\n"
            ),
        )
        .map_err(io("portal file"))?;
        let frontend_bin = [
            "/usr/libexec/xdg-desktop-portal",
            "/usr/lib/xdg-desktop-portal",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| tool("xdg-desktop-portal is not installed"))?;
        let mut cmd = Command::new(frontend_bin);
        env(&mut cmd);
        cmd.env("XDG_DESKTOP_PORTAL_DIR", &portals);
        let mut frontend =
            ServerProcess::spawn("xdg-desktop-portal", cmd, &dir.path().join("xdp.log"))?;
        let probe = address.clone();
        frontend.wait_ready(Duration::from_secs(15), move || {
            has_owner(&probe, "org.freedesktop.portal.Desktop")
        })?;

        Ok(PortalDesktop {
            _frontend: frontend,
            painter,
            backend_stop: Some(stop_tx),
            backend: Some(backend),
            _wireplumber: wireplumber,
            _pipewire: pipewire,
            bus,
            asked,
            address,
            dir,
        })
    }

    /// The private session bus's address (`DBUS_SESSION_BUS_ADDRESS` for a program).
    pub fn bus(&self) -> &str {
        &self.address
    }

    /// The next Start is answered as a user who cancels the desktop's dialog.
    pub fn refuse_next(&self) {
        if let Ok(mut a) = self.asked.lock() {
            a.refuse = true;
        }
    }

    /// Shares granted so far.
    pub fn starts(&self) -> u32 {
        self.asked.lock().map(|a| a.starts).unwrap_or(0)
    }

    /// The cursor modes asked for, one per SelectSources.
    pub fn cursor_modes(&self) -> Vec<Option<CursorMode>> {
        self.asked
            .lock()
            .map(|a| a.cursor_modes.clone())
            .unwrap_or_default()
    }

    /// The screen's PipeWire source goes away, as when the user stops the share from
    /// the desktop's own indicator.
    pub fn end_screen(&mut self) {
        self.painter.end();
    }

    /// The servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        [
            self.bus.dir.path().join("bus.log"),
            self.dir.path().join("pw.log"),
            self.dir.path().join("wp.log"),
            self.dir.path().join("xdp.log"),
        ]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            format!(
                "--- {}\n{}",
                f.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
    }
}

impl Drop for PortalDesktop {
    fn drop(&mut self) {
        self.end_screen();
        if let Some(s) = self.backend_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.backend.take() {
            let _ = t.join();
        }
    }
}

/// The screen's thread: told to stop and joined when dropped.
struct ScreenThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScreenThread {
    fn end(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScreenThread {
    fn drop(&mut self) {
        self.end();
    }
}

/// Whether `name` is owned on the bus at `address`.
fn has_owner(address: &str, name: &str) -> bool {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    runtime.block_on(async {
        let Ok(builder) = ashpd::zbus::connection::Builder::address(address) else {
            return false;
        };
        let Ok(conn) = builder.build().await else {
            return false;
        };
        let Ok(dbus) = ashpd::zbus::fdo::DBusProxy::new(&conn).await else {
            return false;
        };
        let Ok(name) = name.try_into() else {
            return false;
        };
        dbus.name_has_owner(name).await.unwrap_or(false)
    })
}

async fn serve(address: &str, imp: TestScreencast) -> Result<()> {
    let conn = ashpd::zbus::connection::Builder::address(address)
        .map_err(tool)?
        .build()
        .await
        .map_err(tool)?;
    ashpd::backend::Builder::new(BACKEND)
        .map_err(tool)?
        .screencast(imp)
        .build_with_connection(conn)
        .await
        .map_err(tool)
}

/// The backend: one monitor, granted at once (no dialog), unless told to refuse.
struct TestScreencast {
    node: u32,
    size: (u32, u32),
    asked: Arc<Mutex<Asked>>,
}

#[ashpd::async_trait::async_trait]
impl RequestImpl for TestScreencast {
    async fn close(&self, _token: HandleToken) {}
}

#[ashpd::async_trait::async_trait]
impl SessionImpl for TestScreencast {
    async fn session_closed(&self, _token: HandleToken) -> ashpd::backend::Result<()> {
        Ok(())
    }
}

#[ashpd::async_trait::async_trait]
impl ScreencastImpl for TestScreencast {
    fn available_source_types(&self) -> BitFlags<SourceType> {
        SourceType::Monitor.into()
    }

    fn available_cursor_mode(&self) -> BitFlags<CursorMode> {
        CursorMode::Hidden | CursorMode::Embedded
    }

    async fn create_session(
        &self,
        _token: HandleToken,
        session_token: HandleToken,
        _app_id: Option<MaybeAppID>,
        _options: CreateSessionOptions,
    ) -> ashpd::backend::Result<CreateSessionResponse> {
        Ok(CreateSessionResponse::new(session_token))
    }

    async fn select_sources(
        &self,
        _session_token: HandleToken,
        _app_id: Option<MaybeAppID>,
        options: SelectSourcesOptions,
    ) -> ashpd::backend::Result<SelectSourcesResponse> {
        if let Ok(mut a) = self.asked.lock() {
            a.cursor_modes.push(options.cursor_mode());
        }
        Ok(SelectSourcesResponse::default())
    }

    async fn start_cast(
        &self,
        _session_token: HandleToken,
        _app_id: Option<MaybeAppID>,
        _window_identifier: Option<WindowIdentifierType>,
        _options: StartCastOptions,
    ) -> ashpd::backend::Result<Streams> {
        let refuse = self
            .asked
            .lock()
            .map(|mut a| std::mem::take(&mut a.refuse))
            .unwrap_or(false);
        if refuse {
            return Err(PortalError::Cancelled("the user closed the dialog".into()));
        }
        if let Ok(mut a) = self.asked.lock() {
            a.starts += 1;
        }
        Ok(StreamsBuilder::new(vec![
            StreamBuilder::new(self.node)
                .size((self.size.0 as i32, self.size.1 as i32))
                .source_type(SourceType::Monitor)
                .build(),
        ])
        .build())
    }
}

/// The screen: a PipeWire video source driving itself at its rate, each picture from
/// `paint`; sends its node id once it has one, and runs until `stop` (or PipeWire
/// goes away).
fn paint_screen(
    socket: &Path,
    screen: &TestScreen,
    mut paint: Painter,
    node: &mpsc::Sender<Result<u32>>,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    pw::init();
    let failed = |e: pw::Error| tool(format!("PipeWire: {e}"));
    let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(failed)?;
    let context = pw::context::ContextRc::new(&mainloop, None).map_err(failed)?;
    let core = context
        .connect_rc(Some(pw::properties::properties! {
            *pw::keys::REMOTE_NAME => socket.display().to_string(),
        }))
        .map_err(failed)?;
    let _core_listener = core
        .add_listener_local()
        .error({
            let mainloop = mainloop.downgrade();
            move |id, _, _, _| {
                if id == pw::core::PW_ID_CORE
                    && let Some(m) = mainloop.upgrade()
                {
                    m.quit();
                }
            }
        })
        .register();
    let stream = pw::stream::StreamBox::new(
        &core,
        "hush-test-screen",
        pw::properties::properties! {
            *pw::keys::MEDIA_CLASS => "Video/Source",
            *pw::keys::NODE_NAME => "hush-test-screen",
        },
    )
    .map_err(failed)?;
    let (w, h, rgbx, memory) = (screen.width, screen.height, screen.rgbx, screen.memory);
    let row = w as usize * 4;
    let stride = w * 4 + ROW_PADDING;
    let buffer_size = FIRST_ROW_AT + stride * h;
    let frame = std::cell::Cell::new(0u64);
    let announced = std::cell::Cell::new(false);
    let node = node.clone();
    let _listener = stream
        .add_local_listener_with_user_data(())
        .state_changed(move |stream, _, _, new| {
            if matches!(
                new,
                pw::stream::StreamState::Paused | pw::stream::StreamState::Streaming
            ) && !announced.replace(true)
            {
                let _ = node.send(Ok(stream.node_id()));
            }
        })
        .param_changed(move |stream, _, id, param| {
            if param.is_none() || id != spa::param::ParamType::Format.as_raw() {
                return;
            }
            if let Ok(bytes) = buffers_param(buffer_size, stride, memory)
                && let Some(pod) = spa::pod::Pod::from_bytes(&bytes)
            {
                let _ = stream.update_params(&mut [pod]);
            }
        })
        .add_buffer(move |_, _, buffer| {
            if memory != ScreenMemory::PipeWire {
                own_memfd(buffer, buffer_size, memory == ScreenMemory::ShortMemfd);
            }
        })
        .remove_buffer(move |_, _, buffer| {
            if memory != ScreenMemory::PipeWire {
                free_memfd(buffer);
            }
        })
        .process(move |stream, _| {
            let Some(mut buffer) = stream.dequeue_buffer() else {
                return;
            };
            let picture = paint(frame.get());
            frame.set(frame.get() + 1);
            let Some(data) = buffer.datas_mut().first_mut() else {
                return;
            };
            if memory != ScreenMemory::ShortMemfd {
                let Some(out) = data.data() else { return };
                let rows = picture.chunks_exact(row).take(h as usize);
                for (y, line) in rows.enumerate() {
                    let at = FIRST_ROW_AT as usize + y * stride as usize;
                    let Some(to) = out.get_mut(at..at + row) else {
                        return;
                    };
                    to.copy_from_slice(line);
                    if rgbx {
                        for px in to.chunks_exact_mut(4) {
                            px.swap(0, 2);
                        }
                    }
                }
            }
            let chunk = data.chunk_mut();
            *chunk.offset_mut() = FIRST_ROW_AT;
            *chunk.size_mut() = stride * h;
            *chunk.stride_mut() = stride as i32;
        })
        .register()
        .map_err(failed)?;
    let format = format_param(screen)?;
    let pod = spa::pod::Pod::from_bytes(&format).ok_or_else(|| tool("format pod"))?;
    stream
        .connect(
            spa::utils::Direction::Output,
            None,
            if memory == ScreenMemory::PipeWire {
                pw::stream::StreamFlags::DRIVER | pw::stream::StreamFlags::MAP_BUFFERS
            } else {
                pw::stream::StreamFlags::DRIVER | pw::stream::StreamFlags::ALLOC_BUFFERS
            },
            &mut [pod],
        )
        .map_err(failed)?;
    let tick = mainloop.loop_().add_timer({
        let (mainloop, stop) = (mainloop.downgrade(), stop.clone());
        let stream = stream.as_raw_ptr();
        move |_| {
            if stop.load(Ordering::Relaxed) {
                if let Some(m) = mainloop.upgrade() {
                    m.quit();
                }
                return;
            }
            // SAFETY: the stream outlives the loop this timer runs on (both are
            // dropped after `run` returns, the timer first).
            unsafe {
                pw::sys::pw_stream_trigger_process(stream);
            }
        }
    });
    let every = Duration::from_micros(1_000_000 / u64::from(screen.fps.max(1)));
    let _ = tick.update_timer(Some(every), Some(every));
    mainloop.run();
    drop(tick);
    let _ = stream.disconnect();
    Ok(())
}

fn serialize(object: spa::pod::Object) -> Result<Vec<u8>> {
    spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(object),
    )
    .map(|(c, _)| c.into_inner())
    .map_err(|e| tool(format!("pod: {e:?}")))
}

/// BGRx or RGBx at exactly the screen's size and rate.
fn format_param(screen: &TestScreen) -> Result<Vec<u8>> {
    let (size, fps) = ((screen.width, screen.height), screen.fps);
    let layout = if screen.rgbx {
        spa::param::video::VideoFormat::RGBx
    } else {
        spa::param::video::VideoFormat::BGRx
    };
    use spa::param::format::{FormatProperties, MediaSubtype, MediaType};
    serialize(spa::pod::object!(
        spa::utils::SpaTypes::ObjectParamFormat,
        spa::param::ParamType::EnumFormat,
        spa::pod::property!(FormatProperties::MediaType, Id, MediaType::Video),
        spa::pod::property!(FormatProperties::MediaSubtype, Id, MediaSubtype::Raw),
        spa::pod::property!(FormatProperties::VideoFormat, Id, layout),
        spa::pod::property!(
            FormatProperties::VideoSize,
            Rectangle,
            spa::utils::Rectangle {
                width: size.0,
                height: size.1
            }
        ),
        spa::pod::property!(
            FormatProperties::VideoFramerate,
            Fraction,
            spa::utils::Fraction { num: 0, denom: 1 }
        ),
        spa::pod::property!(
            FormatProperties::VideoMaxFramerate,
            Fraction,
            spa::utils::Fraction { num: fps, denom: 1 }
        ),
    ))
}

/// Gives a buffer memory of its own: a memfd of `size` bytes (half that if `short`),
/// mapped whole.
fn own_memfd(buffer: *mut pw::sys::pw_buffer, size: u32, short: bool) {
    // SAFETY: PipeWire hands over a valid buffer with at least one data (the Buffers
    // param asks for one block); the file is created, sized and mapped here, and the
    // data is pointed at it until `free_memfd`.
    unsafe {
        let spa = (*buffer).buffer;
        if spa.is_null() || (*spa).n_datas == 0 {
            return;
        }
        let data = &mut *(*spa).datas;
        let fd = libc::memfd_create(c"hush-test-screen".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 {
            return;
        }
        let len = if short { size / 2 } else { size };
        if libc::ftruncate(fd, i64::from(len)) != 0 {
            libc::close(fd);
            return;
        }
        let map = libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if map == libc::MAP_FAILED {
            libc::close(fd);
            return;
        }
        data.type_ = spa::sys::SPA_DATA_MemFd;
        data.flags = spa::sys::SPA_DATA_FLAG_READWRITE;
        data.fd = i64::from(fd);
        data.mapoffset = 0;
        data.maxsize = size;
        data.data = map;
    }
}

/// Undoes [`own_memfd`].
fn free_memfd(buffer: *mut pw::sys::pw_buffer) {
    // SAFETY: the data was set up by `own_memfd` (or left empty: nothing to undo).
    unsafe {
        let spa = (*buffer).buffer;
        if spa.is_null() || (*spa).n_datas == 0 {
            return;
        }
        let data = &mut *(*spa).datas;
        if data.type_ != spa::sys::SPA_DATA_MemFd || data.data.is_null() {
            return;
        }
        libc::munmap(data.data, data.maxsize as usize);
        libc::close(data.fd as i32);
        data.data = std::ptr::null_mut();
        data.fd = -1;
    }
}

/// Shared-memory buffers of a picture each: PipeWire's, or the screen's own memfds.
fn buffers_param(size: u32, stride: u32, memory: ScreenMemory) -> Result<Vec<u8>> {
    use spa::pod::{Property, Value};
    let int = |key: u32, v: i32| Property::new(key, Value::Int(v));
    serialize(spa::pod::Object {
        type_: spa::utils::SpaTypes::ObjectParamBuffers.as_raw(),
        id: spa::param::ParamType::Buffers.as_raw(),
        properties: vec![
            int(spa::sys::SPA_PARAM_BUFFERS_buffers, 4),
            int(spa::sys::SPA_PARAM_BUFFERS_blocks, 1),
            int(spa::sys::SPA_PARAM_BUFFERS_size, size as i32),
            int(spa::sys::SPA_PARAM_BUFFERS_stride, stride as i32),
            int(
                spa::sys::SPA_PARAM_BUFFERS_dataType,
                if memory == ScreenMemory::PipeWire {
                    (1 << spa::sys::SPA_DATA_MemPtr) | (1 << spa::sys::SPA_DATA_MemFd)
                } else {
                    1 << spa::sys::SPA_DATA_MemFd
                },
            ),
        ],
    })
}
