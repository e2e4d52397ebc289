//! The call machine: every decision about every call, and no I/O. In the style of
//! quinn-proto and str0m, the driver ([`super::CallLayer`]) feeds it inputs with the
//! time — user commands, what the SIP stack and the media threads report — and polls
//! what to do: SIP actions (INVITE, 200, BYE, re-INVITE, 488, 491), media actions
//! (start a stream, hold it, record a SAS verdict) and events for the views. It owns
//! the encryption policy (a mandatory call that cannot be secured is hung up), the SAS
//! mismatch, hold on both sides, glare, and the rule that a re-INVITE may never lower
//! a call's security ([`CallSecurity::rank`]). It binds no socket, spawns nothing and
//! reads no clock: tests drive it with simulated time (see `tests.rs`).

mod offer;
#[cfg(test)]
mod tests;

use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::model::{AccountId, EncryptionPolicy};
use crate::security::CallSecurity;
use crate::snapshot::{
    CallDirection, CallId, CallState, CallStats, CallView, MediaStreamView, StreamKind,
};
use core::net::{IpAddr, SocketAddr};
use hush_signaling::sdp::{self, Codec, Direction, MediaKind, Negotiated};
use hush_signaling::sip::Rejection;
use offer::{Stream, StreamState};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Audio codecs we offer, best first.
pub(crate) const OUR_AUDIO: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];

/// Ended calls kept for the views.
const ENDED_KEPT: usize = 5;

/// One stream of ours made ready by the driver before an offer or an answer: its bound
/// port and the Hello hash of its ZRTP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedStream {
    /// What it carries.
    pub kind: MediaKind,
    /// Our RTP port.
    pub port: u16,
    /// Our `a=zrtp-hash`.
    pub zrtp_hash: Option<String>,
    /// Our RTCP port, when RTCP has its own (video: for peers without rtcp-mux).
    pub rtcp_port: Option<u16>,
    /// It carries our screen (`a=content:slides`).
    pub screen: bool,
}

/// Everything the machine is told.
#[derive(Debug)]
pub(crate) enum Input {
    /// The user places a call; the driver has prepared our streams.
    Place {
        id: CallId,
        account: Option<AccountId>,
        peer: String,
        policy: EncryptionPolicy,
        addr: IpAddr,
        session_id: u64,
        streams: Vec<PreparedStream>,
    },
    /// A new INVITE reached us.
    Incoming {
        id: CallId,
        account: Option<AccountId>,
        from: String,
        offer: Vec<u8>,
        policy: EncryptionPolicy,
        addr: IpAddr,
        session_id: u64,
        automatic: bool,
    },
    /// The user answers; the driver has prepared the streams we accept.
    Answer {
        id: CallId,
        streams: Vec<PreparedStream>,
    },
    /// The user (or the driver, for a call it could not answer) refuses a ringing call.
    Reject { id: CallId, why: Rejection },
    /// The user hangs up.
    Hangup { id: CallId },
    /// The user holds (`true`) or resumes the call.
    Hold { id: CallId, on: bool },
    /// The user compared the SAS and it differs.
    SasMismatch { id: CallId },
    /// The user confirms (or withdraws) the SAS comparison.
    SetVerified { id: CallId, verified: bool },
    /// Silence instead of the microphone, or not.
    Mute { id: CallId, on: bool },
    /// Our camera off (the video m-line says so: recvonly) or on again.
    Camera { id: CallId, on: bool },
    /// The user adds video to a call without: the driver has prepared the stream (its
    /// ZRTP channel in the call's session). Offered by re-INVITE.
    AddVideo { id: CallId, stream: PreparedStream },
    /// The user ends the call's video: its m-line goes to port 0 by re-INVITE.
    RemoveVideo { id: CallId },
    /// The user shares the screen in place of the camera (`on`) or goes back to the
    /// camera: the video line's `a=content` says so by re-INVITE; the driver has the
    /// new source ready.
    ShareScreen { id: CallId, on: bool },
    /// Keys to send as RFC 4733 events.
    Dtmf { id: CallId, keys: String },
    /// What the SIP stack said about a call.
    Sip(CallId, SipInput),
    /// What the media of one stream (by m-line) said.
    Media(CallId, usize, MediaInput),
}

/// SIP news of one call.
#[derive(Debug)]
pub(crate) enum SipInput {
    /// The callee's phone rings.
    Ringing,
    /// Our INVITE was answered with this SDP.
    Answered(Vec<u8>),
    /// The ACK for our 200 arrived.
    Established,
    /// The peer's re-INVITE, to be answered with [`SipAction::AcceptReInvite`] or
    /// [`SipAction::RefuseReInvite`].
    ReInvite(Vec<u8>),
    /// The same, adding a video stream the driver prepared for it (see
    /// [`CallCore::video_to_accept`]); `camera`: the user chose video for this call,
    /// else our camera stays off and we only watch.
    ReInviteWithVideo {
        body: Vec<u8>,
        video: PreparedStream,
        camera: bool,
    },
    /// How our re-INVITE ended.
    ReInviteAnswered(std::result::Result<Vec<u8>, ReInviteFailure>),
    /// The call is over, in words.
    Ended(String),
}

/// Why our re-INVITE did not get an answer we can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReInviteFailure {
    /// 491: the peer sent its own re-INVITE at the same moment (glare).
    Glare,
    /// Anything else (refused, timed out), in words.
    Refused(String),
}

/// Media news of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaInput {
    /// The stream's media runs.
    Started,
    /// It could not start.
    StartFailed(String),
    /// ZRTP keyed the stream.
    Secure {
        sas: String,
        verified: bool,
        cache_mismatch: bool,
        new_key: bool,
        algorithms: String,
    },
    /// The peer does not do ZRTP; media flows in clear (best effort only).
    Cleartext(String),
    /// The stream cannot go on.
    Failed(String),
    /// The peer pressed a key.
    Dtmf(char),
    /// Statistics (the last ones when the stream ended).
    Stats(CallStats),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// A SIP action on a call.
    Sip(CallId, SipAction),
    /// A media action on one stream (by m-line) of a call.
    Media(CallId, usize, MediaAction),
    /// News for the views.
    Event(Event),
    /// A prepared stream the machine will not use (an addition refused or rolled
    /// back): its sockets and ZRTP channel can go.
    Release(CallId, PreparedStream),
}

/// SIP actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SipAction {
    /// Send the INVITE for a call just placed.
    Invite { target: String, sdp: String },
    /// Answer the ringing call (200 OK).
    Answer(String),
    /// Refuse the ringing call.
    Reject(Rejection),
    /// CANCEL or BYE.
    Hangup,
    /// Send a re-INVITE with this offer.
    ReInvite(String),
    /// Answer the peer's re-INVITE.
    AcceptReInvite(String),
    /// Refuse the peer's re-INVITE: the call stays as it was.
    RefuseReInvite(Refusal),
}

/// How a re-INVITE is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 488: it would weaken the call, or asks for what we cannot do.
    NotAcceptable,
    /// 491: ours is under way (glare); the peer retries later.
    Pending,
}

/// Media actions on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaAction {
    /// Start the prepared stream towards the peer.
    Start(StreamStart),
    /// The peer's media address changed (RTP, and where RTCP goes: the same under
    /// rtcp-mux, and for audio).
    SetRemote {
        /// RTP.
        rtp: SocketAddr,
        /// RTCP.
        rtcp: SocketAddr,
    },
    /// Stop sending (either side holds) or send again.
    Hold(bool),
    /// Silence instead of the microphone.
    Mute(bool),
    /// Send pictures (our camera is on and the peer takes them) or not.
    Camera(bool),
    /// Take pictures from the source the driver has ready: the screen, or the camera.
    Source { screen: bool },
    /// Send one key.
    Dtmf(char),
    /// Record the SAS verdict in the ZRTP cache.
    SasVerified(bool),
    /// Stop the stream.
    Stop,
}

/// How a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamStart {
    /// What it carries.
    pub kind: MediaKind,
    /// The port of ours it was prepared on (which prepared stream it is).
    pub local_port: u16,
    /// Where its media goes.
    pub remote: SocketAddr,
    /// Where its RTCP goes (`remote` under rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// We send on it (the peer's direction lets us).
    pub sending: bool,
    /// Its codec.
    pub codec: Negotiated,
    /// Under `Mandatory`, nothing in clear.
    pub policy: EncryptionPolicy,
    /// Our pictures are the screen (the user shares it).
    pub screen: bool,
    /// The peer's signalled Hello hash for this stream.
    pub peer_hash: Option<String>,
}

/// Where a call is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Our INVITE is out.
    Offering,
    /// Their INVITE waits for the user.
    Ringing,
    /// Media starts; the 200 goes out once every accepted stream runs.
    Answering,
    /// Their answer came; our streams start.
    Starting,
    /// Talking (or on hold).
    Active,
}

/// Our re-INVITE, if one is under way or must be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renegotiation {
    Idle,
    /// Sent (the `attempt`th time), offering this hold state and camera, for what the
    /// user asked (the command a failure is reported under).
    Sent {
        hold: bool,
        camera_off: bool,
        attempt: u8,
        what: &'static str,
    },
    /// Refused with 491: sent again at this time.
    RetryAt {
        at: Instant,
        attempt: u8,
        what: &'static str,
    },
}

/// How often a re-INVITE meets the peer's (491) before we give up and say so: a peer
/// that answers 491 to everything must not keep us re-INVITEing.
const GLARE_TRIES: u8 = 3;

struct Call {
    view: CallView,
    phase: Phase,
    policy: EncryptionPolicy,
    session_id: u64,
    version: u64,
    addr: IpAddr,
    streams: Vec<Stream>,
    /// The user holds the call.
    local_hold: bool,
    /// The hold state the peer last agreed to (what the media does).
    agreed_hold: bool,
    /// The peer holds the call.
    remote_hold: bool,
    renegotiation: Renegotiation,
    /// The user turned the camera off: our video m-lines do not send.
    camera_off: bool,
    /// The camera state the peer last agreed to.
    agreed_camera_off: bool,
    /// Why the user ended it, when that is more than "hung up".
    end_reason: Option<String>,
    /// A stream our re-INVITE adds, until the peer answers it.
    adding: Option<Adding>,
    /// A video stream the user added while another re-INVITE was under way: offered
    /// once that one is settled.
    queued_video: Option<PreparedStream>,
    /// Our m-lines changed (a stream ended) since the re-INVITE under way was sent.
    reoffer_needed: bool,
    /// The peer's re-INVITE waits in the driver (for its video's ZRTP channel): ours
    /// wait for it to be answered (RFC 3261 §14.1).
    peer_offer_pending: bool,
    /// A re-INVITE of ours held back for the peer's, for what the user asked.
    deferred: Option<&'static str>,
    /// Our video is the screen.
    sharing: bool,
    /// The camera state when sharing started, restored when it stops.
    camera_off_before_share: Option<bool>,
}

/// A stream our re-INVITE under way adds: at `index`, in place of the refused line
/// `previous` (or appended). Undone if the re-INVITE gets no answer.
struct Adding {
    index: usize,
    previous: Option<Stream>,
    /// The user took it back meanwhile: whatever the peer answers, it does not start.
    cancelled: bool,
}

impl Call {
    /// A call as it starts: not held, nothing renegotiated.
    fn new(
        view: CallView,
        phase: Phase,
        policy: EncryptionPolicy,
        session_id: u64,
        addr: IpAddr,
        streams: Vec<Stream>,
    ) -> Call {
        let mut call = Call {
            view,
            phase,
            policy,
            session_id,
            version: 1,
            addr,
            streams,
            local_hold: false,
            agreed_hold: false,
            remote_hold: false,
            renegotiation: Renegotiation::Idle,
            camera_off: false,
            agreed_camera_off: false,
            end_reason: None,
            adding: None,
            queued_video: None,
            reoffer_needed: false,
            peer_offer_pending: false,
            deferred: None,
            sharing: false,
            camera_off_before_share: None,
        };
        call.view.streams = call.stream_views();
        call
    }

    fn state(&self) -> CallState {
        if self.local_hold || self.remote_hold {
            CallState::OnHold
        } else {
            CallState::Connected
        }
    }

    /// The call is as secure as its weakest running stream.
    fn security(&self) -> CallSecurity {
        self.streams
            .iter()
            .filter(|s| s.state == StreamState::Running)
            .map(|s| s.security.clone())
            .min_by_key(CallSecurity::rank)
            .unwrap_or(CallSecurity::Negotiating)
    }

    /// The views of the streams (and of the camera, which they follow).
    fn stream_views(&mut self) -> Vec<MediaStreamView> {
        self.view.camera_on = !self.camera_off;
        // Sharing ends with the video that carried it (stopped, removed by the peer,
        // failed, refused): nothing of it may linger into a later video.
        if video_stream(self).is_none() && self.adding.is_none() && self.queued_video.is_none() {
            self.sharing = false;
            self.camera_off_before_share = None;
        }
        // The bar shows from the moment sharing is asked for, also while the peer is
        // still to agree.
        let pending =
            self.adding.as_ref().is_some_and(|a| !a.cancelled) || self.queued_video.is_some();
        self.view.sharing_screen = self.sharing && (video_stream(self).is_some() || pending);
        self.stream_views_now()
    }

    fn stream_views_now(&self) -> Vec<MediaStreamView> {
        self.streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let mut view = s.view()?;
                view.sending = match s.kind {
                    Some(MediaKind::Video) => offer::sends_video(self, i),
                    _ => view.sending && !self.local_hold && !self.remote_hold,
                };
                Some(view)
            })
            .collect()
    }
}

/// The machine.
pub(crate) struct CallCore {
    calls: BTreeMap<CallId, Call>,
    ended: VecDeque<CallView>,
    out: VecDeque<Output>,
    next_call: u64,
    /// For the 491 back-off (RFC 3261 §14.1); seeded by the driver.
    rng: u64,
}

fn bad(what: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(what.into())
}

impl CallCore {
    /// A machine whose random choices (the glare back-off) start from `seed`.
    pub(crate) fn new(seed: u64) -> CallCore {
        CallCore {
            calls: BTreeMap::new(),
            ended: VecDeque::new(),
            out: VecDeque::new(),
            next_call: 1,
            rng: seed | 1,
        }
    }

    /// Drops a call whose INVITE could never be sent: for the user it never existed
    /// (the call command fails instead).
    pub(crate) fn forget(&mut self, id: CallId) {
        if let Some(call) = self.calls.remove(&id) {
            for i in running_or_starting(&call) {
                self.out.push_back(Output::Media(id, i, MediaAction::Stop));
            }
        }
    }

    /// Ends a call for a reason of ours (an automatic answer that failed): the driver
    /// has refused it already.
    pub(crate) fn abandon(&mut self, id: CallId, reason: String) {
        self.end(id, reason);
    }

    /// A fresh call id.
    pub(crate) fn allocate(&mut self) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        id
    }

    /// The next thing to do, if any.
    pub(crate) fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`CallCore::handle_timeout`] wants to run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter_map(|c| match c.renegotiation {
                Renegotiation::RetryAt { at, .. } => Some(at),
                _ => None,
            })
            .min()
    }

    /// Runs what is due at `now`: re-INVITEs refused by glare are sent again.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(CallId, u8, &'static str)> = self
            .calls
            .iter()
            .filter_map(|(id, c)| match c.renegotiation {
                Renegotiation::RetryAt { at, attempt, what } if at <= now => {
                    Some((*id, attempt, what))
                }
                _ => None,
            })
            .collect();
        for (id, attempt, what) in due {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            c.renegotiation = Renegotiation::Idle;
            match c.queued_video.take() {
                // The video it added waited outside the m-lines meanwhile.
                Some(video) => {
                    if let Err(e) = self.offer_video(id, video, attempt.saturating_add(1)) {
                        self.event(Event::CommandFailed {
                            command: "video",
                            error: e.to_string(),
                            permanent: false,
                        });
                    }
                }
                None => self.renegotiate(id, attempt.saturating_add(1), what),
            }
        }
    }

    /// Views of the live calls.
    pub(crate) fn views(&self) -> Vec<CallView> {
        self.calls.values().map(|c| c.view.clone()).collect()
    }

    /// The last calls that ended, oldest first.
    pub(crate) fn ended_views(&self) -> Vec<CallView> {
        self.ended.iter().cloned().collect()
    }

    /// Whether the call waits for the user to answer.
    pub(crate) fn is_ringing(&self, id: CallId) -> bool {
        self.calls
            .get(&id)
            .is_some_and(|c| c.phase == Phase::Ringing)
    }

    /// What an incoming call needs prepared to be answered: the kinds of the streams
    /// we accept, in m-line order.
    pub(crate) fn wanted_streams(&self, id: CallId) -> Vec<MediaKind> {
        self.calls
            .get(&id)
            .map(|c| c.streams.iter().filter_map(|s| s.wanted).collect())
            .unwrap_or_default()
    }

    /// Takes one input. An error is the user's (a command that does not fit the call);
    /// nothing the network says is an error here: it is decided and acted upon.
    pub(crate) fn handle(&mut self, now: Instant, input: Input) -> Result<()> {
        match input {
            Input::Place {
                id,
                account,
                peer,
                policy,
                addr,
                session_id,
                streams,
            } => self.place(id, account, peer, policy, addr, session_id, streams),
            Input::Incoming {
                id,
                account,
                from,
                offer,
                policy,
                addr,
                session_id,
                automatic,
            } => {
                self.incoming(
                    id, account, from, &offer, policy, addr, session_id, automatic,
                );
                Ok(())
            }
            Input::Answer { id, streams } => self.answer(id, streams),
            Input::Reject { id, why } => self.reject(id, why),
            Input::Hangup { id } => self.hangup(id),
            Input::Hold { id, on } => self.hold(id, on),
            Input::SasMismatch { id } => self.sas_mismatch(id),
            Input::SetVerified { id, verified } => self.set_verified(id, verified),
            Input::Camera { id, on } => self.camera(id, on),
            Input::AddVideo { id, stream } => self.add_video(id, stream),
            Input::RemoveVideo { id } => self.remove_video(id),
            Input::ShareScreen { id, on } => self.share_screen(id, on),
            Input::Mute { id, on } => {
                let s = self.running_audio(id)?;
                self.out
                    .push_back(Output::Media(id, s, MediaAction::Mute(on)));
                Ok(())
            }
            Input::Dtmf { id, keys } => {
                if keys.is_empty()
                    || keys.len() > 64
                    || keys
                        .chars()
                        .any(|k| hush_media::dtmf::event_code(k).is_none())
                {
                    return Err(bad(format!("{keys:?}: DTMF keys are 0-9 * # A-D")));
                }
                let s = self.running_audio(id)?;
                for k in keys.chars() {
                    self.out
                        .push_back(Output::Media(id, s, MediaAction::Dtmf(k)));
                }
                Ok(())
            }
            Input::Sip(id, sip) => {
                self.sip(now, id, sip);
                Ok(())
            }
            Input::Media(id, stream, media) => {
                self.media(id, stream, media);
                Ok(())
            }
        }
    }

    fn call(&self, id: CallId) -> Result<&Call> {
        self.calls
            .get(&id)
            .ok_or_else(|| bad(format!("no call {}", id.0)))
    }

    fn call_mut(&mut self, id: CallId) -> Result<&mut Call> {
        self.calls
            .get_mut(&id)
            .ok_or_else(|| bad(format!("no call {}", id.0)))
    }

    /// The m-line of the call's running audio stream.
    fn running_audio(&self, id: CallId) -> Result<usize> {
        self.call(id)?
            .streams
            .iter()
            .position(|s| s.kind == Some(MediaKind::Audio) && s.state == StreamState::Running)
            .ok_or_else(|| bad("the call has no media yet"))
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn set_state(&mut self, id: CallId, state: CallState) {
        if let Some(c) = self.calls.get_mut(&id)
            && c.view.state != state
        {
            c.view.state = state.clone();
            self.out
                .push_back(Output::Event(Event::CallState { call: id, state }));
        }
    }

    /// Recomputes the call's security from its streams, telling the views if it moved.
    fn refresh_security(&mut self, id: CallId) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.view.streams = c.stream_views();
        let security = c.security();
        if c.view.security != security {
            c.view.security = security.clone();
            self.out
                .push_back(Output::Event(Event::CallSecurity { call: id, security }));
        }
    }

    /// Sets the security the call shows, whatever its streams say (a failure, or the
    /// user's verdict).
    fn force_security(&mut self, id: CallId, security: CallSecurity) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        for s in c
            .streams
            .iter_mut()
            .filter(|s| s.state == StreamState::Running)
        {
            s.security = security.clone();
        }
        c.view.streams = c.stream_views();
        if c.view.security != security {
            c.view.security = security.clone();
            self.out
                .push_back(Output::Event(Event::CallSecurity { call: id, security }));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        id: CallId,
        account: Option<AccountId>,
        peer: String,
        policy: EncryptionPolicy,
        addr: IpAddr,
        session_id: u64,
        prepared: Vec<PreparedStream>,
    ) -> Result<()> {
        if !prepared.iter().any(|p| p.kind == MediaKind::Audio) {
            return Err(bad("a call needs an audio stream"));
        }
        let sharing = prepared.iter().any(|p| p.screen);
        let streams: Vec<Stream> = prepared.into_iter().map(Stream::ours).collect();
        let view = new_view(id, account, peer.clone(), CallDirection::Outgoing, false);
        let mut call = Call::new(view, Phase::Offering, policy, session_id, addr, streams);
        call.sharing = sharing;
        let sdp = offer::initial_offer(&call);
        self.calls.insert(id, call);
        self.out
            .push_back(Output::Sip(id, SipAction::Invite { target: peer, sdp }));
        self.event(Event::CallState {
            call: id,
            state: CallState::Calling,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn incoming(
        &mut self,
        id: CallId,
        account: Option<AccountId>,
        from: String,
        offer: &[u8],
        policy: EncryptionPolicy,
        addr: IpAddr,
        session_id: u64,
        automatic: bool,
    ) {
        let streams = match sdp::parse_session(offer)
            .map_err(|e| e.to_string())
            .and_then(|o| offer::streams_to_accept(&o))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %e, "refusing a call we cannot serve (488)");
                self.out
                    .push_back(Output::Sip(id, SipAction::Reject(Rejection::NotAcceptable)));
                return;
            }
        };
        let view = new_view(
            id,
            account,
            from.clone(),
            CallDirection::Incoming,
            automatic,
        );
        let call = Call::new(view, Phase::Ringing, policy, session_id, addr, streams);
        self.calls.insert(id, call);
        self.event(Event::CallIncoming { call: id, from });
        self.event(Event::CallState {
            call: id,
            state: CallState::Incoming,
        });
    }

    fn answer(&mut self, id: CallId, prepared: Vec<PreparedStream>) -> Result<()> {
        let call = self.call_mut(id)?;
        if call.phase != Phase::Ringing {
            return Err(bad("that call is not ringing"));
        }
        call.sharing = prepared.iter().any(|p| p.screen);
        let starts = offer::take_prepared(call, prepared)?;
        call.phase = Phase::Answering;
        for (i, start) in starts {
            self.out
                .push_back(Output::Media(id, i, MediaAction::Start(start)));
        }
        Ok(())
    }

    fn reject(&mut self, id: CallId, why: Rejection) -> Result<()> {
        let call = self.call(id)?;
        if call.phase != Phase::Ringing {
            return Err(bad("that call is not ringing"));
        }
        self.out.push_back(Output::Sip(id, SipAction::Reject(why)));
        Ok(())
    }

    fn hangup(&mut self, id: CallId) -> Result<()> {
        let call = self.call(id)?;
        if call.phase == Phase::Ringing {
            self.out
                .push_back(Output::Sip(id, SipAction::Reject(Rejection::Declined)));
            return Ok(());
        }
        self.out.push_back(Output::Sip(id, SipAction::Hangup));
        self.end(id, "hung up".into());
        Ok(())
    }

    fn hold(&mut self, id: CallId, on: bool) -> Result<()> {
        let call = self.call_mut(id)?;
        if call.phase != Phase::Active {
            return Err(bad("the call is not connected"));
        }
        call.local_hold = on;
        match call.renegotiation {
            Renegotiation::Idle => self.renegotiate(id, 1, "hold"),
            // Offered once the one under way is answered (if it differs), or with its
            // retry.
            Renegotiation::Sent { .. } | Renegotiation::RetryAt { .. } => {}
        }
        self.refresh_security(id);
        Ok(())
    }

    /// Turns our camera off or on: the pictures stop at once (and go again once the
    /// peer's answer takes them), and a re-INVITE tells the peer (video recvonly while
    /// off).
    fn camera(&mut self, id: CallId, on: bool) -> Result<()> {
        let call = self.call_mut(id)?;
        if call.phase != Phase::Active {
            return Err(bad("the call is not connected"));
        }
        if call.camera_off != on {
            return Ok(());
        }
        let videos: Vec<usize> = running_streams(call)
            .into_iter()
            .filter(|i| call.streams[*i].kind == Some(MediaKind::Video))
            .collect();
        if videos.is_empty() {
            return Err(bad("this call has no video"));
        }
        call.camera_off = !on;
        // Off at once; on again once the peer's answer takes our pictures.
        if !on {
            for i in videos {
                self.out
                    .push_back(Output::Media(id, i, MediaAction::Camera(false)));
            }
        }
        let call = self.call_mut(id)?;
        if call.renegotiation == Renegotiation::Idle {
            // Otherwise offered once the one under way is answered (or retried).
            self.renegotiate(id, 1, "camera");
        }
        self.refresh_security(id);
        Ok(())
    }

    /// Whether the call's video runs (or starts), and whether it is our screen.
    pub(crate) fn video_state(&self, id: CallId) -> (bool, bool) {
        self.calls.get(&id).map_or((false, false), |c| {
            let video = video_stream(c).is_some();
            let pending =
                c.adding.as_ref().is_some_and(|a| !a.cancelled) || c.queued_video.is_some();
            (video, (video || pending) && c.sharing)
        })
    }

    /// Whether the user may add video to the call now (the driver asks before it
    /// prepares the stream).
    pub(crate) fn can_add_video(&self, id: CallId) -> Result<()> {
        let call = self.call(id)?;
        if call.phase != Phase::Active {
            return Err(bad("the call is not connected"));
        }
        if call.adding.is_some() || call.queued_video.is_some() {
            return Err(bad("video is being added already"));
        }
        if video_stream(call).is_some() {
            return Err(bad("the call has video already"));
        }
        Ok(())
    }

    /// Whether the peer's re-INVITE `body` adds a video stream we would take: the
    /// driver then prepares one and hands it over with [`SipInput::ReInviteWithVideo`].
    pub(crate) fn video_to_accept(&self, id: CallId, body: &[u8]) -> bool {
        let Some(call) = self.calls.get(&id) else {
            return false;
        };
        if call.phase != Phase::Active || call.renegotiation != Renegotiation::Idle {
            return false;
        }
        sdp::parse_session(body)
            .ok()
            .and_then(|o| offer::video_line_to_accept(call, &o))
            .is_some()
    }

    /// Adds our prepared video stream to the call: in a slot refused before (RFC 3264
    /// §8.1), else as a new m-line, offered by re-INVITE with the camera on.
    fn add_video(&mut self, id: CallId, stream: PreparedStream) -> Result<()> {
        self.offer_video(id, stream, 1)
    }

    /// [`CallCore::add_video`], as the `attempt`th try (a glare retry counts on).
    fn offer_video(&mut self, id: CallId, stream: PreparedStream, attempt: u8) -> Result<()> {
        let fits = self.can_add_video(id).and_then(|()| {
            if stream.kind == MediaKind::Video {
                Ok(())
            } else {
                Err(bad("not a video stream"))
            }
        });
        if let Err(e) = fits {
            self.out.push_back(Output::Release(id, stream));
            return Err(e);
        }
        let call = self.call_mut(id)?;
        if call.renegotiation != Renegotiation::Idle || call.peer_offer_pending {
            // An answer must match the m-lines offered: this one comes after.
            call.queued_video = Some(stream);
            return Ok(());
        }
        call.sharing = stream.screen;
        let new = Stream::ours(stream);
        let slot = call
            .streams
            .iter()
            .position(|s| s.state == StreamState::Refused && s.kind == Some(MediaKind::Video));
        let (index, previous) = match slot {
            Some(i) => (i, Some(std::mem::replace(&mut call.streams[i], new))),
            None => {
                call.streams.push(new);
                (call.streams.len() - 1, None)
            }
        };
        call.adding = Some(Adding {
            index,
            previous,
            cancelled: false,
        });
        call.camera_off = false;
        self.renegotiate(id, attempt, "video");
        self.refresh_security(id);
        Ok(())
    }

    /// Shares the screen on the call's video stream, or goes back to the camera: the
    /// source changes at once (with a key frame), and a re-INVITE tells the peer
    /// (`a=content:slides` while sharing). Sharing sends: the camera-off state ends.
    fn share_screen(&mut self, id: CallId, on: bool) -> Result<()> {
        let call = self.call_mut(id)?;
        if call.phase != Phase::Active {
            return Err(bad("the call is not connected"));
        }
        let i = video_stream(call).ok_or_else(|| bad("this call has no video"))?;
        let content = on.then(|| "slides".to_owned());
        if call.streams[i].content == content && call.sharing == on {
            return Ok(());
        }
        call.streams[i].content = content;
        call.sharing = on;
        // Sharing sends; stopping puts the camera back as it was (off stays off).
        if on {
            call.camera_off_before_share = Some(call.camera_off);
            call.camera_off = false;
        } else if let Some(off) = call.camera_off_before_share.take() {
            // Off if it was off before, or the user turned it off while sharing.
            call.camera_off |= off;
        }
        let sends = offer::sends_video(call, i);
        self.out
            .push_back(Output::Media(id, i, MediaAction::Source { screen: on }));
        self.out
            .push_back(Output::Media(id, i, MediaAction::Camera(sends)));
        self.refresh_security(id);
        self.reoffer(id, "share screen");
        Ok(())
    }

    /// Ends the call's video: stopped at once, its m-line offered with port 0.
    fn remove_video(&mut self, id: CallId) -> Result<()> {
        let call = self.call_mut(id)?;
        if call.phase != Phase::Active {
            return Err(bad("the call is not connected"));
        }
        let Some(i) = video_stream(call) else {
            // Not offered yet: it never will be.
            if let Some(p) = call.queued_video.take() {
                call.sharing = false;
                self.out.push_back(Output::Release(id, p));
                self.refresh_security(id);
                return Ok(());
            }
            // Offered, not answered yet: it will not start, whatever the answer.
            if let Some(a) = call.adding.as_mut().filter(|a| !a.cancelled) {
                a.cancelled = true;
                call.sharing = false;
                self.refresh_security(id);
                return Ok(());
            }
            return Err(bad("this call has no video"));
        };
        let kind = call.streams[i].shown_kind().unwrap_or(StreamKind::Video);
        call.streams[i].state = StreamState::Refused;
        self.out.push_back(Output::Media(id, i, MediaAction::Stop));
        self.event(Event::CallStreamEnded {
            call: id,
            kind,
            reason: "you ended it".into(),
        });
        self.refresh_security(id);
        self.reoffer(id, "video");
        Ok(())
    }

    /// Offers the call's m-lines as they are now: at once, or once the re-INVITE under
    /// way is settled.
    fn reoffer(&mut self, id: CallId, what: &'static str) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.phase != Phase::Active {
            return;
        }
        if call.renegotiation == Renegotiation::Idle {
            self.renegotiate(id, 1, what);
        } else {
            call.reoffer_needed = true;
        }
    }

    /// Once our re-INVITE is settled: what the user changed meanwhile is offered (a
    /// video added then, or anything else by one more re-INVITE).
    fn after_renegotiation(&mut self, id: CallId, again: Option<&'static str>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.renegotiation != Renegotiation::Idle {
            return;
        }
        if let Some(video) = call.queued_video.take() {
            // Its offer carries everything else too.
            match self.add_video(id, video) {
                Ok(()) => return,
                Err(e) => self.event(Event::CommandFailed {
                    command: "video",
                    error: e.to_string(),
                    permanent: false,
                }),
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let needed = std::mem::take(&mut call.reoffer_needed);
        match again {
            Some(what) => self.renegotiate(id, 1, what),
            None if needed => self.renegotiate(id, 1, "video"),
            None => {}
        }
    }

    /// Sends a re-INVITE offering the call as the user wants it now.
    fn renegotiate(&mut self, id: CallId, attempt: u8, what: &'static str) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.phase != Phase::Active {
            return;
        }
        if call.peer_offer_pending {
            call.deferred.get_or_insert(what);
            return;
        }
        call.reoffer_needed = false;
        call.version += 1;
        call.renegotiation = Renegotiation::Sent {
            hold: call.local_hold,
            camera_off: call.camera_off,
            attempt,
            what,
        };
        let sdp = offer::reoffer(call);
        self.out
            .push_back(Output::Sip(id, SipAction::ReInvite(sdp)));
    }

    fn sas_mismatch(&mut self, id: CallId) -> Result<()> {
        let (_, security) = self.key_exchange(id)?;
        let call = self.call_mut(id)?;
        if !security.is_encrypted() {
            return Err(bad(
                "the call is not secure yet: there is no SAS to compare",
            ));
        }
        let reason = "SAS mismatch: the codes you compared differ; someone may be listening in";
        call.end_reason = Some(reason.into());
        if let Ok(s) = self.running_audio(id) {
            self.out
                .push_back(Output::Media(id, s, MediaAction::SasVerified(false)));
        }
        self.force_security(id, CallSecurity::Failed(reason.into()));
        self.hangup(id)
    }

    /// The security of the call's key exchange: its audio stream's (further streams
    /// are keyed from it and repeat its SAS).
    fn key_exchange(&self, id: CallId) -> Result<(usize, CallSecurity)> {
        let s = self.running_audio(id)?;
        let security = self.call(id)?.streams[s].security.clone();
        Ok((s, security))
    }

    fn set_verified(&mut self, id: CallId, verified: bool) -> Result<()> {
        let (s, current) = self.key_exchange(id)?;
        let Some(sas) = current.sas().map(str::to_owned) else {
            return Err(bad("the call is not secure yet: there is no SAS to verify"));
        };
        self.out
            .push_back(Output::Media(id, s, MediaAction::SasVerified(verified)));
        // Withdrawing never turns a warning into the ordinary "unverified".
        let security = match current {
            CallSecurity::CacheMismatch { .. } | CallSecurity::NewKey { .. } if !verified => {
                current
            }
            _ => CallSecurity::Secure {
                sas: sas.clone(),
                verified,
            },
        };
        // The verdict is the key exchange's: every stream keyed from it shows it (one
        // still being keyed takes it once keyed).
        let call = self.call_mut(id)?;
        for st in call
            .streams
            .iter_mut()
            .filter(|st| st.state == StreamState::Running && st.security.sas() == Some(&sas))
        {
            st.security = security.clone();
        }
        self.refresh_security(id);
        Ok(())
    }

    fn sip(&mut self, now: Instant, id: CallId, input: SipInput) {
        match input {
            SipInput::Ringing => {
                // A 180 handled after the 200 must not make an answered call ring.
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.view.state == CallState::Calling)
                {
                    self.set_state(id, CallState::Ringing);
                }
            }
            SipInput::Answered(body) => self.answered(id, &body),
            SipInput::Established => {
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.phase == Phase::Active)
                {
                    let state = self.calls.get(&id).map(Call::state);
                    if let Some(state) = state {
                        self.set_state(id, state);
                    }
                }
            }
            SipInput::ReInvite(body) => self.their_reinvite(id, &body, None),
            SipInput::ReInviteWithVideo {
                body,
                video,
                camera,
            } => self.their_reinvite(id, &body, Some((video, camera))),
            SipInput::ReInviteAnswered(answer) => self.our_reinvite_answered(now, id, answer),
            SipInput::Ended(reason) => self.end(id, reason),
        }
    }

    fn answered(&mut self, id: CallId, body: &[u8]) {
        let Some(call) = self.calls.get_mut(&id) else {
            // Answered after we gave up on it: hang up rather than leave it up.
            self.out.push_back(Output::Sip(id, SipAction::Hangup));
            return;
        };
        if call.phase != Phase::Offering {
            return; // a retransmitted 200 after the first
        }
        match offer::read_answer(call, body) {
            Ok(starts) => {
                call.phase = Phase::Starting;
                for (i, start) in starts {
                    self.out
                        .push_back(Output::Media(id, i, MediaAction::Start(start)));
                }
            }
            Err(e) => self.fail(id, e),
        }
    }

    /// The peer's re-INVITE: accepted only if it lowers no stream's security; an empty
    /// one gets our offer; one that crosses ours gets 491. A video stream it adds is
    /// taken if the driver prepared one (`video`), else refused with port 0.
    fn their_reinvite(&mut self, id: CallId, body: &[u8], video: Option<(PreparedStream, bool)>) {
        let unused = self.take_their_reinvite(id, body, video);
        if let Some(p) = unused {
            self.out.push_back(Output::Release(id, p));
        }
        // What the user asked for while it waited goes now.
        let deferred = self.calls.get_mut(&id).and_then(|c| {
            c.peer_offer_pending = false;
            c.deferred.take()
        });
        if deferred.is_some()
            || self
                .calls
                .get(&id)
                .is_some_and(|c| c.queued_video.is_some())
        {
            self.after_renegotiation(id, deferred);
        }
    }

    /// The peer's re-INVITE waits in the driver for its video stream: ours wait too.
    pub(crate) fn peer_offer_pending(&mut self, id: CallId) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.peer_offer_pending = true;
        }
    }

    /// [`CallCore::their_reinvite`]; returns the prepared video if it was not taken.
    fn take_their_reinvite(
        &mut self,
        id: CallId,
        body: &[u8],
        video: Option<(PreparedStream, bool)>,
    ) -> Option<PreparedStream> {
        let refuse = |this: &mut CallCore, r: Refusal| {
            this.out
                .push_back(Output::Sip(id, SipAction::RefuseReInvite(r)));
        };
        let Some(call) = self.calls.get_mut(&id) else {
            refuse(self, Refusal::NotAcceptable);
            return video.map(|v| v.0);
        };
        if call.phase != Phase::Active {
            refuse(self, Refusal::NotAcceptable);
            return video.map(|v| v.0);
        }
        if matches!(call.renegotiation, Renegotiation::Sent { .. }) {
            tracing::info!(call = id.0, "both sides re-INVITE at once: 491");
            refuse(self, Refusal::Pending);
            return video.map(|v| v.0);
        }
        if body.is_empty() {
            call.version += 1;
            let sdp = offer::reoffer(call);
            self.out
                .push_back(Output::Sip(id, SipAction::AcceptReInvite(sdp)));
            return video.map(|v| v.0);
        }
        let (offered, update) = match sdp::parse_session(body)
            .map_err(|e| e.to_string())
            .and_then(|o| offer::check_update(call, &o).map(|u| (o, u)))
        {
            Ok(u) => u,
            Err(why) => {
                tracing::info!(call = id.0, reason = %why, "refusing a re-INVITE (488)");
                refuse(self, Refusal::NotAcceptable);
                return video.map(|v| v.0);
            }
        };
        let video_at = offer::video_line_to_accept(call, &offered);
        call.version += 1;
        let ended = stream_kinds(call, update.removed());
        let mut actions = offer::apply_update(call, &update);
        let mut unused = None;
        if let Some((prepared, camera)) = video {
            match (video_at, video_at.and_then(|at| offered.streams.get(at))) {
                (Some(at), Some(their)) => {
                    // Video the peer adds never carries our screen.
                    call.sharing = false;
                    call.camera_off_before_share = None;
                    // The peer may show us pictures; ours go only when the user turns
                    // the camera on (whatever the user did before: stopped video, or
                    // answered without). Only an unattended answerer set up with a
                    // camera sends at once.
                    if !(camera && call.view.automatic) {
                        call.camera_off = true;
                        call.agreed_camera_off = true;
                    }
                    match offer::accept_video(call, at, their, prepared) {
                        Ok(start) => {
                            tracing::info!(call = id.0, "the peer adds video");
                            actions.push((at, MediaAction::Start(start)));
                        }
                        Err(p) => unused = p,
                    }
                }
                _ => unused = Some(prepared),
            }
        }
        let sdp = offer::answer(call);
        for (i, a) in actions {
            self.out.push_back(Output::Media(id, i, a));
        }
        self.out
            .push_back(Output::Sip(id, SipAction::AcceptReInvite(sdp)));
        for kind in ended {
            self.event(Event::CallStreamEnded {
                call: id,
                kind,
                reason: "the other side ended it".into(),
            });
        }
        let state = self.calls.get(&id).map(Call::state);
        if let Some(state) = state {
            self.set_state(id, state);
        }
        self.refresh_security(id);
        unused
    }

    fn our_reinvite_answered(
        &mut self,
        now: Instant,
        id: CallId,
        answer: std::result::Result<Vec<u8>, ReInviteFailure>,
    ) {
        let backoff = self.backoff();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Renegotiation::Sent {
            hold,
            camera_off,
            attempt,
            what,
        } = call.renegotiation
        else {
            return; // not ours, or already settled
        };
        call.renegotiation = Renegotiation::Idle;
        let body = match answer {
            Ok(body) => body,
            Err(ReInviteFailure::Glare) if attempt < GLARE_TRIES => {
                // RFC 3261 §14.1: the dialog's caller waits 2.1-4 s, the callee 0-2 s.
                let wait = match call.view.direction {
                    CallDirection::Outgoing => Duration::from_millis(2100 + backoff % 1900),
                    CallDirection::Incoming => Duration::from_millis(backoff % 2000),
                };
                call.renegotiation = Renegotiation::RetryAt {
                    at: now + wait,
                    attempt,
                    what,
                };
                // The peer's re-INVITE comes meanwhile: our m-lines are those it
                // agreed to; the added stream waits for the retry.
                let cancelled = call.adding.as_ref().is_some_and(|a| a.cancelled);
                if cancelled {
                    self.undo_adding(id);
                } else if let Some(video) = self.take_back_adding(id)
                    && let Some(c) = self.calls.get_mut(&id)
                {
                    c.queued_video = Some(video);
                }
                return;
            }
            Err(e) => {
                let why = match e {
                    ReInviteFailure::Glare => format!(
                        "the peer renegotiated at the same moment {GLARE_TRIES} times (491)"
                    ),
                    ReInviteFailure::Refused(why) => why,
                };
                return self.renegotiation_failed(id, what, why);
            }
        };
        call.agreed_hold = hold;
        call.agreed_camera_off = camera_off;
        match sdp::parse_session(&body)
            .map_err(|e| e.to_string())
            .and_then(|a| offer::check_answer(call, &a).map(|u| (a, u)))
        {
            Ok((answer, update)) => {
                let ended = stream_kinds(call, update.removed());
                let actions = offer::apply_update(call, &update);
                for (i, a) in actions {
                    self.out.push_back(Output::Media(id, i, a));
                }
                for kind in ended {
                    self.event(Event::CallStreamEnded {
                        call: id,
                        kind,
                        reason: "the other side ended it".into(),
                    });
                }
                self.added_answered(id, &answer);
            }
            Err(why) => {
                // The media keeps its keys and address; only our own hold applies.
                tracing::warn!(call = id.0, reason = %why, "ignoring a re-INVITE answer");
                self.undo_adding(id);
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                let held = call.local_hold || call.remote_hold;
                let running: Vec<usize> = running_streams(call);
                for i in running {
                    self.out
                        .push_back(Output::Media(id, i, MediaAction::Hold(held)));
                }
                self.out.push_back(Output::Event(Event::CommandFailed {
                    command: what,
                    error: format!("the answer was ignored: {why}"),
                    permanent: false,
                }));
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // The user changed hold or camera while it was under way: offered now.
        let again = (call.local_hold, call.camera_off) != (hold, camera_off);
        let again_what = if call.local_hold != hold {
            "hold"
        } else {
            "camera"
        };
        let state = call.state();
        self.set_state(id, state);
        self.refresh_security(id);
        self.after_renegotiation(id, again.then_some(again_what));
    }

    /// The answer to our re-INVITE that adds a stream: the stream starts, or, refused,
    /// is released and the user told.
    fn added_answered(&mut self, id: CallId, answer: &sdp::SessionDescription) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(adding) = call.adding.take() else {
            return;
        };
        let i = adding.index;
        let policy = call.policy;
        let read = match (call.streams.get_mut(i), answer.streams.get(i)) {
            (Some(s), Some(a)) => offer::take_answer_line(s, a, policy),
            _ => Ok(None),
        };
        let why = match read {
            Ok(Some(_)) if adding.cancelled => {
                // Agreed by the peer, but taken back by the user: never started, and
                // its line goes to port 0 by the next re-INVITE.
                let released = call.streams.get_mut(i).and_then(|s| {
                    s.state = StreamState::Refused;
                    s.local.take()
                });
                if let Some(p) = released {
                    self.out.push_back(Output::Release(id, p));
                }
                call.reoffer_needed = true;
                return;
            }
            Ok(Some(mut start)) => {
                start.sending = offer::sends_video(call, i);
                self.out
                    .push_back(Output::Media(id, i, MediaAction::Start(start)));
                return;
            }
            Ok(None) if adding.cancelled => {
                if let Some(p) = call.streams.get_mut(i).and_then(|s| s.local.take()) {
                    self.out.push_back(Output::Release(id, p));
                }
                return;
            }
            Ok(None) => "the other side declined video".to_owned(),
            Err(why) => why,
        };
        let released = call.streams.get_mut(i).and_then(|s| {
            s.state = StreamState::Refused;
            s.local.take()
        });
        if let Some(p) = released {
            self.out.push_back(Output::Release(id, p));
        }
        tracing::info!(call = id.0, reason = %why, "video not added");
        self.event(Event::CommandFailed {
            command: "video",
            error: why,
            permanent: false,
        });
    }

    /// Our re-INVITE adding a stream got no usable answer: the call's m-lines are as
    /// the peer last agreed, and the prepared stream is released.
    fn undo_adding(&mut self, id: CallId) {
        if let Some(p) = self.take_back_adding(id) {
            self.out.push_back(Output::Release(id, p));
        }
    }

    /// Takes the stream our re-INVITE adds back out of the m-lines (which are again
    /// those the peer agreed to); returns it.
    fn take_back_adding(&mut self, id: CallId) -> Option<PreparedStream> {
        let call = self.calls.get_mut(&id)?;
        let Adding {
            index, previous, ..
        } = call.adding.take()?;
        let taken = match previous {
            Some(prev) if index < call.streams.len() => {
                Some(std::mem::replace(&mut call.streams[index], prev))
            }
            None if index + 1 == call.streams.len() => call.streams.pop(),
            _ => None,
        };
        taken.and_then(|s| s.local)
    }

    /// Our re-INVITE got nowhere: the call stays as the peer last agreed, the media
    /// follows that, and the user is told (under `what` they asked for).
    fn renegotiation_failed(&mut self, id: CallId, what: &'static str, why: String) {
        self.undo_adding(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.renegotiation = Renegotiation::Idle;
        call.local_hold = call.agreed_hold;
        // A camera the peer never agreed to turn on stays off (one turned off stays off).
        call.camera_off |= call.agreed_camera_off;
        // A share the peer never agreed to is undone: back to the camera as it was
        // (a stop the peer refused stays stopped).
        if what == "share screen"
            && call.sharing
            && let Some(i) = video_stream(call)
        {
            call.streams[i].content = None;
            call.sharing = false;
            if let Some(off) = call.camera_off_before_share.take() {
                call.camera_off |= off;
            }
            self.out
                .push_back(Output::Media(id, i, MediaAction::Source { screen: false }));
        }
        let held = call.local_hold || call.remote_hold;
        let state = call.state();
        for i in running_streams(call) {
            self.out
                .push_back(Output::Media(id, i, MediaAction::Hold(held)));
            if call.streams[i].kind == Some(MediaKind::Video) {
                let sends = offer::sends_video(call, i);
                self.out
                    .push_back(Output::Media(id, i, MediaAction::Camera(sends)));
            }
        }
        self.set_state(id, state);
        self.event(Event::CommandFailed {
            command: what,
            error: why,
            permanent: false,
        });
        self.refresh_security(id);
        self.after_renegotiation(id, None);
    }

    /// The driver could not send the re-INVITE at all (the line is gone).
    pub(crate) fn reinvite_unsent(&mut self, id: CallId, why: String) {
        let what = match self.calls.get(&id).map(|c| c.renegotiation) {
            Some(Renegotiation::Sent { what, .. }) => what,
            _ => "hold",
        };
        self.renegotiation_failed(id, what, why);
    }

    /// Once no stream is still starting: the answer goes out (or the placed call is
    /// connected).
    fn go_on_once_started(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .streams
            .iter()
            .any(|s| s.state == StreamState::Starting)
        {
            return;
        }
        match call.phase {
            Phase::Answering => {
                call.phase = Phase::Active;
                let sdp = offer::answer(call);
                self.out.push_back(Output::Sip(id, SipAction::Answer(sdp)));
                self.set_state(id, CallState::Connected);
            }
            Phase::Starting => {
                call.phase = Phase::Active;
                self.set_state(id, CallState::Connected);
            }
            _ => {}
        }
        self.refresh_security(id);
    }

    fn media(&mut self, id: CallId, index: usize, input: MediaInput) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(stream) = call.streams.get_mut(index) else {
            return;
        };
        match input {
            MediaInput::Started => {
                if stream.state != StreamState::Starting {
                    return;
                }
                stream.state = StreamState::Running;
                self.go_on_once_started(id);
            }
            MediaInput::StartFailed(why) if stream.kind == Some(MediaKind::Video) => {
                // No camera or recording after all: the call goes on with audio.
                self.media(id, index, MediaInput::Failed(why));
                self.go_on_once_started(id);
            }
            MediaInput::StartFailed(why) => {
                let phase = call.phase.clone();
                stream.state = StreamState::Prepared;
                match phase {
                    Phase::Answering => {
                        // Not answered after all: the call rings on, the user is told.
                        call.phase = Phase::Ringing;
                        let running = running_or_starting(call);
                        for s in &mut call.streams {
                            if s.state != StreamState::Refused {
                                s.state = StreamState::Prepared;
                            }
                        }
                        for i in running {
                            self.out.push_back(Output::Media(id, i, MediaAction::Stop));
                        }
                        // The driver returns `why` as the answer command's error.
                        tracing::info!(call = id.0, reason = %why, "could not answer");
                    }
                    _ => self.fail(id, why),
                }
            }
            MediaInput::Secure {
                sas,
                verified,
                cache_mismatch,
                new_key,
                algorithms,
            } => {
                let own = if cache_mismatch {
                    CallSecurity::CacheMismatch { sas }
                } else if new_key {
                    tracing::info!(call = id.0, "a verified peer presents a new ZRTP key");
                    CallSecurity::NewKey { sas }
                } else {
                    CallSecurity::Secure { sas, verified }
                };
                // A further stream is keyed from the audio's exchange: it shows that
                // exchange's verdict, which the user may have given meanwhile.
                let exchange = (stream.kind != Some(MediaKind::Audio))
                    .then(|| {
                        call.streams
                            .iter()
                            .find(|s| s.kind == Some(MediaKind::Audio))
                            .map(|s| s.security.clone())
                    })
                    .flatten()
                    .filter(|a| a.sas().is_some() && a.sas() == own.sas());
                let Some(stream) = call.streams.get_mut(index) else {
                    return;
                };
                stream.security = exchange.unwrap_or(own);
                // The call's algorithms are those of its key exchange (the audio's);
                // further streams are keyed from it ("Mult").
                if stream.kind == Some(MediaKind::Audio) {
                    call.view.algorithms = Some(algorithms.clone());
                    self.event(Event::CallAlgorithms {
                        call: id,
                        algorithms,
                    });
                }
                self.refresh_security(id);
            }
            MediaInput::Cleartext(why) => {
                if call.policy == EncryptionPolicy::Mandatory {
                    // The media should never have said so; the policy is ours to keep.
                    return self.fail(id, format!("encryption is mandatory: {why}"));
                }
                tracing::info!(call = id.0, reason = %why, "call is not encrypted");
                stream.security = CallSecurity::Cleartext;
                self.refresh_security(id);
            }
            // A video stream that cannot be keyed (a peer refusing multistream) or
            // fails ends alone: the call goes on with audio, and the user is told why.
            // The audio failing ends the call.
            MediaInput::Failed(why) if stream.kind == Some(MediaKind::Video) => {
                tracing::info!(call = id.0, reason = %why, "the video stream ended");
                let running = matches!(stream.state, StreamState::Running | StreamState::Starting);
                stream.state = StreamState::Refused;
                stream.security = CallSecurity::Failed(why.clone());
                if running {
                    self.out
                        .push_back(Output::Media(id, index, MediaAction::Stop));
                }
                self.event(Event::CallStreamEnded {
                    call: id,
                    kind: StreamKind::Video,
                    reason: why,
                });
                self.refresh_security(id);
                // The peer learns it by re-INVITE (port 0), so it stops sending.
                if running {
                    self.reoffer(id, "video");
                }
            }
            MediaInput::Failed(why) => self.fail(id, why),
            MediaInput::Dtmf(key) => self.event(Event::CallDtmf { call: id, key }),
            MediaInput::Stats(stats) => {
                stream.stats = Some(stats);
                if stream.kind == Some(MediaKind::Audio) {
                    call.view.stats = Some(stats);
                }
                let kind = stream.shown_kind().unwrap_or(StreamKind::Audio);
                call.view.streams = call.stream_views();
                self.event(Event::CallStats {
                    call: id,
                    kind,
                    stats,
                });
            }
        }
    }

    /// Ends a call that cannot go on, with the reason: BYE (or CANCEL) and gone.
    fn fail(&mut self, id: CallId, reason: String) {
        tracing::info!(call = id.0, %reason, "ending call");
        if !self.calls.contains_key(&id) {
            return;
        }
        self.force_security(id, CallSecurity::Failed(reason.clone()));
        self.out.push_back(Output::Sip(id, SipAction::Hangup));
        self.end(id, reason);
    }

    fn end(&mut self, id: CallId, reason: String) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let reason = call.end_reason.take().unwrap_or(reason);
        let state = CallState::Ended(reason);
        call.view.state = state.clone();
        self.event(Event::CallState { call: id, state });
        if matches!(call.view.security, CallSecurity::Negotiating) {
            call.view.security = CallSecurity::Failed("the call ended before it was secure".into());
        }
        for i in running_or_starting(&call) {
            self.out.push_back(Output::Media(id, i, MediaAction::Stop));
        }
        for s in &mut call.streams {
            s.state = StreamState::Refused;
        }
        if !call.view.automatic {
            self.ended.push_back(call.view);
            while self.ended.len() > ENDED_KEPT {
                self.ended.pop_front();
            }
        }
    }

    /// A new random number (xorshift: the back-off needs spread, not secrecy).
    fn backoff(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// How the views name the streams at these m-lines.
fn stream_kinds(call: &Call, lines: &[usize]) -> Vec<StreamKind> {
    lines
        .iter()
        .filter_map(|i| call.streams.get(*i).and_then(Stream::shown_kind))
        .collect()
}

/// The m-line of the call's video stream, if one runs (or starts).
fn video_stream(call: &Call) -> Option<usize> {
    call.streams.iter().position(|s| {
        s.kind == Some(MediaKind::Video)
            && matches!(s.state, StreamState::Running | StreamState::Starting)
    })
}

fn running_streams(call: &Call) -> Vec<usize> {
    call.streams
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state == StreamState::Running)
        .map(|(i, _)| i)
        .collect()
}

fn running_or_starting(call: &Call) -> Vec<usize> {
    call.streams
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.state, StreamState::Running | StreamState::Starting))
        .map(|(i, _)| i)
        .collect()
}

fn new_view(
    id: CallId,
    account: Option<AccountId>,
    peer: String,
    direction: CallDirection,
    automatic: bool,
) -> CallView {
    CallView {
        id,
        account,
        peer,
        direction,
        state: match direction {
            CallDirection::Outgoing => CallState::Calling,
            CallDirection::Incoming => CallState::Incoming,
        },
        security: CallSecurity::Negotiating,
        algorithms: None,
        codec: None,
        stats: None,
        automatic,
        streams: Vec::new(),
        camera_on: true,
        sharing_screen: false,
    }
}

/// The stream kind the views show.
fn view_kind(kind: MediaKind, content: Option<&str>) -> StreamKind {
    match (kind, content) {
        (MediaKind::Audio, _) => StreamKind::Audio,
        (MediaKind::Video, Some("slides")) => StreamKind::Screen,
        (MediaKind::Video, _) => StreamKind::Video,
    }
}

/// Our direction for a stream, given the peer's and our hold.
fn our_direction(theirs: Direction, local_hold: bool) -> Direction {
    match (theirs, local_hold) {
        (Direction::SendRecv, false) => Direction::SendRecv,
        (Direction::SendRecv, true) => Direction::SendOnly,
        (Direction::SendOnly, false) => Direction::RecvOnly,
        (Direction::SendOnly, true) | (Direction::Inactive, _) => Direction::Inactive,
        (Direction::RecvOnly, _) => Direction::SendOnly,
    }
}
