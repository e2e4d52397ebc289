//! The media thread of a call: the thin driver around [`AudioStream`] and, in a video
//! call, [`VideoStream`]. It owns the UDP sockets, the 20 ms frame clock, the camera's
//! clock and the devices; everything it learns goes out through a callback, and
//! commands come in through a channel. One thread per call, off the async runtime.
//! Which source to take media from and where to send it is the streams' decision:
//! datagrams go in with their source, and come out with their destination. The video
//! stream's ZRTP channel is the call's ZRTP session's (which the audio stream holds):
//! the driver carries its packets and outcome between the two, and starts it once the
//! audio channel is secure.

use crate::MediaError;
use crate::audio::{Sink, SinkSpec, Source, SourceSpec};
use crate::codec::FRAME_MS;
use crate::stream::{AudioStream, MediaSecurity, StreamConfig, StreamEvent, StreamStats};
use crate::video::{
    I420Frame, VideoConfig, VideoEvent, VideoSource, VideoStats, VideoStream, Y4mWriter,
};
use crate::zrtp::{ZrtpEvent, ZrtpSession, ZrtpState};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);
/// Received pictures are recorded at most this often (30 a second: a 15 fps stream
/// whose pictures arrive unevenly loses none).
const RECORD_INTERVAL: Duration = Duration::from_micros(1_000_000 / 30);
/// A recording stops at this size.
const MAX_RECORDING: u64 = 8 << 30;
/// How often statistics are reported.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Orders for a running media thread.
#[derive(Debug)]
pub enum MediaCommand {
    /// The peer's media address from a new SDP (re-INVITE): see [`AudioStream::set_remote`].
    SetRemote(SocketAddr),
    /// Send a DTMF key.
    Dtmf(char),
    /// Send silence instead of the microphone.
    Mute(bool),
    /// Stop sending audio and video (call on hold) or start again.
    Hold(bool),
    /// Stop sending pictures (camera off) or start again.
    Camera(bool),
    /// Take pictures from another source (camera to screen and back). The next
    /// picture is a key frame.
    VideoSource(SourceSwitch),
    /// The peer's video addresses from a new SDP (re-INVITE).
    VideoRemote {
        /// RTP (and ZRTP).
        rtp: SocketAddr,
        /// RTCP (the RTP address under rtcp-mux).
        rtcp: SocketAddr,
    },
    /// Add a ZRTP channel for a video stream to be offered or answered mid-call: the
    /// reply is its Hello hash for the m-line (`None`: the call has no ZRTP).
    AddVideoChannel {
        /// The video stream's SSRC.
        ssrc: u32,
        /// Where the hash (or why not) goes.
        reply: mpsc::Sender<Result<Option<String>, MediaError>>,
    },
    /// Remove a video channel added for a stream that did not start.
    RemoveVideoChannel(u32),
    /// Start the call's video stream (its ZRTP channel is in the call's session).
    AddVideo(Box<VideoSetup>),
    /// End the video stream (the recording is finalised).
    RemoveVideo,
    /// Record the user's SAS verdict in the ZRTP cache.
    SasVerified(bool),
    /// Answer on the channel once every command sent before this one is applied (e.g. a
    /// SAS verdict is in the ZRTP cache, ready to be sealed).
    Barrier(mpsc::Sender<()>),
    /// End the thread.
    Stop,
}

/// A new source for a call's pictures.
pub struct SourceSwitch {
    /// The new source.
    pub source: Box<dyn VideoSource>,
    /// It is a screen (the encoder's screen-content mode).
    pub screen: bool,
}

impl std::fmt::Debug for SourceSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSwitch")
            .field("size", &self.source.size())
            .field("screen", &self.screen)
            .finish_non_exhaustive()
    }
}

/// What the media thread tells the call layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaReport {
    /// A stream event (secure, cleartext, failed, DTMF).
    Event(StreamEvent),
    /// Current statistics, once a second.
    Stats(StreamStats),
    /// An event of the video stream (secure, with the call's SAS; cleartext; failed).
    VideoEvent(StreamEvent),
    /// Current video statistics, once a second.
    VideoStats(VideoStats),
    /// The thread ended; final statistics.
    Ended(StreamStats),
}

/// A bound RTP socket waiting for negotiation to finish.
pub struct PreparedMedia {
    socket: UdpSocket,
    local: SocketAddr,
}

impl PreparedMedia {
    /// Binds a UDP port on `ip` for RTP, RTCP and ZRTP.
    pub fn bind(ip: IpAddr) -> Result<PreparedMedia, MediaError> {
        let socket = UdpSocket::bind((ip, 0)).map_err(|e| {
            MediaError::InvalidInput(format!("cannot bind a media port on {ip}: {e}"))
        })?;
        let local = socket
            .local_addr()
            .map_err(|e| MediaError::InvalidInput(format!("media socket: {e}")))?;
        Ok(PreparedMedia { socket, local })
    }

    /// The address to put in our SDP.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts the media thread, sending to and taking media from `cfg.remote` (see
    /// [`crate::rtp::PeerAddress`] for a peer behind NAT).
    pub fn start(
        self,
        cfg: StreamConfig,
        zrtp: Option<ZrtpSession>,
        source: SourceSpec,
        sink: SinkSpec,
        report: impl Fn(MediaReport) + Send + 'static,
    ) -> Result<MediaCall, MediaError> {
        self.start_with_video(cfg, zrtp, source, sink, None, report)
    }

    /// As [`Self::start`], with a video stream too. Its ZRTP channel must have been
    /// added to `zrtp` (its Hello hash went into the video m-line).
    pub fn start_with_video(
        self,
        cfg: StreamConfig,
        mut zrtp: Option<ZrtpSession>,
        source: SourceSpec,
        sink: SinkSpec,
        video: Option<VideoSetup>,
        report: impl Fn(MediaReport) + Send + 'static,
    ) -> Result<MediaCall, MediaError> {
        // A video that cannot start is reported, and the audio goes on without it.
        let mut ended_video = None;
        let video = match video.map(|v| VideoPart::new(v, zrtp.as_mut(), Instant::now())) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the video stream could not start");
                ended_video = Some(StreamEvent::Failed(format!(
                    "the video stream could not start: {e}"
                )));
                None
            }
            None => None,
        };
        let rate = cfg.codec.clock_rate();
        let frame = cfg.codec.frame_samples();
        let echo = source == SourceSpec::Echo;
        let source = Source::open(&source, rate)?;
        let sink = Sink::open(&sink, rate)?;
        let now = Instant::now();
        let mut stream = AudioStream::new(cfg, zrtp, now)?;
        stream.start(now)?;
        let (tx, rx) = mpsc::channel();
        let (socket, local) = (self.socket, self.local);
        socket
            .set_nonblocking(true)
            .map_err(|e| MediaError::InvalidInput(format!("media socket: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("hush-media".into())
            .spawn(move || {
                let mut m = Loop {
                    stream,
                    socket,
                    source,
                    sink: Some(sink),
                    echo,
                    frame,
                    rate,
                    muted: false,
                    held: false,
                    last_heard: vec![0; frame],
                    video,
                    video_final: None,
                    ended_video,
                    last_recorded: None,
                };
                m.run(rx, &report)
            })
            .map_err(|e| MediaError::InvalidInput(format!("cannot start the media thread: {e}")))?;
        Ok(MediaCall {
            commands: tx,
            thread: Some(thread),
            local,
        })
    }
}

/// A running media thread. Dropping it stops the thread.
pub struct MediaCall {
    commands: mpsc::Sender<MediaCommand>,
    thread: Option<JoinHandle<()>>,
    /// The thread's socket, to wake it from its wait for the next packet or frame.
    local: SocketAddr,
}

impl MediaCall {
    /// Sends a command (ignored if the thread has ended).
    pub fn command(&self, c: MediaCommand) {
        let _ = self.commands.send(c);
    }

    /// Sends a [`MediaCommand::Barrier`]: the receiver gets `()` once the commands sent
    /// before are applied, or is disconnected at once if the thread has ended.
    pub fn barrier(&self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        self.command(MediaCommand::Barrier(tx));
        rx
    }

    /// Stops the thread and waits for it (files are finalised).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.commands.send(MediaCommand::Stop);
        if let Some(t) = self.thread.take() {
            self.wake();
            let _ = t.join();
        }
    }

    /// Ends the thread's wait on its socket at once with an empty datagram (which the
    /// loop ignores), so a stop costs microseconds, not the rest of a 20 ms frame.
    fn wake(&self) {
        let mut to = self.local;
        if to.ip().is_unspecified() {
            to.set_ip(match to {
                SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let any: SocketAddr = match to {
            SocketAddr::V4(_) => (IpAddr::from([0, 0, 0, 0]), 0).into(),
            SocketAddr::V6(_) => (IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), 0).into(),
        };
        if let Ok(s) = UdpSocket::bind(any) {
            let _ = s.send_to(&[], to);
        }
    }
}

impl Drop for MediaCall {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The two UDP ports of a video stream (RTP, and RTCP for peers without rtcp-mux),
/// bound while the call is negotiated.
pub struct PreparedVideo {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl PreparedVideo {
    /// Binds the RTP and RTCP ports on `ip`.
    pub fn bind(ip: IpAddr) -> Result<PreparedVideo, MediaError> {
        let bind = || {
            let s = UdpSocket::bind((ip, 0)).map_err(|e| {
                MediaError::InvalidInput(format!("cannot bind a video port on {ip}: {e}"))
            })?;
            s.set_nonblocking(true)
                .map_err(|e| MediaError::InvalidInput(format!("video socket: {e}")))?;
            Ok::<_, MediaError>(s)
        };
        Ok(PreparedVideo {
            rtp: bind()?,
            rtcp: bind()?,
        })
    }

    /// The RTP address, for the video m-line.
    pub fn local_addr(&self) -> Result<SocketAddr, MediaError> {
        self.rtp
            .local_addr()
            .map_err(|e| MediaError::InvalidInput(format!("video socket: {e}")))
    }

    /// The RTCP address, for `a=rtcp`.
    pub fn local_rtcp_addr(&self) -> Result<SocketAddr, MediaError> {
        self.rtcp
            .local_addr()
            .map_err(|e| MediaError::InvalidInput(format!("video socket: {e}")))
    }
}

/// The newest decoded picture, for a window to show.
pub type Viewer = Arc<Mutex<Option<I420Frame>>>;

/// Everything the media thread needs for a call's video.
pub struct VideoSetup {
    /// Its ports.
    pub ports: PreparedVideo,
    /// The stream's settings (from the negotiation).
    pub config: VideoConfig,
    /// The peer's `a=zrtp-hash` on the video m-line.
    pub peer_hello_hash: Option<String>,
    /// Where our pictures come from.
    pub source: Box<dyn VideoSource>,
    /// Where the newest received picture goes.
    pub viewer: Option<Viewer>,
    /// Where the newest picture we send goes (the self-view).
    pub self_view: Option<Viewer>,
    /// A recording of the received pictures.
    pub record: Option<Y4mWriter<std::io::BufWriter<std::fs::File>>>,
    /// Send pictures from the start (the camera is on).
    pub sending: bool,
}

impl std::fmt::Debug for VideoSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSetup")
            .field("config", &self.config)
            .field("sending", &self.sending)
            .finish_non_exhaustive()
    }
}

struct VideoPart {
    /// What the user is told when the stream is keyed: the call's SAS and verdicts,
    /// from the ZRTP channel that keyed it.
    secured: Option<StreamEvent>,
    stream: VideoStream,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    source: Box<dyn VideoSource>,
    viewer: Option<Viewer>,
    self_view: Option<Viewer>,
    record: Option<Y4mWriter<std::io::BufWriter<std::fs::File>>>,
    interval: Duration,
    next_frame: Instant,
    sending: bool,
    /// The source failed: nothing more is taken from it, whatever the camera button.
    source_failed: bool,
    /// Pictures the source had captured at the last report.
    captured_before: u64,
    /// The ZRTP channel: none (no ZRTP in this call), waiting for the audio channel,
    /// or started.
    zrtp: VideoZrtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoZrtp {
    None,
    Waiting,
    Started,
}

impl VideoPart {
    fn new(
        setup: VideoSetup,
        zrtp: Option<&mut ZrtpSession>,
        now: Instant,
    ) -> Result<VideoPart, MediaError> {
        let VideoSetup {
            ports,
            config,
            peer_hello_hash,
            source,
            viewer,
            self_view,
            record,
            sending,
        } = setup;
        let ssrc = config.local_ssrc;
        let zrtp_state = match zrtp {
            Some(z) => {
                if let Some(h) = &peer_hello_hash {
                    z.set_channel_peer_hello_hash(ssrc, h)?;
                }
                // Present (added when our SDP was made), else this fails here.
                z.channel_hello_hash(ssrc)?;
                VideoZrtp::Waiting
            }
            None => VideoZrtp::None,
        };
        let fps = source.fps().clamp(1, 60);
        let mut source = source;
        if !sending {
            source.pause(true)?;
        }
        Ok(VideoPart {
            secured: None,
            stream: VideoStream::new(config, now)?,
            rtp: ports.rtp,
            rtcp: ports.rtcp,
            source,
            viewer,
            self_view,
            record,
            interval: Duration::from_micros(1_000_000 / u64::from(fps)),
            next_frame: now,
            sending,
            source_failed: false,
            captured_before: 0,
            zrtp: zrtp_state,
        })
    }

    /// Carries the video channel's ZRTP between the stream and the call's session, and
    /// its outcome (or the audio stream's giving up on ZRTP) to the stream.
    fn route_zrtp(&mut self, audio: &mut AudioStream, now: Instant) {
        let ssrc = self.stream.local_ssrc();
        let audio_security = audio.security().clone();
        let Some(z) = audio.zrtp_mut().filter(|_| self.zrtp != VideoZrtp::None) else {
            // No ZRTP (any more): the video follows what the audio stream concluded.
            match audio_security {
                MediaSecurity::Cleartext => self
                    .stream
                    .cleartext(now, "the call is not encrypted".into()),
                MediaSecurity::Failed => self.stream.fail("the call failed".into()),
                MediaSecurity::Secure | MediaSecurity::Negotiating => {}
            }
            while self.stream.poll_zrtp_in().is_some() {}
            return;
        };
        if self.zrtp == VideoZrtp::Waiting && z.state() == &ZrtpState::Secure {
            match z.start_channel(ssrc, now) {
                Ok(()) => self.zrtp = VideoZrtp::Started,
                Err(e) => self.stream.fail(format!("video could not be keyed: {e}")),
            }
        }
        if matches!(z.state(), ZrtpState::Failed(_)) {
            self.stream.fail("the call's key agreement failed".into());
        }
        while let Some(p) = self.stream.poll_zrtp_in() {
            if let Err(e) = z.handle_channel_packet(ssrc, now, &p, true) {
                tracing::debug!(error = %e, "video ZRTP packet dropped");
            }
        }
        while let Some(p) = z.poll_channel_transmit(ssrc) {
            self.stream.send_zrtp(p);
        }
        while let Some(ev) = z.poll_channel_event(ssrc) {
            match ev {
                ZrtpEvent::Secure(s) => {
                    self.secured = Some(StreamEvent::Secure {
                        sas: s.sas.clone(),
                        verified: s.verified,
                        cache_mismatch: s.cache_mismatch,
                        new_key: s.new_key,
                        algorithms: s.algorithms,
                    });
                    if let Err(e) = self.stream.keyed(now, &s.keys) {
                        self.stream.fail(format!("video keys: {e}"));
                    }
                }
                // The audio is keyed (the channel starts only then): a video that
                // cannot be keyed from it (a peer refusing Mult, or tampering) does
                // not go, whatever the policy. Only a call without keys at all
                // (best effort, above) sends pictures in clear.
                ZrtpEvent::Failed(f) => self
                    .stream
                    .fail(format!("the video stream could not be keyed: {f}")),
            }
        }
    }

    /// RTCP leaves from the RTCP port when the peer has one apart; the rest from RTP.
    fn socket_for(&self, to: SocketAddr) -> &UdpSocket {
        let (rtp, rtcp) = (self.stream.remote(), self.stream.remote_rtcp());
        if to == rtcp && rtcp != rtp {
            &self.rtcp
        } else {
            &self.rtp
        }
    }

    /// Tells the source whether its pictures are wanted (a camera stops streaming
    /// while ours is off); a source that cannot follow ends the stream, with words.
    fn pause_source(&mut self) {
        if self.source_failed {
            self.sending = false;
            return;
        }
        if let Err(e) = self.source.pause(!self.sending) {
            self.source_failed(e);
        }
    }

    /// Said, not hidden: the stream ends (and with it a screen share and its sharing
    /// bar), the call goes on; the source is stopped (a camera's light goes off).
    fn source_failed(&mut self, e: MediaError) {
        tracing::warn!(error = %e, "the video source failed; no more pictures");
        self.sending = false;
        self.source_failed = true;
        let _ = self.source.pause(true);
        self.stream.fail(format!("the video source failed: {e}"));
    }

    fn next_wake(&self) -> Option<Instant> {
        let frame = self.sending.then_some(self.next_frame);
        frame.into_iter().chain(self.stream.poll_timeout()).min()
    }
}

/// Drops a video source on a thread of its own: stopping a camera can take a USB
/// round trip (seconds on a hung device), which must not stall the call's audio.
fn drop_elsewhere(source: Box<dyn VideoSource>) {
    if let Err(e) = std::thread::Builder::new()
        .name("video-source-end".into())
        .spawn(move || drop(source))
    {
        tracing::debug!(error = %e, "a video source was ended here");
    }
}

struct Loop {
    video: Option<VideoPart>,
    /// The last figures of a video stream just ended, to report.
    video_final: Option<VideoStats>,
    /// Why a video stream could not start, to report.
    ended_video: Option<StreamEvent>,
    /// When a received picture was last written to the recording.
    last_recorded: Option<Instant>,
    stream: AudioStream,
    socket: UdpSocket,
    source: Source,
    sink: Option<Sink>,
    echo: bool,
    frame: usize,
    rate: u32,
    muted: bool,
    held: bool,
    last_heard: Vec<i16>,
}

impl Loop {
    fn run(&mut self, rx: mpsc::Receiver<MediaCommand>, report: &dyn Fn(MediaReport)) {
        let mut buf = vec![0u8; 2048];
        let mut mic = vec![0i16; self.frame];
        let mut speaker = vec![0i16; self.frame];
        let mut next_frame = Instant::now() + FRAME;
        let mut next_stats = Instant::now() + STATS_EVERY;
        'outer: loop {
            loop {
                match rx.try_recv() {
                    Ok(MediaCommand::Stop) | Err(mpsc::TryRecvError::Disconnected) => break 'outer,
                    Ok(c) => self.apply(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if now >= next_frame {
                self.stream.receive_frame(&mut speaker);
                if let Some(s) = &mut self.sink {
                    s.write(&speaker);
                }
                if self.echo {
                    mic.copy_from_slice(&self.last_heard);
                    self.last_heard.copy_from_slice(&speaker);
                } else {
                    self.source.read(self.rate, &mut mic);
                }
                if self.muted {
                    mic.fill(0);
                }
                if !self.held {
                    self.stream.send_frame(&mic);
                }
                next_frame += FRAME;
                // After a stall (suspend, debugger) do not burst to catch up.
                if now > next_frame + 10 * FRAME {
                    next_frame = now + FRAME;
                }
            }
            self.video_tick(now);
            if self.stream.poll_timeout().is_some_and(|t| now >= t) {
                self.stream.handle_timeout(now);
            }
            if let Some(v) = &mut self.video
                && v.stream.poll_timeout().is_some_and(|t| now >= t)
            {
                v.stream.handle_timeout(now);
            }
            if now >= next_stats {
                next_stats = now + STATS_EVERY;
                report(MediaReport::Stats(self.stream.stats()));
                if let Some(v) = &mut self.video {
                    let mut stats = v.stream.stats();
                    stats.capture = v.source.capture_stats();
                    if let Some(c) = stats.capture {
                        stats.capture_fps =
                            Some(c.captured.saturating_sub(v.captured_before) as u32);
                        v.captured_before = c.captured;
                    }
                    report(MediaReport::VideoStats(stats));
                }
            }
            self.flush(now, report);
            let video_wake = self.video.as_ref().and_then(VideoPart::next_wake);
            let wake = [Some(next_frame), self.stream.poll_timeout(), video_wake]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_frame);
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.wait_and_read(wait, &mut buf, report);
        }
        if let Some(s) = self.sink.take()
            && let Err(e) = s.finish()
        {
            tracing::warn!(error = %e, "recording not finalised");
        }
        self.end_video();
        self.flush(Instant::now(), report);
        report(MediaReport::Ended(self.stream.stats()));
    }

    /// Ends the video stream, if any: its recording finalised, its last figures kept
    /// for the next report.
    fn end_video(&mut self) {
        let Some(mut v) = self.video.take() else {
            return;
        };
        // Its ZRTP channel goes too: another video may take its place.
        if let Some(z) = self.stream.zrtp_mut()
            && let Err(e) = z.remove_channel(v.stream.local_ssrc())
        {
            tracing::debug!(error = %e, "the video's ZRTP channel was already gone");
        }
        if let Some(r) = v.record.take()
            && let Err(e) = r.finish()
        {
            tracing::warn!(error = %e, "video recording not finalised");
        }
        self.video_final = Some(v.stream.stats());
        drop_elsewhere(v.source);
    }

    /// A picture from the camera when one is due.
    fn video_tick(&mut self, now: Instant) {
        let held = self.held;
        let Some(v) = &mut self.video else { return };
        if !v.sending || now < v.next_frame {
            return;
        }
        v.next_frame += v.interval;
        if now > v.next_frame + 10 * v.interval {
            v.next_frame = now + v.interval;
        }
        match v.source.next_frame() {
            Ok(Some(picture)) if !held => {
                if let Err(e) = v.stream.send_frame(now, &picture) {
                    tracing::warn!(error = %e, "a picture could not be sent");
                }
                if let Some(view) = &v.self_view
                    && let Ok(mut slot) = view.lock()
                {
                    *slot = Some(picture);
                }
            }
            Ok(_) => {}
            Err(e) => v.source_failed(e),
        }
    }

    /// Waits up to `wait` for a datagram on any socket, then reads every one waiting.
    fn wait_and_read(&mut self, wait: Duration, buf: &mut [u8], report: &dyn Fn(MediaReport)) {
        let mut fds = vec![self.socket.as_raw_fd()];
        if let Some(v) = &self.video {
            fds.push(v.rtp.as_raw_fd());
            fds.push(v.rtcp.as_raw_fd());
        }
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .map(|fd| libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: a valid array of pollfd of the given length, for the duration of the call.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        if n <= 0 {
            return;
        }
        for (i, p) in polled.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            // At most a burst per socket, so one flooded port cannot starve the rest.
            for _ in 0..64 {
                let got = match (i, &self.video) {
                    (0, _) => self.socket.recv_from(buf),
                    (1, Some(v)) => v.rtp.recv_from(buf),
                    (_, Some(v)) => v.rtcp.recv_from(buf),
                    (_, None) => break,
                };
                match got {
                    // Empty: the wake-up of a stop (an empty datagram carries nothing a
                    // stream could use, so none is counted).
                    Ok((0, _)) => {}
                    Ok((n, from)) => {
                        let now = Instant::now();
                        match (i, &mut self.video) {
                            (0, _) => self.stream.handle_datagram(now, from, &buf[..n]),
                            (_, Some(v)) => v.stream.handle_datagram(now, from, &buf[..n]),
                            (_, None) => {}
                        }
                        self.flush(now, report);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // ICMP port unreachable and the like: the peer may not be up yet.
                        tracing::debug!(error = %e, "media socket");
                        break;
                    }
                }
            }
        }
    }

    fn apply(&mut self, c: MediaCommand) {
        match c {
            MediaCommand::SetRemote(a) => self.stream.set_remote(a),
            MediaCommand::Dtmf(k) => {
                if let Err(e) = self.stream.send_dtmf(k) {
                    tracing::info!(error = %e, "DTMF not sent");
                }
            }
            MediaCommand::Mute(m) => self.muted = m,
            MediaCommand::Hold(h) => self.held = h,
            MediaCommand::Camera(on) => {
                if let Some(v) = &mut self.video {
                    v.sending = on;
                    v.next_frame = Instant::now();
                    v.pause_source();
                }
            }
            MediaCommand::VideoSource(SourceSwitch { source, screen }) => {
                if let Some(v) = &mut self.video {
                    let fps = source.fps().clamp(1, 60);
                    v.interval = Duration::from_micros(1_000_000 / u64::from(fps));
                    v.next_frame = Instant::now();
                    drop_elsewhere(std::mem::replace(&mut v.source, source));
                    v.source_failed = false;
                    v.pause_source();
                    if let Err(e) = v.stream.set_screen(screen) {
                        tracing::warn!(error = %e, "the encoder could not switch");
                    }
                }
            }
            MediaCommand::AddVideo(setup) => {
                self.end_video();
                let ssrc = setup.config.local_ssrc;
                match VideoPart::new(*setup, self.stream.zrtp_mut(), Instant::now()) {
                    Ok(v) => self.video = Some(v),
                    Err(e) => {
                        // Its channel goes with it: another video may take its place.
                        if let Some(z) = self.stream.zrtp_mut() {
                            let _ = z.remove_channel(ssrc);
                        }
                        tracing::warn!(error = %e, "the video stream could not start");
                        self.ended_video = Some(StreamEvent::Failed(format!(
                            "the video stream could not start: {e}"
                        )));
                    }
                }
            }
            MediaCommand::RemoveVideo => self.end_video(),
            MediaCommand::AddVideoChannel { ssrc, reply } => {
                let made = match self.stream.zrtp_mut() {
                    Some(z) => match z.add_channel(ssrc) {
                        Ok(()) => z.channel_hello_hash(ssrc).map(Some).inspect_err(|_| {
                            let _ = z.remove_channel(ssrc);
                        }),
                        Err(e) => Err(e),
                    },
                    None => Ok(None),
                };
                // Nobody waits any more (the call layer gave up): the channel goes.
                if let Err(mpsc::SendError(Ok(Some(_)))) = reply.send(made)
                    && let Some(z) = self.stream.zrtp_mut()
                {
                    let _ = z.remove_channel(ssrc);
                }
            }
            MediaCommand::RemoveVideoChannel(ssrc) => {
                // A running video's channel goes with the video (RemoveVideo).
                let running = self
                    .video
                    .as_ref()
                    .is_some_and(|v| v.stream.local_ssrc() == ssrc);
                if !running
                    && let Some(z) = self.stream.zrtp_mut()
                    && let Err(e) = z.remove_channel(ssrc)
                {
                    tracing::debug!(error = %e, "no such video channel");
                }
            }
            MediaCommand::VideoRemote { rtp, rtcp } => {
                if let Some(v) = &mut self.video {
                    v.stream.set_remote(rtp, rtcp);
                }
            }
            MediaCommand::SasVerified(v) => self.stream.set_sas_verified(v),
            MediaCommand::Barrier(done) => {
                let _ = done.send(());
            }
            MediaCommand::Stop => {}
        }
    }

    fn flush(&mut self, now: Instant, report: &dyn Fn(MediaReport)) {
        while let Some(t) = self.stream.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.data, t.to) {
                tracing::debug!(error = %e, "media send");
            }
        }
        while let Some(e) = self.stream.poll_event() {
            report(MediaReport::Event(e));
        }
        if let Some(e) = self.ended_video.take() {
            report(MediaReport::VideoEvent(e));
        }
        if let Some(s) = self.video_final.take() {
            report(MediaReport::VideoStats(s));
        }
        let Some(v) = &mut self.video else { return };
        v.route_zrtp(&mut self.stream, now);
        while let Some(t) = v.stream.poll_transmit() {
            if let Err(e) = v.socket_for(t.to).send_to(&t.data, t.to) {
                tracing::debug!(error = %e, "video send");
            }
        }
        while let Some(e) = v.stream.poll_event() {
            let e = match e {
                VideoEvent::Secure => match v.secured.take() {
                    Some(s) => s,
                    None => continue,
                },
                VideoEvent::Cleartext(why) => StreamEvent::Cleartext(why),
                VideoEvent::Failed(why) => StreamEvent::Failed(why),
            };
            report(MediaReport::VideoEvent(e));
        }
        if let Some(picture) = v.stream.poll_picture() {
            // At most the recording's rate: a peer sending tiny frames at a high rate
            // (each a whole picture once decoded) must not fill the disk.
            let due = self
                .last_recorded
                .is_none_or(|t| now.saturating_duration_since(t) >= RECORD_INTERVAL);
            if due && let Some(r) = &mut v.record {
                self.last_recorded = Some(now);
                if let Err(e) = r.write(&picture) {
                    tracing::warn!(error = %e, "video recording stopped");
                    v.record = None;
                } else if r.bytes() > MAX_RECORDING {
                    tracing::warn!("video recording stopped: it reached its size limit");
                    v.record = None;
                }
            }
            if let Some(view) = &v.viewer
                && let Ok(mut slot) = view.lock()
            {
                *slot = Some(picture);
            }
        }
    }
}
