//! One audio stream of a call, sans-IO: datagrams (with their source) and time in;
//! datagrams (with their destination), events and the next timeout out; 20 ms frames of
//! samples in and out. It owns the ZRTP handshake, SRTP, RTP/RTCP, the jitter buffer and
//! the codec, and enforces the encryption policy: under "mandatory" nothing is sent, and
//! nothing received is played, until ZRTP is secure.
//!
//! Media is taken only from the peer's negotiated address, or from a source whose SRTP
//! passed authentication ([`PeerAddress`]); ZRTP also from a few sources that sent the
//! Hello the peer signalled, which earns them nothing but being heard. Anything else is
//! dropped and counted before it reaches ZRTP, SRTP or the policy, so a stranger's
//! datagram can neither end nor downgrade the call, nor draw our media to itself.
//!
//! When ZRTP is given up: a peer that signalled its Hello hash does ZRTP, so nothing
//! short of the full handshake timeout counts as "no ZRTP" (a spoofed burst of cleartext
//! or a slow answer cannot end it early). Without a signalled hash, a peer that sent no
//! ZRTP within [`PEER_SILENT_TIMEOUT`], or only cleartext media for
//! [`CLEARTEXT_MEDIA_TIMEOUT`], does not do ZRTP.

use crate::MediaError;
use crate::codec::{CodecKind, Decoder, Encoder, FRAME_MS};
use crate::dtmf::{self, Press};
use crate::jitter::{JitterBuffer, JitterStats, Playout};
use crate::rtp::{
    self, HelloHash, Kind, PeerAddress, ReceptionStats, RtpHeader, build_report, parse_report,
};
use crate::srtp::SrtpSession;
use crate::zrtp::{Negotiated, ZrtpEvent, ZrtpFailure, ZrtpSession};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often an RTCP report goes out.
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Datagrams waiting to be sent, at most.
const MAX_OUTBOX: usize = 256;
/// A peer that signalled no Hello hash and sent no ZRTP at all this long after we started
/// does not do ZRTP: a ZRTP endpoint sends its Hello at once and retransmits it for about
/// this long (RFC 6189 §6). Shorter than the handshake timeout, which is for a peer that
/// answers but stalls, or that announced ZRTP in its SDP.
pub const PEER_SILENT_TIMEOUT: Duration = Duration::from_secs(4);
/// Under best effort, a peer that signalled no Hello hash and whose media has flowed
/// from its negotiated address this long, with not one ZRTP packet meanwhile, does not
/// do ZRTP either; the call goes to cleartext now rather than after
/// [`PEER_SILENT_TIMEOUT`]. A ZRTP peer's Hellos (sent at once, repeated every 200 ms)
/// would have arrived in that time.
pub const CLEARTEXT_MEDIA_TIMEOUT: Duration = Duration::from_secs(1);
/// ... and at least this many of its packets must have come (not one stray packet).
const CLEARTEXT_MEDIA_PACKETS: u32 = 25;

/// What the stream may do without ZRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Never send or play media that is not protected by ZRTP-keyed SRTP.
    Mandatory,
    /// Fall back to cleartext if ZRTP fails or the peer does not do it, and say so.
    BestEffort,
}

/// How the stream is set up; the call layer fills it from the SDP negotiation.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Our RTP source id (also our ZRTP channel id).
    pub local_ssrc: u32,
    /// The negotiated codec.
    pub codec: CodecKind,
    /// Its payload type in this session.
    pub payload_type: u8,
    /// Payload type of telephone-event, if negotiated.
    pub telephone_event_pt: Option<u8>,
    /// Encryption policy.
    pub policy: Policy,
    /// The peer's `a=zrtp-hash`, to check its Hello against. It also says the peer does
    /// ZRTP: with it, nothing but the handshake timeout gives up on ZRTP.
    pub peer_hello_hash: Option<String>,
    /// The peer's media address from its SDP: the one source trusted without proof, and
    /// where our media goes until the peer proves another (see [`PeerAddress`]).
    pub remote: SocketAddr,
}

/// The words when cleartext would mean media from and to an address nobody vouched for.
pub const UNSIGNALLED_SOURCE: &str = "the peer's media comes from an address it did not \
     signal; without encryption it cannot be told apart from an attacker";

/// A datagram for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it: the negotiated address, or the source whose SRTP proved it is
    /// the peer's. A ZRTP packet also goes, as a copy each, to every ZRTP candidate
    /// heard when it was made (a PingACK excepted).
    pub to: SocketAddr,
    /// The UDP payload.
    pub data: Vec<u8>,
}

/// Where the stream's protection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSecurity {
    /// ZRTP running; nothing is sent.
    Negotiating,
    /// SRTP keyed by ZRTP.
    Secure,
    /// Unencrypted (best effort only).
    Cleartext,
    /// No media will flow; the reason is in the Failed event.
    Failed,
}

/// Something the call layer must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// ZRTP finished: show the SAS.
    Secure {
        /// The short authentication string.
        sas: String,
        /// The peer's SAS was verified on an earlier call.
        verified: bool,
        /// Our cache disagrees with the peer: warn.
        cache_mismatch: bool,
        /// A verified peer presents a key we never verified: warn.
        new_key: bool,
        /// The agreed algorithms.
        algorithms: Negotiated,
    },
    /// Media flows unencrypted (best effort), with the reason.
    Cleartext(String),
    /// No secure media is possible; under "mandatory" the call must end.
    Failed(String),
    /// The peer pressed a key.
    Dtmf(char),
}

/// Counters for the statistics line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// RTP packets sent.
    pub sent_packets: u64,
    /// RTP payload bytes sent.
    pub sent_octets: u64,
    /// RTP packets accepted.
    pub received_packets: u64,
    /// Packets lost according to sequence numbers.
    pub lost_packets: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: u32,
    /// Round-trip time from RTCP, if measured.
    pub rtt_ms: Option<u32>,
    /// Frames that had to be sent while not yet secure and were withheld.
    pub withheld_frames: u64,
    /// Datagrams refused (malformed, unauthenticated, replayed, cleartext, or from an
    /// address that is not the peer's).
    pub refused_datagrams: u64,
    /// Jitter buffer counters.
    pub jitter_buffer: JitterStats,
}

/// Where a queued datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// To the media destination as it stands when the datagram is taken.
    Media,
    /// A copy of a ZRTP packet for this candidate, named when the packet was made: the
    /// candidates may be forgotten before it is taken.
    Candidate(SocketAddr),
}

/// The audio stream of one call.
pub struct AudioStream {
    cfg: StreamConfig,
    epoch: Instant,
    zrtp: Option<ZrtpSession>,
    srtp: Option<SrtpSession>,
    security: MediaSecurity,
    peer: PeerAddress,
    peer_hello: Option<HelloHash>,
    /// The peer's SDP carried `a=zrtp-hash`: it does ZRTP, and only the handshake
    /// timeout may conclude otherwise.
    hash_signalled: bool,
    /// Something RTP, RTCP or ZRTP came from the address the peer signalled ...
    heard_signalled: bool,
    /// ... or from any other address.
    heard_elsewhere: bool,
    /// When to give up on a peer that never sent any ZRTP (no hash signalled).
    zrtp_silence_deadline: Option<Instant>,
    /// Well-formed ZRTP came from addresses that could not prove they are the peer
    /// (to explain a silence timeout truthfully).
    zrtp_from_strangers: bool,
    /// Best effort: when the peer's cleartext media began while no ZRTP came, and how
    /// many packets of it arrived.
    cleartext_media: Option<(Instant, u32)>,
    encoder: Encoder,
    decoder: Decoder,
    jitter: JitterBuffer,
    reception: ReceptionStats,
    remote_ssrc: Option<u32>,
    seq: u16,
    timestamp: u32,
    first_packet: bool,
    press: Option<Press>,
    presses: VecDeque<u8>,
    last_received_event: Option<u32>,
    next_rtcp: Option<Instant>,
    outbox: VecDeque<(Vec<u8>, Route)>,
    /// Once keys are agreed, the ZRTP candidates are still heard and answered until the
    /// peer's authenticated SRTP or SRTCP arrives, or this moment passes. The peer may
    /// not be secure yet: as responder we are secure on sending Conf2ACK, and the peer
    /// behind a NAT repeats its Confirm2 from there until one reaches it.
    candidates_until: Option<Instant>,
    events: VecDeque<StreamEvent>,
    stats: StreamStats,
    scratch: Vec<u8>,
    payload: Vec<u8>,
}

/// What may leave of a packet, as the stream's protection stands: SRTP once keyed,
/// as is only in cleartext (best effort), nothing otherwise.
pub(crate) fn protect(
    security: &MediaSecurity,
    srtp: Option<&mut SrtpSession>,
    plain: Vec<u8>,
    rtcp: bool,
) -> Option<Vec<u8>> {
    match security {
        MediaSecurity::Secure => {
            let s = srtp?;
            let r = if rtcp {
                s.protect_rtcp(&plain)
            } else {
                s.protect_rtp(&plain)
            };
            r.map(|b| b.to_vec())
                .inspect_err(|e| tracing::warn!(error = %e, "could not protect outgoing media"))
                .ok()
        }
        MediaSecurity::Cleartext => Some(plain),
        MediaSecurity::Negotiating | MediaSecurity::Failed => None,
    }
}

pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Failure here would mean a broken OS RNG; predictable sequence numbers are then
    // the least of our problems, so fall back rather than abort a call.
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

impl AudioStream {
    /// Creates the stream around a ZRTP session made earlier (its Hello hash went into
    /// our SDP); `None` only under best effort. Nothing happens until [`AudioStream::start`].
    pub fn new(
        cfg: StreamConfig,
        zrtp: Option<ZrtpSession>,
        now: Instant,
    ) -> Result<AudioStream, MediaError> {
        if zrtp.is_none() && cfg.policy == Policy::Mandatory {
            return Err(MediaError::InvalidInput(
                "encryption is mandatory but ZRTP is not configured".into(),
            ));
        }
        let mut zrtp = zrtp;
        if let (Some(z), Some(h)) = (zrtp.as_mut(), cfg.peer_hello_hash.as_deref()) {
            z.set_peer_hello_hash(h)?;
        }
        let peer_hello = cfg.peer_hello_hash.as_deref().and_then(HelloHash::parse);
        if cfg.peer_hello_hash.is_some() && peer_hello.is_none() {
            tracing::info!(
                "the peer's a=zrtp-hash is not a SHA-256 hash; it cannot vouch for a new address"
            );
        }
        Ok(AudioStream {
            peer: PeerAddress::new(cfg.remote),
            hash_signalled: zrtp.is_some() && cfg.peer_hello_hash.is_some(),
            heard_signalled: false,
            heard_elsewhere: false,
            peer_hello,
            zrtp_silence_deadline: None,
            zrtp_from_strangers: false,
            cleartext_media: None,
            encoder: Encoder::new(cfg.codec)?,
            decoder: Decoder::new(cfg.codec)?,
            jitter: JitterBuffer::new(FRAME_MS),
            reception: ReceptionStats::default(),
            remote_ssrc: None,
            seq: random_u32() as u16,
            timestamp: random_u32(),
            first_packet: true,
            press: None,
            presses: VecDeque::new(),
            last_received_event: None,
            next_rtcp: None,
            outbox: VecDeque::new(),
            candidates_until: None,
            events: VecDeque::new(),
            stats: StreamStats::default(),
            scratch: Vec::with_capacity(1500),
            payload: Vec::with_capacity(1500),
            security: MediaSecurity::Negotiating,
            zrtp,
            srtp: None,
            epoch: now,
            cfg,
        })
    }

    /// Our `a=zrtp-hash` for the SDP, if ZRTP is used.
    pub fn hello_hash(&self) -> Option<String> {
        self.zrtp.as_ref().and_then(|z| z.hello_hash().ok())
    }

    /// Starts ZRTP (or, without ZRTP under best effort, goes straight to cleartext).
    pub fn start(&mut self, now: Instant) -> Result<(), MediaError> {
        match &mut self.zrtp {
            Some(z) => {
                z.start(now)?;
                if !self.hash_signalled {
                    self.zrtp_silence_deadline
                        .get_or_insert(now + PEER_SILENT_TIMEOUT);
                }
                self.pump_zrtp(now);
            }
            None => self.fall_back_to_cleartext(now, "ZRTP is not in use for this call".into()),
        }
        Ok(())
    }

    /// Where protection stands.
    pub fn security(&self) -> &MediaSecurity {
        &self.security
    }

    fn pump_zrtp(&mut self, now: Instant) {
        let Some(z) = &mut self.zrtp else { return };
        let grace = z.handshake_timeout();
        while let Some(p) = z.poll_transmit() {
            // ZRTP goes to the peer's destination and, as a copy each, to the candidates
            // heard now (Conf2ACK included, made in the same step that makes us secure).
            // A PingACK answers anyone who sent a Ping: it goes to the peer only, so a
            // spoofed Ping draws no copies to the candidates.
            let copies: Vec<SocketAddr> = if crate::zrtp::message_type(&p) == b"PingACK " {
                Vec::new()
            } else {
                self.peer.zrtp_candidates().collect()
            };
            if self.outbox.len() + copies.len() < MAX_OUTBOX {
                for to in copies {
                    self.outbox.push_back((p.clone(), Route::Candidate(to)));
                }
                self.outbox.push_back((p, Route::Media));
            }
        }
        let mut outcome = Vec::new();
        while let Some(ev) = z.poll_event() {
            outcome.push(ev);
        }
        for ev in outcome {
            // A best-effort call already in cleartext said so and goes on: the ZRTP that
            // kept running beside it may still make it secure, but its failure, whatever
            // the reason, ends nothing (there is no protection left to downgrade).
            if self.security == MediaSecurity::Cleartext
                && self.cfg.policy == Policy::BestEffort
                && let ZrtpEvent::Failed(f) = &ev
            {
                tracing::info!(reason = %f, "ZRTP failed on a call already in cleartext");
                continue;
            }
            match ev {
                ZrtpEvent::Secure(s) => match SrtpSession::new(&s.keys) {
                    Ok(srtp) => {
                        self.srtp = Some(srtp);
                        self.security = MediaSecurity::Secure;
                        if self.peer.zrtp_candidates().next().is_some() {
                            self.candidates_until = Some(now + grace);
                        }
                        self.next_rtcp.get_or_insert(now + RTCP_INTERVAL);
                        self.events.push_back(StreamEvent::Secure {
                            sas: s.sas.clone(),
                            verified: s.verified,
                            cache_mismatch: s.cache_mismatch,
                            new_key: s.new_key,
                            algorithms: s.algorithms,
                        });
                    }
                    Err(e) => self.fail_or_fallback(now, format!("cannot start SRTP: {e}")),
                },
                // Signs of tampering end the call whatever the policy: falling back to
                // cleartext would hand whoever sent them a downgrade.
                ZrtpEvent::Failed(f) if f.is_tampering() => {
                    tracing::warn!(reason = %f, "ZRTP failed: possible tampering");
                    self.fail(f.to_string())
                }
                ZrtpEvent::Failed(f) => self.fail_or_fallback(now, f.to_string()),
            }
        }
    }

    fn fail_or_fallback(&mut self, now: Instant, reason: String) {
        match self.cfg.policy {
            Policy::Mandatory => self.fail(reason),
            Policy::BestEffort => self.fall_back_to_cleartext(now, reason),
        }
    }

    /// No media will flow, whatever the policy.
    fn fail(&mut self, reason: String) {
        if self.security != MediaSecurity::Failed {
            self.security = MediaSecurity::Failed;
            self.outbox.clear();
            self.forget_candidates();
            self.events.push_back(StreamEvent::Failed(reason));
        }
    }

    fn fall_back_to_cleartext(&mut self, now: Instant, reason: String) {
        if self.security != MediaSecurity::Negotiating {
            return;
        }
        // Cleartext takes media only from the signalled address and sends only there. A
        // peer heard only from elsewhere would get a "working" call that is silent both
        // ways, and without keys nothing tells its source from a stranger's.
        if self.heard_elsewhere && !self.heard_signalled {
            tracing::info!(%reason, "not falling back to cleartext: the peer was heard only from addresses it did not signal");
            return self.fail(UNSIGNALLED_SOURCE.into());
        }
        self.security = MediaSecurity::Cleartext;
        self.forget_candidates();
        self.outbox
            .retain(|(_, route)| !matches!(route, Route::Candidate(_)));
        self.next_rtcp.get_or_insert(now + RTCP_INTERVAL);
        self.events.push_back(StreamEvent::Cleartext(reason));
    }

    fn refuse(&mut self, e: &MediaError) {
        self.stats.refused_datagrams += 1;
        tracing::debug!(error = %e, "media datagram dropped");
    }

    fn refuse_stranger(&mut self, from: SocketAddr, kind: &'static str) {
        self.stats.refused_datagrams += 1;
        tracing::debug!(%from, kind, "media from an address that is not the peer's dropped");
    }

    /// Nothing more of ours goes to the ZRTP candidates, and nothing of theirs is heard.
    fn forget_candidates(&mut self) {
        self.peer.clear_candidates();
        self.candidates_until = None;
    }

    /// `from` sent SRTP/SRTCP that passed authentication: take media from it, and send
    /// ours there.
    fn proven(&mut self, from: SocketAddr) {
        if self.peer.prove(from) {
            tracing::info!(%from, "the peer's authenticated media comes from a new address; ours follows it");
        }
    }

    /// Feeds one datagram that arrived on the media port from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) {
        let trusted = self.peer.trusts(from);
        let kind = rtp::classify(buf);
        if kind != Kind::Unknown {
            if self.peer.is_negotiated(from) {
                self.heard_signalled = true;
            } else {
                self.heard_elsewhere = true;
            }
        }
        match kind {
            Kind::Zrtp => self.handle_zrtp(now, from, trusted, buf),
            Kind::Rtp => self.handle_rtp(now, from, trusted, buf),
            Kind::Rtcp => self.handle_rtcp(now, from, trusted, buf),
            Kind::Unknown => self.refuse(&MediaError::Malformed {
                kind: "media",
                reason: "neither RTP, RTCP nor ZRTP",
            }),
        }
    }

    fn handle_zrtp(&mut self, now: Instant, from: SocketAddr, trusted: bool, buf: &[u8]) {
        if !trusted {
            // Only the Hello the peer signalled in its SDP vouches for another source,
            // only while keys are still being agreed, and all it earns is that source's
            // ZRTP being heard (a copy of the peer's Hello is no proof of being the peer).
            // A Hello from another call, or any other ZRTP message from a source not
            // heard yet, is dropped here, never shown to libbzrtp; so is a Hello from a
            // candidate that is not the signalled one.
            let signalled_hello = self.peer_hello.is_some_and(|h| h.matches(buf));
            if self.peer.hears_zrtp_from(from) {
                if crate::zrtp::message_type(buf) == b"Hello   " && !signalled_hello {
                    return self.refuse_stranger(from, "ZRTP Hello");
                }
            } else {
                let negotiating = self.zrtp.is_some()
                    && self.srtp.is_none()
                    && self.security != MediaSecurity::Failed;
                if !(signalled_hello && negotiating && self.peer.add_zrtp_candidate(from)) {
                    self.zrtp_from_strangers |= crate::zrtp::check_packet(buf).is_ok();
                    return self.refuse_stranger(from, "ZRTP");
                }
                tracing::info!(%from, "the peer's signalled ZRTP Hello came from another address: its ZRTP is heard there; our media stays until SRTP from there authenticates");
            }
        }
        if let Some(z) = &mut self.zrtp {
            if let Err(e) = z.handle_packet_from(now, buf, trusted) {
                self.refuse(&e);
            }
            self.pump_zrtp(now);
        }
    }

    /// Under best effort, while keys are being agreed: counts one cleartext packet from
    /// the peer, and says whether its media has now flowed long enough without any ZRTP
    /// to conclude that it does not do ZRTP. One packet never does.
    fn peer_media_without_zrtp(&mut self, now: Instant) -> bool {
        if self.cfg.policy != Policy::BestEffort
            || self.hash_signalled
            || self.zrtp.as_ref().is_some_and(|z| z.peer_seen())
        {
            return false;
        }
        let (since, packets) = self.cleartext_media.get_or_insert((now, 0));
        *packets += 1;
        *packets >= CLEARTEXT_MEDIA_PACKETS
            && now.saturating_duration_since(*since) >= CLEARTEXT_MEDIA_TIMEOUT
    }

    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, trusted: bool, buf: &[u8]) {
        // An authentic SRTP packet proves its source, wherever it comes from, and our
        // media follows the source the peer's media last came from.
        let authenticated = self.security == MediaSecurity::Secure;
        let plain = match self.security {
            MediaSecurity::Secure => match self.srtp.as_mut().map(|s| s.unprotect_rtp(buf)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return self.refuse(&e),
                None => return,
            },
            _ if !trusted => return self.refuse_stranger(from, "RTP"),
            MediaSecurity::Negotiating => {
                if self.peer_media_without_zrtp(now) {
                    self.fall_back_to_cleartext(
                        now,
                        "the peer sends unencrypted media and does not answer ZRTP".into(),
                    );
                    bytes::Bytes::copy_from_slice(buf)
                } else {
                    return self.refuse(&MediaError::Malformed {
                        kind: "RTP",
                        reason: "media before the call is secure",
                    });
                }
            }
            MediaSecurity::Cleartext => bytes::Bytes::copy_from_slice(buf),
            MediaSecurity::Failed => return,
        };
        if authenticated {
            // The peer has the keys: its handshake is over, the candidates are done.
            self.forget_candidates();
            if from != self.peer.destination() {
                self.proven(from);
            }
        }
        let (h, range) = match rtp::parse(&plain) {
            Ok(x) => x,
            Err(e) => return self.refuse(&e),
        };
        let payload = &plain[range];
        if self.remote_ssrc.is_none() {
            self.remote_ssrc = Some(h.ssrc);
        }
        let clock = self.cfg.codec.clock_rate();
        let arrival_ts = (now.saturating_duration_since(self.epoch).as_micros() as u64
            * u64::from(clock)
            / 1_000_000) as u32;
        if Some(h.payload_type) == self.cfg.telephone_event_pt {
            if let Some((code, _end)) = dtmf::parse(payload)
                && self.last_received_event != Some(h.timestamp)
            {
                self.last_received_event = Some(h.timestamp);
                if let Some(k) = dtmf::key_for(code) {
                    self.events.push_back(StreamEvent::Dtmf(k));
                }
            }
            return;
        }
        if h.payload_type != self.cfg.payload_type {
            return; // comfort noise or a codec we did not negotiate
        }
        self.stats.received_packets += 1;
        self.reception
            .on_packet(h.sequence, h.timestamp, arrival_ts);
        let media_ms = i64::from(h.timestamp) * 1000 / i64::from(clock);
        let arrival_ms = now.saturating_duration_since(self.epoch).as_millis() as i64;
        self.jitter.push(h.sequence, arrival_ms, media_ms, payload);
    }

    fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, trusted: bool, buf: &[u8]) {
        let plain = match self.security {
            MediaSecurity::Secure => match self.srtp.as_mut().map(|s| s.unprotect_rtcp(buf)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return self.refuse(&e),
                None => return,
            },
            _ if !trusted => return self.refuse_stranger(from, "RTCP"),
            MediaSecurity::Cleartext => bytes::Bytes::copy_from_slice(buf),
            _ => return,
        };
        if self.security == MediaSecurity::Secure {
            self.forget_candidates();
        }
        if !trusted {
            self.proven(from);
        }
        match parse_report(&plain) {
            Ok(report) => {
                let now_q16 = self.q16(now);
                if let Some(s) = report.sender {
                    self.reception
                        .on_sender_report((s.ntp >> 16) as u32, now_q16);
                }
                if let Some(b) = report.block
                    && b.ssrc == self.cfg.local_ssrc
                    && let Some(rtt) = rtp::round_trip_ms(&b, now_q16)
                {
                    self.stats.rtt_ms = Some(rtt);
                }
            }
            Err(e) => self.refuse(&e),
        }
    }

    fn q16(&self, now: Instant) -> u32 {
        rtp::clock_q16(self.epoch, now)
    }

    /// Services ZRTP timers and RTCP.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(z) = &mut self.zrtp {
            z.handle_timeout(now);
            self.pump_zrtp(now);
        }
        self.check_peer_silence(now);
        if self.candidates_until.is_some_and(|t| now >= t) {
            tracing::debug!("no authenticated media from the peer yet: ZRTP candidates forgotten");
            self.forget_candidates();
        }
        if self.next_rtcp.is_some_and(|t| now >= t) {
            self.next_rtcp = Some(now + RTCP_INTERVAL);
            self.send_rtcp(now);
        }
    }

    /// Gives up on ZRTP if the peer never sent a single ZRTP packet: under best effort
    /// the call goes on in cleartext, under mandatory it fails. Our Hellos stop.
    fn check_peer_silence(&mut self, now: Instant) {
        let Some(deadline) = self.zrtp_silence_deadline else {
            return;
        };
        match &self.zrtp {
            Some(z) if !z.peer_seen() => {
                if now < deadline {
                    return;
                }
                self.zrtp = None;
                self.zrtp_silence_deadline = None;
                let reason = if self.zrtp_from_strangers {
                    "no ZRTP came from the address the peer signalled; ZRTP from other \
                     addresses could not prove it was the peer's and was ignored"
                        .to_string()
                } else {
                    ZrtpFailure::PeerDoesNotSupportZrtp.to_string()
                };
                tracing::info!(%reason, "no ZRTP from the peer");
                self.fail_or_fallback(now, reason);
            }
            _ => self.zrtp_silence_deadline = None,
        }
    }

    fn send_rtcp(&mut self, now: Instant) {
        let now_q16 = self.q16(now);
        let sender = (self.stats.sent_packets > 0).then(|| rtp::SenderInfo {
            ntp: (u64::from(now_q16) << 16) | 1 << 63,
            rtp_ts: self.timestamp,
            packets: self.stats.sent_packets as u32,
            octets: self.stats.sent_octets as u32,
        });
        let block = self
            .remote_ssrc
            .map(|ssrc| self.reception.report_block(ssrc, now_q16));
        let mut report = Vec::with_capacity(64);
        build_report(self.cfg.local_ssrc, sender, block, &mut report);
        self.emit(report, true);
    }

    fn emit(&mut self, plain: Vec<u8>, rtcp: bool) {
        let Some(out) = protect(&self.security, self.srtp.as_mut(), plain, rtcp) else {
            return;
        };
        if self.outbox.len() < MAX_OUTBOX {
            self.outbox.push_back((out, Route::Media));
        }
    }

    /// Sends one 20 ms frame of microphone audio (or a DTMF packet in its place).
    pub fn send_frame(&mut self, pcm: &[i16]) {
        let samples = self.cfg.codec.frame_samples();
        if !matches!(
            self.security,
            MediaSecurity::Secure | MediaSecurity::Cleartext
        ) {
            self.stats.withheld_frames += 1;
            self.timestamp = self.timestamp.wrapping_add(samples as u32);
            return;
        }
        if self.press.is_none()
            && let Some(code) = self.presses.pop_front()
        {
            self.press = Some(Press {
                code,
                timestamp: self.timestamp,
                sent: 0,
            });
        }
        let mut header = RtpHeader {
            payload_type: self.cfg.payload_type,
            marker: self.first_packet,
            sequence: self.seq,
            timestamp: self.timestamp,
            ssrc: self.cfg.local_ssrc,
        };
        let mut payload = std::mem::take(&mut self.payload);
        let dtmf = match (&mut self.press, self.cfg.telephone_event_pt) {
            (Some(p), Some(pt)) => match p.next(samples as u16) {
                Some((marker, bytes)) => {
                    header = RtpHeader {
                        payload_type: pt,
                        marker,
                        timestamp: p.timestamp,
                        ..header
                    };
                    payload.clear();
                    payload.extend_from_slice(&bytes);
                    true
                }
                None => {
                    self.press = None;
                    false
                }
            },
            _ => false,
        };
        if !dtmf && let Err(e) = self.encoder.encode(pcm, &mut payload) {
            tracing::warn!(error = %e, "encoder failed");
            self.payload = payload;
            return;
        }
        let mut packet = std::mem::take(&mut self.scratch);
        rtp::write(&header, &payload, &mut packet);
        self.first_packet = false;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples as u32);
        self.stats.sent_packets += 1;
        self.stats.sent_octets += payload.len() as u64;
        let datagram = packet.clone();
        self.scratch = packet;
        self.payload = payload;
        self.emit(datagram, false);
    }

    /// Queues a DTMF key press (RFC 4733); unknown keys are an error.
    pub fn send_dtmf(&mut self, key: char) -> Result<(), MediaError> {
        if self.cfg.telephone_event_pt.is_none() {
            return Err(MediaError::InvalidInput(
                "the peer did not accept telephone-events".into(),
            ));
        }
        let code = dtmf::event_code(key)
            .ok_or_else(|| MediaError::InvalidInput(format!("{key:?} is not a DTMF key")))?;
        if self.presses.len() < 32 {
            self.presses.push_back(code);
        }
        Ok(())
    }

    /// Produces one 20 ms frame for the speaker: decoded, concealed, or silence.
    pub fn receive_frame(&mut self, out: &mut [i16]) {
        let mut payload = std::mem::take(&mut self.payload);
        let r = match self.jitter.pop(&mut payload) {
            Playout::Frame => self.decoder.decode(Some(&payload), out),
            Playout::Lost => self.decoder.decode(None, out),
            Playout::Buffering => {
                out.fill(0);
                Ok(out.len())
            }
        };
        if r.is_err() {
            out.fill(0);
        }
        self.payload = payload;
    }

    /// The next datagram for the peer. Call until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let (data, route) = self.outbox.pop_front()?;
        let to = match route {
            Route::Media => self.peer.destination(),
            Route::Candidate(to) => to,
        };
        Some(Transmit { to, data })
    }

    /// A new SDP from the peer (re-INVITE) names `remote` as its media address.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        self.peer.renegotiate(remote);
    }

    /// Where our media (RTP, RTCP) goes now.
    pub fn remote(&self) -> SocketAddr {
        self.peer.destination()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// When [`AudioStream::handle_timeout`] is due next (frames are clocked by the caller).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let z = self.zrtp.as_ref().and_then(|z| z.poll_timeout());
        [
            z,
            self.zrtp_silence_deadline,
            self.candidates_until,
            self.next_rtcp,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Current counters.
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            lost_packets: self.reception.lost(),
            jitter_ms: (u64::from(self.reception.jitter()) * 1000
                / u64::from(self.cfg.codec.clock_rate().max(1)))
            .min(u64::from(u32::MAX)) as u32,
            jitter_buffer: self.jitter.stats(),
            ..self.stats
        }
    }

    /// Records the user's SAS verdict in the ZRTP cache.
    pub fn set_sas_verified(&mut self, verified: bool) {
        if let Some(z) = &mut self.zrtp {
            z.set_sas_verified(verified);
        }
    }

    /// The call's ZRTP session, for the channels of its other streams (video); `None`
    /// once ZRTP is given up (or never used).
    pub fn zrtp_mut(&mut self) -> Option<&mut ZrtpSession> {
        self.zrtp.as_mut()
    }
}
