//! Calls: the layer between SIP signalling (hush-signaling) and media (hush-media).
//! It owns the lines, builds SDP offers and answers with the ZRTP hello hash, starts a
//! media thread per call, and turns what both sides report into the call view and
//! events. Under a mandatory policy a call whose media cannot become secure is hung up
//! with the reason. An incoming call is answered only once its media runs, so no call
//! is ever connected without media; an outgoing call whose answer cannot start media is
//! hung up (BYE) with the reason.

mod line;
mod zid;

use crate::command::{AudioChoice, Reply};
use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::model::{AccountConfig, AccountId, AccountSettings, EncryptionPolicy};
use crate::secret::Secret;
use crate::security::CallSecurity;
use crate::snapshot::{AccountStatus, CallDirection, CallId, CallState, CallStats, CallView};
use hush_media::codec::CodecKind;
use hush_media::driver::{MediaCall, MediaCommand, MediaReport, PreparedMedia};
use hush_media::stream::{Policy, StreamConfig, StreamEvent, StreamStats};
use hush_media::zrtp::{Zid, ZidCache, ZidStore, ZrtpConfig, ZrtpSession};
use hush_signaling::sdp::{self, AudioDescription, Codecs, Direction, LocalMedia, Negotiated};
use hush_signaling::sip::{
    CallKey, ReInvite, RegistrationState, Rejection, SipEvent, SipStack, StackOptions, Transport,
    parse_target,
};
use line::{Line, LineId, identity, local_ip_towards};
use rsipstack::dialog::authenticate::Credential;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
pub(crate) use zid::ZidState;

/// Codecs we offer, best first.
const OUR_CODECS: [CodecKind; 3] = [CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma];

/// Inputs waiting for the core task. Lines and registrations wait for room (the SIP
/// stack behind them then sheds what it may); media threads never wait: their
/// statistics and DTMF are dropped when it is full, their state changes wait in a task.
pub(crate) const CALL_INPUTS: usize = 256;

/// How long stopping the phone waits for the answers to its last BYEs and CANCELs.
const HANGUPS_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Inputs to the core task from lines and media threads.
pub(crate) enum CallInput {
    Sip(LineId, SipEvent),
    Media(CallId, MediaReport),
    Registration(AccountId, RegistrationState),
    /// The peer's answer to our hold (`true`) or resume re-INVITE.
    Held(
        CallId,
        bool,
        std::result::Result<Vec<u8>, hush_signaling::SignalingError>,
    ),
}

enum Phase {
    /// We sent an offer; media is bound, ZRTP session made. (The mutex only makes the
    /// engine `Sync`, so the core task may hold the layer across awaits.)
    Offered {
        prepared: PreparedMedia,
        zrtp: std::sync::Mutex<ZrtpSession>,
    },
    /// We received an offer and have not answered yet.
    Ringing { offer: AudioDescription },
    /// Media running.
    Active { media: MediaCall },
    /// Over.
    Ended,
}

struct Call {
    line: LineId,
    key: CallKey,
    view: CallView,
    phase: Phase,
    audio: AudioChoice,
    policy: Policy,
    ssrc: u32,
    local: LocalMedia,
    negotiated: Option<Negotiated>,
    peer_identity: String,
    /// Why the user ended it, when that is more than "hung up" (e.g. a SAS mismatch).
    end_reason: Option<String>,
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
    auto_answer: Option<AudioChoice>,
    transport: Transport,
    tls_roots: Option<Vec<u8>>,
}

impl LineSpec {
    fn direct(
        bind: SocketAddr,
        user: &str,
        policy: EncryptionPolicy,
        media_ip: IpAddr,
        auto_answer: Option<AudioChoice>,
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

/// All lines and calls of the phone.
pub(crate) struct CallLayer {
    input: mpsc::Sender<CallInput>,
    lines: BTreeMap<LineId, Line>,
    calls: BTreeMap<CallId, Call>,
    /// The last calls that ended, newest last, each with its reason, until more end.
    ended: std::collections::VecDeque<CallView>,
    next_line: LineId,
    next_call: u64,
    zid: ZidState,
}

/// Ended calls kept for the views.
const ENDED_KEPT: usize = 5;

fn policy_of(p: EncryptionPolicy) -> Policy {
    match p {
        EncryptionPolicy::Mandatory => Policy::Mandatory,
        EncryptionPolicy::BestEffort => Policy::BestEffort,
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

fn sig(e: hush_signaling::SignalingError) -> CoreError {
    CoreError::Call(e.to_string())
}

fn med(e: hush_media::MediaError) -> CoreError {
    CoreError::Call(e.to_string())
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
) -> impl Fn(MediaReport) + Send + 'static {
    let runtime = tokio::runtime::Handle::try_current().ok();
    let backlog = std::sync::Arc::new(std::sync::Mutex::new(Backlog::default()));
    move |report| {
        let droppable = matches!(
            report,
            MediaReport::Stats(_) | MediaReport::Event(StreamEvent::Dtmf(_))
        );
        let Ok(mut waiting) = backlog.lock() else {
            return;
        };
        let report = if waiting.waiting {
            report
        } else {
            match input.try_send(CallInput::Media(id, report)) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(CallInput::Media(_, report))) => report,
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
                if input.send(CallInput::Media(id, next)).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The call `id`, or the error the user sees for a call that is gone. Free functions
/// over the map, so the rest of the layer stays borrowable beside the call.
fn find(calls: &BTreeMap<CallId, Call>, id: CallId) -> Result<&Call> {
    calls
        .get(&id)
        .ok_or_else(|| bad(format!("no call {}", id.0)))
}

fn find_mut(calls: &mut BTreeMap<CallId, Call>, id: CallId) -> Result<&mut Call> {
    calls
        .get_mut(&id)
        .ok_or_else(|| bad(format!("no call {}", id.0)))
}

impl CallLayer {
    pub(crate) fn new(input: mpsc::Sender<CallInput>, zid: ZidState) -> CallLayer {
        CallLayer {
            input,
            lines: BTreeMap::new(),
            calls: BTreeMap::new(),
            ended: std::collections::VecDeque::new(),
            next_line: 1,
            next_call: 1,
            zid,
        }
    }

    /// The last calls that ended, oldest first: their reason stays readable after the
    /// call is gone, however fast it ended.
    pub(crate) fn ended_views(&self) -> Vec<CallView> {
        self.ended.iter().cloned().collect()
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
        self.calls.values().map(|c| c.view.clone()).collect()
    }

    async fn add_line(&mut self, spec: LineSpec) -> Result<LineId> {
        let LineSpec {
            bind,
            user,
            aor_host,
            account,
            credential,
            policy,
            media_ip,
            auto_answer,
            transport,
            tls_roots,
        } = spec;
        let user = user.as_str();
        let (stack, mut rx) = SipStack::start(StackOptions {
            bind,
            transport,
            user: user.into(),
            tls_roots,
            ring_timeout: hush_signaling::sip::RING_TIMEOUT,
        })
        .await
        .map_err(sig)?;
        let host = aor_host.unwrap_or_else(|| stack.local_addr().to_string());
        let aor = parse_target(&format!("{user}@{host}")).map_err(sig)?;
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
        auto_answer: Option<AudioChoice>,
        policy: EncryptionPolicy,
    ) -> Result<Reply> {
        let media_ip = if addr.ip().is_unspecified() {
            local_ip_towards("192.0.2.1:9").unwrap_or(addr.ip())
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
        if self.lines.values().any(|l| l.account == Some(account.id)) {
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
            parse_target(&format!("x@{}", registrar_text.trim_start_matches("sip:")))
                .map_err(sig)?;
        registrar.auth = None;
        let port = registrar
            .host_with_port
            .port
            .as_ref()
            .map(|p| p.value())
            .unwrap_or(5060);
        let host = registrar.host_with_port.host.to_string();
        let media_ip = line::route_to_server(&host, port)
            .await
            .map_err(CoreError::Call)?;
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
        let transport = match settings.transport {
            crate::model::Transport::Udp => Transport::Udp,
            crate::model::Transport::Tcp => Transport::Tcp,
            crate::model::Transport::Tls => Transport::Tls,
        };
        let tls_roots = match transport {
            Transport::Tls => Some(
                hush_signaling::sip::trusted_certificates(
                    settings.tls_ca_file.as_deref().map(std::path::Path::new),
                )
                .map_err(sig)?,
            ),
            _ => None,
        };
        // Calls go through the outbound proxy if there is one, else the registrar.
        let proxy = match &settings.outbound_proxy {
            Some(p) => {
                Some(parse_target(&format!("x@{}", p.trim_start_matches("sip:"))).map_err(sig)?)
            }
            None => None,
        };
        let id = self
            .add_line(LineSpec {
                bind: SocketAddr::new(media_ip, 0),
                user: user.to_owned(),
                aor_host: Some(domain.to_owned()),
                account: Some(account.id),
                credential: Some(credential.clone()),
                policy: settings.encryption,
                media_ip,
                auto_answer: None,
                transport,
                tls_roots,
            })
            .await?;
        let Some(line) = self.lines.get_mut(&id) else {
            return Err(CoreError::Stopped);
        };
        line.stack
            .route_calls_via(proxy.as_ref().unwrap_or(&registrar));
        let handle = line
            .stack
            .register_aor(registrar, line.aor.clone(), credential);
        let mut state = handle.state();
        let input = self.input.clone();
        let acc = account.id;
        tokio::spawn(async move {
            loop {
                let s = state.borrow_and_update().clone();
                if input.send(CallInput::Registration(acc, s)).await.is_err() {
                    break;
                }
                if state.changed().await.is_err() {
                    break;
                }
            }
        });
        line.registration = Some(handle);
        events.push(Event::AccountStatus {
            account: account.id,
            status: AccountStatus::Connecting,
        });
        Ok(())
    }

    /// Un-registers and closes an account's line.
    pub(crate) async fn disconnect(&mut self, account: AccountId) {
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
        for call in self.calls.values_mut() {
            if let Phase::Active { media } = std::mem::replace(&mut call.phase, Phase::Ended) {
                media.stop();
            }
        }
    }

    /// Hangs up and un-registers everything (on exit).
    pub(crate) async fn shutdown(&mut self) {
        let keys: Vec<CallId> = self.calls.keys().copied().collect();
        for c in keys {
            let _ = self.hangup(c, &mut Vec::new()).await;
            if let Some(call) = self.calls.get_mut(&c)
                && let Phase::Active { media } = std::mem::replace(&mut call.phase, Phase::Ended)
            {
                media.stop();
            }
        }
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
        ZrtpSession::new(&config, ssrc, Instant::now()).map_err(med)
    }

    fn new_call_id(&mut self) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        id
    }

    /// Places a call.
    pub(crate) async fn place(
        &mut self,
        account: Option<AccountId>,
        target: &str,
        audio: AudioChoice,
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
                    let uri = parse_target(target).map_err(sig)?;
                    let port = uri
                        .host_with_port
                        .port
                        .as_ref()
                        .map(|p| p.value())
                        .unwrap_or(5060);
                    let ip = local_ip_towards(&format!("{}:{port}", uri.host_with_port.host))
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
        let target_uri = parse_target(target).map_err(sig)?;
        let peer_identity = identity(&target_uri);
        let line = self.lines.get(&line_id).ok_or(CoreError::Stopped)?;
        let policy = policy_of(policy.unwrap_or(line.policy));
        let prepared = PreparedMedia::bind(line.media_ip).map_err(med)?;
        let ssrc = random_u64() as u32;
        let zrtp = Self::zrtp_for(&self.zid, line, &peer_identity, ssrc)?;
        let local = LocalMedia {
            session_id: random_u64() >> 1,
            version: 1,
            addr: line.media_ip,
            port: prepared.local_addr().port(),
            direction: Direction::SendRecv,
            zrtp_hash: Some(zrtp.hello_hash().map_err(med)?),
        };
        let offer = sdp::write(&local, Codecs::Offer(&OUR_CODECS));
        let key = line
            .stack
            .call(target, line.aor.clone(), line.credential.clone(), offer)
            .await
            .map_err(sig)?;
        let id = self.new_call_id();
        let view = CallView {
            id,
            account,
            peer: target_uri.to_string(),
            direction: CallDirection::Outgoing,
            state: CallState::Calling,
            security: CallSecurity::Negotiating,
            algorithms: None,
            codec: None,
            stats: None,
            automatic: false,
        };
        events.push(Event::CallState {
            call: id,
            state: CallState::Calling,
        });
        self.calls.insert(
            id,
            Call {
                line: line_id,
                key,
                view,
                phase: Phase::Offered {
                    prepared,
                    zrtp: std::sync::Mutex::new(zrtp),
                },
                audio,
                policy,
                ssrc,
                local,
                negotiated: None,
                peer_identity,
                end_reason: None,
            },
        );
        Ok(Reply::Call(id))
    }

    fn find(&self, line: LineId, key: &CallKey) -> Option<CallId> {
        self.calls
            .iter()
            .find(|(_, c)| c.line == line && &c.key == key)
            .map(|(i, _)| *i)
    }

    fn set_state(&mut self, id: CallId, state: CallState, events: &mut Vec<Event>) {
        if let Some(c) = self.calls.get_mut(&id)
            && c.view.state != state
        {
            c.view.state = state.clone();
            events.push(Event::CallState { call: id, state });
        }
    }

    fn set_security(&mut self, id: CallId, security: CallSecurity, events: &mut Vec<Event>) {
        if let Some(c) = self.calls.get_mut(&id)
            && c.view.security != security
        {
            c.view.security = security.clone();
            events.push(Event::CallSecurity { call: id, security });
        }
    }

    fn start_media(
        &mut self,
        id: CallId,
        remote: SocketAddr,
        peer_hash: Option<String>,
    ) -> Result<()> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Err(CoreError::Stopped);
        };
        let neg = call
            .negotiated
            .ok_or_else(|| CoreError::Call("no codec negotiated".into()))?;
        let (prepared, zrtp) = match std::mem::replace(&mut call.phase, Phase::Ended) {
            Phase::Offered { prepared, zrtp } => (
                prepared,
                zrtp.into_inner()
                    .map_err(|_| CoreError::Call("ZRTP engine poisoned".into()))?,
            ),
            other => {
                call.phase = other;
                return Err(CoreError::Call("media already running".into()));
            }
        };
        let cfg = StreamConfig {
            local_ssrc: call.ssrc,
            codec: neg.codec,
            payload_type: neg.payload_type,
            telephone_event_pt: neg.telephone_event,
            policy: call.policy,
            peer_hello_hash: peer_hash,
            remote,
        };
        let media = prepared
            .start(
                cfg,
                Some(zrtp),
                call.audio.source.clone(),
                call.audio.sink.clone(),
                media_reporter(self.input.clone(), id),
            )
            .map_err(med)?;
        call.view.codec = Some(neg.codec.sdp_name().to_owned());
        call.phase = Phase::Active { media };
        Ok(())
    }

    /// Answers an incoming call. Everything that can fail on our side (media port, ZRTP
    /// engine, audio devices, the media thread) is running before the 200 OK goes out,
    /// so an answered call always has media; if something fails first, the call keeps
    /// ringing and the error says why.
    pub(crate) fn answer(
        &mut self,
        id: CallId,
        audio: AudioChoice,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let call = find_mut(&mut self.calls, id)?;
        let Phase::Ringing { offer } = &call.phase else {
            return Err(bad("that call is not ringing"));
        };
        let offer = offer.clone();
        let line = self.lines.get(&call.line).ok_or(CoreError::Stopped)?;
        let neg = sdp::negotiate(&offer, &OUR_CODECS).map_err(sig)?;
        let zrtp = Self::zrtp_for(&self.zid, line, &call.peer_identity, call.ssrc)?;
        let prepared = PreparedMedia::bind(line.media_ip).map_err(med)?;
        let port = prepared.local_addr().port();
        let hello = zrtp.hello_hash().map_err(med)?;
        let cfg = StreamConfig {
            local_ssrc: call.ssrc,
            codec: neg.codec,
            payload_type: neg.payload_type,
            telephone_event_pt: neg.telephone_event,
            policy: call.policy,
            peer_hello_hash: offer.zrtp_hash.clone(),
            remote: SocketAddr::new(offer.addr, offer.port),
        };
        let media = prepared
            .start(
                cfg,
                Some(zrtp),
                audio.source.clone(),
                audio.sink.clone(),
                media_reporter(self.input.clone(), id),
            )
            .map_err(med)?;
        call.local.port = port;
        call.local.addr = line.media_ip;
        call.local.direction = offer.direction.reversed();
        call.local.zrtp_hash = Some(hello);
        let answer = sdp::write(&call.local, Codecs::Answer(&neg));
        if let Err(e) = line.stack.answer(&call.key, answer) {
            media.stop();
            // Not answered after all: refuse it, so the caller is not left ringing.
            let _ = line.stack.reject(&call.key, Rejection::Failed);
            let reason = format!("could not answer: {e}");
            self.end(id, reason.clone(), events);
            return Err(CoreError::Call(reason));
        }
        call.negotiated = Some(neg);
        call.audio = audio;
        call.view.codec = Some(neg.codec.sdp_name().to_owned());
        call.phase = Phase::Active { media };
        self.set_state(id, CallState::Connected, events);
        Ok(())
    }

    /// Refuses an incoming call.
    pub(crate) fn reject(&mut self, id: CallId, busy: bool) -> Result<()> {
        let call = find(&self.calls, id)?;
        let line = self.lines.get(&call.line).ok_or(CoreError::Stopped)?;
        let why = if busy {
            Rejection::Busy
        } else {
            Rejection::Declined
        };
        line.stack.reject(&call.key, why).map_err(sig)
    }

    /// Hangs up. A call that rings here is declined; any other ends at once, and its
    /// CANCEL or BYE goes out from the SIP stack's own task: a peer that never answers
    /// it cannot hold up the phone.
    pub(crate) async fn hangup(&mut self, id: CallId, events: &mut Vec<Event>) -> Result<()> {
        let call = find(&self.calls, id)?;
        let line = self.lines.get(&call.line).ok_or(CoreError::Stopped)?;
        if matches!(call.phase, Phase::Ringing { .. }) {
            line.stack
                .reject(&call.key, Rejection::Declined)
                .map_err(sig)?;
            return Ok(());
        }
        if let Err(e) = line.stack.hangup(&call.key) {
            // The dialog is gone already.
            tracing::debug!(error = %e, "hangup");
        }
        self.end(id, "hung up".into(), events);
        Ok(())
    }

    fn end(&mut self, id: CallId, reason: String, events: &mut Vec<Event>) {
        let reason = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.end_reason.take())
            .unwrap_or(reason);
        self.set_state(id, CallState::Ended(reason), events);
        if let Some(mut c) = self.calls.remove(&id) {
            if matches!(c.view.security, CallSecurity::Negotiating) {
                c.view.security =
                    CallSecurity::Failed("the call ended before it was secure".into());
            }
            if let Phase::Active { media } = std::mem::replace(&mut c.phase, Phase::Ended) {
                media.stop();
            }
            if !c.view.automatic {
                self.ended.push_back(c.view);
                while self.ended.len() > ENDED_KEPT {
                    self.ended.pop_front();
                }
            }
        }
    }

    fn media(&self, id: CallId) -> Result<&MediaCall> {
        match &find(&self.calls, id)?.phase {
            Phase::Active { media } => Ok(media),
            _ => Err(bad("the call has no media yet")),
        }
    }

    /// Sends DTMF keys.
    pub(crate) fn dtmf(&self, id: CallId, keys: &str) -> Result<()> {
        if keys.is_empty()
            || keys
                .chars()
                .any(|k| hush_media::dtmf::event_code(k).is_none())
        {
            return Err(bad(format!("{keys:?}: DTMF keys are 0-9 * # A-D")));
        }
        let media = self.media(id)?;
        for k in keys.chars() {
            media.command(MediaCommand::Dtmf(k));
        }
        Ok(())
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
        let current = find(&self.calls, id)?.view.security.clone();
        let Some(sas) = current.sas().map(str::to_owned) else {
            return Err(bad("the call is not secure yet: there is no SAS to verify"));
        };
        let media = self.media(id)?;
        media.command(MediaCommand::SasVerified(verified));
        let written = media.barrier();
        // Withdrawing never turns a warning into the ordinary "unverified".
        let security = match current {
            CallSecurity::CacheMismatch { .. } | CallSecurity::NewKey { .. } if !verified => {
                current
            }
            _ => CallSecurity::Secure { sas, verified },
        };
        self.set_security(id, security, events);
        Ok(written)
    }

    /// Sends silence instead of the microphone, or the microphone again.
    pub(crate) fn mute(&self, id: CallId, on: bool) -> Result<()> {
        self.media(id)?.command(MediaCommand::Mute(on));
        Ok(())
    }

    /// The user compared the SAS and it did not match: someone may be in the middle.
    /// The call ends with that reason and the peer is no longer "verified".
    pub(crate) async fn sas_mismatch(&mut self, id: CallId, events: &mut Vec<Event>) -> Result<()> {
        let call = find_mut(&mut self.calls, id)?;
        if !call.view.security.is_encrypted() {
            return Err(bad(
                "the call is not secure yet: there is no SAS to compare",
            ));
        }
        let reason = "SAS mismatch: the codes you compared differ; someone may be listening in";
        call.end_reason = Some(reason.into());
        call.view.security = CallSecurity::Failed(reason.into());
        if let Ok(media) = self.media(id) {
            media.command(MediaCommand::SasVerified(false));
        }
        events.push(Event::CallSecurity {
            call: id,
            security: CallSecurity::Failed(reason.into()),
        });
        self.hangup(id, events).await
    }

    /// Sets the "SAS verified" flag of one key of a peer outside any call: the key the
    /// user was shown, not every key that ever called from that address.
    pub(crate) async fn set_peer_verified(
        &self,
        peer: &str,
        key: &str,
        verified: bool,
    ) -> Result<()> {
        let id = identity(&parse_target(peer).map_err(sig)?);
        let zid = Zid::parse(key).map_err(|e| bad(e.to_string()))?;
        let store = self.zid.store()?.clone();
        let who = id.clone();
        let changed = tokio::task::spawn_blocking(move || store.set_verified(&who, &zid, verified))
            .await
            .map_err(|_| CoreError::Stopped)?
            .map_err(med)?;
        if changed == 0 {
            return Err(bad(format!(
                "{id} has not presented the key {zid} on a secure call: there is no SAS to verify"
            )));
        }
        Ok(())
    }

    /// The keys `peer`'s address has presented, the last seen first.
    pub(crate) async fn peer_keys(&self, peer: &str) -> Result<Vec<crate::security::PeerKey>> {
        let id = identity(&parse_target(peer).map_err(sig)?);
        let store = self.zid.store()?.clone();
        let keys = tokio::task::spawn_blocking(move || store.keys_of(&id))
            .await
            .map_err(|_| CoreError::Stopped)?
            .map_err(med)?;
        Ok(keys.into_iter().map(zid::peer_key).collect())
    }

    /// The peer keys whose SAS the user has verified.
    pub(crate) async fn verified_peers(&self) -> Result<Vec<crate::security::PeerKey>> {
        let store = self.zid.store()?.clone();
        let keys = tokio::task::spawn_blocking(move || store.verified_keys())
            .await
            .map_err(|_| CoreError::Stopped)?
            .map_err(med)?;
        Ok(keys.into_iter().map(zid::peer_key).collect())
    }

    /// Puts a call on hold (re-INVITE with sendonly) or resumes it. Returns once the
    /// re-INVITE is sent; the peer's answer is waited for in a task of its own (a peer
    /// that never answers cannot hold up the phone) and applied when it comes (see
    /// `held`).
    pub(crate) async fn hold(
        &mut self,
        id: CallId,
        on: bool,
        _events: &mut Vec<Event>,
    ) -> Result<()> {
        let call = find_mut(&mut self.calls, id)?;
        let Phase::Active { .. } = &call.phase else {
            return Err(bad("the call is not connected"));
        };
        let neg = call
            .negotiated
            .ok_or_else(|| CoreError::Call("no codec negotiated".into()))?;
        call.local.version += 1;
        call.local.direction = if on {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        let offer = sdp::write(&call.local, Codecs::Answer(&neg));
        let line = self.lines.get(&call.line).ok_or(CoreError::Stopped)?;
        let answer = line.stack.reinvite(&call.key, offer);
        let input = self.input.clone();
        tokio::spawn(async move {
            let answer = answer.await;
            let _ = input.send(CallInput::Held(id, on, answer)).await;
        });
        Ok(())
    }

    /// Applies the peer's answer to a hold or resume: the media follows it, or the
    /// failure is reported as the hold command's.
    fn held(
        &mut self,
        id: CallId,
        on: bool,
        answer: std::result::Result<Vec<u8>, hush_signaling::SignalingError>,
        events: &mut Vec<Event>,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return; // ended meanwhile
        };
        let desc = match answer.and_then(|a| sdp::parse(&a)) {
            Ok(desc) => desc,
            Err(e) => {
                events.push(Event::CommandFailed {
                    command: "hold",
                    error: e.to_string(),
                });
                return;
            }
        };
        if let Phase::Active { media } = &call.phase {
            media.command(MediaCommand::Hold(on));
            media.command(MediaCommand::SetRemote(SocketAddr::new(
                desc.addr, desc.port,
            )));
        }
        self.set_state(
            id,
            if on {
                CallState::OnHold
            } else {
                CallState::Connected
            },
            events,
        );
    }

    /// Handles an input from a line or a media thread.
    pub(crate) async fn input(&mut self, input: CallInput, events: &mut Vec<Event>) {
        match input {
            CallInput::Sip(line, ev) => self.sip(line, ev, events).await,
            CallInput::Media(id, report) => self.media_report(id, report, events).await,
            CallInput::Held(id, on, answer) => self.held(id, on, answer, events),
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
    }

    async fn sip(&mut self, line_id: LineId, ev: SipEvent, events: &mut Vec<Event>) {
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
                let offer = match sdp::parse(&offer)
                    .and_then(|o| sdp::negotiate(&o, &OUR_CODECS).map(|_| o))
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::info!(error = %e, "refusing a call we cannot serve (488)");
                        let _ = line.stack.reject(&key, Rejection::NotAcceptable);
                        return;
                    }
                };
                let peer_identity = parse_target(&from)
                    .map(|u| identity(&u))
                    .unwrap_or_else(|_| from.clone());
                let policy = policy_of(line.policy);
                let auto = line.auto_answer.clone();
                let (account, media_ip) = (line.account, line.media_ip);
                let id = self.new_call_id();
                let view = CallView {
                    id,
                    account,
                    peer: from.clone(),
                    direction: CallDirection::Incoming,
                    state: CallState::Incoming,
                    security: CallSecurity::Negotiating,
                    algorithms: None,
                    codec: None,
                    stats: None,
                    automatic: auto.is_some(),
                };
                let local = LocalMedia {
                    session_id: random_u64() >> 1,
                    version: 1,
                    addr: media_ip,
                    port: 0,
                    direction: Direction::SendRecv,
                    zrtp_hash: None,
                };
                self.calls.insert(
                    id,
                    Call {
                        line: line_id,
                        key,
                        view,
                        phase: Phase::Ringing { offer },
                        audio: AudioChoice::default(),
                        policy,
                        ssrc: random_u64() as u32,
                        local,
                        negotiated: None,
                        peer_identity,
                        end_reason: None,
                    },
                );
                events.push(Event::CallIncoming { call: id, from });
                events.push(Event::CallState {
                    call: id,
                    state: CallState::Incoming,
                });
                if let Some(audio) = auto
                    && let Err(e) = self.answer(id, audio, events)
                {
                    // Nobody is there to try again: refuse the call rather than let it ring.
                    tracing::warn!(error = %e, "auto-answer failed");
                    if let Some(c) = self.calls.get(&id)
                        && let Some(line) = self.lines.get(&c.line)
                    {
                        let _ = line.stack.reject(&c.key, Rejection::Failed);
                    }
                    self.end(id, format!("could not answer: {e}"), events);
                }
            }
            SipEvent::Ringing { call } => {
                // A 180 handled after the 200 (the stack reports them from separate
                // tasks) must not turn an answered call back into a ringing one.
                if let Some(id) = self.find(line_id, &call)
                    && self
                        .calls
                        .get(&id)
                        .is_some_and(|c| c.view.state == CallState::Calling)
                {
                    self.set_state(id, CallState::Ringing, events);
                }
            }
            SipEvent::Answered { call, sdp: body } => {
                let Some(id) = self.find(line_id, &call) else {
                    // Answered after we gave up on it: hang up rather than leave it up.
                    if let Some(line) = self.lines.get(&line_id) {
                        let _ = line.stack.hangup(&call);
                    }
                    return;
                };
                let result =
                    sdp::parse(&body).and_then(|a| sdp::accepted(&a, &OUR_CODECS).map(|n| (a, n)));
                match result {
                    Ok((answer, neg)) => {
                        if let Some(c) = self.calls.get_mut(&id) {
                            c.negotiated = Some(neg);
                        }
                        let remote = SocketAddr::new(answer.addr, answer.port);
                        match self.start_media(id, remote, answer.zrtp_hash.clone()) {
                            Ok(()) => self.set_state(id, CallState::Connected, events),
                            Err(e) => self.fail_call(id, e.to_string(), events).await,
                        }
                    }
                    Err(e) => self.fail_call(id, e.to_string(), events).await,
                }
            }
            SipEvent::Established { call } => {
                if let Some(id) = self.find(line_id, &call) {
                    self.set_state(id, CallState::Connected, events);
                }
            }
            SipEvent::ReInvite { call, reinvite } => match self.find(line_id, &call) {
                Some(id) => self.reinvite(id, reinvite, events).await,
                None => reinvite.refuse().await,
            },
            SipEvent::Ended { call, reason } => {
                if let Some(id) = self.find(line_id, &call) {
                    self.end(id, reason.to_string(), events);
                }
            }
        }
    }

    /// Answers a re-INVITE. The media keeps its ZRTP-keyed SRTP whatever the new SDP
    /// says: a re-INVITE can move or hold the stream, never weaken it. One that asks for
    /// a codec we are not using or removes audio is refused (488).
    async fn reinvite(&mut self, id: CallId, reinvite: ReInvite, events: &mut Vec<Event>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return reinvite.refuse().await;
        };
        let (Some(neg), Phase::Active { media }) = (call.negotiated, &call.phase) else {
            return reinvite.refuse().await;
        };
        if reinvite.sdp.is_empty() {
            call.local.version += 1;
            let offer = sdp::write(&call.local, Codecs::Answer(&neg));
            return reinvite.accept(offer).await;
        }
        let offer = match sdp::parse(&reinvite.sdp) {
            Ok(o) if o.port != 0 && o.codecs.iter().any(|(_, c)| *c == neg.codec) => o,
            Ok(_) => {
                tracing::info!("refusing a re-INVITE that drops our audio or codec");
                return reinvite.refuse().await;
            }
            Err(e) => {
                tracing::info!(error = %e, "refusing a malformed re-INVITE");
                return reinvite.refuse().await;
            }
        };
        if let (Some(old), Some(new)) = (&call.view.algorithms, &offer.zrtp_hash) {
            tracing::debug!(%old, %new, "re-INVITE carries a ZRTP hash; the running session is kept");
        }
        let held = matches!(offer.direction, Direction::SendOnly | Direction::Inactive);
        media.command(MediaCommand::SetRemote(SocketAddr::new(
            offer.addr, offer.port,
        )));
        media.command(MediaCommand::Hold(held));
        call.local.version += 1;
        call.local.direction = offer.direction.reversed();
        let answer = sdp::write(&call.local, Codecs::Answer(&neg));
        reinvite.accept(answer).await;
        self.set_state(
            id,
            if held {
                CallState::OnHold
            } else {
                CallState::Connected
            },
            events,
        );
    }

    /// Ends a call that cannot go on, with the reason: at once here, while its BYE goes
    /// out from the SIP stack's own task (a peer that never answers the BYE cannot hold
    /// up the phone).
    async fn fail_call(&mut self, id: CallId, reason: String, events: &mut Vec<Event>) {
        tracing::info!(call = id.0, %reason, "ending call");
        self.set_security(id, CallSecurity::Failed(reason.clone()), events);
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if let Some(line) = self.lines.get(&call.line)
            && let Err(e) = line.stack.hangup(&call.key)
        {
            tracing::debug!(error = %e, "hangup");
        }
        self.end(id, reason, events);
    }

    async fn media_report(&mut self, id: CallId, report: MediaReport, events: &mut Vec<Event>) {
        match report {
            MediaReport::Event(StreamEvent::Secure {
                sas,
                verified,
                cache_mismatch,
                new_key,
                algorithms,
            }) => {
                let text = algorithms.to_string();
                if let Some(c) = self.calls.get_mut(&id) {
                    c.view.algorithms = Some(text.clone());
                }
                events.push(Event::CallAlgorithms {
                    call: id,
                    algorithms: text,
                });
                let security = if cache_mismatch {
                    CallSecurity::CacheMismatch { sas }
                } else if new_key {
                    tracing::info!(call = id.0, "a verified peer presents a new ZRTP key");
                    CallSecurity::NewKey { sas }
                } else {
                    CallSecurity::Secure { sas, verified }
                };
                self.set_security(id, security, events);
            }
            MediaReport::Event(StreamEvent::Cleartext(why)) => {
                tracing::info!(call = id.0, reason = %why, "call is not encrypted");
                self.set_security(id, CallSecurity::Cleartext, events);
            }
            MediaReport::Event(StreamEvent::Failed(why)) => self.fail_call(id, why, events).await,
            MediaReport::Event(StreamEvent::Dtmf(key)) => {
                events.push(Event::CallDtmf { call: id, key })
            }
            MediaReport::Stats(s) | MediaReport::Ended(s) => {
                let stats = to_stats(&s);
                if let Some(c) = self.calls.get_mut(&id) {
                    c.view.stats = Some(stats);
                }
                events.push(Event::CallStats { call: id, stats });
            }
        }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_full_queue_drops_media_statistics_but_never_a_state_change() {
        let (tx, mut rx) = mpsc::channel(1);
        let report = media_reporter(tx, CallId(7));
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
            let Ok(Some(CallInput::Media(id, r))) =
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
        let report = media_reporter(tx, CallId(7));
        report(MediaReport::Stats(StreamStats::default()));
        report(MediaReport::Event(StreamEvent::Failed("no ZRTP".into())));
        // The core takes the statistics: there is room again before the failure, which
        // waits for room in a task, was delivered.
        assert!(matches!(
            rx.try_recv(),
            Ok(CallInput::Media(_, MediaReport::Stats(_)))
        ));
        report(MediaReport::Stats(StreamStats::default()));
        report(MediaReport::Ended(StreamStats::default()));
        let mut got = Vec::new();
        for _ in 0..2 {
            let Ok(Some(CallInput::Media(_, r))) =
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
