//! One video stream of a call, sans-IO: datagrams (with their source) and time in;
//! datagrams (with their destination), decoded pictures, events and the next timeout
//! out; pictures to send in. It owns VP8 coding, RTP payloading and frame assembly,
//! SRTP, and RTCP with reports and key frame requests (PLI; FIR answered once per
//! request number).
//!
//! Its ZRTP channel lives in the call's ZRTP session (keyed from the audio channel in
//! multistream mode): ZRTP datagrams that arrive here are handed out through
//! [`VideoStream::poll_zrtp_in`], the channel's own go out through
//! [`VideoStream::send_zrtp`], and its outcome comes in through [`VideoStream::keyed`],
//! [`VideoStream::cleartext`] or [`VideoStream::fail`]. Under "mandatory" no picture
//! leaves, and none received is shown, before the stream is keyed.
//!
//! Media is taken only from the peer's negotiated RTP and RTCP addresses; anything
//! else is dropped and counted.

use super::assembler::FrameAssembler;
use super::{EncoderConfig, I420Frame, Vp8Decoder, Vp8Encoder, Vp8Payloader};
use crate::MediaError;
use crate::rtp::feedback::{self, KeyRequests, RtcpPacket};
use crate::rtp::{self, Kind, ReceptionStats, RtpHeader, build_report};
use crate::srtp::SrtpSession;
use crate::stream::{MediaSecurity, Policy, Transmit, protect, random_u32};
use crate::zrtp::SrtpKeys;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often a report goes out (video sends more than audio, and its loss figures
/// steer the bit rate).
const RTCP_INTERVAL: Duration = Duration::from_secs(1);
/// Datagrams waiting to be sent, at most (a key frame at 4K is a few hundred).
const MAX_OUTBOX: usize = 1024;
/// ZRTP datagrams waiting for the call's session, at most.
const MAX_ZRTP_IN: usize = 16;
/// Decoded pictures not yet taken: the newest win.
const MAX_DECODED: usize = 2;
/// The RTP clock of video.
const CLOCK: u64 = 90_000;
/// The lowest bit rate the loss reports may bring us to.
const MIN_KBPS: u32 = 100;
/// Largest RTP payload (a 1500-byte path less IP, UDP, RTP and SRTP overheads).
pub const MAX_PAYLOAD: usize = 1100;

/// How the stream is set up; the call layer fills it from the SDP negotiation.
#[derive(Debug, Clone)]
pub struct VideoConfig {
    /// Our SSRC (also the ZRTP channel's).
    pub local_ssrc: u32,
    /// The payload type VP8 has in the answer (never assumed to be 96).
    pub payload_type: u8,
    /// What the stream may do without encryption.
    pub policy: Policy,
    /// The peer's RTP address.
    pub remote: SocketAddr,
    /// The peer's RTCP address (the RTP one under rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// What we send: size, rate and the bit rate to start from (its ceiling too).
    pub encoder: EncoderConfig,
}

/// Something the call layer must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoEvent {
    /// SRTP keyed: pictures flow, encrypted.
    Secure,
    /// Pictures flow unencrypted (best effort), with the reason.
    Cleartext(String),
    /// No picture will flow; the reason.
    Failed(String),
}

/// Counters for the statistics line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoStats {
    /// Pictures coded and sent.
    pub frames_sent: u64,
    /// Of which key frames.
    pub key_frames_sent: u64,
    /// Pictures not sent: the stream was not keyed (or failed).
    pub withheld_frames: u64,
    /// Frames put back together from the peer's packets.
    pub frames_received: u64,
    /// Pictures decoded.
    pub frames_decoded: u64,
    /// Key frames we asked for (PLI sent).
    pub key_frames_asked: u64,
    /// Key frame requests from the peer acted on.
    pub key_frames_requested: u64,
    /// Size of the last decoded picture.
    pub width: u32,
    /// Size of the last decoded picture.
    pub height: u32,
    /// Decoded pictures per second, over the last second.
    pub fps: u32,
    /// RTP packets sent and received.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP packets lost, from the sequence numbers.
    pub packets_lost: u64,
    /// Round-trip time from the peer's reports.
    pub rtt_ms: Option<u32>,
    /// The encoder's current target.
    pub bitrate_kbps: u32,
    /// Datagrams dropped: from elsewhere, malformed, failing SRTP, before keys.
    pub refused: u64,
    /// What our source's capture has done (a shared screen), and its pictures per
    /// second over the last report (the media thread fills these in).
    pub capture: Option<crate::video::CaptureStats>,
    /// Pictures captured over the last second.
    pub capture_fps: Option<u32>,
}

/// The video stream of one call.
pub struct VideoStream {
    cfg: VideoConfig,
    epoch: Instant,
    security: MediaSecurity,
    srtp: Option<SrtpSession>,
    encoder: Vp8Encoder,
    payloader: Vp8Payloader,
    assembler: FrameAssembler,
    decoder: Vp8Decoder,
    reception: ReceptionStats,
    remote_ssrc: Option<u32>,
    seq: u16,
    ts_base: u32,
    /// The next picture must be a key frame (first one, or the peer asked).
    key_wanted: bool,
    key_requests: KeyRequests,
    fir_seq: u8,
    next_rtcp: Option<Instant>,
    outbox: VecDeque<Transmit>,
    zrtp_in: VecDeque<Vec<u8>>,
    decoded: VecDeque<I420Frame>,
    decoded_times: VecDeque<Instant>,
    events: VecDeque<VideoEvent>,
    stats: VideoStats,
}

impl VideoStream {
    /// A stream waiting for its keys (or, under best effort, for word that there are
    /// none).
    pub fn new(cfg: VideoConfig, now: Instant) -> Result<VideoStream, MediaError> {
        if cfg.payload_type > 127 {
            return Err(MediaError::InvalidInput(format!(
                "payload type {} is not an RTP payload type",
                cfg.payload_type
            )));
        }
        let encoder = Vp8Encoder::new(cfg.encoder)?;
        let r = random_u32();
        Ok(VideoStream {
            payloader: Vp8Payloader::new(MAX_PAYLOAD, r as u16)?,
            assembler: FrameAssembler::new(),
            decoder: Vp8Decoder::new()?,
            reception: ReceptionStats::default(),
            remote_ssrc: None,
            seq: (r >> 16) as u16,
            ts_base: random_u32(),
            key_wanted: true,
            key_requests: KeyRequests::default(),
            fir_seq: 0,
            next_rtcp: None,
            outbox: VecDeque::new(),
            zrtp_in: VecDeque::new(),
            decoded: VecDeque::new(),
            decoded_times: VecDeque::new(),
            events: VecDeque::new(),
            stats: VideoStats {
                bitrate_kbps: cfg.encoder.bitrate_kbps,
                ..VideoStats::default()
            },
            security: MediaSecurity::Negotiating,
            srtp: None,
            encoder,
            epoch: now,
            cfg,
        })
    }

    /// Where the stream's protection stands.
    pub fn security(&self) -> &MediaSecurity {
        &self.security
    }

    /// The stream's ZRTP channel agreed keys: SRTP from now on.
    pub fn keyed(&mut self, now: Instant, keys: &SrtpKeys) -> Result<(), MediaError> {
        if matches!(self.security, MediaSecurity::Failed) {
            return Ok(());
        }
        self.srtp = Some(SrtpSession::new(keys)?);
        self.go(now, MediaSecurity::Secure, VideoEvent::Secure);
        Ok(())
    }

    /// No keys for this stream (the peer does no ZRTP here): under best effort the
    /// pictures flow in clear, and the user is told why; under mandatory it fails.
    pub fn cleartext(&mut self, now: Instant, reason: String) {
        match self.cfg.policy {
            Policy::BestEffort if self.security == MediaSecurity::Negotiating => {
                self.go(now, MediaSecurity::Cleartext, VideoEvent::Cleartext(reason));
            }
            _ => self.fail(reason),
        }
    }

    /// No picture will flow (keys failed, or mandatory without keys).
    pub fn fail(&mut self, reason: String) {
        if self.security == MediaSecurity::Failed {
            return;
        }
        self.security = MediaSecurity::Failed;
        self.srtp = None;
        self.outbox.clear();
        self.decoded.clear();
        self.next_rtcp = None;
        self.events.push_back(VideoEvent::Failed(reason));
    }

    fn go(&mut self, now: Instant, security: MediaSecurity, event: VideoEvent) {
        self.security = security;
        self.key_wanted = true;
        self.next_rtcp = Some(now + RTCP_INTERVAL);
        self.events.push_back(event);
    }

    fn flowing(&self) -> bool {
        matches!(
            self.security,
            MediaSecurity::Secure | MediaSecurity::Cleartext
        )
    }

    /// A datagram that came to the stream's RTP or RTCP port.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) {
        if from != self.cfg.remote && from != self.cfg.remote_rtcp {
            self.stats.refused += 1;
            return;
        }
        let kind = rtp::classify(buf);
        // RTP and ZRTP only from the peer's RTP address; RTCP from either.
        if from != self.cfg.remote && kind != Kind::Rtcp {
            self.stats.refused += 1;
            return;
        }
        match kind {
            Kind::Zrtp => {
                if self.zrtp_in.len() < MAX_ZRTP_IN {
                    self.zrtp_in.push_back(buf.to_vec());
                } else {
                    self.stats.refused += 1;
                }
            }
            Kind::Rtp => self.handle_rtp(now, buf),
            Kind::Rtcp => self.handle_rtcp(now, buf),
            Kind::Unknown => self.stats.refused += 1,
        }
    }

    /// A ZRTP datagram for the stream's channel, to hand to the call's ZRTP session.
    pub fn poll_zrtp_in(&mut self) -> Option<Vec<u8>> {
        self.zrtp_in.pop_front()
    }

    /// A datagram of the stream's ZRTP channel, to send to the peer's RTP address.
    pub fn send_zrtp(&mut self, data: Vec<u8>) {
        if self.outbox.len() < MAX_OUTBOX {
            let to = self.cfg.remote;
            self.outbox.push_back(Transmit { to, data });
        }
    }

    fn unprotect(&mut self, buf: &[u8], rtcp: bool) -> Option<bytes::Bytes> {
        let plain = match self.security {
            MediaSecurity::Secure => {
                let s = self.srtp.as_mut()?;
                if rtcp {
                    s.unprotect_rtcp(buf)
                } else {
                    s.unprotect_rtp(buf)
                }
            }
            MediaSecurity::Cleartext => Ok(bytes::Bytes::copy_from_slice(buf)),
            MediaSecurity::Negotiating | MediaSecurity::Failed => Err(MediaError::Refused {
                kind: "video",
                reason: "media before the stream is keyed",
            }),
        };
        match plain {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::trace!(error = %e, "video datagram dropped");
                self.stats.refused += 1;
                None
            }
        }
    }

    fn handle_rtp(&mut self, now: Instant, buf: &[u8]) {
        let Some(plain) = self.unprotect(buf, false) else {
            return;
        };
        let Ok((h, range)) = rtp::parse(&plain) else {
            self.stats.refused += 1;
            return;
        };
        if h.payload_type != self.cfg.payload_type {
            return;
        }
        match self.remote_ssrc {
            None => self.remote_ssrc = Some(h.ssrc),
            Some(s) if s != h.ssrc => {
                self.stats.refused += 1;
                return;
            }
            Some(_) => {}
        }
        self.stats.packets_received += 1;
        let arrival = (now.saturating_duration_since(self.epoch).as_micros() as u64 * CLOCK
            / 1_000_000) as u32;
        self.reception.on_packet(h.sequence, h.timestamp, arrival);
        self.stats.packets_lost = self.reception.lost();
        if self
            .assembler
            .push(now, h.sequence, h.timestamp, h.marker, &plain[range])
            .is_err()
        {
            self.stats.refused += 1;
        }
        self.after_assembly(now);
    }

    /// Decodes what the assembler completed, and asks for a key frame if it must.
    fn after_assembly(&mut self, now: Instant) {
        while let Some(frame) = self.assembler.poll_frame() {
            self.stats.frames_received += 1;
            match self.decoder.decode(&frame.data) {
                Ok(Some(picture)) => {
                    self.stats.frames_decoded += 1;
                    self.stats.width = picture.width();
                    self.stats.height = picture.height();
                    self.decoded_times.push_back(now);
                    if self.decoded.len() >= MAX_DECODED {
                        self.decoded.pop_front();
                    }
                    self.decoded.push_back(picture);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "a video frame could not be decoded");
                    self.assembler.decode_failed();
                }
            }
        }
        while self
            .decoded_times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > Duration::from_secs(1))
        {
            self.decoded_times.pop_front();
        }
        self.stats.fps = self.decoded_times.len() as u32;
        if self.flowing() && self.assembler.poll_key_request(now) {
            self.stats.key_frames_asked += 1;
            let media = self.remote_ssrc.unwrap_or(0);
            let mut rtcp = self.report(now);
            feedback::build_pli(self.cfg.local_ssrc, media, &mut rtcp);
            self.emit(rtcp, true);
        }
    }

    fn handle_rtcp(&mut self, now: Instant, buf: &[u8]) {
        let Some(plain) = self.unprotect(buf, true) else {
            return;
        };
        for packet in feedback::walk(&plain) {
            let packet = match packet {
                Ok(p) => p,
                Err(_) => {
                    self.stats.refused += 1;
                    break;
                }
            };
            if self.key_requests.wants_key(self.cfg.local_ssrc, &packet) {
                self.key_wanted = true;
                self.stats.key_frames_requested += 1;
            }
            if let RtcpPacket::Report(report) = packet {
                let now_q16 = self.q16(now);
                if let Some(s) = report.sender {
                    self.reception
                        .on_sender_report((s.ntp >> 16) as u32, now_q16);
                }
                if let Some(b) = report.block
                    && b.ssrc == self.cfg.local_ssrc
                {
                    if let Some(rtt) = rtp::round_trip_ms(&b, now_q16) {
                        self.stats.rtt_ms = Some(rtt);
                    }
                    self.adapt_rate(b.fraction_lost);
                }
            }
        }
    }

    /// Simple rate control from the peer's loss reports: back off by 15 % above 10 %
    /// loss, creep up by 5 % below 2 %, within [`MIN_KBPS`] and the configured rate.
    fn adapt_rate(&mut self, fraction_lost: u8) {
        let now = self.stats.bitrate_kbps;
        let ceiling = self.cfg.encoder.bitrate_kbps;
        let next = if fraction_lost > 25 {
            (now * 85 / 100).max(MIN_KBPS.min(ceiling))
        } else if fraction_lost < 5 {
            (now * 105 / 100).min(ceiling)
        } else {
            now
        };
        if next != now && self.encoder.set_bitrate(next).is_ok() {
            self.stats.bitrate_kbps = next;
        }
    }

    fn q16(&self, now: Instant) -> u32 {
        rtp::clock_q16(self.epoch, now)
    }

    fn rtp_timestamp(&self, now: Instant) -> u32 {
        let ticks =
            now.saturating_duration_since(self.epoch).as_micros() as u64 * CLOCK / 1_000_000;
        self.ts_base.wrapping_add(ticks as u32)
    }

    /// An SR (or RR) with a report block on what we receive.
    fn report(&mut self, now: Instant) -> Vec<u8> {
        let now_q16 = self.q16(now);
        let sender = (self.stats.packets_sent > 0).then(|| rtp::SenderInfo {
            ntp: (u64::from(now_q16) << 16) | 1 << 63,
            rtp_ts: self.rtp_timestamp(now),
            packets: self.stats.packets_sent as u32,
            octets: 0,
        });
        let block = self
            .remote_ssrc
            .map(|ssrc| self.reception.report_block(ssrc, now_q16));
        let mut out = Vec::with_capacity(64);
        build_report(self.cfg.local_ssrc, sender, block, &mut out);
        out
    }

    /// Asks the peer for a key frame with a FIR (a new request number each time).
    pub fn request_full_intra(&mut self, now: Instant) {
        if !self.flowing() {
            return;
        }
        self.fir_seq = self.fir_seq.wrapping_add(1);
        let media = self.remote_ssrc.unwrap_or(0);
        let mut rtcp = self.report(now);
        feedback::build_fir(self.cfg.local_ssrc, media, self.fir_seq, &mut rtcp);
        self.stats.key_frames_asked += 1;
        self.emit(rtcp, true);
    }

    fn emit(&mut self, plain: Vec<u8>, rtcp: bool) {
        let Some(data) = protect(&self.security, self.srtp.as_mut(), plain, rtcp) else {
            return;
        };
        let to = if rtcp {
            self.cfg.remote_rtcp
        } else {
            self.cfg.remote
        };
        if self.outbox.len() < MAX_OUTBOX {
            self.outbox.push_back(Transmit { to, data });
        }
    }

    /// Switches the encoder between camera and screen content (VP8's screen tools);
    /// the next picture is a key frame.
    pub fn set_screen(&mut self, screen: bool) -> Result<(), MediaError> {
        let current = self.encoder.config();
        if current.screen != screen {
            self.encoder = Vp8Encoder::new(EncoderConfig { screen, ..current })?;
            self.key_wanted = true;
        }
        Ok(())
    }

    /// Sends one picture from the source. A picture of another size than before
    /// (camera switched to screen) restarts the encoder, with a key frame.
    pub fn send_frame(&mut self, now: Instant, picture: &I420Frame) -> Result<(), MediaError> {
        if !self.flowing() {
            self.stats.withheld_frames += 1;
            return Ok(());
        }
        let size = (picture.width(), picture.height());
        let current = self.encoder.config();
        if size != (current.width, current.height) {
            self.encoder = Vp8Encoder::new(EncoderConfig {
                width: size.0,
                height: size.1,
                bitrate_kbps: self.stats.bitrate_kbps,
                ..current
            })?;
            self.key_wanted = true;
        }
        let coded = self
            .encoder
            .encode(picture, std::mem::take(&mut self.key_wanted))?;
        let timestamp = self.rtp_timestamp(now);
        for frame in coded {
            self.stats.frames_sent += 1;
            self.stats.key_frames_sent += u64::from(frame.key);
            let payloads = self.payloader.payload(&frame.data);
            let last = payloads.len().saturating_sub(1);
            for (i, payload) in payloads.iter().enumerate() {
                let header = RtpHeader {
                    payload_type: self.cfg.payload_type,
                    marker: i == last,
                    sequence: self.seq,
                    timestamp,
                    ssrc: self.cfg.local_ssrc,
                };
                self.seq = self.seq.wrapping_add(1);
                let mut packet = Vec::with_capacity(12 + payload.len());
                rtp::write(&header, payload, &mut packet);
                self.stats.packets_sent += 1;
                self.emit(packet, false);
            }
        }
        Ok(())
    }

    /// Services frame assembly, key frame requests and reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.assembler.handle_timeout(now);
        self.after_assembly(now);
        if self.next_rtcp.is_some_and(|t| now >= t) && self.flowing() {
            self.next_rtcp = Some(now + RTCP_INTERVAL);
            let report = self.report(now);
            self.emit(report, true);
        }
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtcp = self.next_rtcp.filter(|_| self.flowing());
        rtcp.into_iter().chain(self.assembler.poll_timeout()).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The newest decoded picture not yet taken (older ones are dropped: a viewer
    /// wants the latest).
    pub fn poll_picture(&mut self) -> Option<I420Frame> {
        let newest = self.decoded.pop_back();
        self.decoded.clear();
        newest
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<VideoEvent> {
        self.events.pop_front()
    }

    /// The counters.
    pub fn stats(&self) -> VideoStats {
        self.stats
    }

    /// The peer moved (a re-INVITE named new addresses): media goes there, and is
    /// taken only from there.
    pub fn set_remote(&mut self, rtp: SocketAddr, rtcp: SocketAddr) {
        self.cfg.remote = rtp;
        self.cfg.remote_rtcp = rtcp;
    }

    /// The peer's RTP address.
    pub fn remote(&self) -> SocketAddr {
        self.cfg.remote
    }

    /// The peer's RTCP address (its RTP one under rtcp-mux).
    pub fn remote_rtcp(&self) -> SocketAddr {
        self.cfg.remote_rtcp
    }

    /// Our SSRC (also the stream's ZRTP channel).
    pub fn local_ssrc(&self) -> u32 {
        self.cfg.local_ssrc
    }
}
