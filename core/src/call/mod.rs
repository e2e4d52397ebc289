//! Calls: the driver around the call machine ([`machine::CallCore`]). The machine
//! decides everything about a call — offer and answer, the encryption policy, hold,
//! glare, no downgrade on re-INVITE, SAS verdicts — and this layer carries out what it
//! says: it owns the lines (one SIP stack each), binds media ports and makes ZRTP
//! sessions before an offer or answer, starts and commands the media threads, and
//! sends what the machine asks through the SIP stack. Nothing here waits on the
//! network: INVITEs, BYEs and CANCELs go out from the stack's own tasks, and the
//! answers to re-INVITEs (ours and theirs) are waited for in tasks that report back
//! as inputs.

mod line;
mod machine;
mod video;

pub use video::CallPictures;
pub(crate) use video::Pictures;
mod zid;

use crate::command::{MediaChoice, Reply, ScreenSpec, VideoChoice, VideoSourceSpec};
use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::model::{AccountConfig, AccountId, AccountSettings, EncryptionPolicy};
use crate::secret::Secret;
use crate::snapshot::{AccountStatus, CallId, CallStats, CallView};
use hush_media::codec::CodecKind;
use hush_media::driver::{
    MediaCall, MediaCommand, MediaReport, PreparedMedia, PreparedVideo, SourceSwitch, VideoSetup,
};
use hush_media::stream::{Policy, StreamConfig, StreamEvent, StreamStats};
use hush_media::zrtp::{Zid, ZidCache, ZidStore, ZrtpConfig, ZrtpSession};
use hush_signaling::sdp::{Codec, MediaKind};
use hush_signaling::sip::{
    CallKey, ReInvite, RegistrationState, Rejection, SipEvent, SipStack, StackOptions, Transport,
    parse_target,
};
pub use line::Resolver;
pub(crate) use line::system_resolver;
use line::{Line, LineId, identity, local_ip_towards};
use machine::{
    CallCore, Input, MediaAction, MediaInput, Output, PreparedStream, ReInviteFailure, Refusal,
    SipAction, SipInput, StreamStart,
};
use rsipstack::dialog::authenticate::Credential;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
pub(crate) use zid::ZidState;

/// Inputs waiting for the core task. Lines and registrations wait for room (the SIP
/// stack behind them then sheds what it may); media threads never wait: their
/// statistics and DTMF are dropped when it is full, their state changes wait in a task.
pub(crate) const CALL_INPUTS: usize = 256;

/// An address on the default route (TEST-NET-1, never sent to): connecting a UDP
/// socket to it tells which local address the default route uses, without a packet
/// or a name lookup.
const DEFAULT_ROUTE_PROBE: &str = "192.0.2.1:9";

/// How long stopping the phone waits for the answers to its last BYEs and CANCELs.
const HANGUPS_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Inputs to the core task from lines, media threads and the tasks that wait for
/// re-INVITE answers.
pub(crate) enum CallInput {
    Sip(LineId, SipEvent),
    /// A report of the media of one stream (by m-line).
    Media(CallId, usize, MediaReport),
    Registration(AccountId, RegistrationState),
    /// An account's server was looked up and its stack bound (or why not), for the
    /// connection attempt numbered.
    Routed(AccountId, u64, std::result::Result<Box<Routed>, String>),
    /// How our re-INVITE ended.
    ReInviteAnswered(
        CallId,
        std::result::Result<Vec<u8>, hush_signaling::SignalingError>,
    ),
    /// A call's media thread made (or could not make) the ZRTP channel for a video
    /// stream added mid-call: its SSRC, and its Hello hash.
    VideoChannel(CallId, u32, std::result::Result<Option<String>, String>),
}

/// How many times a peer may add video to one call: each costs sockets, a ZRTP channel
/// and a key exchange, and a peer looping add and remove must not make us pay forever.
const PEER_VIDEO_ADDS: u32 = 8;

/// How long a media thread may take to make a ZRTP channel (it answers within a frame).
const CHANNEL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A video stream being prepared mid-call while the media thread makes its ZRTP
/// channel: for the user's addition, or for the peer's re-INVITE (`offer`).
struct PendingChannel {
    ssrc: u32,
    ports: PreparedVideo,
    offer: Option<Vec<u8>>,
}

/// A stack bound, with the events it will report.
type Started = (SipStack, mpsc::Receiver<SipEvent>);

/// What a connection job hands back: the line to install and where it registers.
pub(crate) struct Routed {
    spec: LineSpec,
    started: Started,
    registrar: rsipstack::sip::Uri,
    proxy: Option<rsipstack::sip::Uri>,
}

/// Starts a line's SIP stack (binds its sockets).
async fn start_stack(
    spec: &LineSpec,
) -> std::result::Result<Started, hush_signaling::SignalingError> {
    SipStack::start(StackOptions {
        bind: spec.bind,
        transport: spec.transport,
        user: spec.user.clone(),
        tls_roots: spec.tls_roots.clone(),
        ring_timeout: hush_signaling::sip::RING_TIMEOUT,
    })
    .await
}

/// One stream of ours prepared before an offer or answer: its sockets, and for audio
/// the call's ZRTP session (video is a channel of it). (The mutex only makes the engine
/// `Sync`, so the core task may hold the layer across awaits.)
struct Prepared {
    kind: MediaKind,
    ssrc: u32,
    /// Our RTP port (which prepared stream a start is for).
    port: u16,
    ports: Ports,
}

enum Ports {
    Audio {
        media: PreparedMedia,
        zrtp: Box<std::sync::Mutex<ZrtpSession>>,
    },
    Video(PreparedVideo),
}

/// What the driver holds for one call: the machine holds the rest.
struct CallIo {
    line: LineId,
    /// The SIP dialog, once the INVITE went out (or came in).
    key: Option<CallKey>,
    peer_identity: String,
    audio: MediaChoice,
    /// Streams ready to start.
    prepared: Vec<Prepared>,
    /// Running media, by m-line (video runs in the audio stream's thread).
    media: BTreeMap<usize, MediaCall>,
    /// The m-lines of the audio stream whose thread runs the video, and of the video.
    audio_stream: Option<usize>,
    video_stream: Option<usize>,
    /// A video stream negotiated before its audio stream started: started with it.
    /// (In a mutex only to be `Sync`: a video source need not be.)
    pending_video: Option<std::sync::Mutex<Box<VideoSetup>>>,
    /// The peer's re-INVITE, until the machine answers it.
    reinvite: Option<ReInvite>,
    /// A video stream waiting for its ZRTP channel.
    channel: Option<PendingChannel>,
    /// Video streams started so far (each records to a file of its own).
    videos_started: u32,
    /// Video streams the peer added by re-INVITE (at most [`PEER_VIDEO_ADDS`]).
    peer_video_adds: u32,
    /// The screen, while it is shared (or being added to share). `audio.video` is only
    /// ever the camera.
    screen: Option<ScreenSpec>,
    /// Where the peer's pictures are recorded.
    record: Option<std::path::PathBuf>,
    /// The call had video running when sharing started (stopping goes back to the
    /// camera; otherwise the video ends).
    video_before_share: bool,
    /// The user asked to share the screen in a call without video: the video stream
    /// being added is the screen. Only `share_screen` sets it.
    share_pending: bool,
    /// A source opened for [`MediaAction::Source`], ready to hand to the media thread.
    next_source: Option<std::sync::Mutex<Box<dyn hush_media::video::VideoSource>>>,
    /// The camera the user last started video with (Start video in the window).
    camera: Option<VideoSourceSpec>,
}

/// What a new line needs.
struct LineSpec {
    bind: SocketAddr,
    user: String,
    /// Domain of the address of record (`None`: our own address).
    aor_host: Option<String>,
    account: Option<AccountId>,
    credential: Option<Credential>,
    policy: EncryptionPolicy,
    media_ip: IpAddr,
    auto_answer: Option<MediaChoice>,
    transport: Transport,
    tls_roots: Option<Vec<u8>>,
}

impl LineSpec {
    fn direct(
        bind: SocketAddr,
        user: &str,
        policy: EncryptionPolicy,
        media_ip: IpAddr,
        auto_answer: Option<MediaChoice>,
    ) -> LineSpec {
        LineSpec {
            bind,
            user: user.to_owned(),
            aor_host: None,
            account: None,
            credential: None,
            policy,
            media_ip,
            auto_answer,
            transport: Transport::Udp,
            tls_roots: None,
        }
    }
}

impl CallIo {
    /// Takes the user's media choice: a screen to share is kept apart from the camera.
    fn choose(&mut self, mut audio: MediaChoice) {
        self.record = audio.video.as_ref().and_then(|v| v.record.clone());
        if let Some(VideoSourceSpec::Screen(s)) = audio.video.as_ref().map(|v| &v.source) {
            self.screen = Some(s.clone());
            audio.video = None;
        }
        self.audio = audio;
    }

    fn new(line: LineId, key: Option<CallKey>, peer_identity: String) -> CallIo {
        CallIo {
            line,
            key,
            peer_identity,
            audio: MediaChoice::default(),
            prepared: Vec::new(),
            media: BTreeMap::new(),
            audio_stream: None,
            video_stream: None,
            pending_video: None,
            reinvite: None,
            channel: None,
            videos_started: 0,
            peer_video_adds: 0,
            screen: None,
            record: None,
            video_before_share: false,
            share_pending: false,
            next_source: None,
            camera: None,
        }
    }

    /// What the call's camera is: the one video was last started with, else the one
    /// the call was placed or answered with, else the test pattern.
    fn camera(&self) -> VideoSourceSpec {
        self.camera
            .clone()
            .or_else(|| self.audio.video.as_ref().map(|v| v.source.clone()))
            .unwrap_or(VideoSourceSpec::Pattern)
    }
}

/// All lines and calls of the phone.
pub(crate) struct CallLayer {
    input: mpsc::Sender<CallInput>,
    lines: BTreeMap<LineId, Line>,
    core: CallCore,
    io: BTreeMap<CallId, CallIo>,
    next_line: LineId,
    zid: ZidState,
    /// Why the last media start failed (the answer command's error).
    start_failed: Option<String>,
    /// Why the last INVITE could not be sent (the call command's error).
    invite_failed: Option<String>,
    /// Accounts whose server is being looked up, with the attempt that counts.
    connecting: BTreeMap<AccountId, u64>,
    next_attempt: u64,
    /// How server names are looked up.
    resolver: line::Resolver,
    /// The newest pictures of each video call, for the window.
    pictures: Pictures,
    /// The barrier of the last SAS verdict sent to a media thread (in a mutex: the
    /// layer must be `Sync`).
    verdict_written: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

fn policy_of(p: EncryptionPolicy) -> Policy {
    match p {
        EncryptionPolicy::Mandatory => Policy::Mandatory,
        EncryptionPolicy::BestEffort => Policy::BestEffort,
    }
}

fn codec_of(c: Codec) -> Result<CodecKind> {
    match c {
        Codec::Opus => Ok(CodecKind::Opus),
        Codec::Pcmu => Ok(CodecKind::Pcmu),
        Codec::Pcma => Ok(CodecKind::Pcma),
        Codec::Vp8 => Err(CoreError::Call("VP8 is a video codec".into())),
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    crate::profile::fill_random(&mut b);
    u64::from_le_bytes(b)
}

fn bad(what: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(what.into())
}

/// State changes of one call waiting for room in the input queue; a call has a handful
/// (secure, cleartext, failed, ended), so more than this means something is wrong.
const MEDIA_BACKLOG: usize = 16;

/// Reports of one call that wait for room, oldest first, and whether a task is
/// delivering them (while it is, later reports queue behind them).
#[derive(Default)]
struct Backlog {
    waiting: bool,
    reports: std::collections::VecDeque<MediaReport>,
}

/// What a media thread calls with its reports: hands them to the core task without
/// ever blocking the thread, in the order they were made. When the queue is full,
/// statistics and DTMF (which a peer can send at will) are dropped; a state change
/// (secure, failed, ended) waits for room, delivered by a task in order, so it is never
/// lost and never overtaken.
fn media_reporter(
    input: mpsc::Sender<CallInput>,
    id: CallId,
    stream: usize,
) -> impl Fn(MediaReport) + Send + 'static {
    let runtime = tokio::runtime::Handle::try_current().ok();
    let backlog = std::sync::Arc::new(std::sync::Mutex::new(Backlog::default()));
    move |report| {
        let droppable = matches!(
            report,
            MediaReport::Stats(_)
                | MediaReport::VideoStats(_)
                | MediaReport::Event(StreamEvent::Dtmf(_))
        );
        let Ok(mut waiting) = backlog.lock() else {
            return;
        };
        let report = if waiting.waiting {
            report
        } else {
            match input.try_send(CallInput::Media(id, stream, report)) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(CallInput::Media(_, _, report))) => report,
                Err(TrySendError::Full(_)) => return,
            }
        };
        if droppable {
            tracing::debug!(call = id.0, "call layer behind: media report dropped");
            return;
        }
        if waiting.reports.len() >= MEDIA_BACKLOG {
            tracing::warn!(call = id.0, "media report lost: too many waiting");
            return;
        }
        waiting.reports.push_back(report);
        if waiting.waiting {
            return;
        }
        let Some(rt) = &runtime else {
            waiting.reports.clear();
            tracing::warn!(call = id.0, "media report lost: no runtime to wait in");
            return;
        };
        waiting.waiting = true;
        let (input, backlog) = (input.clone(), backlog.clone());
        rt.spawn(async move {
            loop {
                let next = match backlog.lock() {
                    Ok(mut b) => match b.reports.pop_front() {
                        Some(r) => r,
                        None => {
                            b.waiting = false;
                            return;
                        }
                    },
                    Err(_) => return,
                };
                if input
                    .send(CallInput::Media(id, stream, next))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

impl CallLayer {
    pub(crate) fn new(
        input: mpsc::Sender<CallInput>,
        zid: ZidState,
        resolver: line::Resolver,
        pictures: Pictures,
    ) -> CallLayer {
        CallLayer {
            pictures,
            connecting: BTreeMap::new(),
            next_attempt: 1,
            resolver,
            input,
            lines: BTreeMap::new(),
            core: CallCore::new(random_u64()),
            io: BTreeMap::new(),
            next_line: 1,
            zid,
            start_failed: None,
            invite_failed: None,
            verdict_written: std::sync::Mutex::new(None),
        }
    }

    /// The last calls that ended, oldest first: their reason stays readable after the
    /// call is gone, however fast it ended.
    pub(crate) fn ended_views(&self) -> Vec<CallView> {
        self.core.ended_views()
    }

    /// True until the ZID cache has been opened (the vault was locked at start).
    pub(crate) fn zid_locked(&self) -> bool {
        matches!(self.zid, ZidState::Locked)
    }

    /// Takes the ZID cache opened once the vault is unlocked.
    pub(crate) fn set_zid(&mut self, zid: ZidState) {
        self.zid = zid;
    }

    /// The ZID cache and its generation, if it changed since it was last sealed.
    pub(crate) fn zid_unsaved(&self) -> Option<(ZidStore, u64)> {
        self.zid.unsaved()
    }

    /// Everything up to `generation` is sealed in the vault.
    pub(crate) fn zid_saved(&mut self, generation: u64) {
        self.zid.saved(generation);
    }

    /// Views of the calls for the snapshot.
    pub(crate) fn views(&self) -> Vec<CallView> {
        self.core.views()
    }

    /// When the machine next wants [`CallLayer::timeout`].
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Runs what the machine has due now.
    pub(crate) fn timeout(&mut self, events: &mut Vec<Event>) {
        self.core.handle_timeout(Instant::now());
        self.drain(events);
    }

    async fn add_line(&mut self, spec: LineSpec) -> Result<LineId> {
        let started = start_stack(&spec).await?;
        self.install_line(spec, started)
    }

    /// Makes a started stack a line: its events flow to the core task.
    fn install_line(&mut self, spec: LineSpec, started: Started) -> Result<LineId> {
        let LineSpec {
            user,
            aor_host,
            account,
            credential,
            policy,
            media_ip,
            auto_answer,
            ..
        } = spec;
        let (stack, mut rx) = started;
        let user = user.as_str();
        let host = aor_host.unwrap_or_else(|| stack.local_addr().to_string());
        let aor = parse_target(&format!("{user}@{host}"))?;
        let id = self.next_line;
        self.next_line += 1;
        let input = self.input.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if input.send(CallInput::Sip(id, ev)).await.is_err() {
                    break;
                }
            }
        });
        self.lines.insert(
            id,
            Line {
                stack,
                account,
                aor,
                credential,
                registration: None,
                policy,
                media_ip,
                auto_answer,
            },
        );
        Ok(id)
    }

    /// Starts listening for direct calls.
    pub(crate) async fn listen(
        &mut self,
        addr: SocketAddr,
        auto_answer: Option<MediaChoice>,
        policy: EncryptionPolicy,
    ) -> Result<Reply> {
        let media_ip = if addr.ip().is_unspecified() {
            local_ip_towards(DEFAULT_ROUTE_PROBE).unwrap_or(addr.ip())
        } else {
            addr.ip()
        };
        let user = if auto_answer
            .as_ref()
            .is_some_and(|a| a.source == hush_media::audio::SourceSpec::Echo)
        {
            "echo"
        } else {
            "hushphone"
        };
        let id = self
            .add_line(LineSpec::direct(addr, user, policy, media_ip, auto_answer))
            .await?;
        let local = self
            .lines
            .get(&id)
            .map(|l| l.stack.local_addr())
            .ok_or(CoreError::Stopped)?;
        Ok(Reply::Listening(local))
    }

    /// Brings a SIP account online.
    pub(crate) async fn connect(
        &mut self,
        account: &AccountConfig,
        password: Secret,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let AccountSettings::Sip(settings) = &account.settings else {
            return Err(bad("only SIP accounts place calls; XMPP accounts chat"));
        };
        if self.lines.values().any(|l| l.account == Some(account.id))
            || self.connecting.contains_key(&account.id)
        {
            return Ok(());
        }
        let (user, domain) = account
            .address
            .split_once('@')
            .ok_or_else(|| bad("account address is not user@domain"))?;
        let registrar_text = settings
            .registrar
            .clone()
            .unwrap_or_else(|| format!("sip:{domain}"));
        let mut registrar =
            parse_target(&format!("x@{}", registrar_text.trim_start_matches("sip:")))?;
        registrar.auth = None;
        let port = registrar
            .host_with_port
            .port
            .as_ref()
            .map(|p| p.value())
            .unwrap_or(5060);
        let host = registrar.host_with_port.host.to_string();
        let realm = match settings.realm.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(r) if r.len() > 256 || r.chars().any(|c| c.is_control() || c == '"') => {
                return Err(bad(
                    "the account's realm: at most 256 characters, no quotes or control characters",
                ));
            }
            Some(r) => Some(r.to_owned()),
        };
        let credential = Credential {
            username: user.to_owned(),
            password: password.expose().to_owned(),
            realm,
            auth_username: None,
        };
        let transport = settings.transport;
        let tls_roots = match transport {
            Transport::Tls => Some(hush_signaling::sip::trusted_certificates(
                settings.tls_ca_file.as_deref().map(std::path::Path::new),
            )?),
            _ => None,
        };
        // Calls go through the outbound proxy if there is one, else the registrar.
        let proxy = match &settings.outbound_proxy {
            Some(p) => Some(parse_target(&format!(
                "x@{}",
                p.trim_start_matches("sip:")
            ))?),
            None => None,
        };
        let spec = LineSpec {
            bind: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
            user: user.to_owned(),
            aor_host: Some(domain.to_owned()),
            account: Some(account.id),
            credential: Some(credential),
            policy: settings.encryption,
            media_ip: IpAddr::from([0, 0, 0, 0]),
            auto_answer: None,
            transport,
            tls_roots,
        };
        // The server's name is looked up, and the stack bound towards it, in a task of
        // its own: a name service that hangs holds up this account, never the phone.
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.connecting.insert(account.id, attempt);
        let (input, resolver, acc) = (self.input.clone(), self.resolver.clone(), account.id);
        tokio::spawn(async move {
            let routed = async {
                let media_ip = line::route_to_server(&resolver, &host, port).await?;
                let spec = LineSpec {
                    bind: SocketAddr::new(media_ip, 0),
                    media_ip,
                    ..spec
                };
                let started = start_stack(&spec).await.map_err(|e| e.to_string())?;
                Ok((spec, started))
            }
            .await;
            let routed = routed.map(|(spec, started)| {
                Box::new(Routed {
                    spec,
                    started,
                    registrar,
                    proxy,
                })
            });
            let _ = input.send(CallInput::Routed(acc, attempt, routed)).await;
        });
        events.push(Event::AccountStatus {
            account: account.id,
            status: AccountStatus::Connecting,
        });
        Ok(())
    }

    /// The account's server was found and its stack bound: the line goes up and
    /// registers (unless the account was disconnected meanwhile).
    fn routed(
        &mut self,
        account: AccountId,
        attempt: u64,
        routed: std::result::Result<Box<Routed>, String>,
        events: &mut Vec<Event>,
    ) {
        if self.connecting.get(&account) != Some(&attempt) {
            return; // disconnected, or connected again since
        }
        self.connecting.remove(&account);
        let routed = match routed {
            Ok(r) => r,
            Err(why) => {
                events.push(Event::AccountStatus {
                    account,
                    status: AccountStatus::Error(why),
                });
                return;
            }
        };
        let Routed {
            spec,
            started,
            registrar,
            proxy,
        } = *routed;
        let Some(credential) = spec.credential.clone() else {
            return;
        };
        let id = match self.install_line(spec, started) {
            Ok(id) => id,
            Err(e) => {
                events.push(Event::AccountStatus {
                    account,
                    status: AccountStatus::Error(e.to_string()),
                });
                return;
            }
        };
        let Some(line) = self.lines.get_mut(&id) else {
            return;
        };
        line.stack
            .route_calls_via(proxy.as_ref().unwrap_or(&registrar));
        let handle = line
            .stack
            .register_aor(registrar, line.aor.clone(), credential);
        let mut state = handle.state();
        let input = self.input.clone();
        tokio::spawn(async move {
            loop {
                let s = state.borrow_and_update().clone();
                if input
                    .send(CallInput::Registration(account, s))
                    .await
                    .is_err()
                {
                    break;
                }
                if state.changed().await.is_err() {
                    break;
                }
            }
        });
        line.registration = Some(handle);
    }

    /// Takes an account's line down at once (the user disconnects or removes it): its
    /// un-REGISTER goes out from a task, so a silent registrar holds up nothing.
    pub(crate) fn release(&mut self, account: AccountId) {
        self.connecting.remove(&account);
        let ids: Vec<LineId> = self
            .lines
            .iter()
            .filter(|(_, l)| l.account == Some(account))
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            if let Some(mut line) = self.lines.remove(&id) {
                let registration = line.registration.take();
                tokio::spawn(async move {
                    if let Some(r) = registration {
                        r.unregister().await;
                    }
                    line.stack.shutdown();
                });
            }
        }
    }

    /// Un-registers and closes an account's line, waiting (bounded) for the registrar:
    /// at exit, so that the server is told before the process ends.
    pub(crate) async fn disconnect(&mut self, account: AccountId) {
        self.connecting.remove(&account);
        let ids: Vec<LineId> = self
            .lines
            .iter()
            .filter(|(_, l)| l.account == Some(account))
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            if let Some(mut line) = self.lines.remove(&id) {
                if let Some(r) = line.registration.take() {
                    r.unregister().await;
                }
                line.stack.shutdown();
            }
        }
    }

    /// Stops every call's media thread (on exit, before anything waits on the network):
    /// whatever libbzrtp last wrote to the ZID cache is then there for the final seal.
    /// The calls stay, to be hung up by [`CallLayer::shutdown`].
    pub(crate) fn stop_media(&mut self) {
        for io in self.io.values_mut() {
            for (_, media) in std::mem::take(&mut io.media) {
                media.stop();
            }
        }
    }

    /// Hangs up and un-registers everything (on exit).
    pub(crate) async fn shutdown(&mut self) {
        // A lookup still running must not bring a line up (and REGISTER) afterwards.
        self.connecting.clear();
        let ids: Vec<CallId> = self.core.views().iter().map(|v| v.id).collect();
        let mut events = Vec::new();
        for id in ids {
            let _ = self.hangup(id, &mut events);
        }
        self.stop_media();
        // The BYEs and CANCELs go out from tasks: give the far ends time to hear them.
        let deadline = std::time::Instant::now() + HANGUPS_SETTLE;
        for line in self.lines.values() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            line.stack.settle(left).await;
        }
        let accounts: Vec<AccountId> = self.lines.values().filter_map(|l| l.account).collect();
        for a in accounts {
            self.disconnect(a).await;
        }
    }

    /// A ZRTP session keyed through the shared ZID cache, for a call on `line` with the
    /// peer identity `peer`.
    fn zrtp_for(zid: &ZidState, line: &Line, peer: &str, ssrc: u32) -> Result<ZrtpSession> {
        let config = ZrtpConfig {
            cache: Some(ZidCache {
                store: zid.store()?.clone(),
                self_uri: identity(&line.aor),
                peer_uri: peer.to_owned(),
            }),
            ..ZrtpConfig::default()
        };
        ZrtpSession::new(&config, ssrc, Instant::now()).map_err(CoreError::from)
    }

    /// Binds a stream's ports and makes its ZRTP: what an offer or answer needs. Audio
    /// gets the call's ZRTP session; video a channel of it (`prepared` must hold the
    /// audio stream already).
    fn prepare(
        &self,
        line: LineId,
        peer: &str,
        kind: MediaKind,
        prepared: &[Prepared],
    ) -> Result<(Prepared, PreparedStream)> {
        let line = self.lines.get(&line).ok_or(CoreError::Stopped)?;
        let ssrc = random_u64() as u32;
        match kind {
            MediaKind::Audio => {
                let media = PreparedMedia::bind(line.media_ip)?;
                let zrtp = Self::zrtp_for(&self.zid, line, peer, ssrc)?;
                let port = media.local_addr().port();
                let stream = PreparedStream {
                    kind,
                    port,
                    zrtp_hash: Some(zrtp.hello_hash()?),
                    rtcp_port: None,
                    screen: false,
                };
                let zrtp = Box::new(std::sync::Mutex::new(zrtp));
                let ports = Ports::Audio { media, zrtp };
                Ok((
                    Prepared {
                        kind,
                        ssrc,
                        port,
                        ports,
                    },
                    stream,
                ))
            }
            MediaKind::Video => {
                let zrtp = prepared
                    .iter()
                    .find_map(|p| match &p.ports {
                        Ports::Audio { zrtp, .. } => Some(zrtp),
                        Ports::Video(_) => None,
                    })
                    .ok_or_else(|| CoreError::Call("video needs an audio stream".into()))?;
                let ports = PreparedVideo::bind(line.media_ip)?;
                let (port, rtcp) = (ports.local_addr()?.port(), ports.local_rtcp_addr()?.port());
                let hash = {
                    let mut z = zrtp
                        .lock()
                        .map_err(|_| CoreError::Call("ZRTP engine poisoned".into()))?;
                    z.add_channel(ssrc)?;
                    z.channel_hello_hash(ssrc)?
                };
                let stream = PreparedStream {
                    kind,
                    port,
                    zrtp_hash: Some(hash),
                    rtcp_port: Some(rtcp),
                    screen: false,
                };
                let ports = Ports::Video(ports);
                Ok((
                    Prepared {
                        kind,
                        ssrc,
                        port,
                        ports,
                    },
                    stream,
                ))
            }
        }
    }

    /// Places a call.
    pub(crate) async fn place(
        &mut self,
        account: Option<AccountId>,
        target: &str,
        audio: MediaChoice,
        policy: Option<EncryptionPolicy>,
        events: &mut Vec<Event>,
    ) -> Result<Reply> {
        let line_id = match account {
            Some(a) => self
                .lines
                .iter()
                .find(|(_, l)| l.account == Some(a))
                .map(|(i, _)| *i)
                .ok_or_else(|| bad(format!("account {a} is not connected; connect it first")))?,
            None => match self
                .lines
                .iter()
                .find(|(_, l)| l.account.is_none() && l.auto_answer.is_none())
            {
                Some((i, _)) => *i,
                None => {
                    let uri = parse_target(target)?;
                    let port = uri
                        .host_with_port
                        .port
                        .as_ref()
                        .map(|p| p.value())
                        .unwrap_or(5060);
                    // Our address towards the peer, with no name lookup on the core
                    // task: an address literal is routed as is; for a name, the
                    // default route's address (the stack resolves the name itself,
                    // off this task, when it sends the INVITE).
                    let host = uri.host_with_port.host.to_string();
                    let towards = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                        Ok(ip) => SocketAddr::new(ip, port).to_string(),
                        Err(_) => DEFAULT_ROUTE_PROBE.to_owned(),
                    };
                    let ip = local_ip_towards(&towards)
                        .ok_or_else(|| bad(format!("cannot reach {target}")))?;
                    self.add_line(LineSpec::direct(
                        SocketAddr::new(ip, 0),
                        "hushphone",
                        EncryptionPolicy::Mandatory,
                        ip,
                        None,
                    ))
                    .await?
                }
            },
        };
        let target_uri = parse_target(target)?;
        let peer_identity = identity(&target_uri);
        let line = self.lines.get(&line_id).ok_or(CoreError::Stopped)?;
        let (policy, addr) = (policy.unwrap_or(line.policy), line.media_ip);
        let (prepared, stream) = self.prepare(line_id, &peer_identity, MediaKind::Audio, &[])?;
        let mut streams = vec![stream];
        let mut all = vec![prepared];
        if audio.video.is_some() {
            let (prepared, mut stream) =
                self.prepare(line_id, &peer_identity, MediaKind::Video, &all)?;
            stream.screen = video::shares_screen(&audio);
            all.push(prepared);
            streams.push(stream);
        }
        let id = self.core.allocate();
        let mut io = CallIo::new(line_id, None, peer_identity);
        io.choose(audio);
        io.prepared = all;
        self.io.insert(id, io);
        self.invite_failed = None;
        let placed = self.core.handle(
            Instant::now(),
            Input::Place {
                id,
                account,
                peer: target_uri.to_string(),
                policy,
                addr,
                session_id: random_u64() >> 1,
                streams,
            },
        );
        self.drain(events);
        placed?;
        if let Some(e) = self.invite_failed.take() {
            return Err(CoreError::Call(e));
        }
        Ok(Reply::Call(id))
    }

    /// Answers an incoming call. Everything that can fail on our side (media port, ZRTP
    /// engine, audio devices, the media thread) is running before the 200 OK goes out,
    /// so an answered call always has media; if something fails first, the call keeps
    /// ringing and the error says why.
    pub(crate) fn answer(
        &mut self,
        id: CallId,
        audio: MediaChoice,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if !self.core.is_ringing(id) {
            return Err(bad("that call is not ringing"));
        }
        let io = self.io.get(&id).ok_or(CoreError::Stopped)?;
        let (line, peer) = (io.line, io.peer_identity.clone());
        let mut prepared = Vec::new();
        let mut streams = Vec::new();
        // Audio first, whatever the m-lines' order: video is a channel of its ZRTP.
        let mut wanted = self.core.wanted_streams(id);
        wanted.sort_by_key(|k| *k != MediaKind::Audio);
        for kind in wanted {
            if kind == MediaKind::Video && audio.video.is_none() {
                tracing::info!("refusing video: this call is answered without it");
                continue;
            }
            match self.prepare(line, &peer, kind, &prepared) {
                Ok((p, mut s)) => {
                    s.screen = kind == MediaKind::Video && video::shares_screen(&audio);
                    prepared.push(p);
                    streams.push(s);
                }
                Err(e) if kind == MediaKind::Audio => return Err(e),
                Err(e) => tracing::info!(error = %e, "refusing a stream we cannot carry"),
            }
        }
        if let Some(io) = self.io.get_mut(&id) {
            io.prepared = prepared;
            io.choose(audio);
        }
        self.start_failed = None;
        self.command(Input::Answer { id, streams }, events)?;
        match self.start_failed.take() {
            Some(e) => Err(CoreError::Call(e)),
            None => Ok(()),
        }
    }

    /// Refuses an incoming call.
    pub(crate) fn reject(&mut self, id: CallId, busy: bool, events: &mut Vec<Event>) -> Result<()> {
        let why = if busy {
            Rejection::Busy
        } else {
            Rejection::Declined
        };
        self.command(Input::Reject { id, why }, events)
    }

    /// Gives the machine a user command and carries out what it says.
    fn command(&mut self, input: Input, events: &mut Vec<Event>) -> Result<()> {
        let done = self.core.handle(Instant::now(), input);
        self.drain(events);
        done
    }

    /// Hangs up. A call that rings here is declined; any other ends at once, and its
    /// CANCEL or BYE goes out from the SIP stack's own task: a peer that never answers
    /// it cannot hold up the phone.
    pub(crate) fn hangup(&mut self, id: CallId, events: &mut Vec<Event>) -> Result<()> {
        self.command(Input::Hangup { id }, events)
    }

    /// Sends DTMF keys.
    pub(crate) fn dtmf(&mut self, id: CallId, keys: &str, events: &mut Vec<Event>) -> Result<()> {
        let keys = keys.to_owned();
        self.command(Input::Dtmf { id, keys }, events)
    }

    /// Records the user's SAS comparison, for the peer key (ZID) of this call only:
    /// libbzrtp flags the cache entry of the ZID it agreed keys with. The receiver gets
    /// `()` once the media thread has written it to the cache.
    pub(crate) fn set_verified(
        &mut self,
        id: CallId,
        verified: bool,
        events: &mut Vec<Event>,
    ) -> Result<std::sync::mpsc::Receiver<()>> {
        self.take_verdict();
        self.command(Input::SetVerified { id, verified }, events)?;
        self.take_verdict()
            .ok_or_else(|| bad("the call has no media yet"))
    }

    fn take_verdict(&self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.verdict_written.lock().ok().and_then(|mut s| s.take())
    }

    /// Sends silence instead of the microphone, or the microphone again.
    pub(crate) fn mute(&mut self, id: CallId, on: bool, events: &mut Vec<Event>) -> Result<()> {
        self.command(Input::Mute { id, on }, events)
    }

    /// Turns our camera off or on; the call goes on, and the peer is told by
    /// re-INVITE.
    pub(crate) fn camera(&mut self, id: CallId, on: bool, events: &mut Vec<Event>) -> Result<()> {
        self.command(Input::Camera { id, on }, events)
    }

    /// The user compared the SAS and it did not match: someone may be in the middle.
    /// The call ends with that reason and the peer is no longer "verified".
    pub(crate) fn sas_mismatch(&mut self, id: CallId, events: &mut Vec<Event>) -> Result<()> {
        self.command(Input::SasMismatch { id }, events)
    }

    /// Sets the "SAS verified" flag of one key of a peer outside any call: the key the
    /// user was shown, not every key that ever called from that address.
    pub(crate) async fn set_peer_verified(
        &self,
        peer: &str,
        key: &str,
        verified: bool,
    ) -> Result<()> {
        let id = identity(&parse_target(peer)?);
        let zid = Zid::parse(key).map_err(|e| bad(e.to_string()))?;
        let store = self.zid.store()?.clone();
        let who = id.clone();
        let changed = tokio::task::spawn_blocking(move || store.set_verified(&who, &zid, verified))
            .await
            .map_err(|_| CoreError::Stopped)??;
        if changed == 0 {
            return Err(bad(format!(
                "{id} has not presented the key {zid} on a secure call: there is no SAS to verify"
            )));
        }
        Ok(())
    }

    /// The keys `peer`'s address has presented, the last seen first.
    pub(crate) async fn peer_keys(&self, peer: &str) -> Result<Vec<crate::security::PeerKey>> {
        let id = identity(&parse_target(peer)?);
        let store = self.zid.store()?.clone();
        let keys = tokio::task::spawn_blocking(move || store.keys_of(&id))
            .await
            .map_err(|_| CoreError::Stopped)??;
        Ok(keys.into_iter().map(zid::peer_key).collect())
    }

    /// The peer keys whose SAS the user has verified.
    pub(crate) async fn verified_peers(&self) -> Result<Vec<crate::security::PeerKey>> {
        let store = self.zid.store()?.clone();
        let keys = tokio::task::spawn_blocking(move || store.verified_keys())
            .await
            .map_err(|_| CoreError::Stopped)??;
        Ok(keys.into_iter().map(zid::peer_key).collect())
    }

    /// Puts a call on hold (re-INVITE with sendonly) or resumes it. Returns once the
    /// re-INVITE is sent; the peer's answer is waited for in a task of its own (a peer
    /// that never answers cannot hold up the phone) and given to the machine when it
    /// comes.
    pub(crate) fn hold(&mut self, id: CallId, on: bool, events: &mut Vec<Event>) -> Result<()> {
        self.command(Input::Hold { id, on }, events)
    }

    /// Handles an input from a line, a media thread or a re-INVITE task.
    pub(crate) fn input(&mut self, input: CallInput, events: &mut Vec<Event>) {
        let now = Instant::now();
        match input {
            CallInput::Sip(line, ev) => self.sip(now, line, ev, events),
            CallInput::Media(id, stream, report) => {
                // The video stream's news comes from the audio stream's thread.
                let video = self.io.get(&id).and_then(|io| io.video_stream);
                let (stream, media) = match report {
                    MediaReport::VideoEvent(e) => match video {
                        Some(v) => (v, media_input(e)),
                        None => return,
                    },
                    MediaReport::VideoStats(s) => match video {
                        Some(v) => (v, MediaInput::Stats(video_stats(&s))),
                        None => return,
                    },
                    MediaReport::Event(e) => (stream, media_input(e)),
                    MediaReport::Stats(s) | MediaReport::Ended(s) => {
                        (stream, MediaInput::Stats(to_stats(&s)))
                    }
                };
                let _ = self.core.handle(now, Input::Media(id, stream, media));
            }
            CallInput::Routed(account, attempt, routed) => {
                self.routed(account, attempt, routed, events)
            }
            CallInput::ReInviteAnswered(id, answer) => {
                let answer = answer.map_err(|e| match e {
                    hush_signaling::SignalingError::RequestPending => ReInviteFailure::Glare,
                    e => ReInviteFailure::Refused(e.to_string()),
                });
                let _ = self
                    .core
                    .handle(now, Input::Sip(id, SipInput::ReInviteAnswered(answer)));
            }
            CallInput::VideoChannel(id, ssrc, made) => {
                self.channel_made(now, id, ssrc, made, events)
            }
            CallInput::Registration(account, state) => {
                if let RegistrationState::Retrying(why) = &state {
                    tracing::info!(%account, reason = %why, "registration retrying");
                }
                let status = match state {
                    RegistrationState::Registering => AccountStatus::Connecting,
                    RegistrationState::Retrying(why) => AccountStatus::Retrying(why),
                    RegistrationState::Registered { .. } => AccountStatus::Online,
                    RegistrationState::Refused(why) => AccountStatus::Error(why),
                    RegistrationState::Unregistered => AccountStatus::Offline,
                };
                events.push(Event::AccountStatus { account, status });
            }
        }
        self.drain(events);
    }

    fn find(&self, line: LineId, key: &CallKey) -> Option<CallId> {
        self.io
            .iter()
            .find(|(_, c)| c.line == line && c.key.as_ref() == Some(key))
            .map(|(i, _)| *i)
    }

    fn sip(&mut self, now: Instant, line_id: LineId, ev: SipEvent, events: &mut Vec<Event>) {
        match ev {
            SipEvent::IncomingCall {
                call: key,
                from,
                offer,
                ..
            } => {
                let Some(line) = self.lines.get(&line_id) else {
                    return;
                };
                let peer_identity = parse_target(&from)
                    .map(|u| identity(&u))
                    .unwrap_or_else(|_| from.clone());
                let (policy, auto) = (line.policy, line.auto_answer.clone());
                let (account, addr) = (line.account, line.media_ip);
                let id = self.core.allocate();
                self.io
                    .insert(id, CallIo::new(line_id, Some(key), peer_identity));
                let _ = self.core.handle(
                    now,
                    Input::Incoming {
                        id,
                        account,
                        from,
                        offer,
                        policy,
                        addr,
                        session_id: random_u64() >> 1,
                        automatic: auto.is_some(),
                    },
                );
                self.drain(events);
                if let Some(audio) = auto
                    && self.core.is_ringing(id)
                    && let Err(e) = self.answer(id, audio, events)
                {
                    // Nobody is there to try again: refuse the call rather than let it ring.
                    tracing::warn!(error = %e, "auto-answer failed");
                    let _ = self.core.handle(
                        now,
                        Input::Reject {
                            id,
                            why: Rejection::Failed,
                        },
                    );
                    self.core.abandon(id, format!("could not answer: {e}"));
                    self.drain(events);
                }
            }
            SipEvent::Ringing { call } => {
                if let Some(id) = self.find(line_id, &call) {
                    let _ = self.core.handle(now, Input::Sip(id, SipInput::Ringing));
                }
            }
            SipEvent::Answered { call, sdp } => match self.find(line_id, &call) {
                Some(id) => {
                    let _ = self
                        .core
                        .handle(now, Input::Sip(id, SipInput::Answered(sdp)));
                }
                None => {
                    // Answered after we gave up on it: hang up rather than leave it up.
                    if let Some(line) = self.lines.get(&line_id) {
                        let _ = line.stack.hangup(&call);
                    }
                }
            },
            SipEvent::Established { call } => {
                if let Some(id) = self.find(line_id, &call) {
                    let _ = self.core.handle(now, Input::Sip(id, SipInput::Established));
                }
            }
            SipEvent::ReInvite { call, reinvite } => match self.find(line_id, &call) {
                Some(id) => {
                    let body = reinvite.sdp.clone();
                    let Some(io) = self.io.get_mut(&id) else {
                        return;
                    };
                    if io.reinvite.is_some() {
                        // The peer's last one is still being answered (its video
                        // prepared): 500 with Retry-After (RFC 3261 §14.2).
                        tokio::spawn(reinvite.postpone());
                        return;
                    }
                    if io.channel.is_some() {
                        // Ours is under way (its video prepared): 491, as for glare.
                        tokio::spawn(reinvite.pending());
                        return;
                    }
                    io.reinvite = Some(reinvite);
                    // A video stream it adds needs a ZRTP channel from the media
                    // thread first; the machine hears the offer once it is made. Taken
                    // only in a call the user chose video for (as for a new call), and
                    // only so often.
                    let wanted = io.audio.video.is_some() && io.peer_video_adds < PEER_VIDEO_ADDS;
                    if wanted && self.core.video_to_accept(id, &body) {
                        match self.request_channel(id, Some(body.clone())) {
                            Ok(()) => {
                                if let Some(io) = self.io.get_mut(&id) {
                                    io.peer_video_adds += 1;
                                }
                                self.core.peer_offer_pending(id);
                                return;
                            }
                            Err(e) => tracing::info!(error = %e, "refusing the video added"),
                        }
                    }
                    let _ = self
                        .core
                        .handle(now, Input::Sip(id, SipInput::ReInvite(body)));
                }
                None => {
                    tokio::spawn(reinvite.refuse());
                }
            },
            SipEvent::Ended { call, reason } => {
                if let Some(id) = self.find(line_id, &call) {
                    let _ = self
                        .core
                        .handle(now, Input::Sip(id, SipInput::Ended(reason.to_string())));
                }
            }
        }
    }

    /// Carries out everything the machine asked for, feeding back what happened.
    fn drain(&mut self, events: &mut Vec<Event>) {
        while let Some(out) = self.core.poll() {
            match out {
                Output::Event(e) => events.push(e),
                Output::Sip(id, action) => self.sip_action(id, action),
                Output::Media(id, stream, action) => self.media_action(id, stream, action),
                Output::Release(id, p) => self.release_prepared(id, &p),
            }
        }
        // Calls the machine ended: their media is stopped, their sockets go.
        let live: Vec<CallId> = self.core.views().iter().map(|v| v.id).collect();
        let pictures = &self.pictures;
        self.io.retain(|id, io| {
            let keep = live.contains(id);
            if !keep {
                if let Ok(mut all) = pictures.lock() {
                    all.remove(id);
                }
                for (_, media) in std::mem::take(&mut io.media) {
                    media.stop();
                }
                if let Some(r) = io.reinvite.take() {
                    tokio::spawn(r.refuse());
                }
            }
            keep
        });
    }

    fn sip_action(&mut self, id: CallId, action: SipAction) {
        let line = self.io.get(&id).and_then(|io| self.lines.get(&io.line));
        let key = self.io.get(&id).and_then(|io| io.key.as_ref());
        if let SipAction::ReInvite(_) = action
            && (line.is_none() || key.is_none())
        {
            // Nothing will ever answer it: the machine must not wait.
            self.core
                .reinvite_unsent(id, "the call's line is gone".into());
            return;
        }
        let Some(io) = self.io.get_mut(&id) else {
            return;
        };
        let Some(line) = self.lines.get(&io.line) else {
            return;
        };
        let now = Instant::now();
        match action {
            SipAction::Invite { target, sdp } => {
                match line
                    .stack
                    .invite(&target, line.aor.clone(), line.credential.clone(), sdp)
                {
                    Ok(key) => io.key = Some(key),
                    Err(e) => {
                        self.invite_failed = Some(e.to_string());
                        self.core.forget(id);
                    }
                }
            }
            SipAction::Answer(sdp) => {
                let Some(key) = &io.key else { return };
                if let Err(e) = line.stack.answer(key, sdp) {
                    // Not answered after all: refuse it, so the caller is not left ringing.
                    let _ = line.stack.reject(key, Rejection::Failed);
                    let why = format!("could not answer: {e}");
                    self.start_failed = Some(why.clone());
                    let _ = self.core.handle(now, Input::Sip(id, SipInput::Ended(why)));
                }
            }
            SipAction::Reject(why) => {
                if let Some(key) = &io.key
                    && let Err(e) = line.stack.reject(key, why)
                {
                    tracing::debug!(error = %e, "reject");
                }
            }
            SipAction::Hangup => {
                if let Some(key) = &io.key
                    && let Err(e) = line.stack.hangup(key)
                {
                    // The dialog is gone already.
                    tracing::debug!(error = %e, "hangup");
                }
            }
            SipAction::ReInvite(sdp) => {
                let Some(key) = &io.key else { return };
                let answer = line.stack.reinvite(key, sdp);
                let input = self.input.clone();
                tokio::spawn(async move {
                    let answer = answer.await;
                    let _ = input.send(CallInput::ReInviteAnswered(id, answer)).await;
                });
            }
            SipAction::AcceptReInvite(sdp) => {
                if let Some(r) = io.reinvite.take() {
                    tokio::spawn(r.accept(sdp));
                }
            }
            SipAction::RefuseReInvite(why) => {
                if let Some(r) = io.reinvite.take() {
                    match why {
                        Refusal::NotAcceptable => tokio::spawn(r.refuse()),
                        Refusal::Pending => tokio::spawn(r.pending()),
                    };
                }
            }
        }
    }

    fn media_action(&mut self, id: CallId, stream: usize, action: MediaAction) {
        let now = Instant::now();
        match action {
            MediaAction::Start(start) => {
                let video = start.kind == MediaKind::Video;
                let report = match self.start(id, stream, start) {
                    Ok(()) => MediaInput::Started,
                    Err(e) => {
                        let why = e.to_string();
                        // A video that cannot start ends alone; the answer stands.
                        if !video {
                            self.start_failed = Some(why.clone());
                        }
                        MediaInput::StartFailed(why)
                    }
                };
                let _ = self.core.handle(now, Input::Media(id, stream, report));
            }
            MediaAction::Stop => {
                let Some(io) = self.io.get_mut(&id) else {
                    return;
                };
                if io.video_stream == Some(stream) {
                    io.video_stream = None;
                    io.pending_video = None;
                    // Sharing ends with the stream that carried it.
                    io.screen = None;
                    io.video_before_share = false;
                    if let Some(audio) = io.audio_stream.and_then(|a| io.media.get(&a)) {
                        audio.command(MediaCommand::RemoveVideo);
                    }
                } else if let Some(media) = io.media.remove(&stream) {
                    media.stop();
                }
            }
            MediaAction::Source { screen } => {
                let Some(io) = self.io.get_mut(&id) else {
                    return;
                };
                let ready = io.next_source.take().and_then(|s| s.into_inner().ok());
                // None ready: the machine undid a share the peer refused; back to the
                // camera (or the pattern).
                let source = match ready {
                    Some(s) => Ok(s),
                    None if !screen => {
                        io.screen = None;
                        video::open_source(&io.camera())
                    }
                    None => Err(CoreError::Call("no screen was chosen to share".into())),
                };
                let Some(audio) = io.audio_stream.and_then(|a| io.media.get(&a)) else {
                    return;
                };
                match source {
                    Ok(source) => {
                        audio.command(MediaCommand::VideoSource(SourceSwitch { source, screen }))
                    }
                    Err(e) => {
                        // No source to switch to: no pictures at all, rather than the
                        // wrong ones.
                        tracing::warn!(error = %e, "the video source cannot be switched");
                        audio.command(MediaCommand::Camera(false));
                    }
                }
            }
            // The video runs in the audio stream's thread: what is for it goes there.
            MediaAction::SetRemote { .. } | MediaAction::Camera(_)
                if self.io.get(&id).and_then(|io| io.video_stream) == Some(stream) =>
            {
                let io = self.io.get(&id);
                let Some(audio) = io.and_then(|io| io.audio_stream.and_then(|a| io.media.get(&a)))
                else {
                    return;
                };
                match action {
                    MediaAction::SetRemote { rtp, rtcp } => {
                        audio.command(MediaCommand::VideoRemote { rtp, rtcp })
                    }
                    MediaAction::Camera(on) => audio.command(MediaCommand::Camera(on)),
                    _ => {}
                }
            }
            other => {
                let Some(media) = self.io.get(&id).and_then(|io| io.media.get(&stream)) else {
                    return;
                };
                match other {
                    MediaAction::SetRemote { rtp, .. } => {
                        media.command(MediaCommand::SetRemote(rtp))
                    }
                    MediaAction::Hold(on) => media.command(MediaCommand::Hold(on)),
                    MediaAction::Mute(on) => media.command(MediaCommand::Mute(on)),
                    MediaAction::Dtmf(k) => media.command(MediaCommand::Dtmf(k)),
                    MediaAction::SasVerified(v) => {
                        media.command(MediaCommand::SasVerified(v));
                        let written = media.barrier();
                        if let Ok(mut slot) = self.verdict_written.lock() {
                            *slot = Some(written);
                        }
                    }
                    // Pictures are the video stream's (handled above).
                    MediaAction::Start(_)
                    | MediaAction::Stop
                    | MediaAction::Camera(_)
                    | MediaAction::Source { .. } => {}
                }
            }
        }
    }

    /// Adds video to a call (camera on), or ends it; the peer is asked by re-INVITE.
    pub(crate) fn video(
        &mut self,
        id: CallId,
        on: bool,
        camera: Option<VideoSourceSpec>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if matches!(camera, Some(VideoSourceSpec::Screen(_))) {
            return Err(CoreError::InvalidInput(
                "a screen is shared with Share screen, not as a camera".into(),
            ));
        }
        if let Some(io) = self.io.get_mut(&id) {
            // "Start video" is the camera, whatever a share left behind.
            io.share_pending = false;
        }
        if !on {
            return self.command(Input::RemoveVideo { id }, events);
        }
        self.core.can_add_video(id)?;
        if let Some(io) = self.io.get_mut(&id)
            && camera.is_some()
        {
            io.camera = camera;
        }
        self.request_channel(id, None)
    }

    /// Shares the screen in the call (in place of the camera, or as the call's first
    /// video), or stops: back to the camera, or no video if there was none before.
    pub(crate) fn share_screen(
        &mut self,
        id: CallId,
        on: bool,
        screen: Option<ScreenSpec>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let (video, sharing) = self.core.video_state(id);
        let io = self.io.get_mut(&id).ok_or(CoreError::Stopped)?;
        if on {
            if sharing {
                return Ok(());
            }
            let spec = screen.unwrap_or_default();
            io.video_before_share = video;
            if !video {
                // The screen is the call's first video: added by re-INVITE.
                self.core.can_add_video(id)?;
                io.screen = Some(spec);
                io.share_pending = true;
                if let Err(e) = self.request_channel(id, None) {
                    if let Some(io) = self.io.get_mut(&id) {
                        io.screen = None;
                        io.share_pending = false;
                    }
                    return Err(e);
                }
                return Ok(());
            }
            // Opened before anything changes: a screen that cannot be read changes
            // nothing.
            let source = video::open_source(&VideoSourceSpec::Screen(spec.clone()))?;
            io.next_source = Some(std::sync::Mutex::new(source));
            io.screen = Some(spec);
            let shared = self.command(Input::ShareScreen { id, on: true }, events);
            if shared.is_err()
                && let Some(io) = self.io.get_mut(&id)
            {
                io.next_source = None;
                io.screen = None;
            }
            return shared;
        }
        if !sharing {
            return Err(bad("the screen is not shared in this call"));
        }
        // Back to the camera if the call had video before (the one video was last
        // started with); a source that cannot be opened any more (a file gone) ends
        // the video. A camera opens on its own thread: one that fails ends its stream
        // later, with words.
        let camera = io
            .video_before_share
            .then(|| video::open_source(&io.camera()));
        match camera {
            Some(Ok(source)) => {
                io.next_source = Some(std::sync::Mutex::new(source));
                io.screen = None;
                self.command(Input::ShareScreen { id, on: false }, events)
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "the camera cannot be opened again");
                }
                self.command(Input::RemoveVideo { id }, events)
            }
        }
    }

    /// Binds a video stream's ports and asks the call's media thread for its ZRTP
    /// channel; [`CallInput::VideoChannel`] brings the answer.
    fn request_channel(&mut self, id: CallId, offer: Option<Vec<u8>>) -> Result<()> {
        let input = self.input.clone();
        let io = self.io.get_mut(&id).ok_or(CoreError::Stopped)?;
        if io.channel.is_some() {
            return Err(bad("video is being added already"));
        }
        let line = self.lines.get(&io.line).ok_or(CoreError::Stopped)?;
        let audio = io
            .audio_stream
            .and_then(|a| io.media.get(&a))
            .ok_or_else(|| bad("the call has no media yet"))?;
        let ports = PreparedVideo::bind(line.media_ip)?;
        let ssrc = random_u64() as u32;
        let (reply, made) = std::sync::mpsc::channel();
        audio.command(MediaCommand::AddVideoChannel { ssrc, reply });
        io.channel = Some(PendingChannel { ssrc, ports, offer });
        tokio::spawn(async move {
            let made = tokio::task::spawn_blocking(move || made.recv_timeout(CHANNEL_WAIT))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|_| "the media thread did not answer".to_owned()))
                .and_then(|r| r.map_err(|e| e.to_string()));
            let _ = input.send(CallInput::VideoChannel(id, ssrc, made)).await;
        });
        Ok(())
    }

    /// The media thread made (or not) a video stream's ZRTP channel: the stream goes
    /// to the machine, added by us or taken into the peer's re-INVITE.
    fn channel_made(
        &mut self,
        now: Instant,
        id: CallId,
        ssrc: u32,
        made: std::result::Result<Option<String>, String>,
        events: &mut Vec<Event>,
    ) {
        let Some(io) = self.io.get_mut(&id) else {
            return; // the call ended: its thread, and the channel, are gone
        };
        if io.channel.as_ref().is_none_or(|c| c.ssrc != ssrc) {
            return;
        }
        let Some(PendingChannel { ports, offer, .. }) = io.channel.take() else {
            return;
        };
        let addresses = ports
            .local_addr()
            .and_then(|a| ports.local_rtcp_addr().map(|b| (a.port(), b.port())))
            .map_err(|e| e.to_string());
        if let (Err(_), Ok(Some(_)), Some(audio)) = (
            &addresses,
            &made,
            io.audio_stream.and_then(|a| io.media.get(&a)),
        ) {
            audio.command(MediaCommand::RemoveVideoChannel(ssrc));
        }
        let hash_and_ports = made.and_then(|h| addresses.map(|a| (h, a)));
        let (hash, (port, rtcp)) = match hash_and_ports {
            Ok(made) => made,
            Err(why) => {
                tracing::info!(call = id.0, reason = %why, "no ZRTP channel for video");
                if offer.is_none() && std::mem::take(&mut io.share_pending) {
                    // The share never started.
                    io.screen = None;
                }
                match offer {
                    Some(body) => {
                        let _ = self
                            .core
                            .handle(now, Input::Sip(id, SipInput::ReInvite(body)));
                    }
                    None => events.push(Event::CommandFailed {
                        command: "video",
                        error: format!("video cannot be added: {why}"),
                        permanent: false,
                    }),
                }
                return;
            }
        };
        let stream = PreparedStream {
            kind: MediaKind::Video,
            port,
            zrtp_hash: hash,
            rtcp_port: Some(rtcp),
            // Ours (not the peer's addition), added to share the screen.
            screen: offer.is_none() && std::mem::take(&mut io.share_pending),
        };
        let camera = io.audio.video.is_some();
        io.prepared.push(Prepared {
            kind: MediaKind::Video,
            ssrc,
            port,
            ports: Ports::Video(ports),
        });
        let input = match offer {
            Some(body) => Input::Sip(
                id,
                SipInput::ReInviteWithVideo {
                    body,
                    video: stream,
                    camera,
                },
            ),
            None => Input::AddVideo { id, stream },
        };
        if let Err(e) = self.core.handle(now, input) {
            events.push(Event::CommandFailed {
                command: "video",
                error: e.to_string(),
                permanent: false,
            });
        }
    }

    /// A prepared stream the machine gave up: its sockets close, its ZRTP channel goes.
    fn release_prepared(&mut self, id: CallId, p: &PreparedStream) {
        let Some(io) = self.io.get_mut(&id) else {
            return;
        };
        let Some(at) = io
            .prepared
            .iter()
            .position(|q| q.kind == p.kind && q.port == p.port)
        else {
            return;
        };
        let released = io.prepared.swap_remove(at);
        if p.screen {
            // A share that did not happen (declined, undone, cancelled).
            io.screen = None;
        }
        if let Ports::Video(_) = released.ports
            && let Some(audio) = io.audio_stream.and_then(|a| io.media.get(&a))
        {
            audio.command(MediaCommand::RemoveVideoChannel(released.ssrc));
        }
    }

    /// Starts one prepared stream. Video runs in the audio stream's media thread: it
    /// is added to it, or started with it if the audio has not started yet.
    fn start(&mut self, id: CallId, stream: usize, start: StreamStart) -> Result<()> {
        let input = self.input.clone();
        let io = self.io.get_mut(&id).ok_or(CoreError::Stopped)?;
        let at = io
            .prepared
            .iter()
            .position(|p| p.kind == start.kind && p.port == start.local_port)
            .ok_or_else(|| CoreError::Call("media already running".into()))?;
        let prepared = io.prepared.swap_remove(at);
        let (ssrc, ports) = (prepared.ssrc, prepared.ports);
        let (media, zrtp) = match ports {
            Ports::Video(ports) => {
                // The source the machine says: the screen only while the user shares.
                let source = match (&io.screen, start.screen) {
                    (Some(s), true) => VideoSourceSpec::Screen(s.clone()),
                    (None, true) => {
                        return Err(CoreError::Call("no screen was chosen to share".into()));
                    }
                    (_, false) => io.camera(),
                };
                let choice = VideoChoice {
                    source,
                    record: io.record.clone(),
                };
                let pictures = CallPictures::default();
                let nth = io.videos_started;
                io.videos_started += 1;
                let setup = match video::setup(&choice, ports, ssrc, &start, &pictures, nth) {
                    Ok(s) => Box::new(s),
                    Err(e) => {
                        // Its ZRTP channel goes: another video may take its place.
                        if let Some(audio) = io.audio_stream.and_then(|a| io.media.get(&a)) {
                            audio.command(MediaCommand::RemoveVideoChannel(ssrc));
                        }
                        return Err(e);
                    }
                };
                if let Ok(mut all) = self.pictures.lock() {
                    all.insert(id, pictures);
                }
                io.video_stream = Some(stream);
                match io.audio_stream.and_then(|a| io.media.get(&a)) {
                    Some(audio) => audio.command(MediaCommand::AddVideo(setup)),
                    None => io.pending_video = Some(std::sync::Mutex::new(setup)),
                }
                return Ok(());
            }
            Ports::Audio { media, zrtp } => (media, zrtp),
        };
        let zrtp = zrtp
            .into_inner()
            .map_err(|_| CoreError::Call("ZRTP engine poisoned".into()))?;
        let cfg = StreamConfig {
            local_ssrc: ssrc,
            codec: codec_of(start.codec.codec)?,
            payload_type: start.codec.payload_type,
            telephone_event_pt: start.codec.telephone_event,
            policy: policy_of(start.policy),
            peer_hello_hash: start.peer_hash,
            remote: start.remote,
        };
        let media = media.start_with_video(
            cfg,
            Some(zrtp),
            io.audio.source.clone(),
            io.audio.sink.clone(),
            io.pending_video
                .take()
                .and_then(|v| v.into_inner().ok())
                .map(|v| *v),
            media_reporter(input, id, stream),
        )?;
        io.media.insert(stream, media);
        io.audio_stream = Some(stream);
        Ok(())
    }
}

/// What a media stream's event tells the machine.
fn media_input(e: StreamEvent) -> MediaInput {
    match e {
        StreamEvent::Secure {
            sas,
            verified,
            cache_mismatch,
            new_key,
            algorithms,
        } => MediaInput::Secure {
            sas,
            verified,
            cache_mismatch,
            new_key,
            algorithms: algorithms.to_string(),
        },
        StreamEvent::Cleartext(why) => MediaInput::Cleartext(why),
        StreamEvent::Failed(why) => MediaInput::Failed(why),
        StreamEvent::Dtmf(key) => MediaInput::Dtmf(key),
    }
}

/// A video stream's figures, pictures included.
fn video_stats(s: &hush_media::video::VideoStats) -> CallStats {
    CallStats {
        packets_sent: s.packets_sent,
        packets_received: s.packets_received,
        packets_lost: s.packets_lost,
        jitter_ms: 0,
        rtt_ms: s.rtt_ms,
        refused: s.refused,
        video: Some(crate::snapshot::VideoFigures {
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
            frames_decoded: s.frames_decoded,
            key_frames_asked: s.key_frames_asked,
            width: s.width,
            height: s.height,
            fps: s.fps,
            capture: s.capture.map(|c| crate::snapshot::CaptureFigures {
                fps: s.capture_fps.unwrap_or(0),
                captured: c.captured,
                unchanged: c.unchanged,
            }),
        }),
    }
}

fn to_stats(s: &StreamStats) -> CallStats {
    CallStats {
        packets_sent: s.sent_packets,
        packets_received: s.received_packets,
        packets_lost: s.lost_packets,
        jitter_ms: s.jitter_ms,
        rtt_ms: s.rtt_ms,
        refused: s.refused_datagrams,
        video: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_full_queue_drops_media_statistics_but_never_a_state_change() {
        let (tx, mut rx) = mpsc::channel(1);
        let report = media_reporter(tx, CallId(7), 0);
        // The media thread must never block, whatever the queue holds.
        let thread = std::thread::spawn(move || {
            report(MediaReport::Stats(StreamStats::default()));
            report(MediaReport::Event(StreamEvent::Dtmf('5')));
            report(MediaReport::Stats(StreamStats::default()));
            report(MediaReport::Event(StreamEvent::Failed(
                "peer vanished".into(),
            )));
            report(MediaReport::Ended(StreamStats::default()));
        });
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("the media thread returned without waiting for room");
        let mut got = Vec::new();
        for _ in 0..3 {
            let Ok(Some(CallInput::Media(id, _, r))) =
                tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            else {
                panic!("a report was lost: got {got:?}");
            };
            assert_eq!(id, CallId(7));
            got.push(match r {
                MediaReport::Stats(_) => "stats",
                MediaReport::Event(StreamEvent::Dtmf(_)) => "dtmf",
                MediaReport::Event(StreamEvent::Failed(_)) => "failed",
                MediaReport::Ended(_) => "ended",
                _ => "other",
            });
        }
        // The first statistics filled the queue; the DTMF and the second statistics
        // were dropped (never sent, so nothing can arrive later); the failure and the
        // end waited for room, and arrive in the order they were made.
        assert!(rx.try_recv().is_err(), "dropped reports arrived after all");
        assert_eq!(got, ["stats", "failed", "ended"]);
    }

    #[tokio::test]
    async fn a_state_change_made_while_another_waits_for_room_never_overtakes_it() {
        // One thread: nothing spawned runs until this test awaits, so the order of
        // events below is exact.
        let (tx, mut rx) = mpsc::channel(1);
        let report = media_reporter(tx, CallId(7), 0);
        report(MediaReport::Stats(StreamStats::default()));
        report(MediaReport::Event(StreamEvent::Failed("no ZRTP".into())));
        // The core takes the statistics: there is room again before the failure, which
        // waits for room in a task, was delivered.
        assert!(matches!(
            rx.try_recv(),
            Ok(CallInput::Media(_, _, MediaReport::Stats(_)))
        ));
        report(MediaReport::Stats(StreamStats::default()));
        report(MediaReport::Ended(StreamStats::default()));
        let mut got = Vec::new();
        for _ in 0..2 {
            let Ok(Some(CallInput::Media(_, _, r))) =
                tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            else {
                panic!("a report was lost: got {got:?}");
            };
            got.push(match r {
                MediaReport::Stats(_) => "stats",
                MediaReport::Event(StreamEvent::Failed(_)) => "failed",
                MediaReport::Ended(_) => "ended",
                _ => "other",
            });
        }
        assert_eq!(got, ["failed", "ended"]);
        assert!(rx.try_recv().is_err(), "dropped reports arrived after all");
    }
}
