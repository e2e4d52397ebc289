//! The media thread of a call: the thin driver around [`AudioStream`]. It owns the UDP
//! socket, the 20 ms frame clock and the audio devices; everything it learns goes out
//! through a callback, and commands come in through a channel. One thread per call,
//! off the async runtime. Which source to take media from and where to send it is the
//! stream's decision: datagrams go in with their source, and come out with their
//! destination.

use crate::MediaError;
use crate::audio::{Sink, SinkSpec, Source, SourceSpec};
use crate::codec::FRAME_MS;
use crate::stream::{AudioStream, StreamConfig, StreamEvent, StreamStats};
use crate::zrtp::ZrtpSession;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);
/// How often statistics are reported.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Orders for a running media thread.
#[derive(Debug, Clone)]
pub enum MediaCommand {
    /// The peer's media address from a new SDP (re-INVITE): see [`AudioStream::set_remote`].
    SetRemote(SocketAddr),
    /// Send a DTMF key.
    Dtmf(char),
    /// Send silence instead of the microphone.
    Mute(bool),
    /// Stop sending audio (call on hold) or start again.
    Hold(bool),
    /// Record the user's SAS verdict in the ZRTP cache.
    SasVerified(bool),
    /// Answer on the channel once every command sent before this one is applied (e.g. a
    /// SAS verdict is in the ZRTP cache, ready to be sealed).
    Barrier(mpsc::Sender<()>),
    /// End the thread.
    Stop,
}

/// What the media thread tells the call layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaReport {
    /// A stream event (secure, cleartext, failed, DTMF).
    Event(StreamEvent),
    /// Current statistics, once a second.
    Stats(StreamStats),
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

struct Loop {
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
            if self.stream.poll_timeout().is_some_and(|t| now >= t) {
                self.stream.handle_timeout(now);
            }
            if now >= next_stats {
                next_stats = now + STATS_EVERY;
                report(MediaReport::Stats(self.stream.stats()));
            }
            self.flush(report);
            let wake = [Some(next_frame), self.stream.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_frame);
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if self.socket.set_read_timeout(Some(wait)).is_err() {
                std::thread::sleep(wait);
                continue;
            }
            match self.socket.recv_from(&mut buf) {
                // Empty: the wake-up of a stop (an empty datagram carries nothing a
                // stream could use, so none is counted).
                Ok((0, _)) => {}
                Ok((n, from)) => {
                    self.stream.handle_datagram(Instant::now(), from, &buf[..n]);
                    self.flush(report);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    // ICMP port unreachable and the like: the peer may not be up yet.
                    tracing::debug!(error = %e, "media socket");
                }
            }
        }
        if let Some(s) = self.sink.take()
            && let Err(e) = s.finish()
        {
            tracing::warn!(error = %e, "recording not finalised");
        }
        report(MediaReport::Ended(self.stream.stats()));
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
            MediaCommand::SasVerified(v) => self.stream.set_sas_verified(v),
            MediaCommand::Barrier(done) => {
                let _ = done.send(());
            }
            MediaCommand::Stop => {}
        }
    }

    fn flush(&mut self, report: &dyn Fn(MediaReport)) {
        while let Some(t) = self.stream.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.data, t.to) {
                tracing::debug!(error = %e, "media send");
            }
        }
        while let Some(e) = self.stream.poll_event() {
            report(MediaReport::Event(e));
        }
    }
}
