//! The SDP side of the machine: our streams as m-lines, the peer's offers and answers
//! read against them, and the no-downgrade rule for re-INVITEs.

use super::{Call, MediaAction, OUR_AUDIO, PreparedStream, StreamStart, our_direction, view_kind};
use crate::error::{CoreError, Result};
use crate::security::CallSecurity;
use crate::snapshot::{CallStats, MediaStreamView};
use core::net::SocketAddr;
use hush_signaling::sdp::{
    self, Codec, Direction, LocalRtcp, LocalStream, MediaKind, Negotiated, SessionDescription,
    StreamCodecs, StreamDescription,
};

/// Video codecs we offer.
const OUR_VIDEO: [Codec; 1] = [Codec::Vp8];

fn ours_of(kind: MediaKind) -> &'static [Codec] {
    match kind {
        MediaKind::Audio => &OUR_AUDIO,
        MediaKind::Video => &OUR_VIDEO,
    }
}

/// Where one stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamState {
    /// Ours, ready (port bound), not started.
    Prepared,
    /// Told to start.
    Starting,
    /// Media runs.
    Running,
    /// Refused or removed: port 0 in our bodies.
    Refused,
}

/// One m-line of a call.
pub(super) struct Stream {
    /// What it carries (`None`: a kind we do not know).
    pub(super) kind: Option<MediaKind>,
    /// On an incoming call: the kind we accept here, to be prepared for the answer.
    pub(super) wanted: Option<MediaKind>,
    /// The m-line as the peer (or we) first wrote it, echoed when refused.
    media: String,
    proto: String,
    formats: Vec<String>,
    pub(super) content: Option<String>,
    /// Our end, once prepared.
    pub(super) local: Option<PreparedStream>,
    /// The codec agreed.
    negotiated: Option<Negotiated>,
    /// Where its media goes.
    remote: Option<SocketAddr>,
    /// The peer's Hello hash, pinned at the first offer or answer that carried one:
    /// later bodies must repeat it.
    peer_hash: Option<String>,
    /// The peer's last description.
    their: Option<StreamDescription>,
    pub(super) state: StreamState,
    pub(super) security: CallSecurity,
    pub(super) stats: Option<CallStats>,
}

impl Stream {
    /// One of our streams, for an offer.
    pub(super) fn ours(p: PreparedStream) -> Stream {
        let formats = ours_of(p.kind)
            .iter()
            .map(|c| c.payload_type().to_string())
            .collect();
        Stream {
            kind: Some(p.kind),
            wanted: None,
            media: word(p.kind).into(),
            proto: "RTP/AVP".into(),
            formats,
            content: p.screen.then(|| "slides".to_owned()),
            local: Some(p),
            negotiated: None,
            remote: None,
            peer_hash: None,
            their: None,
            state: StreamState::Prepared,
            security: CallSecurity::Negotiating,
            stats: None,
        }
    }

    /// One of the peer's m-lines, accepted as `wanted` or refused.
    fn theirs(d: &StreamDescription, wanted: Option<MediaKind>) -> Stream {
        Stream {
            kind: d.kind,
            wanted,
            media: d.media.clone(),
            proto: d.proto.clone(),
            formats: d.formats.clone(),
            // Ours to say (RFC 4796: each side describes its own media).
            content: None,
            local: None,
            negotiated: None,
            remote: None,
            peer_hash: d.zrtp_hash.clone(),
            their: Some(d.clone()),
            state: if wanted.is_some() {
                StreamState::Prepared
            } else {
                StreamState::Refused
            },
            security: CallSecurity::Negotiating,
            stats: None,
        }
    }

    /// What the views call it: a video m-line where either side says
    /// `a=content:slides` carries a screen.
    pub(super) fn shown_kind(&self) -> Option<crate::snapshot::StreamKind> {
        Some(view_kind(self.kind?, self.shown_content()))
    }

    fn shown_content(&self) -> Option<&str> {
        self.content
            .as_deref()
            .or_else(|| self.their.as_ref().and_then(|t| t.content.as_deref()))
    }

    /// How the views show it (streams that never ran or were refused are not shown).
    pub(super) fn view(&self) -> Option<MediaStreamView> {
        let kind = self.kind?;
        if self.state == StreamState::Refused {
            return None;
        }
        Some(MediaStreamView {
            kind: view_kind(kind, self.shown_content()),
            sending: !matches!(
                self.their.as_ref().map(|t| t.direction),
                Some(Direction::SendOnly | Direction::Inactive)
            ),
            security: self.security.clone(),
            codec: self.negotiated.map(|n| n.codec.sdp_name().to_owned()),
            stats: self.stats,
        })
    }

    fn refused_line(&self) -> LocalStream {
        LocalStream {
            port: 0,
            direction: Direction::Inactive,
            zrtp_hash: None,
            content: None,
            codecs: StreamCodecs::Refused {
                media: self.media.clone(),
                proto: self.proto.clone(),
                formats: self.formats.clone(),
            },
            rtcp: LocalRtcp::default(),
        }
    }

    fn start(&self, policy: crate::model::EncryptionPolicy) -> Option<StreamStart> {
        let remote = self.remote?;
        Some(StreamStart {
            kind: self.kind?,
            local_port: self.local.as_ref()?.port,
            remote,
            // Our RTCP socket apart means we follow the peer's choice; without one
            // (audio), RTCP shares the media port.
            remote_rtcp: match (&self.local, &self.their) {
                (Some(l), Some(t)) if l.rtcp_port.is_some() => {
                    SocketAddr::new(remote.ip(), t.rtcp_destination().port())
                }
                _ => remote,
            },
            // The peer wants our media unless it only sends, or nothing flows.
            sending: !self
                .their
                .as_ref()
                .is_some_and(|t| matches!(t.direction, Direction::SendOnly | Direction::Inactive)),
            codec: self.negotiated?,
            policy,
            peer_hash: self.peer_hash.clone(),
            screen: self.local.as_ref().is_some_and(|l| l.screen),
        })
    }
}

/// An address media must not be sent to: multicast or broadcast, also written as an
/// IPv4-mapped IPv6 address (which a dual-stack socket would reach).
fn not_a_peer(addr: core::net::IpAddr) -> bool {
    let addr = addr.to_canonical();
    addr.is_multicast() || addr == core::net::IpAddr::V4(core::net::Ipv4Addr::BROADCAST)
}

fn word(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn bad(what: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(what.into())
}

/// Our first offer: every prepared stream with every codec we have for it.
pub(super) fn initial_offer(call: &Call) -> String {
    let lines: Vec<LocalStream> = call
        .streams
        .iter()
        .map(|s| match (&s.local, s.kind) {
            (Some(p), Some(kind)) => LocalStream {
                port: p.port,
                direction: Direction::SendRecv,
                zrtp_hash: p.zrtp_hash.clone(),
                content: s.content.clone(),
                codecs: StreamCodecs::Offer(ours_of(kind).to_vec()),
                // Offered with our RTCP port as the fallback (RFC 5761 §5.1.1).
                rtcp: LocalRtcp {
                    mux: p.rtcp_port.is_some(),
                    port: p.rtcp_port,
                },
            },
            _ => s.refused_line(),
        })
        .collect();
    sdp::write_session(call.session_id, call.version, call.addr, &lines)
}

/// The streams of a new call's offer: the first audio stream we can carry is accepted,
/// and the first video stream we can carry is wanted (the driver refuses it when it
/// has no camera to prepare); the rest are refused. No audio we can carry: the call is
/// refused.
pub(super) fn streams_to_accept(
    offer: &SessionDescription,
) -> std::result::Result<Vec<Stream>, String> {
    if let Some(s) = offer
        .streams
        .iter()
        .find(|s| s.port != 0 && not_a_peer(s.addr))
    {
        return Err(format!(
            "the offer sends {} to {}, not to a peer",
            s.media, s.addr
        ));
    }
    let audio = offer
        .streams
        .iter()
        .position(|s| {
            s.kind == Some(MediaKind::Audio)
                && s.is_ours()
                && s.port != 0
                && sdp::negotiate(s, &OUR_AUDIO).is_ok()
        })
        .ok_or_else(|| match offer.audio() {
            Some(a) if !a.is_ours() => format!(
                "the audio stream asks for {}, not ZRTP-keyed RTP/AVP",
                a.proto
            ),
            Some(a) => sdp::negotiate(a, &OUR_AUDIO).err().map_or_else(
                || "no audio stream we can carry".to_owned(),
                |e| e.to_string(),
            ),
            None => "no audio stream".to_owned(),
        })?;
    let video = offer.streams.iter().position(|s| {
        s.kind == Some(MediaKind::Video)
            && s.is_ours()
            && s.port != 0
            && sdp::negotiate(s, &OUR_VIDEO).is_ok()
    });
    Ok(offer
        .streams
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let wanted = if i == audio {
                Some(MediaKind::Audio)
            } else if Some(i) == video {
                Some(MediaKind::Video)
            } else {
                None
            };
            Stream::theirs(d, wanted)
        })
        .collect())
}

/// Gives the prepared streams to the m-lines that want them and says how each starts.
/// A wanted stream with nothing prepared for it is refused (audio cannot be).
pub(super) fn take_prepared(
    call: &mut Call,
    mut prepared: Vec<PreparedStream>,
) -> Result<Vec<(usize, StreamStart)>> {
    let mut starts = Vec::new();
    let policy = call.policy;
    for (i, s) in call.streams.iter_mut().enumerate() {
        let Some(kind) = s.wanted else { continue };
        let Some(at) = prepared.iter().position(|p| p.kind == kind) else {
            if kind == MediaKind::Audio {
                return Err(bad("no audio prepared to answer with"));
            }
            s.state = StreamState::Refused;
            continue;
        };
        let Some(their) = &s.their else { continue };
        let neg = sdp::negotiate(their, ours_of(kind)).map_err(|e| bad(e.to_string()))?;
        s.negotiated = Some(neg);
        s.remote = Some(SocketAddr::new(their.addr, their.port));
        s.local = Some(prepared.swap_remove(at));
        if s.local.as_ref().is_some_and(|l| l.screen) {
            s.content = Some("slides".to_owned());
        }
        s.state = StreamState::Starting;
        if let Some(start) = s.start(policy) {
            starts.push((i, start));
        }
    }
    if let Some(codec) = audio_codec(call) {
        call.view.codec = Some(codec);
    }
    call.view.streams = call.stream_views();
    Ok(starts)
}

fn audio_codec(call: &Call) -> Option<String> {
    call.streams
        .iter()
        .find(|s| s.kind == Some(MediaKind::Audio) && s.negotiated.is_some())
        .and_then(|s| s.negotiated)
        .map(|n| n.codec.sdp_name().to_owned())
}

/// Our direction for a stream: a video stream does not send while our camera is off.
fn with_camera(s: &Stream, direction: Direction, camera_off: bool) -> Direction {
    if !(camera_off && s.kind == Some(MediaKind::Video)) {
        return direction;
    }
    match direction {
        Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
        Direction::SendOnly | Direction::Inactive => Direction::Inactive,
    }
}

/// Whether video stream `i` sends: our camera is on, the call is not held either way,
/// and the peer takes pictures.
pub(super) fn sends_video(call: &Call, i: usize) -> bool {
    let Some(s) = call.streams.get(i) else {
        return false;
    };
    !call.camera_off
        && !call.local_hold
        && !call.remote_hold
        && !s
            .their
            .as_ref()
            .is_some_and(|t| matches!(t.direction, Direction::SendOnly | Direction::Inactive))
}

/// One of our m-lines in an answer or re-offer.
fn line(s: &Stream, direction: Direction) -> LocalStream {
    match (&s.local, s.negotiated, s.state) {
        (Some(p), Some(n), StreamState::Running | StreamState::Starting) => LocalStream {
            port: p.port,
            direction,
            zrtp_hash: p.zrtp_hash.clone(),
            content: s.content.clone(),
            codecs: StreamCodecs::Answer(n),
            // Muxed if the peer's last body said so (its offer, or its answer to ours).
            rtcp: LocalRtcp {
                mux: p.rtcp_port.is_some() && s.their.as_ref().is_some_and(|t| t.rtcp_mux),
                port: p.rtcp_port,
            },
        },
        // Ours, being added by this re-INVITE: offered with every codec we have.
        (Some(p), None, StreamState::Prepared) => match s.kind {
            Some(kind) => LocalStream {
                port: p.port,
                direction,
                zrtp_hash: p.zrtp_hash.clone(),
                content: s.content.clone(),
                codecs: StreamCodecs::Offer(ours_of(kind).to_vec()),
                rtcp: LocalRtcp {
                    mux: p.rtcp_port.is_some(),
                    port: p.rtcp_port,
                },
            },
            None => s.refused_line(),
        },
        _ => s.refused_line(),
    }
}

/// Our answer to the peer's offer (the one that made the call, or a re-INVITE's): each
/// m-line mirrors the peer's direction and our hold.
pub(super) fn answer(call: &Call) -> String {
    let lines: Vec<LocalStream> = call
        .streams
        .iter()
        .map(|s| {
            let theirs = s
                .their
                .as_ref()
                .map_or(Direction::SendRecv, |t| t.direction);
            let d = our_direction(theirs, call.local_hold);
            if s.state == StreamState::Prepared {
                // Ours, not offered yet: the peer has not agreed to it.
                return s.refused_line();
            }
            line(s, with_camera(s, d, call.camera_off))
        })
        .collect();
    sdp::write_session(call.session_id, call.version, call.addr, &lines)
}

/// Our re-INVITE offer: the streams as they run, with our hold.
pub(super) fn reoffer(call: &Call) -> String {
    let direction = if call.local_hold {
        Direction::SendOnly
    } else {
        Direction::SendRecv
    };
    let lines: Vec<LocalStream> = call
        .streams
        .iter()
        .map(|s| line(s, with_camera(s, direction, call.camera_off)))
        .collect();
    sdp::write_session(call.session_id, call.version, call.addr, &lines)
}

/// Reads the answer to our INVITE: how each of our streams starts.
pub(super) fn read_answer(
    call: &mut Call,
    body: &[u8],
) -> std::result::Result<Vec<(usize, StreamStart)>, String> {
    let answer = sdp::parse_session(body).map_err(|e| e.to_string())?;
    if answer.streams.len() != call.streams.len() {
        return Err(format!(
            "the answer has {} media streams for our {}",
            answer.streams.len(),
            call.streams.len()
        ));
    }
    let policy = call.policy;
    let mut starts = Vec::new();
    for (i, (s, a)) in call.streams.iter_mut().zip(&answer.streams).enumerate() {
        if let Some(start) = take_answer_line(s, a, policy)? {
            starts.push((i, start));
        }
    }
    if let Some(codec) = audio_codec(call) {
        call.view.codec = Some(codec);
    }
    call.remote_hold = audio_held(call);
    call.view.streams = call.stream_views();
    Ok(starts)
}

/// Reads the answer's line for one of our streams still waiting for it: how it
/// starts, or `None` if it does not (refused with port 0, or not ours to read). An
/// audio stream refused, or a line that is not what we offered, is an error.
pub(super) fn take_answer_line(
    s: &mut Stream,
    a: &StreamDescription,
    policy: crate::model::EncryptionPolicy,
) -> std::result::Result<Option<StreamStart>, String> {
    if s.state != StreamState::Prepared {
        return Ok(None);
    }
    let Some(kind) = s.kind else { return Ok(None) };
    if a.port == 0 {
        if kind == MediaKind::Audio {
            return Err("the peer refused the audio stream".into());
        }
        s.state = StreamState::Refused;
        return Ok(None);
    }
    if a.kind != Some(kind) || !a.is_ours() {
        return Err(format!(
            "the answer puts {} {} where we offered {}",
            a.media,
            a.proto,
            word(kind)
        ));
    }
    if not_a_peer(a.addr) {
        return Err(format!(
            "the answer sends {} to {}, not to a peer",
            a.media, a.addr
        ));
    }
    let neg = sdp::accepted(a, ours_of(kind)).map_err(|e| e.to_string())?;
    s.negotiated = Some(neg);
    s.remote = Some(SocketAddr::new(a.addr, a.port));
    s.peer_hash = a.zrtp_hash.clone();
    s.their = Some(a.clone());
    s.state = StreamState::Starting;
    Ok(s.start(policy))
}

/// The m-line of the peer's re-INVITE offer that adds a video stream we would take:
/// a line beyond the call's, or one in a slot refused before (RFC 3264 §8.1), that is
/// ZRTP-keyable VP8 towards a peer. None while the call has video.
pub(super) fn video_line_to_accept(call: &Call, offer: &SessionDescription) -> Option<usize> {
    if call.streams.iter().any(|s| {
        s.kind == Some(MediaKind::Video)
            && matches!(
                s.state,
                StreamState::Running | StreamState::Starting | StreamState::Prepared
            )
    }) {
        return None;
    }
    offer.streams.iter().enumerate().position(|(i, d)| {
        call.streams
            .get(i)
            .is_none_or(|s| s.state == StreamState::Refused)
            && d.kind == Some(MediaKind::Video)
            && d.is_ours()
            && d.port != 0
            && !not_a_peer(d.addr)
            && !d.addr.is_unspecified()
            && sdp::negotiate(d, &OUR_VIDEO).is_ok()
    })
}

/// Takes the peer's video line `at` (found by [`video_line_to_accept`], the update
/// applied) with our prepared stream: how it starts. If it cannot, the prepared stream
/// comes back to be released.
pub(super) fn accept_video(
    call: &mut Call,
    at: usize,
    their: &StreamDescription,
    prepared: PreparedStream,
) -> std::result::Result<StreamStart, Option<PreparedStream>> {
    let Ok(neg) = sdp::negotiate(their, &OUR_VIDEO) else {
        return Err(Some(prepared));
    };
    if at >= call.streams.len() {
        return Err(Some(prepared));
    }
    let mut s = Stream::theirs(their, Some(MediaKind::Video));
    s.negotiated = Some(neg);
    s.remote = Some(SocketAddr::new(their.addr, their.port));
    s.local = Some(prepared);
    s.state = StreamState::Starting;
    call.streams[at] = s;
    match call.streams[at].start(call.policy) {
        Some(mut start) => {
            start.sending = sends_video(call, at);
            Ok(start)
        }
        None => {
            call.streams[at].state = StreamState::Refused;
            Err(call.streams[at].local.take())
        }
    }
}

/// What a re-INVITE (or its answer) changes, once found acceptable.
pub(super) struct Update {
    /// New descriptions of running streams, by m-line.
    running: Vec<(usize, StreamDescription)>,
    /// Running streams the peer removed (port 0).
    removed: Vec<usize>,
    /// m-lines beyond ours (refused for now).
    added: Vec<StreamDescription>,
}

impl Update {
    /// Running streams it removes (port 0), by m-line.
    pub(super) fn removed(&self) -> &[usize] {
        &self.removed
    }
}

/// What a stream would be after `their` new description: the projection the
/// no-downgrade rule compares by rank.
fn project(s: &Stream, their: &StreamDescription) -> (CallSecurity, Option<String>) {
    if !their.is_ours() {
        return (
            CallSecurity::Cleartext,
            Some(format!(
                "it moves {} to {}, which ZRTP does not key",
                s.media, their.proto
            )),
        );
    }
    if s.peer_hash.is_some() && their.zrtp_hash != s.peer_hash {
        let what = if their.zrtp_hash.is_none() {
            "drops"
        } else {
            "changes"
        };
        return (
            CallSecurity::Cleartext,
            Some(format!(
                "it {what} the ZRTP hash the {} stream was keyed with",
                s.media
            )),
        );
    }
    if let Some(n) = s.negotiated
        && !their.codecs.iter().any(|(_, c)| *c == n.codec)
    {
        return (
            CallSecurity::Failed("no codec".into()),
            Some(format!(
                "it moves {} off {}, the codec agreed",
                s.media,
                n.codec.sdp_name()
            )),
        );
    }
    (s.security.clone(), None)
}

fn check(
    call: &Call,
    body: &SessionDescription,
    may_add: bool,
) -> std::result::Result<Update, String> {
    if body.streams.len() < call.streams.len()
        || (!may_add && body.streams.len() != call.streams.len())
    {
        return Err(format!(
            "it has {} media streams where the call has {}",
            body.streams.len(),
            call.streams.len()
        ));
    }
    let mut update = Update {
        running: Vec::new(),
        removed: Vec::new(),
        added: body.streams[call.streams.len()..].to_vec(),
    };
    for (i, (s, their)) in call.streams.iter().zip(&body.streams).enumerate() {
        if s.state != StreamState::Running {
            continue;
        }
        if their.port == 0 {
            if s.kind == Some(MediaKind::Audio) {
                return Err("it removes the audio stream".into());
            }
            update.removed.push(i);
            continue;
        }
        if their.kind != s.kind {
            return Err(format!("it turns {} into {}", s.media, their.media));
        }
        if not_a_peer(their.addr) {
            return Err(format!(
                "it sends {} to {}, not to a peer",
                s.media, their.addr
            ));
        }
        let (projected, why) = project(s, their);
        if projected.rank() < s.security.rank() {
            return Err(why.unwrap_or_else(|| "it would weaken the call".into()));
        }
        update.running.push((i, their.clone()));
    }
    Ok(update)
}

/// Checks the peer's re-INVITE offer against the call as it is: nothing it asks may
/// lower a running stream's security ([`CallSecurity::rank`]).
pub(super) fn check_update(
    call: &Call,
    offer: &SessionDescription,
) -> std::result::Result<Update, String> {
    check(call, offer, true)
}

/// Checks the peer's answer to our re-INVITE the same way.
pub(super) fn check_answer(
    call: &Call,
    answer: &SessionDescription,
) -> std::result::Result<Update, String> {
    check(call, answer, false)
}

/// Applies an accepted update; returns what the media must do.
pub(super) fn apply_update(call: &mut Call, update: &Update) -> Vec<(usize, MediaAction)> {
    let mut actions = Vec::new();
    for (i, their) in &update.running {
        let Some(s) = call.streams.get_mut(*i) else {
            continue;
        };
        // 0.0.0.0 is RFC 2543's hold: the stream pauses where it is.
        if their.addr.is_unspecified() {
            s.their = Some(their.clone());
            continue;
        }
        // Where media and RTCP go, before and after: either may move (a new address,
        // or only a new `a=rtcp` port).
        let addresses = |s: &Stream| {
            s.start(crate::model::EncryptionPolicy::Mandatory)
                .map(|st| (st.remote, st.remote_rtcp))
        };
        let before = addresses(s);
        s.remote = Some(SocketAddr::new(their.addr, their.port));
        s.their = Some(their.clone());
        if let Some((rtp, rtcp)) = addresses(s)
            && before != Some((rtp, rtcp))
        {
            actions.push((*i, MediaAction::SetRemote { rtp, rtcp }));
        }
    }
    for &i in &update.removed {
        if let Some(s) = call.streams.get_mut(i) {
            s.state = StreamState::Refused;
            actions.push((i, MediaAction::Stop));
        }
    }
    for d in &update.added {
        call.streams.push(Stream::theirs(d, None));
    }
    call.remote_hold = audio_held(call);
    let held = call.local_hold || call.remote_hold;
    for (i, s) in call.streams.iter().enumerate() {
        if s.state == StreamState::Running {
            actions.push((i, MediaAction::Hold(held)));
        }
    }
    // After the hold: a peer that stops (or starts again) taking our pictures, or a
    // hold that ends, and the video follows.
    for (i, _) in &update.running {
        if call
            .streams
            .get(*i)
            .is_some_and(|s| s.kind == Some(MediaKind::Video))
        {
            actions.push((*i, MediaAction::Camera(sends_video(call, *i))));
        }
    }
    actions
}

/// Whether the peer holds us: its audio stream neither sends nor wants to.
fn audio_held(call: &Call) -> bool {
    call.streams
        .iter()
        .find(|s| s.kind == Some(MediaKind::Audio) && s.state != StreamState::Refused)
        .and_then(|s| s.their.as_ref())
        .is_some_and(|t| t.direction.is_hold())
}
